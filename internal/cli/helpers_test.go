package cli

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/internal/syncbuf"
)

// syncBuffer collects a command's output while it runs.
type syncBuffer = syncbuf.Buffer

// repoManifest is the repository's manifest.yml, what main embeds.
var repoManifest = func() []byte {
	b, err := os.ReadFile("../../manifest.yml")
	if err != nil {
		panic(err)
	}
	return b
}()

// run is the program as main runs it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return Program{Manifest: repoManifest}.Run(ctx, args, getenv, stdout, stderr)
}

// A Program without its template refuses to render, and says why, rather
// than print an empty manifest.
func TestManifestRenderWithoutTemplate(t *testing.T) {
	var out, errOut syncBuffer
	args := []string{"forge-remote", "manifest", "render", "--app-id", "3f2c9a4e-8b1d-4c7a-9e2f-5d6b7a8c9d0e", "--base-url", "https://remote.example.com", "--weavy-url", "https://acme.weavy.io"}
	err := Program{}.Run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no manifest template") || out.String() != "" {
		t.Fatalf("render without a template: %v, stdout %q", err, out.String())
	}
}
