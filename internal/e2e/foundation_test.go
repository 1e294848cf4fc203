package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/server"
)

// A FIT that fails verification is answered 401 JSON and changes nothing: the
// app token it carries is not captured.
func TestFITVerification(t *testing.T) {
	key := forgetest.NewKey(t, "forge/invocation-token/wf-"+"11111111-2222-4333-8444-555555555555")
	stranger := forgetest.NewKey(t, "forge/invocation-token/wf-unpublished")
	jwks := forgetest.NewJWKSServer(t, key)
	ts := startServer(t, baseEnv(t, jwks))
	ts.waitReady(t)
	now := time.Now()

	cases := []struct {
		name   string
		header string // full Authorization header; "" = none
		want   int
	}{
		{"valid", "Bearer " + forgetest.MintFIT(t, key), http.StatusAccepted},
		{"lower-case scheme", "bearer " + forgetest.MintFIT(t, key), http.StatusAccepted},
		{"3 s clock skew", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithTimes(now.Add(3*time.Second), now.Add(forgetest.MintLifetime))), http.StatusAccepted},
		{"missing header", "", http.StatusUnauthorized},
		{"other scheme", "Basic " + forgetest.MintFIT(t, key), http.StatusUnauthorized},
		{"garbage", "Bearer not.a.jwt", http.StatusUnauthorized},
		{"alg none", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithMethod(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType)), http.StatusUnauthorized},
		{"HS256 with the public key", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithMethod(jwt.SigningMethodHS256, key.PublicPEM())), http.StatusUnauthorized},
		{"RS512 right key", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithMethod(jwt.SigningMethodRS512, key.Private)), http.StatusUnauthorized},
		{"PS256 right key", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithMethod(jwt.SigningMethodPS256, key.Private)), http.StatusUnauthorized},
		{"unpublished key", "Bearer " + forgetest.MintFIT(t, stranger), http.StatusUnauthorized},
		{"tampered payload", "Bearer " + tamper(forgetest.MintFIT(t, key)), http.StatusUnauthorized},
		{"another app", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithAudience("ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000000")), http.StatusUnauthorized},
		{"wrong issuer", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithIssuer("forge/not-invocation")), http.StatusUnauthorized},
		{"expired", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithTimes(now.Add(-time.Minute), now.Add(-30*time.Second))), http.StatusUnauthorized},
		// An hour ahead, so that no slowness brings it within the leeway.
		{"not yet valid", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithTimes(now.Add(time.Hour), now.Add(2*time.Hour))), http.StatusUnauthorized},
		{"no exp", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithoutExp()), http.StatusUnauthorized},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inst := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
			// Re-mint valid cases for this installation so capture is observable.
			header := tc.header
			if tc.want == http.StatusAccepted {
				scheme, _, _ := strings.Cut(header, " ")
				iat := time.Now()
				if tc.name == "3 s clock skew" {
					iat = iat.Add(3 * time.Second)
				}
				header = scheme + " " + forgetest.MintFIT(t, key, forgetest.WithPrincipal(""),
					forgetest.WithInstallation(inst, forgetest.CloudID),
					forgetest.WithTimes(iat, iat.Add(forgetest.MintLifetime)))
			}
			h := map[string]string{"x-forge-oauth-system": forgetest.MintAppToken(t, time.Now().Add(2*time.Hour))}
			if header != "" {
				h["Authorization"] = header
			}
			r := ts.do(t, http.MethodPost, "/triggers/scheduled", h, "{}")
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
			tok := ts.internal(t, "/internal/app-token?installationId=ari:cloud:ecosystem::installation/"+inst)
			if tc.want == http.StatusUnauthorized {
				if r.ErrCode != "invalid_invocation_token" {
					t.Errorf("error code %q, want invalid_invocation_token", r.ErrCode)
				}
				if tok.Status != http.StatusNotFound {
					t.Errorf("rejected call had a side effect: app token lookup %d %s", tok.Status, tok.Body)
				}
			} else if tok.Status != http.StatusOK {
				t.Errorf("accepted call's app token not captured: %d %s", tok.Status, tok.Body)
			}
		})
	}

	_, m := ts.get(t, "/metrics", "")
	for _, want := range []string{`forge_fit_rejections_total{reason="missing_token"}`, `forge_fit_rejections_total{reason="bad_audience"}`, `forge_jwks_fetches_total`} {
		if !strings.Contains(string(m.Body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// tamper changes one claim of a signed token without re-signing it.
func tamper(fit string) string {
	parts := strings.Split(fit, ".")
	p := []byte(parts[1])
	// Flip a character in the middle of the payload to another valid base64url one.
	i := len(p) / 2
	if p[i] == 'A' {
		p[i] = 'B'
	} else {
		p[i] = 'A'
	}
	return parts[0] + "." + string(p) + "." + parts[2]
}

// The app token: captured from a scheduled trigger, handed out, never replaced
// by an older one, reported stale rather than served, kept across a restart,
// and never in clear text in the database file.
func TestAppTokenLifecycle(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	env := baseEnv(t, jwks)
	dbPath := strings.TrimPrefix(env["STORE_URL"], "bolt://")
	ts := startServer(t, env)
	ts.waitReady(t)

	trigger := func(appToken string) reply {
		fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""))
		return ts.post(t, "/triggers/scheduled", fit, map[string]string{"x-forge-oauth-system": appToken}, "{}")
	}
	lookup := func() reply {
		return ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID)
	}

	if r := lookup(); r.Status != http.StatusNotFound || r.ErrCode != "unknown_installation" {
		t.Fatalf("before any call: %d %s", r.Status, r.Body)
	}
	later := forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))
	if r := trigger(later); r.Status != http.StatusAccepted {
		t.Fatalf("trigger: %d %s", r.Status, r.Body)
	}
	r := lookup()
	if r.Status != http.StatusOK || r.str("access_token") != later || r.str("api_base_url") != forgetest.APIBaseURL(forgetest.CloudID) || r.str("expires_at") == "" {
		t.Fatalf("lookup: %d %s", r.Status, r.Body)
	}
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}

	earlier := forgetest.MintAppToken(t, time.Now().Add(2*time.Hour))
	trigger(earlier)
	if r := lookup(); r.str("access_token") != later {
		t.Fatalf("a token with an earlier exp replaced the held one")
	}
	newest := forgetest.MintAppToken(t, time.Now().Add(4*time.Hour))
	trigger(newest)
	if r := lookup(); r.str("access_token") != newest {
		t.Fatalf("a token with a later exp was not captured")
	}

	// Listing shows freshness, never the token.
	list := ts.internal(t, "/internal/installations")
	if list.Status != http.StatusOK || strings.Contains(string(list.Body), newest) || !strings.Contains(string(list.Body), forgetest.InstallationID) {
		t.Fatalf("installations: %d %s", list.Status, list.Body)
	}

	// Restart on the same database: the token is still there.
	ts.Stop(t)
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{later, earlier, newest} {
		// Records hold a JWT's segments decoded (forge/apptoken_record.go),
		// so look for those bytes as well as the text.
		segs := strings.Split(tok, ".")
		payload, err1 := base64.RawURLEncoding.DecodeString(segs[1])
		sig, err2 := base64.RawURLEncoding.DecodeString(segs[2])
		if err1 != nil || err2 != nil || len(sig) < 16 {
			t.Fatalf("app token %d segments: %v %v", len(segs), err1, err2)
		}
		if strings.Contains(string(raw), tok) || strings.Contains(string(raw), segs[1]) ||
			bytes.Contains(raw, payload) || bytes.Contains(raw, sig) {
			t.Fatalf("database file holds an app token in clear text")
		}
	}
	if _, err := os.Stat(dbPath + ".key"); err != nil {
		t.Fatalf("no key file beside the database: %v", err)
	}
	ts = startServer(t, env)
	ts.waitReady(t)
	if r := lookup(); r.Status != http.StatusOK || r.str("access_token") != newest {
		t.Fatalf("after restart: %d %s", r.Status, r.Body)
	}

	// A token with less than 5 minutes left is reported stale, not served.
	inst2 := "11111111-0000-4000-8000-000000000002"
	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithInstallation(inst2, forgetest.CloudID))
	ts.post(t, "/triggers/scheduled", fit, map[string]string{"x-forge-oauth-system": forgetest.MintAppToken(t, time.Now().Add(4*time.Minute))}, "")
	r = ts.internal(t, "/internal/app-token?installationId=ari:cloud:ecosystem::installation/"+inst2)
	if r.Status != http.StatusConflict || r.ErrCode != "app_token_stale" || strings.Contains(string(r.Body), "eyJ") {
		t.Fatalf("stale token: %d %s", r.Status, r.Body)
	}
}

