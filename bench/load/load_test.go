package main

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSmoke builds forge-remote and runs the load tool's smoke against it, so
// the tool cannot rot. No timing is asserted: only that the server starts, the
// warm path answers 2xx with a token, and Weavy is not called on it.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the load smoke builds and starts the server: skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the server with")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"-smoke", "-json", "-duration", "1s", "-cache", t.TempDir()}, &out, &errOut)
	if err != nil {
		t.Fatalf("smoke: %v\nstderr:\n%s\nstdout:\n%s", err, &errOut, &out)
	}
	for _, want := range []string{`"name": "forge-remote"`, `"weavy_calls": 0`, `"non_2xx": 0`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %s:\n%s", want, &out)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.quantile(tc.q)
		if diff := float64(got-tc.want) / float64(tc.want); diff > 0.008 || diff < -0.008 {
			t.Errorf("q%.2f = %v, want %v within 0.8%%", tc.q, got, tc.want)
		}
	}
	for v := int64(0); v < 1<<20; v = v*5/4 + 1 {
		if i := histIndex(v); histIndex(histValue(i)) != i {
			t.Fatalf("bucket %d of %d does not hold its own middle %d", i, v, histValue(i))
		}
	}
}

func TestReadChunked(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("5\r\n{\"acc\r\n3;x=1\r\ness\r\n0\r\nTrailer: a\r\n\r\nNEXT"))
	b, err := readChunked(r, nil)
	if err != nil || string(b) != `{"access` {
		t.Fatalf("got %q, %v", b, err)
	}
	if rest, _ := r.ReadString(0); rest != "NEXT" {
		t.Fatalf("left %q after the body", rest)
	}
}

func TestCommandArgv(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"node bench/peer/server.mjs", []string{"node", "bench/peer/server.mjs"}},
		{"cd bench/peer && node server.mjs", []string{"/bin/sh", "-c", "cd bench/peer && node server.mjs"}},
		{"UV_THREADPOOL_SIZE=2 node server.mjs", []string{"/bin/sh", "-c", "UV_THREADPOOL_SIZE=2 node server.mjs"}},
	} {
		if got := commandArgv(tc.cmd); !slices.Equal(got, tc.want) {
			t.Errorf("commandArgv(%q) = %q, want %q", tc.cmd, got, tc.want)
		}
	}
}
