package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/server"
)

// Hostile clients against the real server: big and oversized headers, slow
// clients, thousands of idle connections, JSON bombs, odd content types and
// methods. Every answer the handlers give is JSON; what net/http answers on
// its own (431, a cut-off connection) is asserted as such.

// A FIT with a 32 KiB header (Forge's large `context` claims) is accepted;
// headers past MaxHeaderBytes are refused with 431 before any handler runs.
func TestHostileHeaders(t *testing.T) {
	f := newTokenFixture(t)
	pad := func(n int) forgetest.FITOption {
		return forgetest.WithClaims(func(c map[string]any) {
			c["context"].(map[string]any)["extension"].(map[string]any)["macroBody"] = strings.Repeat("x", n)
		})
	}
	fit := forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("acc-big-header"), pad(24<<10))
	if n := len("Authorization: Bearer " + fit); n < 32<<10 {
		t.Fatalf("the FIT header is %d bytes, want at least 32 KiB", n)
	}
	r := f.ts.post(t, "/resolvers/token", fit, nil, `{}`)
	if r.Status != http.StatusOK || !strings.HasPrefix(r.str("access_token"), "wyu_") {
		t.Fatalf("32 KiB FIT: %d %s", r.Status, r.Body)
	}

	// 60 KiB of headers in all (the big FIT and padding) is still under the limit.
	fit = forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("acc-big-header"), pad(24<<10))
	r = f.ts.post(t, "/resolvers/token", fit, map[string]string{"X-Padding": strings.Repeat("p", 26<<10)}, `{}`)
	if r.Status != http.StatusOK {
		t.Fatalf("60 KiB of headers: %d %s", r.Status, r.Body)
	}

	// Over the limit: 431 from net/http, and the connection is closed.
	for _, size := range []int{72 << 10, 1 << 20} {
		req := "POST /resolvers/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
			"Authorization: Bearer " + fit + "\r\nX-Padding: " + strings.Repeat("p", size) + "\r\nContent-Length: 2\r\n\r\n{}"
		resp, _ := rawExchange(t, f.ts.URL, req)
		if resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d KiB of headers: %v, want 431", size>>10, statusOf(resp))
		}
	}
	if r := f.ts.post(t, "/resolvers/token", forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("acc-big-header")), nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("after the refused headers: %d %s", r.Status, r.Body)
	}
}

// Oversize bodies are refused with 413 JSON, at once when Content-Length says
// so (nothing is read), on every route that takes a body.
func TestHostileOversizeBodies(t *testing.T) {
	f := newTokenFixture(t)
	fit := func() string { return forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("acc-oversize")) }
	big := `{"x":"` + strings.Repeat("a", server.MaxBodyBytes) + `"}`
	for _, path := range []string{"/resolvers/token", "/resolvers", "/triggers/lifecycle", "/triggers/scheduled"} {
		r := f.ts.post(t, path, fit(), nil, big)
		if r.Status != http.StatusRequestEntityTooLarge || r.ErrCode != "body_too_large" {
			t.Errorf("%s with 1 MiB+: %d %s", path, r.Status, r.Body)
		}
	}
	// A declared 1 GiB body that never comes is answered without waiting for it.
	req := "POST /resolvers/token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + fit() +
		"\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{"
	resp, body := rawExchange(t, f.ts.URL, req)
	if resp == nil || resp.StatusCode != http.StatusRequestEntityTooLarge || !isJSONError(body, "body_too_large") {
		t.Fatalf("declared 1 GiB body: %v %s", statusOf(resp), body)
	}
	if r := f.ts.post(t, "/resolvers/token", fit(), nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("a normal call after the oversize ones: %d %s", r.Status, r.Body)
	}
}

