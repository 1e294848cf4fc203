package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/secret/secrettest"
	"github.com/forge-remote/forge-remote/server"
)

// A Server holds its Config in a field fmt cannot call methods through, so
// the Config's secret types would not help: the Server prints without them.
func TestServerNeverPrintsSecrets(t *testing.T) {
	srv, _ := newServer(t, forgetest.NewKey(t, "k1"))
	secrettest.Hidden(t, secrettest.Print(t, srv), weavysim.APIKey)
}

// A negative timeout would be http.Server's "no limit": New refuses it.
func TestNewRefusesNegativeTimeouts(t *testing.T) {
	env := map[string]string{"FORGE_APP_ID": forgetest.AppID, "STORE_URL": "memory://"}
	cfg, err := server.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(t.Context(), cfg, server.Options{Timeouts: server.Timeouts{Idle: -time.Second}})
	if err == nil {
		srv.Close()
		t.Fatal("a negative timeout was accepted")
	}
	if !strings.Contains(err.Error(), "negative timeout") {
		t.Fatalf("error does not say what is wrong: %v", err)
	}
}
