package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/server"
	"github.com/forge-remote/forge-remote/weavy/weavytest"
)

// FuzzForgeRoutes sends arbitrary bodies with a valid FIT to every Forge
// route: client garbage is never answered 5xx, and every answer is JSON.
func FuzzForgeRoutes(f *testing.F) {
	key := forgetest.NewKey(f, "k1")
	jwks := forgetest.NewJWKSServer(f, key)
	wv := weavytest.New("")
	f.Cleanup(wv.Close)
	env := map[string]string{
		"FORGE_APP_ID": forgetest.AppID, "FORGE_JWKS_URL": jwks.URL(),
		"WEAVY_URL": wv.URL, "WEAVY_API_KEY": weavytest.APIKey, "STORE_URL": "memory://",
	}
	cfg, err := server.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		f.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, server.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	fit := "Bearer " + forgetest.MintFIT(f, key, forgetest.WithTimes(time.Now(), time.Now().Add(time.Hour)))
	routes := []string{"/resolvers/token", "/resolvers", "/triggers/lifecycle", "/triggers/scheduled", "/resolvers/other"}
	for i, s := range []string{`{"refresh":true}`, `{"call":{"functionKey":"token","payload":{}}}`, `{"payload":{"eventType":"avi:forge:installed:app"}}`, `{}`, `[[[[`, `{"refresh":"x"}`, "\x00"} {
		f.Add(uint8(i), []byte(s))
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
