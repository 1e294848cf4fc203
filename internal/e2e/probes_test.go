package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// Started without internet (FORGE_JWKS_URL unreachable), the server logs that
// it has no keys yet and when it retries; /readyz says so once, under
// forge_keys, without stutter or Go package names; HEAD on the probes answers
// as GET does, without a body.
func TestStartedWithoutInternet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	jwksURL := "http://" + ln.Addr().String() + "/.well-known/jwks.json"
	ln.Close()
	env := baseEnv(t, forgetest.NewJWKSServer(t))
	env["FORGE_JWKS_URL"] = jwksURL
	ts := startServer(t, env)

	st, r := ts.get(t, "/readyz", "")
	checks, _ := r.JSON["checks"].(map[string]any)
	keys, _ := checks["forge_keys"].(string)
	if st != http.StatusServiceUnavailable || r.ErrCode != "not_ready" || !strings.HasPrefix(keys, "no keys yet: fetching "+jwksURL+" failed: ") ||
		!strings.Contains(keys, "connection refused") || !strings.Contains(keys, "retrying at ") {
		t.Fatalf("readyz: %d %s", st, r.Body)
	}
	body := string(r.Body)
	if n := strings.Count(body, "no keys yet"); n != 1 {
		t.Errorf("readyz says it %d times: %s", n, body)
	}
	for _, stutter := range []string{"forge:", "jwk.", "forge keys", `Get \"`} {
		if strings.Contains(body, stutter) {
			t.Errorf("readyz contains %q: %s", stutter, body)
		}
	}
	if msg := r.JSON["error"].(map[string]any)["message"]; msg != "not ready: forge_keys (see checks)" {
		t.Errorf("readyz message %q", msg)
	}
	if !strings.Contains(ts.Logs.String(), `"msg":"jwks fetch failed; no keys yet"`) || !strings.Contains(ts.Logs.String(), `"retry_in":`) ||
		strings.Contains(ts.Logs.String(), "keeping the keys held") {
		t.Errorf("logs:\n%s", ts.Logs)
	}

	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": http.StatusServiceUnavailable} {
		get := ts.do(t, http.MethodGet, path, nil, "")
		head, err := http.NewRequest(http.MethodHead, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(head)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || get.Status != want || len(b) != 0 || resp.Header.Get("Content-Type") != get.CType {
			t.Errorf("HEAD %s: %d %q %q, GET: %d %q", path, resp.StatusCode, b, resp.Header.Get("Content-Type"), get.Status, get.CType)
		}
	}
}

// A call to a resolver that does not exist is told so in words meant for the
// caller: no Go package prefix (it used to read `resolvers: unknown resolver "x"`).
func TestUnknownResolverMessage(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	ts := startServer(t, baseEnv(t, forgetest.NewJWKSServer(t, key)))
	ts.waitReady(t)
	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal("712020:abc"), forgetest.WithTimes(time.Now(), time.Now().Add(time.Hour)))
	for _, c := range []struct{ path, body string }{
		{"/resolvers/x", `{}`},
		{"/resolvers", `{"call":{"functionKey":"x","payload":{}}}`},
	} {
		r := ts.post(t, c.path, fit, nil, c.body)
		if r.Status != http.StatusNotFound || r.ErrCode != "unknown_resolver" || r.JSON["error"].(map[string]any)["message"] != `unknown resolver "x"` {
			t.Errorf("%s: %d %s", c.path, r.Status, r.Body)
		}
	}
}
