package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/connect/connecttest"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/server"
)

// No log line, at debug level, carries the shared secret: not for a
// recorded install, not for a refused one, not for an uninstall.
func TestConnectSecretNeverLogged(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	installKey := forgetest.NewKey(t, "install-kid")
	ks := connecttest.NewKeyServer(t, installKey)
	env := map[string]string{
		"FORGE_APP_ID": forgetest.AppID, "FORGE_JWKS_URL": forgetest.NewJWKSServer(t, key).URL(),
		"STORE_URL": "memory://", "INTERNAL_API_TOKEN": "internal-0123456789abcdef",
		"CONNECT_APP_KEY": "com.example.app", "CONNECT_BASE_URL": "https://remote.example.com",
		"CONNECT_KEYS_URL": ks.URL(),
	}
	cfg, err := server.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	srv, err := server.New(context.Background(), cfg, server.Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)

	const secret = "shared-secret-never-logged-0123456789"
	in := connecttest.Install{AppKey: "com.example.app", ClientKey: "ck-1", SharedSecret: secret,
		BaseURL: "https://acme.atlassian.net/wiki", InstallationID: "inst-1", Event: connect.EventInstalled,
		Aud: "https://remote.example.com", Path: "/connect/installed"}
	bad := in
	bad.Iss = "someone-else"
	un := in
	un.Event, un.Path = connect.EventUninstalled, "/connect/uninstalled"
	for _, c := range []struct {
		path string
		in   connecttest.Install
		want int
	}{{"/connect/installed", in, 200}, {"/connect/installed", bad, 401}, {"/connect/uninstalled", un, 200}} {
		req := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.in.Body()))
		req.Header.Set("Authorization", "JWT "+c.in.Token(t, installKey))
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code != c.want || strings.Contains(w.Body.String(), secret) {
			t.Fatalf("%s: %d %s", c.path, w.Code, w.Body)
		}
	}
	// The verified Lifecycle does not even hold it, whatever a future log line does with it.
	v, err := connect.NewVerifier(connect.VerifierConfig{AppKey: "com.example.app", BaseURL: "https://remote.example.com",
		Keys: connect.NewKeySource(connect.KeySourceOptions{Override: ks.URL()})})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := v.Verify(t.Context(), connect.Request{Method: http.MethodPost, EscapedPath: "/connect/installed",
		Authorization: "JWT " + in.Token(t, installKey), Body: []byte(in.Body())}, connect.EventInstalled)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(lc)
	if s := fmt.Sprintf("%#v %s", *lc, js); strings.Contains(s, secret) {
		t.Fatalf("the verified Lifecycle holds the secret: %s", s)
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged: the check below would prove nothing")
	}
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, secret) {
			t.Fatalf("log line carries the secret: %s", line)
		}
	}
}

// A Connect misconfiguration stops the start, naming the variable.
func TestConnectConfig(t *testing.T) {
	base := map[string]string{"FORGE_APP_ID": forgetest.AppID}
	cases := []struct {
		name string
		env  map[string]string
		want string // "" = valid
	}{
		{"off", nil, ""},
		{"on", map[string]string{"CONNECT_APP_KEY": "com.example.app", "CONNECT_BASE_URL": "https://remote.example.com"}, ""},
		{"on under /connect", map[string]string{"CONNECT_APP_KEY": "com.example.app", "CONNECT_BASE_URL": "https://remote.example.com/connect/"}, ""},
		{"loopback keys over http", map[string]string{"CONNECT_APP_KEY": "a", "CONNECT_BASE_URL": "https://r.example.com", "CONNECT_KEYS_URL": "http://127.0.0.1:9999"}, ""},
		{"key without base", map[string]string{"CONNECT_APP_KEY": "com.example.app"}, "CONNECT_BASE_URL"},
		{"base without key", map[string]string{"CONNECT_BASE_URL": "https://remote.example.com"}, "CONNECT_APP_KEY"},
		{"keys without key", map[string]string{"CONNECT_KEYS_URL": "https://keys.example.com"}, "CONNECT_APP_KEY"},
		{"bad key", map[string]string{"CONNECT_APP_KEY": "com example/app", "CONNECT_BASE_URL": "https://r.example.com"}, "CONNECT_APP_KEY"},
		{"http base", map[string]string{"CONNECT_APP_KEY": "a", "CONNECT_BASE_URL": "http://r.example.com"}, "CONNECT_BASE_URL"},
		{"base with another path", map[string]string{"CONNECT_APP_KEY": "a", "CONNECT_BASE_URL": "https://r.example.com/app"}, "CONNECT_BASE_URL"},
		{"base with query", map[string]string{"CONNECT_APP_KEY": "a", "CONNECT_BASE_URL": "https://r.example.com?x=1"}, "CONNECT_BASE_URL"},
		{"http keys off loopback", map[string]string{"CONNECT_APP_KEY": "a", "CONNECT_BASE_URL": "https://r.example.com", "CONNECT_KEYS_URL": "http://keys.example.com"}, "CONNECT_KEYS_URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := server.LoadConfig(func(k string) string { return env[k] })
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
		})
	}
}