// Deep nesting is refused quickly with 400 JSON (no stack blow-up, the server
// keeps serving); a huge number of keys within 1 MiB never gives a 5xx.
func TestHostileJSONBombs(t *testing.T) {
	f := newTokenFixture(t)
	fit := func() string { return forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("acc-bomb")) }
	nest := func(depth int, open, close string) string {
		return strings.Repeat(open, depth) + "1" + strings.Repeat(close, depth)
	}
	arrays := nest(100_000, "[", "]")
	objects := nest(100_000, `{"a":`, "}")
	event := func(inner string) string {
		return `{"eventType":"avi:forge:installed:app","id":"ev-bomb","app":{"id":"` + forgetest.AppID + `"},"x":` + inner + `}`
	}
	cases := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"arrays in a resolver body", "/resolvers/token", `{"a":` + arrays + `}`, 400, "bad_request"},
		{"objects in a resolver body", "/resolvers/token", `{"a":` + objects + `}`, 400, "bad_request"},
		{"arrays in the envelope payload", "/resolvers", `{"call":{"functionKey":"token","payload":{"a":` + arrays + `}}}`, 400, "bad_request"},
		{"objects in the envelope context", "/resolvers", `{"call":{"functionKey":"token","payload":{}},"context":` + objects + `}`, 400, "bad_request"},
		{"arrays in a lifecycle event", "/triggers/lifecycle", event(arrays), 400, "bad_event"},
		{"unterminated nesting", "/resolvers/token", `{"a":` + strings.Repeat("[", 500_000), 400, "bad_request"},
		// Just under encoding/json's depth limit: valid, and served.
		{"9,000 levels in a resolver body", "/resolvers/token", `{"a":` + nest(9_000, "[", "]") + `}`, 200, ""},
		{"9,000 levels in the envelope", "/resolvers", `{"call":{"functionKey":"token","payload":{"a":` + nest(9_000, `{"a":`, "}") + `}}}`, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := f.ts.post(t, tc.path, fitFor(t, f.key, tc.path, "acc-bomb"), nil, tc.body)
			if r.Status != tc.status || r.ErrCode != tc.code {
				t.Fatalf("%d %q, want %d %q: %.200s", r.Status, r.ErrCode, tc.status, tc.code, r.Body)
			}
			t.Logf("answered in %v", time.Since(start).Round(time.Millisecond)) // no bound: the machine may be busy
		})
	}

	// ~100k distinct keys (and as many duplicates) within 1 MiB.
	var many, dups strings.Builder
	many.WriteString(`{`)
	dups.WriteString(`{`)
	for i := 0; many.Len() < server.MaxBodyBytes-64; i++ {
		fmt.Fprintf(&many, `"k%d":0,`, i)
	}
	for dups.Len() < server.MaxBodyBytes-64 {
		dups.WriteString(`"refresh":false,`)
	}
	many.WriteString(`"refresh":false}`)
	dups.WriteString(`"refresh":false}`)
	for name, c := range map[string]struct{ path, body string }{
		"many keys":              {"/resolvers/token", many.String()},
		"many duplicate keys":    {"/resolvers/token", dups.String()},
		"many keys in envelope":  {"/resolvers", `{"call":{"functionKey":"token","payload":{}},"context":` + many.String()[:server.MaxBodyBytes-200] + `"z":1}}`},
		"many keys in lifecycle": {"/triggers/lifecycle", `{"eventType":"avi:forge:installed:app","id":"ev-keys","x":` + many.String()[:server.MaxBodyBytes-200] + `"z":1}}`},
	} {
		start := time.Now()
		r := f.ts.post(t, c.path, fitFor(t, f.key, c.path, "acc-bomb"), nil, c.body)
		if r.Status >= 500 || (r.Status != 200 && r.Status != 400) {
			t.Errorf("%s (%d bytes): %d %.200s", name, len(c.body), r.Status, r.Body)
		}
		t.Logf("%s answered in %v", name, time.Since(start).Round(time.Millisecond))
	}
	if r := f.ts.post(t, "/resolvers/token", fit(), nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("after the bombs: %d %s", r.Status, r.Body)
	}
	if strings.Contains(f.ts.Logs.String(), "panic") {
		t.Fatalf("a bomb made the server panic:\n%s", f.ts.Logs)
	}
}

// The body is read as JSON whatever the content type says: valid JSON is
// served, anything else is a 400 JSON answer.
func TestHostileContentTypes(t *testing.T) {
	f := newTokenFixture(t)
	installed := `{"eventType":"avi:forge:installed:app","id":"ev-ct","app":{"id":"` + forgetest.AppID + `"}}`
	cases := []struct {
		ctype, path, body string
		status            int
		code              string
	}{
		{"text/plain", "/resolvers/token", `{"refresh":false}`, 200, ""},
		{"text/plain; charset=utf-8", "/resolvers", `{"call":{"functionKey":"token","payload":{}}}`, 200, ""},
		{"text/plain", "/triggers/lifecycle", installed, 200, ""},
		{"application/octet-stream", "/resolvers/token", `{}`, 200, ""},
		{"", "/resolvers/token", `{}`, 200, ""},
		{"text/plain", "/resolvers/token", `refresh please`, 400, "bad_request"},
		{"application/x-www-form-urlencoded", "/resolvers/token", `refresh=true`, 400, "bad_request"},
		{"multipart/form-data; boundary=x", "/resolvers", "--x\r\nContent-Disposition: form-data; name=\"call\"\r\n\r\ntoken\r\n--x--", 400, "bad_request"},
		{"application/xml", "/triggers/lifecycle", `<event type="installed"/>`, 400, "bad_event"},
		{"text/html", "/resolvers/token", "\xff\xfe{\x00}", 400, "bad_request"},
		{"application/json; charset=iso-8859-1", "/resolvers/token", `{"refresh":false}`, 200, ""},
		{"application/json", "/resolvers/token", `{"refresh":"\u00e9"}`, 400, "bad_request"},
	}
	for _, tc := range cases {
		h := map[string]string{"Authorization": "Bearer " + fitFor(t, f.key, tc.path, "acc-ctype")}
		if tc.ctype != "" {
			h["Content-Type"] = tc.ctype
		}
		var r reply
		if tc.ctype == "" {
			r = doWithoutContentType(t, f.ts.URL+tc.path, h, tc.body)
		} else {
			r = f.ts.do(t, http.MethodPost, tc.path, h, tc.body)
		}
		if r.Status != tc.status || r.ErrCode != tc.code {
			t.Errorf("%q to %s: %d %q, want %d %q: %.200s", tc.ctype, tc.path, r.Status, r.ErrCode, tc.status, tc.code, r.Body)
		}
	}
}

