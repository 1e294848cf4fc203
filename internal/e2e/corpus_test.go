package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// corpusDir holds bodies shaped as Forge sends them, each with a .source
// sidecar naming where the shape comes from (testdata/forge/README.md).
var corpusDir = filepath.Join(repoRoot, "testdata", "forge")

// corpusFiles reads every body of the corpus (name relative to corpusDir →
// bytes) and checks that each has its sidecar and each sidecar its body.
func corpusFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(corpusDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(corpusDir, path)
		rel = filepath.ToSlash(rel)
		switch {
		case strings.HasSuffix(rel, ".json"):
			src, err := os.ReadFile(path + ".source")
			if err != nil || len(strings.TrimSpace(string(src))) == 0 {
				t.Errorf("%s has no source sidecar (%s.source)", rel, rel)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files[rel] = b
		case strings.HasSuffix(rel, ".json.source"):
			if _, err := os.Stat(strings.TrimSuffix(path, ".source")); err != nil {
				t.Errorf("sidecar %s has no body", rel)
			}
		case rel == "README.md":
		default:
			t.Errorf("unexpected file %s in the corpus", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// corpusFIT signs the FIT claims of corpus file name for the test's app and
// installation: aud, iat/nbf/exp, app.installationId and app.apiBaseUrl are
// set; every other claim is the file's.
func corpusFIT(t *testing.T, key *forgetest.Key, claimsJSON []byte, inst, apiBase string) string {
	t.Helper()
	var file map[string]any
	if err := json.Unmarshal(claimsJSON, &file); err != nil {
		t.Fatalf("FIT claims: %v", err)
	}
	now := time.Now()
	return forgetest.MintFIT(t, key, forgetest.WithClaims(func(c map[string]any) {
		clear(c)
		for k, v := range file {
			c[k] = v
		}
		c["aud"] = forgetest.AppID
		c["iat"], c["nbf"] = now.Unix(), now.Unix()
		c["exp"] = now.Add(10 * time.Minute).Unix() // room for a slow run; Forge's are 25 s
		app := c["app"].(map[string]any)
		app["installationId"] = inst
		app["apiBaseUrl"] = apiBase
	}))
}

// installationView is one entry of the operator's view.
type installationView struct {
	InstallationID     string    `json:"installation_id"`
	CloudID            string    `json:"cloud_id"`
	AppVersion         string    `json:"app_version"`
	InstallerAccountID string    `json:"installer_account_id"`
	UpgraderAccountID  string    `json:"upgrader_account_id"`
	AppTokenFresh      bool      `json:"app_token_fresh"`
	LastScheduledAt    time.Time `json:"last_scheduled_at"`
}

func (ts *testServer) installations(t *testing.T) map[string]installationView {
	t.Helper()
	r := ts.internal(t, "/internal/installations")
	var v struct {
		Installations []installationView `json:"installations"`
	}
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &v) != nil {
		t.Fatalf("installations: %d %s", r.Status, r.Body)
	}
	m := map[string]installationView{}
	for _, in := range v.Installations {
		m[in.InstallationID] = in
	}
	return m
}

// effect is what a corpus case must change, checked through the operator's
// view, the app token route and the Weavy fake.
type effect int

const (
	installed effect = iota + 1 // recorded with its installer and version
	upgraded                    // recorded with its upgrader and version
	unchanged                   // nothing recorded, no app token captured
	scheduled                   // recorded as triggered, its app token captured
	purged                      // record and app token gone
	token                       // a Weavy token for the FIT's principal
	noToken                     // no Weavy mint
)

// corpusCase is one corpus body sent to one route with one corpus FIT.
type corpusCase struct {
	body, fit, route string
	status           int
	code             string
	effect           effect
	account, version string // the installer or upgrader, and the app version, recorded
}

// TestForgeCorpus runs every body of the corpus through every route it
// belongs to on the real server, and checks the answer and its effect: an
// install is recorded with its installerAccountId, an upgrade with its
// upgrader and version, an unknown event is acknowledged and changes
// nothing, a scheduled trigger is accepted, an uninstall purges, and each
// FIT variant gets the token or its 403. Every body is also sent from the
// attacker's side (a user's FIT on a trigger route, a trigger's FIT on a
// resolver): refused, nothing changed.
func TestForgeCorpus(t *testing.T) {
	files := corpusFiles(t)
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	conf := forgetest.NewConfluence(t)
	ts := startServer(t, tokenEnv(t, jwks, wv))
	ts.waitReady(t)

	cases := []corpusCase{
		{"lifecycle/installed-deployed.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", installed, "557058:f3b0cd4c-6a1e-4c2b-9d3e-2f1a0b9c8d7e", "2.3.0"},
		{"lifecycle/installed-deployed-retry.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", installed, "557058:f3b0cd4c-6a1e-4c2b-9d3e-2f1a0b9c8d7e", "2.3.0"},
		{"lifecycle/installed-remote-agents-doc.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", installed, "557058:6ea56496-8c9b-4e0a-bc03-7412dedb3304", "5.2.0"},
		{"lifecycle/installed-docs-payload.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", installed, "4ad9aa0c52dc1b420a791d12", "9.0.0"},
		{"lifecycle/installed-docs-payload-retry.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", installed, "4ad9aa0c52dc1b420a791d12", "9.0.0"},
		{"lifecycle/installed-context-object.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", installed, "557058:f3b0cd4c-6a1e-4c2b-9d3e-2f1a0b9c8d7e", "2.3.0"},
		{"lifecycle/upgraded-payload-permissions.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", upgraded, "4ad9aa0c52dc1b420a791d12", "10.0.0"},
		{"lifecycle/upgraded-deployed.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", upgraded, "712020:5c4d3e2f-1a0b-4c9d-8e7f-6a5b4c3d2e1f", "3.0.0"},
		{"lifecycle/unknown-confluence-page.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", unchanged, "", ""},
		{"lifecycle/unknown-deployed.json", "fit/trigger.json", "/triggers/lifecycle", 200, "", unchanged, "", ""},
		{"scheduled/empty.json", "fit/trigger.json", "/triggers/scheduled", 202, "", scheduled, "", ""},
		{"scheduled/empty-object.json", "fit/trigger.json", "/triggers/scheduled", 202, "", scheduled, "", ""},
		{"scheduled/docs-context.json", "fit/trigger.json", "/triggers/scheduled", 202, "", scheduled, "", ""},
		{"scheduled/deployed-context-ari.json", "fit/trigger.json", "/triggers/scheduled", 202, "", scheduled, "", ""},
		{"uninstall/empty.json", "fit/trigger.json", "/triggers/uninstall", 200, "", purged, "", ""},
		{"uninstall/function-context.json", "fit/trigger.json", "/triggers/uninstall", 200, "", purged, "", ""},
		{"uninstall/deployed-context-ari.json", "fit/trigger.json", "/triggers/uninstall", 200, "", purged, "", ""},
		{"resolver/invoke-remote-token.json", "fit/ui-docs-example.json", "/resolvers/token", 200, "", token, "", ""},
		{"resolver/invoke-remote-refresh.json", "fit/ui-docs-example.json", "/resolvers/token", 200, "", token, "", ""},
		{"resolver/envelope-token.json", "fit/ui-docs-example.json", "/resolvers", 200, "", token, "", ""},
	}
	// Each FIT variant on both resolver routes.
	for _, v := range []struct {
		fit, code string
	}{
		{"fit/ui-docs-example.json", ""}, {"fit/ui-license-active.json", ""}, {"fit/ui-user-access-granted.json", ""},
		{"fit/ui-license-inactive.json", "license_inactive"}, {"fit/ui-license-isactive-inactive.json", "license_inactive"},
		{"fit/ui-user-access-denied.json", "license_inactive"}, {"fit/ui-anonymous.json", "anonymous"},
	} {
		for _, body := range []string{"resolver/invoke-remote-token.json", "resolver/envelope-token.json"} {
			route := "/resolvers/token"
			if strings.Contains(body, "envelope") {
				route = "/resolvers"
			}
			st, eff := 200, token
			if v.code != "" {
				st, eff = 403, noToken
			}
			cases = append(cases, corpusCase{body, v.fit, route, st, v.code, eff, "", ""})
		}
	}
	// The attacker's side: a user's FIT on every trigger route, a trigger's
	// FIT on the resolvers.
	for name := range files {
		dir, _, _ := strings.Cut(name, "/")
		switch dir {
		case "lifecycle", "scheduled", "uninstall":
			for _, fit := range []string{"fit/ui-docs-example.json", "fit/ui-anonymous.json"} {
				route := map[string]string{"lifecycle": "/triggers/lifecycle", "scheduled": "/triggers/scheduled", "uninstall": "/triggers/uninstall"}[dir]
				cases = append(cases, corpusCase{name, fit, route, 403, "not_a_trigger", unchanged, "", ""})
			}
		case "resolver":
			route := "/resolvers/token"
			if strings.Contains(name, "envelope") {
				route = "/resolvers"
			}
			cases = append(cases, corpusCase{name, "fit/trigger.json", route, 403, "no_user", noToken, "", ""})
		}
	}

	used := map[string]bool{}
	for i, tc := range cases {
		used[tc.body], used[tc.fit] = true, true
		name := fmt.Sprintf("%s %s with %s", tc.route, tc.body, strings.TrimPrefix(tc.fit, "fit/"))
		t.Run(name, func(t *testing.T) {
			body, ok := files[tc.body]
			claims, ok2 := files[tc.fit]
			if !ok || !ok2 {
				t.Fatalf("%s or %s is not in the corpus", tc.body, tc.fit)
			}
			// Each case has its own installation, so its effect is its own.
			inst := fmt.Sprintf("ari:cloud:ecosystem::installation/c0a5e000-0000-4000-8000-%012d", i)
			apiBase := conf.APIBaseURL("d0d52620-3203-4cfa-8db5-f2587155f0dd")
			fit := corpusFIT(t, key, claims, inst, apiBase)
			var principal string
			var fileClaims struct {
				Principal string `json:"principal"`
			}
			_ = json.Unmarshal(claims, &fileClaims)
			principal = fileClaims.Principal
			appTok := map[string]string{"x-forge-oauth-system": conf.IssueAppToken(t, time.Now().Add(3*time.Hour))}
			send := appTok
			if tc.effect == unchanged {
				// A trigger's call captures the app token it brings whatever
				// its body, and a user's call fills a gap with it (by design):
				// without one, "unchanged" is about the body alone.
				send = nil
			}

			if tc.effect == purged { // something to purge
				install := corpusFIT(t, key, files["fit/trigger.json"], inst, apiBase)
				if r := ts.post(t, "/triggers/lifecycle", install, appTok, string(files["lifecycle/installed-deployed.json"])); r.Status != 200 {
					t.Fatalf("install before the uninstall: %d %s", r.Status, r.Body)
				}
			}
			before := ts.installations(t)
			mints := wv.Mints()

			r := ts.post(t, tc.route, fit, send, string(body))
			if r.Status != tc.status || r.ErrCode != tc.code {
				t.Fatalf("%d %q, want %d %q: %s", r.Status, r.ErrCode, tc.status, tc.code, r.Body)
			}

			if tc.effect == purged {
				waitPurged(t, ts) // the uninstall answers before its purge runs
			}
			after := ts.installations(t)
			rec, recorded := after[inst]
			switch tc.effect {
			case installed:
				if !recorded || rec.InstallerAccountID != tc.account || rec.AppVersion != tc.version ||
					rec.CloudID != "d0d52620-3203-4cfa-8db5-f2587155f0dd" || !rec.AppTokenFresh {
					t.Fatalf("install not recorded as sent: %+v (recorded %v)", rec, recorded)
				}
			case upgraded:
				if !recorded || rec.UpgraderAccountID != tc.account || rec.AppVersion != tc.version {
					t.Fatalf("upgrade not recorded as sent: %+v (recorded %v)", rec, recorded)
				}
			case unchanged:
				if len(after) != len(before) || recorded {
					t.Fatalf("the installations changed: %d before, %d after; this one %+v", len(before), len(after), rec)
				}
				if tok := ts.internal(t, "/internal/app-token?installationId="+inst); tok.Status != http.StatusNotFound {
					t.Fatalf("refused call captured an app token: %d", tok.Status)
				}
			case scheduled:
				if !recorded || rec.LastScheduledAt.IsZero() || !rec.AppTokenFresh {
					t.Fatalf("scheduled trigger not recorded: %+v (recorded %v)", rec, recorded)
				}
			case purged:
				if _, was := before[inst]; !was || recorded {
					t.Fatalf("not purged: before %v, after %v", was, recorded)
				}
				if tok := ts.internal(t, "/internal/app-token?installationId="+inst); tok.Status != http.StatusNotFound {
					t.Fatalf("app token survived the uninstall: %d", tok.Status)
				}
			case token:
				at := r.str("access_token")
				if !strings.HasPrefix(at, "wyu_") || wv.UIDOf(at) != principal {
					t.Fatalf("token %q for uid %q, want one for the FIT's principal %q", at, wv.UIDOf(at), principal)
				}
			case noToken:
				if wv.Mints() != mints {
					t.Fatalf("a refused call minted a Weavy token")
				}
			}
		})
	}
	for name := range files {
		if !used[name] {
			t.Errorf("corpus file %s is in no case", name)
		}
	}
}

// A lifecycle event the server cannot use is a 400 bad_event that says why:
// the member and the type expected, or that the body is no JSON object, never
// a value from the body. Nothing is recorded.
func TestLifecycleRefusalsSayWhy(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	ts := startServer(t, baseEnv(t, jwks))
	ts.waitReady(t)
	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithTimes(time.Now(), time.Now().Add(10*time.Minute)))
	for body, want := range map[string]string{
		`{"eventType":"avi:forge:installed:app","installerAccountId":557058}`:       `field "installerAccountId" must be a string, not a number`,
		`{"payload":{"eventType":"avi:forge:installed:app","app":"secret-app-id"}}`: `field "payload.app" must be an object, not a string`,
		`{"eventType":"avi:forge:installed:app","context":["ari:cloud:x"]}`:         `field "context" must be a site ARI string or an object, not an array`,
		`[{"eventType":"avi:forge:installed:app"}]`:                                 `the event body is an array; a JSON object is expected`,
		`eventType=avi:forge:installed:app`:                                         `the event body is not JSON; a JSON object is expected`,
		`{"eventType":"avi:forge:installed:app",}`:                                  `the event body is not valid JSON (at byte 40)`,
	} {
		r := ts.post(t, "/triggers/lifecycle", fit, nil, body)
		e, _ := r.JSON["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if r.Status != http.StatusBadRequest || r.ErrCode != "bad_event" || msg != want {
			t.Errorf("%s: %d %s, want 400 bad_event %q", body, r.Status, r.Body, want)
		}
	}
	if list := ts.installations(t); len(list) != 0 {
		t.Fatalf("refused events recorded %v", list)
	}
}
