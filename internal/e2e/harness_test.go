// Package e2e holds the end-to-end tests: the real server, started in-process
// through the program's own entry point (internal/cli) or built and run as a
// binary, driven over HTTP against fakes of Forge, Confluence, Weavy and
// Redis. Tests that build the binary, measure or soak are in files built only
// with -tags slow, which .ci/run sets.
package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/cli"
	"github.com/forge-remote/forge-remote/internal/syncbuf"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/server"
)

// syncBuffer collects the server's log lines while it runs.
type syncBuffer = syncbuf.Buffer

// repoRoot is the module's root, from this package's directory (where go
// test runs): the Dockerfile, manifest.yml and testdata are there.
const repoRoot = "../.."

// run is the program as main runs it, without the manifest template (which
// only `manifest render` reads; internal/cli tests it).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return cli.Program{}.Run(ctx, args, getenv, stdout, stderr)
}

// testServer is the real server started through cli.Serve in-process.
type testServer struct {
	URL    string
	Logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// baseEnv is a working configuration against the given fakes.
func baseEnv(t *testing.T, jwks *forgetest.JWKSServer) map[string]string {
	return map[string]string{
		"FORGE_APP_ID":       forgetest.AppID,
		"FORGE_JWKS_URL":     jwks.URL(),
		"LISTEN_ADDR":        "127.0.0.1:0",
		"STORE_URL":          "bolt://" + t.TempDir() + "/forge-remote.db",
		"INTERNAL_API_TOKEN": internalToken,
		"LOG_LEVEL":          "debug",
		// Hourly jobs run when the trigger comes, not at each
		// installation's moment of the hour: tests drive the triggers.
		"CONFLUENCE_SPREAD": "off",
	}
}

const internalToken = "internal-secret-0123456789abcdef"

// startServer runs the server with env until the test ends, and waits until
// it listens.
func startServer(t *testing.T, env map[string]string) *testServer {
	t.Helper()
	return startServerWith(t, env, server.Options{})
}

// startServerWith is startServer with injected dependencies (a clock,
// timeouts).
func startServerWith(t *testing.T, env map[string]string, o server.Options) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Logs: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	addr := make(chan net.Addr, 1)
	getenv := func(k string) string { return env[k] }
	go func() {
		ts.done <- cli.Serve(ctx, getenv, ts.Logs, func(a net.Addr) { addr <- a }, o)
	}()
	select {
	case a := <-addr:
		ts.URL = "http://" + a.String()
	case err := <-ts.done:
		cancel()
		t.Fatalf("server did not start: %v\nlogs:\n%s", err, ts.Logs)
	case <-testwait.After(t):
		cancel()
		t.Fatalf("server did not start in time\nlogs:\n%s", ts.Logs)
	}
	t.Cleanup(func() { ts.Stop(t) })
	return ts
}

// Stop shuts the server down (SIGTERM's path) and checks it exited cleanly.
func (ts *testServer) Stop(t *testing.T) {
	t.Helper()
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.cancel = nil
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("server exited with %v", err)
		}
	case <-testwait.After(t):
		t.Errorf("server did not stop")
	}
}

// waitReady polls /readyz until it answers 200.
func (ts *testServer) waitReady(t *testing.T) {
	t.Helper()
	if !testwait.Poll(t, func() bool { st, _ := ts.get(t, "/readyz", ""); return st == http.StatusOK }) {
		t.Fatalf("server not ready in time\nlogs:\n%s", ts.Logs)
	}
}

type reply struct {
	Status  int
	Header  http.Header
	Body    []byte
	JSON    map[string]any
	CType   string
	ErrCode string
}

func (ts *testServer) do(t *testing.T, method, path string, headers map[string]string, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Body: b, CType: resp.Header.Get("Content-Type")}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.JSON); err != nil && path != "/metrics" {
			t.Fatalf("%s %s: answer is not JSON (%d %s): %q", method, path, resp.StatusCode, r.CType, b)
		}
		if e, ok := r.JSON["error"].(map[string]any); ok {
			r.ErrCode, _ = e["code"].(string)
		}
	}
	if path != "/metrics" && len(b) > 0 && !strings.HasPrefix(r.CType, "application/json") {
		t.Errorf("%s %s: content-type %q, want application/json", method, path, r.CType)
	}
	return r
}

// post sends a Forge call: fit in Authorization (skipped when empty).
func (ts *testServer) post(t *testing.T, path, fit string, extra map[string]string, body string) reply {
	t.Helper()
	h := map[string]string{}
	if fit != "" {
		h["Authorization"] = "Bearer " + fit
	}
	for k, v := range extra {
		h[k] = v
	}
	return ts.do(t, http.MethodPost, path, h, body)
}

func (ts *testServer) get(t *testing.T, path, token string) (int, reply) {
	t.Helper()
	h := map[string]string{}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	r := ts.do(t, http.MethodGet, path, h, "")
	return r.Status, r
}

func (ts *testServer) internal(t *testing.T, path string) reply {
	t.Helper()
	_, r := ts.get(t, path, internalToken)
	return r
}

func (r reply) str(key string) string {
	s, _ := r.JSON[key].(string)
	return s
}