func TestInternalRoutesGuarded(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	env := baseEnv(t, jwks)
	ts := startServer(t, env)
	for _, tok := range []string{"", "wrong-token-0123456789", internalToken + "x"} {
		if st, r := ts.get(t, "/internal/installations", tok); st != http.StatusForbidden || r.ErrCode != "forbidden" {
			t.Errorf("token %q: %d %s", tok, st, r.Body)
		}
	}
	if r := ts.internal(t, "/internal/app-token"); r.Status != http.StatusBadRequest {
		t.Errorf("missing installationId: %d %s", r.Status, r.Body)
	}
	ts.Stop(t)

	delete(env, "INTERNAL_API_TOKEN")
	ts = startServer(t, env)
	if st, r := ts.get(t, "/internal/installations", internalToken); st != http.StatusNotFound || r.ErrCode != "not_found" {
		t.Errorf("unset INTERNAL_API_TOKEN: %d %s", st, r.Body)
	}
}

// Bad input gets a clear JSON error.
func TestBadRequests(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	ts := startServer(t, baseEnv(t, jwks))
	ts.waitReady(t)
	fit := func() string { return forgetest.MintFIT(t, key) }

	cases := []struct {
		name, method, path, body string
		auth                     bool
		wantStatus               int
		wantCode                 string
	}{
		{"unknown resolver", "POST", "/resolvers/nope", `{}`, true, 404, "unknown_resolver"},
		{"unknown resolver in envelope", "POST", "/resolvers", `{"call":{"functionKey":"nope","payload":{}}}`, true, 404, "unknown_resolver"},
		{"malformed JSON", "POST", "/resolvers/token", `{"refresh":`, true, 400, "bad_request"},
		{"payload not an object", "POST", "/resolvers/token", `[1,2]`, true, 400, "bad_request"},
		{"envelope without key", "POST", "/resolvers", `{"call":{}}`, true, 400, "bad_request"},
		{"empty envelope", "POST", "/resolvers", ``, true, 400, "bad_request"},
		{"oversize body", "POST", "/resolvers/token", `{"x":"` + strings.Repeat("a", server.MaxBodyBytes) + `"}`, true, 413, "body_too_large"},
		{"unknown route", "GET", "/nope", ``, false, 404, "not_found"},
		{"GET on a POST route", "GET", "/resolvers/token", ``, false, 405, "method_not_allowed"},
		{"trailing slash is not redirected", "POST", "/triggers/scheduled/", `{}`, true, 404, "not_found"},
		{"weavy not configured", "POST", "/resolvers/token", `{}`, true, 503, "weavy_not_configured"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.auth {
				h["Authorization"] = "Bearer " + fit()
			}
			r := ts.do(t, tc.method, tc.path, h, tc.body)
			if r.Status != tc.wantStatus || r.ErrCode != tc.wantCode {
				t.Fatalf("%d %q, want %d %q: %.200s", r.Status, r.ErrCode, tc.wantStatus, tc.wantCode, r.Body)
			}
			if msg, _ := r.JSON["error"].(map[string]any)["message"].(string); msg == "" {
				t.Errorf("error without a message")
			}
		})
	}

	// Chunked oversize body (no Content-Length) is cut off too.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/resolvers/token", &endlessReader{n: 2 << 20})
	req.Header.Set("Authorization", "Bearer "+fit())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversize body: %d", resp.StatusCode)
	}
}

