package forge_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// capturer records what the middleware hands it and fails with err.
type capturer struct {
	err    error
	tokens []string
}

func (c *capturer) Capture(_ context.Context, inv *forge.Invocation, token string) error {
	c.tokens = append(c.tokens, inv.InstallationID()+" "+token)
	return c.err
}

// serve sends one request through Middleware and answers what next saw.
func serve(t *testing.T, mw func(http.Handler) http.Handler, authorization, appToken string) (*httptest.ResponseRecorder, *forge.Invocation) {
	t.Helper()
	var seen *forge.Invocation
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inv, ok := forge.InvocationFrom(r.Context())
		if !ok {
			t.Error("next ran without an invocation in the context")
		}
		seen = inv
		w.WriteHeader(http.StatusNoContent)
	})
	req := httptest.NewRequest(http.MethodPost, "/resolvers/token", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if appToken != "" {
		req.Header.Set(forge.AppTokenHeader, appToken)
	}
	rec := httptest.NewRecorder()
	mw(next).ServeHTTP(rec, req)
	return rec, seen
}

func TestMiddleware(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv := forgetest.NewJWKSServer(t, key)
	reg := prometheus.NewRegistry()
	v := newVerifier(t, srv, func(c *forge.VerifierConfig) { c.Registerer = reg })
	mw := forge.Middleware(v)

	t.Run("a good FIT reaches next with its invocation", func(t *testing.T) {
		rec, inv := serve(t, mw, "bearer "+forgetest.MintFIT(t, key), "")
		if rec.Code != http.StatusNoContent || inv == nil || inv.Principal != forgetest.AccountID {
			t.Fatalf("status %d, invocation %+v", rec.Code, inv)
		}
	})

	for _, tc := range []struct {
		name, authorization, want string
	}{
		{"no header", "", `{"error":{"code":"invalid_invocation_token","message":"Forge invocation token rejected: missing_token"}}`},
		{"another scheme", "Basic " + forgetest.MintFIT(t, key), `{"error":{"code":"invalid_invocation_token","message":"Forge invocation token rejected: missing_token"}}`},
		{"another app's FIT", "Bearer " + forgetest.MintFIT(t, key, forgetest.WithAudience("ari:cloud:ecosystem::app/00000000-0000-0000-0000-000000000000")),
			`{"error":{"code":"invalid_invocation_token","message":"Forge invocation token rejected: bad_audience"}}`},
	} {
		t.Run(tc.name+" is a 401", func(t *testing.T) {
			rec, inv := serve(t, mw, tc.authorization, "")
			if rec.Code != http.StatusUnauthorized || inv != nil {
				t.Fatalf("status %d, next ran: %v", rec.Code, inv != nil)
			}
			if got := rec.Body.String(); got != tc.want {
				t.Errorf("body %s, want %s", got, tc.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	// The one FIT rejection counter counts the middleware's own refusal too.
	if got := counter(t, reg, "forge_fit_rejections_total", "reason", "missing_token"); got != 2 {
		t.Errorf(`forge_fit_rejections_total{reason="missing_token"} = %v, want 2`, got)
	}

	t.Run("app token capture", func(t *testing.T) {
		c := &capturer{}
		mw := forge.Middleware(v, forge.WithAppTokenCapture(c))
		rec, _ := serve(t, mw, "Bearer "+forgetest.MintFIT(t, key, forgetest.WithInstallation("i1", "c1")), "apptoken")
		if rec.Code != http.StatusNoContent || len(c.tokens) != 1 || c.tokens[0] != "ari:cloud:ecosystem::installation/i1 apptoken" {
			t.Fatalf("status %d, captured %q", rec.Code, c.tokens)
		}
	})

	t.Run("a failed capture refuses a trigger, not a user", func(t *testing.T) {
		boom := errors.New("store down")
		var refused error
		mw := forge.Middleware(v, forge.WithAppTokenCapture(&capturer{err: boom}),
			forge.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
				refused = err
				if _, ok := forge.InvocationFrom(r.Context()); !ok {
					t.Error("the error handler of a verified call has no invocation")
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
		if rec, inv := serve(t, mw, "Bearer "+forgetest.MintFIT(t, key), "apptoken"); rec.Code != http.StatusNoContent || inv == nil {
			t.Errorf("user's call: status %d", rec.Code)
		}
		if refused != nil {
			t.Errorf("user's call refused: %v", refused)
		}
		rec, inv := serve(t, mw, "Bearer "+forgetest.MintFIT(t, key, forgetest.WithPrincipal("")), "apptoken")
		if rec.Code != http.StatusServiceUnavailable || inv != nil || !errors.Is(refused, boom) {
			t.Errorf("trigger's call: status %d, next ran %v, error %v", rec.Code, inv != nil, refused)
		}
	})
}

func TestMiddlewareKeysUnavailable(t *testing.T) {
	srv := forgetest.NewJWKSServer(t)
	srv.SetDown(true)
	v := newVerifier(t, srv)
	rec, inv := serve(t, forge.Middleware(v), "Bearer "+forgetest.MintFIT(t, forgetest.NewKey(t, "k1")), "")
	if rec.Code != http.StatusServiceUnavailable || inv != nil {
		t.Fatalf("status %d, next ran %v", rec.Code, inv != nil)
	}
	if want := `{"error":{"code":"keys_unavailable","message":"Forge signing keys are not loaded yet; retry shortly"}}`; rec.Body.String() != want {
		t.Errorf("body %s, want %s", rec.Body, want)
	}
}

func TestInvocationFrom(t *testing.T) {
	if inv, ok := forge.InvocationFrom(context.Background()); ok || inv != nil {
		t.Errorf("InvocationFrom(empty) = %v, %v", inv, ok)
	}
	want := &forge.Invocation{Principal: "a"}
	if inv, ok := forge.InvocationFrom(forge.NewContext(context.Background(), want)); !ok || inv != want {
		t.Errorf("InvocationFrom(NewContext) = %v, %v", inv, ok)
	}
	if _, ok := forge.InvocationFrom(forge.NewContext(context.Background(), nil)); ok {
		t.Error("a nil invocation is found")
	}
}
