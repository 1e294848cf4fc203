package server_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/corpus"
)

// FuzzForgeRoutes sends arbitrary bodies with a valid FIT to every Forge
// route: client garbage is never answered 5xx, and every answer is JSON.
func FuzzForgeRoutes(f *testing.F) {
	key := forgetest.NewKey(f, "k1")
	srv, _ := newServer(f, key)
	fit := "Bearer " + forgetest.MintFIT(f, key, forgetest.WithTimes(time.Now(), time.Now().Add(time.Hour)))
	routes := []string{"/resolvers/token", "/resolvers", "/triggers/lifecycle", "/triggers/scheduled", "/resolvers/other", "/triggers/uninstall"}
	for i, s := range []string{`{"refresh":true}`, `{"call":{"functionKey":"token","payload":{}}}`, `{"payload":{"eventType":"avi:forge:installed:app"}}`, `{}`, `[[[[`, `{"refresh":"x"}`, "\x00"} {
		f.Add(uint8(i), []byte(s))
	}
	// What Forge really sends, each to its own route.
	for dir, route := range map[string]int{"resolver": 0, "lifecycle": 2, "scheduled": 3, "uninstall": 5} {
		for _, c := range corpus.Read(f, dir) {
			if strings.Contains(c.Path, "envelope") {
				f.Add(uint8(1), c.Data)
				continue
			}
			f.Add(uint8(route), c.Data)
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := routes[int(route)%len(routes)]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", fit)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", path, body, w.Code, w.Body)
		}
		if w.Body.Len() > 0 && w.Header().Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("POST %s: content-type %q", path, w.Header().Get("Content-Type"))
		}
	})
}
