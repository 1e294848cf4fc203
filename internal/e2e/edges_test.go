package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/connect/connecttest"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/store/bolt"
)

// A FIT whose app.apiBaseUrl is cleartext off loopback is refused (401
// invalid_invocation_token, reason insecure_api_base_url) before its app
// token is captured: the token would be sent there. On loopback (the
// Confluence fake here) http is accepted.
func TestFITAPIBaseURLMustBeHTTPS(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	ts := startServer(t, baseEnv(t, forgetest.NewJWKSServer(t, key)))
	ts.waitReady(t)
	conf := forgetest.NewConfluence(t)
	appTok := map[string]string{"x-forge-oauth-system": conf.IssueAppToken(t, time.Now().Add(3*time.Hour))}

	evil := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithAPIBaseURL("http://evil.example/ex/confluence/"+forgetest.CloudID))
	r := ts.post(t, "/triggers/scheduled", evil, appTok, "{}")
	if r.Status != http.StatusUnauthorized || r.ErrCode != "invalid_invocation_token" {
		t.Fatalf("http apiBaseUrl: %d %s, want 401 invalid_invocation_token", r.Status, r.Body)
	}
	if msg, _ := r.JSON["error"].(map[string]any)["message"].(string); !strings.HasSuffix(msg, "insecure_api_base_url") {
		t.Fatalf("the refusal does not say why: %q", msg)
	}
	if r := ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID); r.Status != http.StatusNotFound {
		t.Fatalf("the refused FIT's app token was captured: %d %s", r.Status, r.Body)
	}

	base := conf.APIBaseURL(forgetest.CloudID)
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("the Confluence fake is not on loopback http: %s", base)
	}
	ok := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithAPIBaseURL(base))
	if r := ts.post(t, "/triggers/scheduled", ok, appTok, "{}"); r.Status != http.StatusAccepted {
		t.Fatalf("loopback http apiBaseUrl: %d %s", r.Status, r.Body)
	}
	if r := ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID); r.Status != http.StatusOK || r.str("api_base_url") != base {
		t.Fatalf("app token after the loopback FIT: %d %s", r.Status, r.Body)
	}
}

// Connect's sharedSecret is kept nowhere: a genuine install records the
// mapping only, and the secrets an earlier server stored are deleted at start
// (whatever key sealed them), the mapping kept; a second start finds nothing
// to do.
func TestConnectSharedSecretsDropped(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	installKey := forgetest.NewKey(t, "install-kid-1")
	ks := connecttest.NewKeyServer(t, installKey)
	env := baseEnv(t, forgetest.NewJWKSServer(t, key))
	path := filepath.Join(t.TempDir(), "x.db")
	env["STORE_URL"] = "bolt://" + path
	env["CONNECT_APP_KEY"] = connectAppKey
	env["CONNECT_BASE_URL"] = connectBaseURL
	env["CONNECT_KEYS_URL"] = ks.URL()
	keys := func(t *testing.T, prefix string) []string {
		t.Helper()
		b, err := bolt.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		var ks []string
		if err := b.Scan(t.Context(), prefix, func(k string, _ []byte) error { ks = append(ks, k); return nil }); err != nil {
			t.Fatal(err)
		}
		return ks
	}
	// As an earlier server left them (beneath the sealing: this one could
	// not even open them).
	b, err := bolt.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"connect/secret/ari%3Acloud%3Aecosystem%3A%3Ainstallation%2Fold-1", "connect/secret/old-2"} {
		if err := b.Put(t.Context(), k, []byte("sealed-by-an-earlier-server"), 0); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()

	ts := startServer(t, env)
	ts.waitReady(t)
	const secret = "connect-shared-secret-never-kept-7a1b"
	in := connecttest.Install{
		AppKey: connectAppKey, ClientKey: "connect-client-key-a", SharedSecret: secret, BaseURL: connectSite,
		InstallationID: "ari:cloud:ecosystem::installation/" + forgetest.InstallationID, Event: connect.EventInstalled,
		Aud: connectBaseURL, Path: "/installed",
	}
	if r := ts.do(t, http.MethodPost, "/connect/installed", map[string]string{"Authorization": "JWT " + in.Token(t, installKey)}, in.Body()); r.Status != http.StatusOK {
		t.Fatalf("install: %d %s", r.Status, r.Body)
	}
	ts.Stop(t)
	if got := keys(t, "connect/secret/"); len(got) != 0 {
		t.Fatalf("shared secrets in the store: %v", got)
	}
	if got := keys(t, "connect/installation/"); len(got) != 1 {
		t.Fatalf("mappings: %v", got)
	}

	ts = startServer(t, env)
	ts.waitReady(t)
	if v := ts.connectKeys(t); len(v.Keys) != 1 || v.Keys[0].ClientKey != "connect-client-key-a" {
		t.Fatalf("after a second start: %+v", v)
	}
	ts.Stop(t)
	if strings.Contains(ts.Logs.String(), "not deleted") {
		t.Fatalf("the cleanup failed: %s", ts.Logs)
	}
}

// An install key server that is down answers Connect's installed callback
// with 503 and a JSON error (Atlassian retries), never 401 (a refused
// install), and records nothing; once it is back the same install records.
func TestConnectKeyServerDown(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	installKey := forgetest.NewKey(t, "install-kid-1")
	ks := connecttest.NewKeyServer(t, installKey)
	env := baseEnv(t, forgetest.NewJWKSServer(t, key))
	env["CONNECT_APP_KEY"] = connectAppKey
	env["CONNECT_BASE_URL"] = connectBaseURL
	env["CONNECT_KEYS_URL"] = ks.URL()
	ts := startServer(t, env)
	ts.waitReady(t)
	in := connecttest.Install{
		AppKey: connectAppKey, ClientKey: "connect-client-key-a", BaseURL: connectSite,
		InstallationID: "ari:cloud:ecosystem::installation/" + forgetest.InstallationID, Event: connect.EventInstalled,
		Aud: connectBaseURL, Path: "/installed",
	}
	send := func() reply {
		return ts.do(t, http.MethodPost, "/connect/installed", map[string]string{"Authorization": "JWT " + in.Token(t, installKey)}, in.Body())
	}

	ks.SetDown(true)
	r := send()
	if r.Status != http.StatusServiceUnavailable || r.ErrCode != "connect_keys_unavailable" || !strings.HasPrefix(r.CType, "application/json") {
		t.Fatalf("key server down: %d %s %s, want 503 connect_keys_unavailable", r.Status, r.CType, r.Body)
	}
	if v := ts.connectKeys(t); len(v.Keys) != 0 {
		t.Fatalf("recorded while unverified: %+v", v)
	}
	ks.SetDown(false)
	if r := send(); r.Status != http.StatusOK {
		t.Fatalf("key server back: %d %s", r.Status, r.Body)
	}
	if v := ts.connectKeys(t); len(v.Keys) != 1 {
		t.Fatalf("after the retry: %+v", v)
	}
}
