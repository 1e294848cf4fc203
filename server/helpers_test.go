package server_test

import (
	"context"
	"testing"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/server"
)

// newServer builds a real server (not listening) on a memory store, with a
// JWKS publishing key and a fake Weavy; everything is closed with tb.
func newServer(tb testing.TB, key *forgetest.Key) (*server.Server, *weavysim.Server) {
	tb.Helper()
	jwks := forgetest.NewJWKSServer(tb, key)
	wv := weavysim.New("")
	tb.Cleanup(wv.Close)
	env := map[string]string{
		"FORGE_APP_ID": forgetest.AppID, "FORGE_JWKS_URL": jwks.URL(),
		"WEAVY_URL": wv.URL, "WEAVY_API_KEY": weavysim.APIKey,
		"STORE_URL": "memory://", "LOG_LEVEL": "warn",
	}
	cfg, err := server.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, server.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	return srv, wv
}
