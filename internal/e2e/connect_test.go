package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/connect/connecttest"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

const (
	connectAppKey  = "com.example.weavy-chat"
	connectBaseURL = "https://remote.example.com/connect"
	connectSite    = "https://acme.atlassian.net/wiki"
)

type connectKeysView struct {
	Keys []struct {
		InstallationID string    `json:"installation_id"`
		CloudID        string    `json:"cloud_id"`
		ClientKey      string    `json:"client_key"`
		SiteURL        string    `json:"site_url"`
		CapturedAt     time.Time `json:"captured_at"`
		Source         string    `json:"source"`
	} `json:"connect_keys"`
}

func (ts *testServer) connectKeys(t *testing.T) connectKeysView {
	t.Helper()
	r := ts.internal(t, "/internal/connect-keys")
	var v connectKeysView
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &v) != nil {
		t.Fatalf("connect-keys: %d %s", r.Status, r.Body)
	}
	return v
}

// Connect's signed installs end to end against a fake install key server:
// every forgery is a 401 that records nothing, a genuine one records the
// mapping; lookups by clientKey answer as by installationId; the shared
// secret is in no answer, no log line and not in clear in the bolt file;
// Connect's uninstall keeps the mapping, Forge's purges it.
func TestConnectSignedInstall(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	conf := forgetest.NewConfluence(t)
	installKey := forgetest.NewKey(t, "install-kid-1")
	ks := connecttest.NewKeyServer(t, installKey)
	env := baseEnv(t, jwks)
	env["CONNECT_APP_KEY"] = connectAppKey
	env["CONNECT_BASE_URL"] = connectBaseURL
	env["CONNECT_KEYS_URL"] = ks.URL()
	ts := startServer(t, env)
	ts.waitReady(t)

	const inst, cloud = "aaaaaaaa-0000-4000-8000-00000000000a", "c10dc10d-0000-4000-8000-00000000000a"
	const instARI = "ari:cloud:ecosystem::installation/" + inst
	const secret = "connect-shared-secret-6f1c0e2a9b7d4c3e8a5f"
	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithInstallation(inst, cloud), forgetest.WithAPIBaseURL(conf.APIBaseURL(cloud)))
	appTok := map[string]string{"x-forge-oauth-system": conf.IssueAppToken(t, time.Now().Add(3*time.Hour))}
	installed := `{"eventType":"avi:forge:installed:app","id":"` + instARI + `","app":{"id":"` + forgetest.AppID + `","version":"1.0.0"}}`
	if r := ts.post(t, "/triggers/lifecycle", fit, appTok, installed); r.Status != http.StatusOK {
		t.Fatalf("forge install: %d %s", r.Status, r.Body)
	}

	good := connecttest.Install{
		AppKey: connectAppKey, ClientKey: "connect-client-key-a", SharedSecret: secret, BaseURL: connectSite,
		InstallationID: instARI, Event: connect.EventInstalled, Aud: connectBaseURL, Path: "/installed",
	}
	send := func(path string, in connecttest.Install, signer *forgetest.Key) reply {
		return ts.do(t, http.MethodPost, path, map[string]string{"Authorization": "JWT " + in.Token(t, signer)}, in.Body())
	}
	refusals := []struct {
		name string
		edit func(*connecttest.Install)
	}{
		{"wrong aud", func(i *connecttest.Install) { i.Aud = "https://other-vendor.example.com" }},
		{"unknown kid", func(i *connecttest.Install) { i.Edit = func(h, _ map[string]any) { h["kid"] = "install-kid-unknown" } }},
		{"HS256", func(i *connecttest.Install) { i.Edit = func(h, _ map[string]any) { h["alg"] = "HS256" } }},
		{"none", func(i *connecttest.Install) { i.Edit = func(h, _ map[string]any) { h["alg"] = "none" } }},
		{"iss is not the body's clientKey", func(i *connecttest.Install) { i.Iss = "connect-client-key-b" }},
		{"wrong qsh", func(i *connecttest.Install) { i.Path = "/uninstalled" }},
		{"expired", func(i *connecttest.Install) { i.Now = time.Now().Add(-time.Hour) }},
		{"baseUrl outside Atlassian", func(i *connecttest.Install) { i.BaseURL = "https://acme.example.org/wiki" }},
	}
	for _, tc := range refusals {
		in := good
		tc.edit(&in)
		r := send("/connect/installed", in, installKey)
		if r.Status != http.StatusUnauthorized || r.ErrCode != "invalid_connect_token" {
			t.Errorf("%s: %d %s, want 401 invalid_connect_token", tc.name, r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), secret) {
			t.Errorf("%s: the refusal shows the shared secret", tc.name)
		}
	}
	if v := ts.connectKeys(t); len(v.Keys) != 0 {
		t.Fatalf("refused installs recorded %+v", v.Keys)
	}

	r := send("/connect/installed", good, installKey)
	if r.Status != http.StatusOK {
		t.Fatalf("a correctly signed install: %d %s", r.Status, r.Body)
	}
	v := ts.connectKeys(t)
	if len(v.Keys) != 1 {
		t.Fatalf("connect-keys after the install: %+v", v)
	}
	got := v.Keys[0]
	if got.InstallationID != instARI || got.ClientKey != "connect-client-key-a" || got.CloudID != cloud ||
		got.SiteURL != connectSite || got.Source != connect.SourceConnectInstall || got.CapturedAt.IsZero() {
		t.Fatalf("mapping %+v", got)
	}

	byInst := ts.internal(t, "/internal/app-token?installationId="+instARI)
	byKey := ts.internal(t, "/internal/app-token?clientKey=connect-client-key-a")
	if byInst.Status != http.StatusOK || byKey.Status != byInst.Status || string(byKey.Body) != string(byInst.Body) {
		t.Fatalf("by clientKey %d %s, by installationId %d %s", byKey.Status, byKey.Body, byInst.Status, byInst.Body)
	}
	if r := ts.internal(t, "/internal/app-token?clientKey=nobody"); r.Status != http.StatusNotFound || r.ErrCode != "unknown_installation" {
		t.Fatalf("unknown clientKey: %d %s", r.Status, r.Body)
	}
	list := ts.internal(t, "/internal/installations")
	if !strings.Contains(string(list.Body), `"connect_client_key":"connect-client-key-a"`) {
		t.Fatalf("installations lack the clientKey: %s", list.Body)
	}

	// Connect's uninstall is acknowledged; the mapping stays.
	un := good
	un.Event, un.Path, un.SharedSecret = connect.EventUninstalled, "/uninstalled", ""
	if r := send("/connect/uninstalled", un, installKey); r.Status != http.StatusOK {
		t.Fatalf("connect uninstalled: %d %s", r.Status, r.Body)
	}
	if v := ts.connectKeys(t); len(v.Keys) != 1 {
		t.Fatalf("Connect's uninstall dropped the mapping: %+v", v)
	}
	if ks.Hits() != 2 { // install-kid-1 once, install-kid-unknown once; HS256, none and the foreign site none
		t.Errorf("%d key server hits, want 2", ks.Hits())
	}

	// The secret is in no answer, no log line, and not in clear in the store.
	for _, path := range []string{"/internal/connect-keys", "/internal/installations", "/internal/app-token?clientKey=connect-client-key-a", "/metrics"} {
		if r := ts.internal(t, path); strings.Contains(string(r.Body), secret) {
			t.Fatalf("%s shows the shared secret", path)
		}
	}
	db, err := os.ReadFile(strings.TrimPrefix(env["STORE_URL"], "bolt://"))
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret))} {
		if strings.Contains(string(db), form) || strings.Contains(ts.Logs.String(), form) {
			t.Fatalf("the shared secret is in clear in the bolt file or the logs")
		}
	}
	if !strings.Contains(ts.Logs.String(), "connect install recorded") {
		t.Fatalf("the install was not logged: %s", ts.Logs)
	}

	// Forge's uninstall purges the mapping with everything else.
	if r := ts.post(t, "/triggers/uninstall", fit, nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("forge uninstall: %d %s", r.Status, r.Body)
	}
	waitPurged(t, ts)
	if v := ts.connectKeys(t); len(v.Keys) != 0 {
		t.Fatalf("the mapping survived the Forge uninstall: %+v", v)
	}
	if r := ts.internal(t, "/internal/app-token?clientKey=connect-client-key-a"); r.Status != http.StatusNotFound {
		t.Fatalf("clientKey lookup after the uninstall: %d %s", r.Status, r.Body)
	}
}

