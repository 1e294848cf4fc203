//go:build slow

package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestSmoke builds forge-remote and runs the load tool's smoke against it, so
// the tool cannot rot. No timing is asserted: only that the server starts, it
// opens the smoke's page chats, the warm path answers 2xx with a token, and
// Weavy is not called on it.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the load smoke builds and starts the server: skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the server with")
	}
	// No deadline of its own: a cold build of the image's flags took 184 s
	// on a busy 2-core machine. go test's -timeout bounds the whole, and the
	// tool's own limits are lifted so that a slow machine is never the cause.
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"-smoke", "-json", "-duration", "1s", "-cache", t.TempDir(),
		"-ready-timeout", "1h", "-timeout", "1h"}, &out, &errOut)
	if err != nil {
		t.Fatalf("smoke: %v\nstderr:\n%s\nstdout:\n%s", err, &errOut, &out)
	}
	// The smoke opens 100 page chats first, each checked with Confluence.
	for _, want := range []string{`"name": "forge-remote"`, `"weavy_calls": 0`, `"non_2xx": 0`, `"chat_opens": 100,`, `"chat_confluence_checks": 100,`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %s:\n%s", want, &out)
		}
	}
}
