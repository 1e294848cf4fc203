package forge_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// fixedClock is a verifier and minting clock on a whole second (JWT times are
// seconds, so offsets stay exact).
func fixedClock() func() time.Time {
	now := time.Now().Truncate(time.Second)
	return func() time.Time { return now }
}

// newVerifier builds a verifier on srv, closed when the test ends.
func newVerifier(t testing.TB, srv *forgetest.JWKSServer, edit ...func(*forge.VerifierConfig)) *forge.Verifier {
	t.Helper()
	cfg := forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: srv.URL()}
	for _, e := range edit {
		e(&cfg)
	}
	v, err := forge.NewVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// reason is the VerifyError reason of err, "" if err is not one.
func reason(err error) string {
	var ve *forge.VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, what, cond)
}

// tamper re-encodes the payload of token after edit, keeping the signature.
func tamper(t *testing.T, token string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	edit(claims)
	if raw, err = json.Marshal(claims); err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

func TestVerify(t *testing.T) {
	var (
		key        = forgetest.NewKey(t, "forge/invocation-token/wf-1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b")
		noAlg      = forgetest.NewKey(t, "no-alg").WithAlg("")
		rs512      = forgetest.NewKey(t, "published-rs512").WithAlg("RS512")
		encKey     = forgetest.NewKey(t, "enc-key")
		unpublishd = forgetest.NewKey(t, key.Kid+"-never-published")
		now        = fixedClock()
		at         = forgetest.WithNow(now)
	)
	encKey.Use = "enc"
	srv := forgetest.NewJWKSServer(t, key, noAlg, rs512, encKey)
	logs, observed := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	v := newVerifier(t, srv, func(c *forge.VerifierConfig) {
		c.Now, c.Logger, c.Registerer = now, zap.New(logs), reg
	})

	valid := forgetest.MintFIT(t, key, at)
	tests := []struct {
		name   string
		token  string
		reason string // "" = accepted
		is     error  // when set, errors.Is(err, is) must hold
	}{
		{name: "valid", token: valid},
		{name: "trigger without principal", token: forgetest.MintFIT(t, key, at, forgetest.WithPrincipal(""))},
		{name: "aud as array", token: forgetest.MintFIT(t, key, at, forgetest.WithClaims(func(c map[string]any) {
			c["aud"] = []string{"something-else", forgetest.AppID}
		}))},
		{name: "JWK without alg", token: forgetest.MintFIT(t, noAlg, at)},
		{name: "3 s clock skew", token: forgetest.MintFIT(t, key, at, forgetest.WithTimes(now().Add(3*time.Second), now().Add(28*time.Second)))},
		{name: "expired within leeway", token: forgetest.MintFIT(t, key, at, forgetest.WithTimes(now().Add(-28*time.Second), now().Add(-3*time.Second)))},

		{name: "garbage", token: "not-a-jwt", reason: "malformed", is: jwt.ErrTokenMalformed},
		{name: "empty", token: "", reason: "malformed"},
		{name: "bad base64 payload", token: strings.Replace(valid, ".", ".%%", 1), reason: "malformed"},
		{name: "too large", token: valid + strings.Repeat("A", 64<<10), reason: "malformed"},
		{name: "exp as string", token: forgetest.MintFIT(t, key, at, forgetest.WithClaims(func(c map[string]any) { c["exp"] = "tomorrow" })), reason: "malformed"},
		{name: "alg none", token: forgetest.MintFIT(t, key, at, forgetest.WithMethod(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType)), reason: "bad_alg"},
		{name: "HS256 with the public key", token: forgetest.MintFIT(t, key, at, forgetest.WithMethod(jwt.SigningMethodHS256, key.PublicPEM())), reason: "bad_alg"},
		{name: "RS512 with the right key", token: forgetest.MintFIT(t, key, at, forgetest.WithMethod(jwt.SigningMethodRS512, key.Private)), reason: "bad_alg"},
		{name: "PS256 with the right key", token: forgetest.MintFIT(t, key, at, forgetest.WithMethod(jwt.SigningMethodPS256, key.Private)), reason: "bad_alg"},
		{name: "unknown alg", token: forgetest.MintFIT(t, key, at, forgetest.WithHeader(func(h map[string]any) { h["alg"] = "XS999" })), reason: "bad_alg"},
		{name: "no alg", token: forgetest.MintFIT(t, key, at, forgetest.WithHeader(func(h map[string]any) { delete(h, "alg") })), reason: "bad_alg"},
		{name: "key never published", token: forgetest.MintFIT(t, unpublishd, at), reason: "unknown_kid"},
		{name: "no kid", token: forgetest.MintFIT(t, key, at, forgetest.WithHeader(func(h map[string]any) { delete(h, "kid") })), reason: "unknown_kid"},
		{name: "kid not a string", token: forgetest.MintFIT(t, key, at, forgetest.WithHeader(func(h map[string]any) { h["kid"] = 7 })), reason: "unknown_kid"},
		{name: "kid of an enc key", token: forgetest.MintFIT(t, encKey, at), reason: "unknown_kid"},
		{name: "published kid, other key", token: forgetest.MintFIT(t, unpublishd, at, forgetest.WithHeader(func(h map[string]any) { h["kid"] = key.Kid })), reason: "bad_signature", is: jwt.ErrTokenSignatureInvalid},
		{name: "tampered payload", token: tamper(t, valid, func(c map[string]any) { c["principal"] = "557058:someone-else" }), reason: "bad_signature"},
		{name: "JWK published for RS512", token: forgetest.MintFIT(t, rs512, at), reason: "key_alg_mismatch"},
		{name: "other audience", token: forgetest.MintFIT(t, key, at, forgetest.WithAudience("ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000000")), reason: "bad_audience", is: jwt.ErrTokenInvalidAudience},
		{name: "no audience", token: forgetest.MintFIT(t, key, at, forgetest.WithClaims(func(c map[string]any) { delete(c, "aud") })), reason: "bad_audience"},
		{name: "wrong issuer", token: forgetest.MintFIT(t, key, at, forgetest.WithIssuer("forge/other")), reason: "bad_issuer", is: jwt.ErrTokenInvalidIssuer},
		{name: "no issuer", token: forgetest.MintFIT(t, key, at, forgetest.WithIssuer("")), reason: "bad_issuer"},
		{name: "expired", token: forgetest.MintFIT(t, key, at, forgetest.WithTimes(now().Add(-time.Minute), now().Add(-30*time.Second))), reason: "expired", is: jwt.ErrTokenExpired},
		{name: "nbf beyond leeway", token: forgetest.MintFIT(t, key, at, forgetest.WithTimes(now().Add(30*time.Second), now().Add(55*time.Second))), reason: "not_yet_valid", is: jwt.ErrTokenNotValidYet},
		{name: "iat beyond leeway", token: forgetest.MintFIT(t, key, at, forgetest.WithClaims(func(c map[string]any) { c["iat"] = now().Add(10 * time.Second).Unix() })), reason: "not_yet_valid", is: jwt.ErrTokenUsedBeforeIssued},
		{name: "no exp", token: forgetest.MintFIT(t, key, at, forgetest.WithoutExp()), reason: "missing_exp", is: jwt.ErrTokenRequiredClaimMissing},
		{name: "no installationId", token: forgetest.MintFIT(t, key, at, forgetest.WithClaims(func(c map[string]any) {
			delete(c["app"].(map[string]any), "installationId")
		})), reason: "missing_claims"},
		{name: "http apiBaseUrl", token: forgetest.MintFIT(t, key, at, forgetest.WithAPIBaseURL("http://evil.example/ex/confluence/"+forgetest.CloudID)), reason: "insecure_api_base_url", is: forge.ErrInsecureAPIBaseURL},
		{name: "http apiBaseUrl through user info", token: forgetest.MintFIT(t, key, at, forgetest.WithAPIBaseURL("http://127.0.0.1@evil.example")), reason: "insecure_api_base_url"},
		{name: "apiBaseUrl of another scheme", token: forgetest.MintFIT(t, key, at, forgetest.WithAPIBaseURL("ftp://api.atlassian.com/ex/confluence/"+forgetest.CloudID)), reason: "insecure_api_base_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := v.Verify(t.Context(), tt.token)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if inv.InstallationID() != forgetest.InstallationID || inv.CloudID() != forgetest.CloudID ||
					inv.APIBaseURL() != forgetest.APIBaseURL(forgetest.CloudID) {
					t.Errorf("claims not read: %+v", inv.App)
				}
				return
			}
			if inv != nil || reason(err) != tt.reason {
				t.Fatalf("Verify = %v, %v; want reason %s", inv, err, tt.reason)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "forge: ") {
				t.Errorf("error %q lacks the forge: prefix", msg)
			}
			for _, part := range strings.Split(tt.token, ".") {
				if len(part) > 8 && strings.Contains(msg, part) {
					t.Errorf("error %q contains part of the token", msg)
				}
			}
		})
	}

	t.Run("apiBaseUrl over http on loopback", func(t *testing.T) {
		for _, base := range []string{"http://127.0.0.1:38080/ex/confluence/" + forgetest.CloudID, "http://localhost:1/x", "http://[::1]:2/x"} {
			inv, err := v.Verify(t.Context(), forgetest.MintFIT(t, key, at, forgetest.WithAPIBaseURL(base)))
			if err != nil || inv.APIBaseURL() != base {
				t.Errorf("apiBaseUrl %s: %v, %v", base, inv, err)
			}
		}
		if msg := (&forge.VerifyError{Reason: "insecure_api_base_url", Err: forge.ErrInsecureAPIBaseURL}).Error(); !strings.Contains(msg, "app.apiBaseUrl") {
			t.Errorf("the refusal does not name the claim: %s", msg)
		}
	})

	t.Run("claims", func(t *testing.T) {
		inv, err := v.Verify(t.Context(), valid)
		if err != nil {
			t.Fatal(err)
		}
		if inv.Principal != forgetest.AccountID || inv.Context.AccountID != forgetest.AccountID ||
			inv.App.Module.Key != forgetest.ModuleKey || inv.App.Environment.Type != "DEVELOPMENT" ||
			inv.Issuer != forge.FITIssuer || inv.ExpiresAt.Sub(inv.IssuedAt.Time) != forgetest.MintLifetime {
			t.Errorf("unexpected claims: %+v", inv)
		}
	})

	t.Run("rejections are counted and logged without the token", func(t *testing.T) {
		want := map[string]int{}
		for _, tt := range tests {
			if tt.reason != "" {
				want[tt.reason]++
			}
		}
		for r, n := range want {
			if got := counter(t, reg, "forge_fit_rejections_total", "reason", r); got != float64(n) {
				t.Errorf("forge_fit_rejections_total{reason=%q} = %v, want %d", r, got, n)
			}
		}
		rejected := observed.FilterMessage("invocation token rejected").All()
		if len(rejected) != len(tests)-6 {
			t.Errorf("%d rejection logs, want %d", len(rejected), len(tests)-6)
		}
		for _, e := range rejected {
			if e.Level != zapcore.DebugLevel || len(e.Context) != 1 || e.Context[0].Key != "reason" {
				t.Errorf("rejection log %v %v: want debug with the reason only", e.Level, e.Context)
			}
		}
	})
}