// The reserved app property fills the mapping of an installation that never
// sent a Connect install; a site without it is asked once, not on every
// trigger of the hour.
func TestConnectClientKeyFromAppProperty(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	conf := forgetest.NewConfluence(t)
	env := baseEnv(t, jwks)
	env["CONNECT_APP_KEY"] = connectAppKey
	env["CONNECT_BASE_URL"] = "https://remote.example.com"
	ts := startServer(t, env)
	ts.waitReady(t)

	const instA, cloudA = "aaaaaaaa-0000-4000-8000-00000000000a", "c10dc10d-0000-4000-8000-00000000000a"
	const instB, cloudB = "bbbbbbbb-0000-4000-8000-00000000000b", "c10dc10d-0000-4000-8000-00000000000b"
	conf.SetConnectClientKey(cloudA, connectAppKey, "connect-client-key-a")
	fitFor := func(inst, cloud string) string {
		return forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithInstallation(inst, cloud), forgetest.WithAPIBaseURL(conf.APIBaseURL(cloud)))
	}
	appTok := map[string]string{"x-forge-oauth-system": conf.IssueAppToken(t, time.Now().Add(3*time.Hour))}
	installed := `{"eventType":"avi:forge:installed:app","app":{"id":"` + forgetest.AppID + `","version":"1.0.0"}}`
	for _, f := range []string{fitFor(instA, cloudA), fitFor(instB, cloudB)} {
		if r := ts.post(t, "/triggers/lifecycle", f, appTok, installed); r.Status != http.StatusOK {
			t.Fatalf("forge install: %d %s", r.Status, r.Body)
		}
	}
	propertyCalls := func(cloud string) int {
		n := 0
		for _, r := range conf.Requests() {
			if strings.Contains(r, cloud+"/wiki/rest/atlassian-connect/1/addons/"+connectAppKey+"/properties/"+connect.PropertyKey) {
				n++
			}
		}
		return n
	}
	// The jobs run off the request path: wait for both (testwait.For has no deadline of its own).
	testwait.For(t, "both installations' capture jobs", func() bool { return connectJobRuns(t, ts) >= 2 })

	v := ts.connectKeys(t)
	if len(v.Keys) != 1 || v.Keys[0].InstallationID != "ari:cloud:ecosystem::installation/"+instA ||
		v.Keys[0].ClientKey != "connect-client-key-a" || v.Keys[0].CloudID != cloudA || v.Keys[0].Source != connect.SourceAppProperty {
		t.Fatalf("connect-keys: %+v", v)
	}
	byInst := ts.internal(t, "/internal/app-token?installationId=ari:cloud:ecosystem::installation/"+instA)
	byKey := ts.internal(t, "/internal/app-token?clientKey=connect-client-key-a")
	if byKey.Status != http.StatusOK || string(byKey.Body) != string(byInst.Body) {
		t.Fatalf("by clientKey %d %s, by installationId %s", byKey.Status, byKey.Body, byInst.Body)
	}
	if propertyCalls(cloudA) != 1 || propertyCalls(cloudB) != 1 {
		t.Fatalf("property calls: A %d, B %d", propertyCalls(cloudA), propertyCalls(cloudB))
	}

	// The hourly trigger queues the job again: A is known, B failed within the hour.
	for _, f := range []string{fitFor(instA, cloudA), fitFor(instB, cloudB)} {
		if r := ts.post(t, "/triggers/scheduled", f, appTok, `{}`); r.Status != http.StatusAccepted {
			t.Fatalf("scheduled: %d %s", r.Status, r.Body)
		}
	}
	testwait.For(t, "the scheduled capture jobs", func() bool { return connectJobRuns(t, ts) >= 4 })
	if propertyCalls(cloudA) != 1 || propertyCalls(cloudB) != 1 {
		t.Fatalf("asked again: A %d, B %d property calls", propertyCalls(cloudA), propertyCalls(cloudB))
	}
}

