package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// TestAccessLogNamesTheCall: the access log line names the request by its
// id, the error code of a refusal (forge.Middleware's included) and the
// installation and module of a verified call, all carried by the request's
// context from the middleware that learnt them.
func TestAccessLogNamesTheCall(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	env := map[string]string{"FORGE_APP_ID": forgetest.AppID, "FORGE_JWKS_URL": jwks.URL(), "STORE_URL": "memory://"}
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	s, err := New(context.Background(), cfg, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	for _, tc := range []struct {
		name, path, fit  string
		status           int
		body, code, inst string
		closeStore       bool
	}{
		{"no FIT", "/resolvers/token", "", 401,
			`{"error":{"code":"invalid_invocation_token","message":"Forge invocation token rejected: missing_token"}}`, "invalid_invocation_token", "", false},
		{"a verified call", "/resolvers/nope", forgetest.MintFIT(t, key, forgetest.WithInstallation("i-1", "c-1")), 404,
			`{"error":{"code":"unknown_resolver","message":"unknown resolver \"nope\""}}`, "unknown_resolver", "ari:cloud:ecosystem::installation/i-1", false},
		// Refused inside forge.Middleware after verification: the trigger's
		// app token cannot be stored. The line still names the installation.
		{"a trigger whose app token cannot be stored", "/triggers/scheduled",
			forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithInstallation("i-2", "c-2")), 503,
			"", "store_unavailable", "ari:cloud:ecosystem::installation/i-2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(`{}`))
			req.Header.Set("X-Request-Id", "req-"+strings.ReplaceAll(tc.name, " ", "-"))
			if tc.fit != "" {
				req.Header.Set("Authorization", "Bearer "+tc.fit)
			}
			if tc.closeStore {
				req.Header.Set("x-forge-oauth-system", forgetest.MintAppToken(t, time.Now().Add(3*time.Hour)))
				if err := s.kv.Close(); err != nil {
					t.Fatal(err)
				}
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != tc.status || (tc.body != "" && w.Body.String() != tc.body) {
				t.Fatalf("answer %d %s, want %d %s", w.Code, w.Body, tc.status, tc.body)
			}
			lines := logs.FilterMessage("request").FilterField(zap.String("request_id", req.Header.Get("X-Request-Id"))).All()
			if len(lines) != 1 {
				t.Fatalf("%d access-log lines, want 1", len(lines))
			}
			f := lines[0].ContextMap()
			if f["error_code"] != tc.code {
				t.Errorf("error_code %v, want %s", f["error_code"], tc.code)
			}
			if inst, _ := f["installation_id"].(string); inst != tc.inst {
				t.Errorf("installation_id %q, want %q", inst, tc.inst)
			}
			if tc.inst != "" && f["module"] != forgetest.ModuleKey {
				t.Errorf("module %v, want %s", f["module"], forgetest.ModuleKey)
			}
		})
	}
}