// counter reads one sample of a counter or gauge from reg (0 if absent).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				match = match || lp.GetName() == label && lp.GetValue() == value
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestRotation(t *testing.T) {
	oldKey := forgetest.NewKey(t, "old")
	newKey := forgetest.NewKey(t, "new")
	srv := forgetest.NewJWKSServer(t, oldKey)
	reg := prometheus.NewRegistry()
	v := newVerifier(t, srv, func(c *forge.VerifierConfig) { c.Registerer = reg })
	if got := counter(t, reg, "forge_jwks_keys", "", ""); got != 1 {
		t.Errorf("forge_jwks_keys = %v, want 1", got)
	}

	const callers = 50
	tokens := make([]string, callers)
	for i := range tokens {
		tokens[i] = forgetest.MintFIT(t, newKey)
	}
	srv.SetKeys(oldKey, newKey) // Forge publishes the next key...

	start := make(chan struct{})
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for _, tok := range tokens {
		wg.Go(func() {
			<-start
			_, err := v.Verify(t.Context(), tok)
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Verify with the new key: %v", err)
		}
	}
	if n := srv.Fetches(); n > 2 {
		t.Errorf("%d JWKS fetches, want at most 2", n)
	}
	if got := counter(t, reg, "forge_jwks_keys", "", ""); got != 2 {
		t.Errorf("forge_jwks_keys = %v, want 2", got)
	}
	// Another unknown kid right after: the refetch is rate-limited.
	forged := forgetest.MintFIT(t, oldKey, forgetest.WithHeader(func(h map[string]any) { h["kid"] = "other-" + h["kid"].(string) }))
	if _, err := v.Verify(t.Context(), forged); reason(err) != "unknown_kid" {
		t.Fatalf("unknown kid within MinRefetchInterval: %v, want unknown_kid", err)
	}
	if n := srv.Fetches(); n > 2 {
		t.Errorf("%d JWKS fetches after a rate-limited refetch, want at most 2", n)
	}
}

func TestUnknownKidsAreRateLimited(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv := forgetest.NewJWKSServer(t, key)
	v := newVerifier(t, srv)

	const n = 300
	tokens := make([]string, n)
	for i := range tokens {
		kid := fmt.Sprintf("random-%d-%d", i, time.Now().UnixNano())
		tokens[i] = forgetest.MintFIT(t, key, forgetest.WithHeader(func(h map[string]any) { h["kid"] = kid }))
	}
	// A few callers each working through their share: bursts and stragglers,
	// so both the shared fetch and the rate limit are exercised.
	const callers = 10
	var wg sync.WaitGroup
	reasons := make(chan string, n)
	for c := range callers {
		wg.Go(func() {
			for i := c; i < n; i += callers {
				_, err := v.Verify(t.Context(), tokens[i])
				reasons <- reason(err)
			}
		})
	}
	wg.Wait()
	close(reasons)
	for r := range reasons {
		if r != "unknown_kid" {
			t.Fatalf("reason %q, want unknown_kid", r)
		}
	}
	if got := srv.Fetches(); got > 5 {
		t.Errorf("%d JWKS fetches for %d unknown kids, want at most 5", got, n)
	}
	if _, err := v.Verify(t.Context(), forgetest.MintFIT(t, key)); err != nil {
		t.Errorf("known key after the storm: %v", err)
	}
}

func TestKeysKeptWhenFetchFails(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv := forgetest.NewJWKSServer(t, key)
	logs, observed := observer.New(zapcore.WarnLevel)
	reg := prometheus.NewRegistry()
	v := newVerifier(t, srv, func(c *forge.VerifierConfig) {
		c.RefreshInterval = 10 * time.Millisecond
		c.Logger, c.Registerer = zap.New(logs), reg
	})

	faults := []struct {
		name  string
		apply func()
	}{
		{"down", func() { srv.SetDown(true) }},
		{"garbage", func() {
			srv.SetHandler(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"keys":[{"kty":`)) })
		}},
		{"empty set", func() {
			srv.SetHandler(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) })
		}},
		{"no usable key", func() {
			enc := *key
			enc.Use = "enc"
			srv.SetKeys(&enc)
		}},
		{"html", func() {
			srv.SetHandler(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`<html>maintenance</html>`)) })
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			defer func() { srv.SetDown(false); srv.SetHandler(nil); srv.SetKeys(key) }()
			f.apply()
			before := srv.Fetches()
			waitFor(t, "two failed periodic refreshes", func() bool { return srv.Fetches() >= before+2 })
			if _, err := v.Verify(t.Context(), forgetest.MintFIT(t, key)); err != nil {
				t.Errorf("known key while the endpoint fails: %v", err)
			}
			if err := v.Ready(); err != nil {
				t.Errorf("Ready: %v", err)
			}
		})
	}

	failed := observed.FilterMessage("jwks fetch failed; keeping the keys held").All()
	if len(failed) == 0 {
		t.Fatal("no warning logged for failed fetches")
	}
	if f := failed[0].ContextMap(); f["url"] != srv.URL() || f["error"] == nil {
		t.Errorf("warning fields %v: want url and error", f)
	}
	if counter(t, reg, "forge_jwks_fetches_total", "result", "error") == 0 || counter(t, reg, "forge_jwks_fetches_total", "result", "ok") == 0 {
		t.Error("forge_jwks_fetches_total not counted")
	}
}

func TestEndpointDownAtStart(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv := forgetest.NewJWKSServer(t, key)
	srv.SetDown(true)
	v := newVerifier(t, srv, func(c *forge.VerifierConfig) { c.RetryInterval = 10 * time.Millisecond })

	tok := forgetest.MintFIT(t, key)
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, forge.ErrKeysUnavailable) || reason(err) != "" {
		t.Fatalf("Verify before any key set = %v, want ErrKeysUnavailable", err)
	}
	err := v.Ready()
	if !errors.Is(err, forge.ErrKeysUnavailable) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Ready = %v, want ErrKeysUnavailable saying why", err)
	}
	// A malformed token is still a 401, keys or not.
	if _, err := v.Verify(t.Context(), "garbage"); reason(err) != "malformed" {
		t.Errorf("garbage before any key set = %v, want malformed", err)
	}

	srv.SetDown(false)
	waitFor(t, "Ready", func() bool { return v.Ready() == nil })
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify once loaded: %v", err)
	}
}

// The key endpoint hangs until the test ends, and the verifier's HTTP client
// has no timeout: only the callers' contexts can end their waits, so that a
// wait that ignored them would meet go test's -timeout, however fast or slow
// the machine.
func TestSlowEndpoint(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv := forgetest.NewJWKSServer(t, key)
	var hanging atomic.Int64
	hang := func(w http.ResponseWriter, r *http.Request) {
		hanging.Add(1)
		defer hanging.Add(-1)
		srv.Hang(w, r)
	}
	noTimeout := func(c *forge.VerifierConfig) { c.HTTPClient = &http.Client{} }

	t.Run("NewVerifier honours its ctx", func(t *testing.T) {
		srv.SetHandler(hang)
		defer srv.SetHandler(nil)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		cfg := forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: srv.URL()}
		noTimeout(&cfg)
		v, err := forge.NewVerifier(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if v.Ready() == nil {
			t.Error("Ready with no key set")
		}
	})

	t.Run("a waiting caller honours its ctx", func(t *testing.T) {
		v := newVerifier(t, srv, noTimeout)
		srv.SetHandler(hang)
		defer srv.SetHandler(nil)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := v.Verify(ctx, forgetest.MintFIT(t, forgetest.NewKey(t, "rotated")))
		if !errors.Is(err, context.DeadlineExceeded) || reason(err) != "" {
			t.Fatalf("Verify = %v, want the ctx error", err)
		}
		// The refetch outlives its caller: it reaches the key server (on a
		// busy machine, after the caller gave up) and hangs there. The known
		// key is unaffected while it does.
		waitFor(t, "the refetch to reach the key server", func() bool { return hanging.Load() > 0 })
		if _, err := v.Verify(t.Context(), forgetest.MintFIT(t, key)); err != nil {
			t.Errorf("known key during a hung refetch: %v", err)
		}
		if hanging.Load() == 0 {
			t.Error("the refetch ended before the known key was verified: nothing shown")
		}
	})
}

func TestCloseStopsEverything(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv := forgetest.NewJWKSServer(t, key)
	ignore := goleak.IgnoreCurrent() // the server's own goroutines

	v, err := forge.NewVerifier(t.Context(), forge.VerifierConfig{
		AppID: forgetest.AppID, JWKSURL: srv.URL(), RefreshInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "periodic refreshes", func() bool { return srv.Fetches() >= 3 })
	srv.SetHandler(srv.Hang) // a fetch is in flight when Close comes
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, _ = v.Verify(ctx, forgetest.MintFIT(t, key, forgetest.WithHeader(func(h map[string]any) { h["kid"] = "x" })))
	v.Close()
	v.Close() // idempotent
	testwait.NoLeaks(t, ignore)

	if _, err := v.Verify(t.Context(), forgetest.MintFIT(t, key)); err != nil {
		t.Errorf("known key after Close: %v", err)
	}
}

func TestNewVerifierConfig(t *testing.T) {
	srv := forgetest.NewJWKSServer(t, forgetest.NewKey(t, "k1"))
	tests := []struct {
		name string
		cfg  forge.VerifierConfig
	}{
		{"no app id", forge.VerifierConfig{JWKSURL: srv.URL()}},
		{"bare uuid app id", forge.VerifierConfig{AppID: strings.TrimPrefix(forgetest.AppID, "ari:cloud:ecosystem::app/"), JWKSURL: srv.URL()}},
		{"no JWKS URL", forge.VerifierConfig{AppID: forgetest.AppID}},
		{"relative JWKS URL", forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: "/jwks.json"}},
		{"file JWKS URL", forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: "file:///etc/jwks.json"}},
		{"cleartext JWKS URL", forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: "http://keys.example.com/jwks.json"}},
		{"negative leeway", forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: srv.URL(), Leeway: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := forge.NewVerifier(t.Context(), tt.cfg)
			if err == nil {
				v.Close()
				t.Fatal("NewVerifier accepted a bad config")
			}
			if !strings.HasPrefix(err.Error(), "forge: ") {
				t.Errorf("error %q lacks the forge: prefix", err)
			}
		})
	}
	if srv.Fetches() != 0 {
		t.Errorf("a bad config fetched keys")
	}

	t.Run("two verifiers share one registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for range 2 {
			newVerifier(t, srv, func(c *forge.VerifierConfig) { c.Registerer = reg })
		}
		if got := counter(t, reg, "forge_jwks_fetches_total", "result", "ok"); got != 2 {
			t.Errorf("forge_jwks_fetches_total{result=ok} = %v, want 2", got)
		}
	})
}

// BenchmarkVerify measures the hot path: distinct, freshly signed FITs, keys
// in memory.
func BenchmarkVerify(b *testing.B) {
	key := forgetest.NewKey(b, "forge/invocation-token/wf-bench")
	srv := forgetest.NewJWKSServer(b, key)
	now := fixedClock()
	v := newVerifier(b, srv, func(c *forge.VerifierConfig) { c.Now = now })
	tokens := make([]string, 512)
	for i := range tokens {
		tokens[i] = forgetest.MintFIT(b, key, forgetest.WithNow(now))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := v.Verify(ctx, tokens[i%len(tokens)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkVerifyParallel is BenchmarkVerify from every P: the key map is
// shared and must not become a point of contention.
func BenchmarkVerifyParallel(b *testing.B) {
	key := forgetest.NewKey(b, "forge/invocation-token/wf-bench")
	srv := forgetest.NewJWKSServer(b, key)
	now := fixedClock()
	v := newVerifier(b, srv, func(c *forge.VerifierConfig) { c.Now = now })
	tokens := make([]string, 512)
	for i := range tokens {
		tokens[i] = forgetest.MintFIT(b, key, forgetest.WithNow(now))
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := v.Verify(ctx, tokens[i%len(tokens)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkRS256VerifyBare is the floor under BenchmarkVerify: the RSA
// signature check alone, same key size, digest computed beforehand.
func BenchmarkRS256VerifyBare(b *testing.B) {
	key := forgetest.NewKey(b, "bare")
	tok := forgetest.MintFIT(b, key)
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte(tok[:i]))
	pub := key.Public()
	b.ReportAllocs()
	for b.Loop() {
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}