// connectJobRuns counts the capture job's finished runs.
func connectJobRuns(t *testing.T, ts *testServer) int { return jobRuns(t, ts, "connect_client_key") }

// jobRuns sums scheduler_job_runs_total for one job, whatever the result: a
// test waits on it to know a run finished instead of sleeping.
func jobRuns(t *testing.T, ts *testServer, job string) int {
	t.Helper()
	_, r := ts.get(t, "/metrics", "")
	n := 0
	for _, line := range strings.Split(string(r.Body), "\n") {
		if strings.HasPrefix(line, `scheduler_job_runs_total{job="`+job+`"`) {
			var v float64
			if f := strings.Fields(line); len(f) == 2 {
				_ = json.Unmarshal([]byte(f[1]), &v)
			}
			n += int(v)
		}
	}
	return n
}

// The bridge off: its routes do not exist, clientKey lookups say why.
func TestConnectOff(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	ts := startServer(t, baseEnv(t, forgetest.NewJWKSServer(t, key)))
	ts.waitReady(t)
	for _, path := range []string{"/connect/installed", "/connect/uninstalled"} {
		if r := ts.do(t, http.MethodPost, path, nil, `{}`); r.Status != http.StatusNotFound {
			t.Errorf("%s without CONNECT_APP_KEY: %d", path, r.Status)
		}
	}
	if r := ts.internal(t, "/internal/connect-keys"); r.Status != http.StatusNotFound {
		t.Errorf("connect-keys without CONNECT_APP_KEY: %d", r.Status)
	}
	if r := ts.internal(t, "/internal/app-token?clientKey=x"); r.Status != http.StatusBadRequest {
		t.Errorf("clientKey lookup without CONNECT_APP_KEY: %d %s", r.Status, r.Body)
	}
}
