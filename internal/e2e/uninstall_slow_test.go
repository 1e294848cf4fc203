//go:build slow

package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// The issue's Done-when, on the built binary and a bolt store: with Weavy
// answering 500, an uninstall answers 2xx within a second; the server is
// SIGKILLed a second later and restarted; within two minutes of Weavy's
// recovery the site's chats have no member and its people are out of its
// directory. Another site is untouched.
func TestUninstallSIGKILL(t *testing.T) {
	t.Parallel()
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	conf := forgetest.NewConfluenceWith(t, confluencesim.Options{AnyContent: true})
	env := tokenEnv(t, jwks, wv)
	env["LOG_LEVEL"] = "info"
	logs := newLogScan(internalToken, weavysim.APIKey)
	bin := serverBinary(t)
	srv := startBinary(t, bin, env, logs.line)
	srv.waitReady(t)
	internalGet := func(path string) reply {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+internalToken)
		return srv.send(t, req)
	}
	purges := func() []map[string]any {
		r := internalGet("/internal/purges")
		if r.Status != http.StatusOK {
			t.Fatalf("/internal/purges: %d %s", r.Status, r.Body)
		}
		var out []map[string]any
		for _, p := range r.JSON["purges"].([]any) {
			out = append(out, p.(map[string]any))
		}
		return out
	}

	// Site S (forgetest's installation) is uninstalled; site T is not.
	instS, cloudS := forgetest.InstallationID, forgetest.CloudID
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	fit := func(inst, cloud, account string, opts ...forgetest.FITOption) string {
		return forgetest.MintFIT(t, key, append([]forgetest.FITOption{forgetest.WithPrincipal(account),
			forgetest.WithInstallation(inst, cloud), forgetest.WithAPIBaseURL(conf.APIBaseURL(cloud))}, opts...)...)
	}
	appTokT := conf.IssueAppToken(t, time.Now().Add(3*time.Hour))
	for _, site := range [][2]string{{instS, cloudS}, {instT, cloudT}} {
		body := `{"eventType":"avi:forge:installed:app","app":{"id":"` + forgetest.AppID + `","version":"1.0.0"}}`
		tok := conf.IssueAppToken(t, time.Now().Add(3*time.Hour))
		if site[0] == instT {
			tok = appTokT
		}
		if r := srv.post(t, "/triggers/lifecycle", fit(site[0], site[1], ""), body, "x-forge-oauth-system", tok); r.Status != http.StatusOK {
			t.Fatalf("install: %d %s", r.Status, r.Body)
		}
	}
	open := func(inst, cloud, account string, opts ...forgetest.FITOption) {
		t.Helper()
		r := srv.post(t, "/resolvers/chat", fit(inst, cloud, account, opts...), `{}`,
			"x-forge-oauth-user", conf.IssueUserToken(t, account, time.Now().Add(time.Hour)))
		if r.Status != http.StatusOK {
			t.Fatalf("chat open: %d %s", r.Status, r.Body)
		}
	}
	open(instS, cloudS, alice, onPage(pageP))
	open(instS, cloudS, bob, onPage(pageP))
	open(instS, cloudS, bob, onPage("4242"))
	open(instS, cloudS, alice, extension(nil)) // the site-wide chat
	open(instT, cloudT, alice, onPage("1234"))
	tokT := srv.post(t, "/resolvers/token", fit(instT, cloudT, alice), `{}`)
	if tokT.Status != http.StatusOK {
		t.Fatalf("token on T: %d %s", tokT.Status, tokT.Body)
	}
	dirS, dirT := "cf-"+cloudS, "cf-"+cloudT
	member := func(uid, who string) bool { a, _ := wv.App(uid); return a.Members[who] != "" }
	inDir := func(who, dir string) bool { return slices.Contains(wv.UserDirectories(who), dir) }
	sApps := func() (n, members int) {
		for _, a := range wv.AppViews() {
			if strings.HasPrefix(a.UID, "confluence-"+cloudS+"-") {
				n++
				members += len(a.Members)
			}
		}
		return n, members
	}
	if n, m := sApps(); n != 3 || m != 3 || !inDir(alice, dirS) || !inDir(bob, dirS) || !member(pageUID(cloudT, "1234"), alice) || !inDir(alice, dirT) {
		t.Fatalf("setup: S has %d apps with %d members; alice in %v, bob in %v", n, m, wv.UserDirectories(alice), wv.UserDirectories(bob))
	}

	// Weavy answers 500 to everything the server sends with its API key.
	wv.FailAdmin.Store(true)
	wv.SetMode(weavysim.Fail500)
	sent := time.Now()
	r := srv.post(t, "/triggers/uninstall", fit(instS, cloudS, ""), `{}`)
	answered := time.Now()
	took := answered.Sub(sent)
	t.Logf("uninstall with Weavy answering 500: %d %s after %v", r.Status, r.str("status"), took.Round(time.Microsecond))
	if r.Status/100 != 2 || r.str("status") != "purge_pending" {
		t.Fatalf("uninstall during the outage: %d %s", r.Status, r.Body)
	}
	if took >= time.Second {
		t.Errorf("the uninstall answered after %v, not within a second", took)
	}
	if p := purges(); len(p) != 1 || p[0]["installation_id"] != instS {
		t.Fatalf("purges after the uninstall: %v", p)
	}

	// SIGKILL a second after the answer, and a restart on the same store.
	time.Sleep(time.Until(answered.Add(time.Second)))
	before := purges()[0]
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	testwait.Recv(t, "the killed server to exit", srv.exited)
	lastErr, _ := before["last_error"].(string)
	t.Logf("SIGKILLed %v after the answer; the purge had %v failed attempts (%.60q…)", killedAt.Sub(answered).Round(time.Millisecond),
		before["attempts"], lastErr)
	if n, m := sApps(); m != 3 || !inDir(alice, dirS) {
		t.Fatalf("S's Weavy state changed while Weavy failed: %d apps, %d members", n, m)
	}
	srv = startBinary(t, bin, env, logs.line)
	srv.waitReady(t)
	p := purges()
	if len(p) != 1 || p[0]["installation_id"] != instS {
		t.Fatalf("after the restart the purge is not pending: %v", p)
	}
	// The restarted server resumes the purge and fails at it while Weavy is down.
	attempts := p[0]["attempts"].(float64)
	testwait.For(t, "a failed purge attempt by the restarted server", func() bool {
		p := purges()
		return len(p) == 1 && p[0]["attempts"].(float64) > attempts
	})
	t.Logf("the restarted server resumed the purge: failed attempt %v at %v after the restart's start", purges()[0]["attempts"],
		time.Since(killedAt).Round(time.Millisecond))

	// Weavy recovers.
	mintsT := wv.Mints()
	wv.FailAdmin.Store(false)
	wv.SetMode(weavysim.OK)
	recovered := time.Now()
	testwait.For(t, "S's chats to have no member and its people to leave its directory", func() bool {
		_, m := sApps()
		return m == 0 && !inDir(alice, dirS) && !inDir(bob, dirS) && !wv.Directory(dirS) && len(purges()) == 0
	})
	done := time.Since(recovered)
	t.Logf("within %v of Weavy's recovery: S's chats have no member, alice and bob are out of %s, the directory is gone, no purge pending",
		done.Round(time.Millisecond), dirS)
	if done > 2*time.Minute {
		t.Errorf("the purge ended %v after Weavy's recovery, not within two minutes", done)
	}
	if r := internalGet("/internal/app-token?installationId=" + url.QueryEscape(instS)); r.Status != http.StatusNotFound {
		t.Errorf("S's app token after the purge: %d, want 404", r.Status)
	}

	// T is untouched: its member, its directory, its app token, its user's token.
	if !member(pageUID(cloudT, "1234"), alice) || !inDir(alice, dirT) || !wv.Directory(dirT) {
		t.Errorf("T changed: alice member %v, in %v, directory %v", member(pageUID(cloudT, "1234"), alice), wv.UserDirectories(alice), wv.Directory(dirT))
	}
	if r := internalGet("/internal/app-token?installationId=" + url.QueryEscape(instT)); r.Status != http.StatusOK || r.str("access_token") != appTokT {
		t.Errorf("T's app token: %d", r.Status)
	}
	if r := srv.post(t, "/resolvers/token", fit(instT, cloudT, alice), `{}`); r.str("access_token") != tokT.str("access_token") || wv.Mints() != mintsT {
		t.Errorf("alice's token on T: %d, the same %v, %d mints", r.Status, r.str("access_token") == tokT.str("access_token"), wv.Mints()-mintsT)
	}
	t.Logf("T untouched: alice still a member of its page chat and in %s, its app token and alice's Weavy token served as before", dirT)

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, "the server to stop", srv.exited)
	lines, bad, leaks := logs.result()
	t.Logf("log: %d lines from both processes, %d not JSON, %d with a secret", lines, bad, len(leaks))
	for _, l := range leaks {
		t.Errorf("secret in the log: %s", l)
	}
}