// Every other method on a POST route (and POST on a GET route) is 405 with a
// JSON body and an Allow header; HEAD has no body by HTTP's rules.
func TestHostileMethods(t *testing.T) {
	f := newTokenFixture(t)
	fit := forgetest.MintFIT(t, f.key)
	check := func(method, path, allow string) {
		t.Helper()
		r := f.ts.do(t, method, path, map[string]string{"Authorization": "Bearer " + fit}, "")
		if r.Status != http.StatusMethodNotAllowed || !strings.HasPrefix(r.CType, "application/json") {
			t.Errorf("%s %s: %d %q %s", method, path, r.Status, r.CType, r.Body)
			return
		}
		if got := r.Header.Get("Allow"); got != allow {
			t.Errorf("%s %s: Allow %q, want %q", method, path, got, allow)
		}
		if method == http.MethodHead {
			if len(r.Body) != 0 {
				t.Errorf("HEAD %s answered a body", path)
			}
			return
		}
		if r.ErrCode != "method_not_allowed" {
			t.Errorf("%s %s: code %q: %s", method, path, r.ErrCode, r.Body)
		}
	}
	for _, path := range []string{"/resolvers", "/resolvers/token", "/triggers/scheduled", "/triggers/lifecycle", "/triggers/uninstall"} {
		for _, m := range []string{http.MethodHead, http.MethodOptions, http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, "PROPFIND"} {
			check(m, path, http.MethodPost)
		}
	}
	for _, path := range []string{"/metrics", "/internal/app-token", "/internal/installations"} {
		check(http.MethodPost, path, http.MethodGet)
	}
	for _, path := range []string{"/healthz", "/readyz"} { // probes answer HEAD too
		check(http.MethodPost, path, "GET, HEAD")
	}
	// Nothing was done on the way: no installation recorded, no token minted.
	if f.wv.Mints() != 0 {
		t.Fatalf("a refused method minted %d tokens", f.wv.Mints())
	}
}

