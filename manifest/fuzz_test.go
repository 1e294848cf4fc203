package manifest_test

import (
	"os"
	"testing"

	"github.com/forge-remote/forge-remote/manifest"
	"github.com/forge-remote/forge-remote/server"
)

// FuzzManifest: loading and validating any YAML never panics.
func FuzzManifest(f *testing.F) {
	if b, err := os.ReadFile("../manifest.yml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("modules: {endpoint: [{key: a}]}"))
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("modules:\n  scheduledTrigger:\n    - endpoint: 5\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := manifest.Parse(b)
		if err != nil {
			return
		}
		_ = m.Validate(server.Serves)
	})
}