type endlessReader struct{ n int }

func (r *endlessReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.n)
	for i := range n {
		p[i] = ' '
	}
	r.n -= n
	return n, nil
}

// With Forge's JWKS down at start, the server starts, says why it is not ready,
// answers Forge calls 503, and recovers by itself.
func TestJWKSDownAtStart(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	jwks.SetDown(true)
	ts := startServer(t, baseEnv(t, jwks))
	st, r := ts.get(t, "/readyz", "")
	if st != http.StatusServiceUnavailable || r.ErrCode != "not_ready" || !strings.Contains(string(r.Body), "forge") {
		t.Fatalf("readyz with JWKS down: %d %s", st, r.Body)
	}
	if st, _ := ts.get(t, "/healthz", ""); st != http.StatusOK {
		t.Fatalf("healthz: %d", st)
	}
	r2 := ts.post(t, "/triggers/scheduled", forgetest.MintFIT(t, key), nil, "{}")
	if r2.Status != http.StatusServiceUnavailable || r2.ErrCode != "keys_unavailable" {
		t.Fatalf("FIT route with no keys: %d %s", r2.Status, r2.Body)
	}
	jwks.SetDown(false)
	ts.waitReady(t)
	if r := ts.post(t, "/triggers/scheduled", forgetest.MintFIT(t, key, forgetest.WithPrincipal("")), nil, "{}"); r.Status != http.StatusAccepted {
		t.Fatalf("after recovery: %d %s", r.Status, r.Body)
	}
}