// A client that dribbles its headers is cut off by ReadHeaderTimeout, one that
// trickles its body by ReadTimeout (408 JSON), and an idle keep-alive
// connection by IdleTimeout; server.Options.Timeouts makes them short here.
func TestHostileSlowClients(t *testing.T) {
	t.Parallel()
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	// Write is not under test: long, so that no answer on a busy machine
	// runs into it.
	tm := server.Timeouts{ReadHeader: time.Second, Read: 2 * time.Second, Write: time.Minute, Idle: time.Second}
	ts := startServerWithTimeouts(t, baseEnv(t, jwks), tm)
	ts.waitReady(t)
	addr := strings.TrimPrefix(ts.URL, "http://")
	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""))

	t.Run("dribbled headers", func(t *testing.T) {
		t.Parallel()
		c := dial(t, addr)
		start := time.Now()
		go func() { // one byte every 200 ms: the headers would take minutes
			hdr := "POST /triggers/scheduled HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("s", 10_000)
			for i := range len(hdr) {
				if _, err := c.Write([]byte{hdr[i]}); err != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		// net/http answers a plain-text 400 (no handler ran) and hangs up.
		_ = c.SetReadDeadline(testwait.Deadline(t))
		answer, err := io.ReadAll(c)
		elapsed := time.Since(start)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("after %v: %v; want the connection closed", elapsed, err)
		}
		if len(answer) > 0 && !strings.HasPrefix(string(answer), "HTTP/1.1 400 ") {
			t.Fatalf("after %v the server answered %q", elapsed, answer)
		}
		if elapsed < tm.ReadHeader*8/10 {
			t.Fatalf("cut off after %v, before ReadHeaderTimeout %v", elapsed, tm.ReadHeader)
		}
		status, _, _ := strings.Cut(string(answer), "\r\n")
		t.Logf("dribbling client cut off after %v (ReadHeaderTimeout %v), answered %q", elapsed.Round(time.Millisecond), tm.ReadHeader, status)
	})

	t.Run("trickled body", func(t *testing.T) {
		t.Parallel()
		c := dial(t, addr)
		start := time.Now()
		_, err := io.WriteString(c, "POST /triggers/lifecycle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+fit+
			"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
		if err != nil {
			t.Fatal(err)
		}
		go func() { // one byte every 100 ms: the body would take minutes
			for {
				time.Sleep(100 * time.Millisecond)
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
		_ = c.SetReadDeadline(testwait.Deadline(t))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatalf("after %v: %v", elapsed, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !isJSONError(body, "body_timeout") {
			t.Fatalf("after %v: %d %s", elapsed, resp.StatusCode, body)
		}
		if elapsed < tm.Read*8/10 {
			t.Fatalf("cut off after %v, before ReadTimeout %v", elapsed, tm.Read)
		}
		t.Logf("trickling client answered 408 after %v (ReadTimeout %v)", elapsed.Round(time.Millisecond), tm.Read)
	})

	t.Run("idle keep-alive connection", func(t *testing.T) {
		t.Parallel()
		c := dial(t, addr)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz: %v %v", statusOf(resp), err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		start := time.Now()
		_ = c.SetReadDeadline(testwait.Deadline(t))
		if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection: read %d, %v; want it closed", n, err)
		}
		t.Logf("idle keep-alive connection closed after %v (IdleTimeout %v)", time.Since(start).Round(time.Millisecond), tm.Idle)
	})
}

// --- helpers shared by hostile_test.go, faults_test.go and soak_test.go ---

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawExchange writes req as is on a new connection and reads one answer.
func rawExchange(t *testing.T, baseURL string, req string) (*http.Response, []byte) {
	t.Helper()
	c := dial(t, strings.TrimPrefix(baseURL, "http://"))
	_ = c.SetDeadline(testwait.Deadline(t))
	go func() { _, _ = io.WriteString(c, req) }() // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Logf("raw exchange: %v", err)
		return nil, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func statusOf(resp *http.Response) any {
	if resp == nil {
		return "no answer"
	}
	return resp.Status
}

// isJSONError reports whether body is the error shape with code.
func isJSONError(body []byte, code string) bool {
	var e struct {
		Error struct {
			Code, Message string
		}
	}
	return json.Unmarshal(body, &e) == nil && e.Error.Code == code && e.Error.Message != ""
}

// doWithoutContentType posts body with headers and no Content-Type at all.
func doWithoutContentType(t *testing.T, url string, headers map[string]string, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header, Body: b, CType: resp.Header.Get("Content-Type")}
	if err := json.Unmarshal(b, &r.JSON); err != nil {
		t.Fatalf("answer is not JSON: %d %q", resp.StatusCode, b)
	}
	if e, ok := r.JSON["error"].(map[string]any); ok {
		r.ErrCode, _ = e["code"].(string)
	}
	return r
}

// startServerWithTimeouts is startServer with short http.Server timeouts, so
// slow-client tests finish in seconds.
func startServerWithTimeouts(t *testing.T, env map[string]string, tm server.Timeouts) *testServer {
	t.Helper()
	return startServerWith(t, env, server.Options{Timeouts: tm})
}

// sendReq sends req and reads a JSON answer (Status 0 and an error if the
// answer is not JSON).
func sendReq(c *http.Client, req *http.Request) (reply, error) {
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{Status: resp.StatusCode, Header: resp.Header, Body: b, CType: resp.Header.Get("Content-Type")}
	if !strings.HasPrefix(r.CType, "application/json") || json.Unmarshal(b, &r.JSON) != nil {
		return r, fmt.Errorf("answer %d is not JSON (%q): %.200q", resp.StatusCode, r.CType, b)
	}
	if e, ok := r.JSON["error"].(map[string]any); ok {
		r.ErrCode, _ = e["code"].(string)
	}
	return r, nil
}

// fitFor mints a user's FIT, or a trigger's (no principal, no context) for a
// trigger route, which refuses users' FITs.
func fitFor(t *testing.T, key *forgetest.Key, path, account string) string {
	t.Helper()
	if strings.HasPrefix(path, "/triggers/") {
		return forgetest.MintFIT(t, key, forgetest.WithPrincipal(""))
	}
	return forgetest.MintFIT(t, key, forgetest.WithPrincipal(account))
}
