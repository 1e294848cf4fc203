package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// The triggers end to end: install events in both shapes and retried, the
// first mint's profile sync from Confluence into Weavy, the scheduled trigger,
// the operator's view, and an uninstall that purges one installation only.
func TestTriggersEndToEnd(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	conf := forgetest.NewConfluence(t)
	conf.SetSiteURL("https://acme.atlassian.net")
	const account = "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	conf.AddUser(account, "Ada Lovelace", "ada@example.com", "/wiki/aa-avatar/ada.png")
	ts := startServer(t, tokenEnv(t, jwks, wv))
	ts.waitReady(t)

	const instA, instB = "aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b"
	const cloudA, cloudB = "c10dc10d-0000-4000-8000-00000000000a", "c10dc10d-0000-4000-8000-00000000000b"
	fitFor := func(inst, cloud, principal string) string {
		return forgetest.MintFIT(t, key, forgetest.WithPrincipal(principal),
			forgetest.WithInstallation(inst, cloud), forgetest.WithAPIBaseURL(conf.APIBaseURL(cloud)))
	}
	appTok := map[string]string{"x-forge-oauth-system": conf.IssueAppToken(t, time.Now().Add(3*time.Hour))}

	installed := `{"eventType":"avi:forge:installed:app","id":"ev-1","installerAccountId":"` + account + `","app":{"id":"` + forgetest.AppID + `","version":"` + forgetest.AppVersion + `"},"environment":{"id":"env-1"}}`
	for i, body := range []string{
		installed,
		`{"payload":` + installed + `}`,
		strings.TrimSuffix(installed, "}") + `,"retryContext":{"retryCount":1,"retryReason":"TIMEOUT"}}`,
	} {
		if r := ts.post(t, "/triggers/lifecycle", fitFor(instA, cloudA, ""), appTok, body); r.Status != http.StatusOK {
			t.Fatalf("lifecycle %d: %d %s", i, r.Status, r.Body)
		}
	}
	if r := ts.post(t, "/triggers/lifecycle", fitFor(instA, cloudA, ""), nil, `{"eventType":"avi:confluence:created:page"}`); r.Status != http.StatusOK {
		t.Fatalf("unknown event not acknowledged: %d %s", r.Status, r.Body)
	}
	if r := ts.post(t, "/triggers/lifecycle", fitFor(instA, cloudA, ""), nil, `[not json`); r.Status != http.StatusBadRequest {
		t.Fatalf("malformed event: %d %s", r.Status, r.Body)
	}
	ts.post(t, "/triggers/lifecycle", fitFor(instB, cloudB, ""), appTok, installed)

	// The first mint for a user syncs the profile off the request path.
	tok := ts.post(t, "/resolvers/token", fitFor(instA, cloudA, account), nil, `{}`)
	if tok.Status != http.StatusOK {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
	var profile map[string]any
	testwait.Poll(t, func() bool {
		p, ok := wv.Profile(account)
		profile = p
		return ok
	})
	if profile["name"] != "Ada Lovelace" || profile["picture"] != "https://acme.atlassian.net/wiki/aa-avatar/ada.png" {
		t.Fatalf("Weavy profile after the first mint: %v", profile)
	}

	// The scheduled trigger answers 202 at once.
	start := time.Now()
	if r := ts.post(t, "/triggers/scheduled", fitFor(instA, cloudA, ""), appTok, `{}`); r.Status != http.StatusAccepted {
		t.Fatalf("scheduled: %d %s", r.Status, r.Body)
	}
	// Forge gives a trigger 5 s; the answer does not wait for the jobs
	// (scheduler's TestScheduledAnswersWhileSlowJobRuns holds one to show it).
	t.Logf("scheduled trigger answered in %v", time.Since(start).Round(time.Millisecond))
	if conf.ExpiredCalls() != 0 {
		t.Fatalf("%d Confluence calls with an expired or unknown token", conf.ExpiredCalls())
	}

	var view struct {
		Installations []struct {
			InstallationID     string    `json:"installation_id"`
			AppVersion         string    `json:"app_version"`
			InstallerAccountID string    `json:"installer_account_id"`
			AppTokenFresh      bool      `json:"app_token_fresh"`
			LastScheduledAt    time.Time `json:"last_scheduled_at"`
			Stale              bool      `json:"stale"`
		} `json:"installations"`
	}
	list := ts.internal(t, "/internal/installations")
	if err := json.Unmarshal(list.Body, &view); err != nil || len(view.Installations) != 2 {
		t.Fatalf("installations: %s", list.Body)
	}
	a := view.Installations[0]
	if !strings.HasSuffix(a.InstallationID, instA) || a.AppVersion != forgetest.AppVersion || a.InstallerAccountID != account ||
		!a.AppTokenFresh || a.LastScheduledAt.IsZero() || a.Stale {
		t.Fatalf("operator view of A: %+v", a)
	}
	if strings.Contains(string(list.Body), appTok["x-forge-oauth-system"]) {
		t.Fatal("the operator view shows an app token")
	}

	// Uninstall A: everything of A goes, B stays.
	if r := ts.post(t, "/triggers/uninstall", fitFor(instA, cloudA, ""), nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("uninstall: %d %s", r.Status, r.Body)
	}
	if r := ts.internal(t, "/internal/app-token?installationId=ari:cloud:ecosystem::installation/"+instA); r.Status != http.StatusNotFound {
		t.Fatalf("A's app token survived the uninstall: %d", r.Status)
	}
	if r := ts.internal(t, "/internal/app-token?installationId=ari:cloud:ecosystem::installation/"+instB); r.Status != http.StatusOK {
		t.Fatalf("B's app token was purged: %d %s", r.Status, r.Body)
	}
	waitPurged(t, ts) // A's records go as its purge's last step
	list = ts.internal(t, "/internal/installations")
	if strings.Contains(string(list.Body), instA) || !strings.Contains(string(list.Body), instB) {
		t.Fatalf("after uninstall: %s", list.Body)
	}
	mints := wv.Mints()
	if r := ts.post(t, "/resolvers/token", fitFor(instA, cloudA, account), nil, `{}`); r.str("access_token") == tok.str("access_token") || wv.Mints() != mints+1 {
		t.Fatalf("A's cached Weavy token survived the uninstall")
	}
}
