package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// Every resolver answer carries Cache-Control: no-store, the token's (a
// bearer token) and the chat's (a chat id), by path and by envelope, and the
// refusals too; answers that carry neither are left alone.
func TestResolverAnswersAreNotStored(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	srv, _ := newServer(t, key)
	conf := forgetest.NewConfluenceWith(t, confluencesim.Options{AnyContent: true})
	fit := forgetest.MintFIT(t, key, forgetest.WithAPIBaseURL(conf.APIBaseURL(forgetest.CloudID)))
	userTok := conf.IssueUserToken(t, forgetest.AccountID, time.Now().Add(3*time.Hour))
	appTok := forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))
	do := func(path, fit, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fit)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-forge-oauth-system", appTok)
		req.Header.Set("x-forge-oauth-user", userTok)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		return w
	}
	for _, tc := range []struct {
		name, path, fit, body string
		status                int
		answer                string // in the body
	}{
		{"token", "/resolvers/token", fit, `{"refresh":false}`, http.StatusOK, `"access_token":"wyu_`},
		{"token by envelope", "/resolvers", fit, `{"call":{"functionKey":"token","payload":{}}}`, http.StatusOK, `"access_token":"wyu_`},
		{"chat", "/resolvers/chat", fit, `{}`, http.StatusOK, `"app_id":`},
		{"chat by envelope", "/resolvers", fit, `{"call":{"functionKey":"chat","payload":{}}}`, http.StatusOK, `"app_id":`},
		{"refused", "/resolvers/token", forgetest.MintFIT(t, key, forgetest.WithPrincipal("")), `{}`, http.StatusForbidden, `"no_user"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(tc.path, tc.fit, tc.body)
			if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.answer) {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Fatalf("Cache-Control %q, want no-store", got)
			}
		})
	}
	w := do("/triggers/scheduled", forgetest.MintFIT(t, key, forgetest.WithPrincipal("")), `{}`)
	if w.Code != http.StatusAccepted || w.Header().Get("Cache-Control") != "" {
		t.Fatalf("scheduled: %d, Cache-Control %q", w.Code, w.Header().Get("Cache-Control"))
	}
}