// A misconfiguration stops the start with a message naming the variable.
func TestConfigErrors(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	cases := map[string]map[string]string{
		"FORGE_APP_ID":       {"FORGE_APP_ID": ""},
		"FORGE_JWKS_URL":     {"FORGE_JWKS_URL": "ftp://x"},
		"WEAVY_API_KEY":      {"WEAVY_URL": "https://acme.weavy.io"},
		"WEAVY_URL":          {"WEAVY_API_KEY": "wys_x", "WEAVY_URL": ""},
		"WEAVY_TOKEN_TTL":    {"WEAVY_TOKEN_TTL": "forever"},
		"WEAVY_UID_SCOPE":    {"WEAVY_UID_SCOPE": "galaxy"},
		"WEAVY_TIMEOUT":      {"WEAVY_TIMEOUT": "1h"},
		"STORE_URL":          {"STORE_URL": "postgres://x"},
		"STORE_KEY":          {"STORE_KEY": "c2hvcnQ="},
		"LISTEN_ADDR":        {"LISTEN_ADDR": "nonsense"},
		"LOG_LEVEL":          {"LOG_LEVEL": "chatty"},
		"INTERNAL_API_TOKEN": {"INTERNAL_API_TOKEN": "short"},
		"JOB_CONCURRENCY":    {"JOB_CONCURRENCY": "0"},
		"PROFILE_RESYNC":     {"PROFILE_RESYNC": "7d"},
		"CHAT_CACHE_ENTRIES": {"CHAT_CACHE_ENTRIES": "999"},
		"WEAVY_URL ":         {"WEAVY_URL": "https://acme.weavy.io/?x=1", "WEAVY_API_KEY": "wys_x"},
		"WEAVY_API_KEY ":     {"WEAVY_URL": "https://acme.weavy.io", "WEAVY_API_KEY": "wys_ spaced"},
	}
	for name, override := range cases {
		t.Run(name, func(t *testing.T) {
			env := baseEnv(t, jwks)
			for k, v := range override {
				env[k] = v
			}
			var out, errOut syncBuffer
			err := run(context.Background(), []string{"forge-remote"}, func(k string) string { return env[k] }, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(name)) {
				t.Fatalf("err = %v, want one naming %s", err, name)
			}
		})
	}
	// A malformed STORE_URL is named but never echoed: it may hold a password.
	env := baseEnv(t, jwks)
	env["STORE_URL"] = "rediz://:s3cret@redis.internal:6379/0"
	if err := run(context.Background(), []string{"x"}, func(k string) string { return env[k] }, &syncBuffer{}, &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "STORE_URL") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("malformed STORE_URL: %v", err)
	}
	// Redis needs an explicit STORE_KEY: all replicas must seal alike.
	env = baseEnv(t, jwks)
	env["STORE_URL"] = "redis://127.0.0.1:1/0"
	if err := run(context.Background(), []string{"x"}, func(k string) string { return env[k] }, &syncBuffer{}, &syncBuffer{}); err == nil || !strings.Contains(err.Error(), "STORE_KEY") {
		t.Fatalf("redis without STORE_KEY: %v", err)
	}
}

// The bolt default works from a fresh directory and the key file is private.
func TestBoltKeyFile(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	env := baseEnv(t, jwks)
	dir := filepath.Join(t.TempDir(), "nested", "data")
	env["STORE_URL"] = "bolt://" + filepath.Join(dir, "x.db")
	ts := startServer(t, env)
	ts.waitReady(t)
	fi, err := os.Stat(filepath.Join(dir, "x.db.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode().Perm())
	}
	if strings.Count(ts.Logs.String(), "store key file created") != 1 {
		t.Fatalf("expected one log line about the key file")
	}
}

// A user's FIT is refused on the trigger routes (invokeRemote lets the UI
// choose the path): a user cannot uninstall their site's data, forge an
// install record or use up the scheduled trigger's dedupe window.
func TestTriggersRefuseUsersFITs(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	ts := startServer(t, baseEnv(t, jwks))
	ts.waitReady(t)
	appTok := map[string]string{"x-forge-oauth-system": forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))}
	if r := ts.post(t, "/triggers/scheduled", forgetest.MintFIT(t, key, forgetest.WithPrincipal("")), appTok, "{}"); r.Status != http.StatusAccepted {
		t.Fatalf("trigger FIT: %d %s", r.Status, r.Body)
	}
	for _, path := range []string{"/triggers/scheduled", "/triggers/lifecycle", "/triggers/uninstall"} {
		r := ts.post(t, path, forgetest.MintFIT(t, key), nil, `{"eventType":"avi:forge:installed:app","app":{"version":"99.0.0"}}`)
		if r.Status != http.StatusForbidden || r.ErrCode != "not_a_trigger" {
			t.Fatalf("user FIT on %s: %d %s", path, r.Status, r.Body)
		}
	}
	if r := ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID); r.Status != http.StatusOK {
		t.Fatalf("a refused uninstall purged the app token: %d %s", r.Status, r.Body)
	}
	if strings.Contains(string(ts.internal(t, "/internal/installations").Body), "99.0.0") {
		t.Fatal("a refused lifecycle call was recorded")
	}
}
