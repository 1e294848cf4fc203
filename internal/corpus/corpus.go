// Package corpus reads testdata/forge: bodies and FIT claims shaped as Forge
// really sends them (each beside a .source naming where the shape comes
// from), for the tests and fuzz seeds of every package.
package corpus

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// File is one body of the corpus.
type File struct {
	Path string
	Data []byte
}

// Read returns the *.json files of testdata/forge/<dir>; none is a failure,
// so a moved corpus cannot silently seed nothing.
func Read(tb testing.TB, dir string) []File {
	tb.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("corpus: cannot locate the module root")
	}
	root := filepath.Join(filepath.Dir(self), "..", "..", "testdata", "forge", dir)
	names, err := filepath.Glob(filepath.Join(root, "*.json"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("no corpus in testdata/forge/%s: %v", dir, err)
	}
	out := make([]File, 0, len(names))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, File{Path: name, Data: b})
	}
	return out
}
