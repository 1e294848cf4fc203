package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/scheduler"
)

// purgesPending is what GET /internal/purges lists.
func purgesPending(t *testing.T, ts *testServer) []map[string]any {
	t.Helper()
	r := ts.internal(t, "/internal/purges")
	if r.Status != http.StatusOK {
		t.Fatalf("/internal/purges: %d %s", r.Status, r.Body)
	}
	var out []map[string]any
	list, _ := r.JSON["purges"].([]any)
	for _, p := range list {
		out = append(out, p.(map[string]any))
	}
	return out
}

// waitPurged waits until the server's uninstall purges are done: the
// uninstall answers before its purge runs.
func waitPurged(t *testing.T, ts *testServer) {
	t.Helper()
	testwait.For(t, "the uninstall purges to finish", func() bool { return len(purgesPending(t, ts)) == 0 })
}

// Weavy answering 500 to everything while a customer uninstalls: the
// trigger still answers 200 and the purge is stored. The server stops before
// the purge is done (as a crash after the answer would); a new server on the
// same bolt store resumes it once Weavy is back: the site's chat has no
// member left, its directory is gone, the other site is untouched.
func TestUninstallDuringWeavyOutageResumesAfterRestart(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	uid := pageUID(forgetest.CloudID, pageP)
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	f.openOK(t, f.fit(t, bob, onPage(pageP)))
	f.openOK(t, f.fit(t, alice, onSiteT, onPage("1234")))

	f.wv.FailAdmin.Store(true)
	fit := forgetest.MintFIT(t, f.key, forgetest.WithNow(f.now), forgetest.WithPrincipal(""))
	if r := f.ts.post(t, "/triggers/uninstall", fit, nil, `{}`); r.Status != http.StatusOK || r.str("status") != "purge_pending" {
		t.Fatalf("uninstall during a Weavy outage: %d %s", r.Status, r.Body)
	}
	testwait.For(t, "a failed purge attempt", func() bool {
		p := purgesPending(t, f.ts)
		return len(p) == 1 && p[0]["attempts"].(float64) >= 1
	})
	if p := purgesPending(t, f.ts)[0]; p["installation_id"] != forgetest.InstallationID || p["last_error"] == "" {
		t.Fatalf("purge as listed: %v", p)
	}
	if _, m := f.ts.get(t, "/metrics", ""); !strings.Contains(string(m.Body), "uninstall_purges_pending 1") ||
		!strings.Contains(string(m.Body), `uninstall_purge_attempts_total{result="error"}`) {
		t.Errorf("metrics do not show the pending purge")
	}
	if !f.member(uid, alice) || !f.member(uid, bob) {
		t.Fatal("setup: members removed during the outage")
	}

	f.ts.Stop(t)
	f.wv.FailAdmin.Store(false)
	f.advance(scheduler.DefaultPurgeBackoff) // its back-off has passed
	f.ts = startServerWith(t, f.env, serverOptions(f.now))
	f.ts.waitReady(t)
	waitPurged(t, f.ts)

	if f.member(uid, alice) || f.member(uid, bob) || f.wv.Directory(dirS) {
		t.Fatalf("after the resumed purge: alice %v, bob %v, directory %v", f.member(uid, alice), f.member(uid, bob), f.wv.Directory(dirS))
	}
	if !f.member(pageUID(cloudT, "1234"), alice) {
		t.Fatal("the other site's chat lost alice")
	}
	// The attempt counts itself once it has ended: after the purge record,
	// its last step, is gone (what waitPurged sees) and the lock released.
	testwait.For(t, "the metrics to count the done purge", func() bool {
		_, m := f.ts.get(t, "/metrics", "")
		return strings.Contains(string(m.Body), `uninstall_purge_attempts_total{result="ok"} 1`)
	})
	for _, in := range f.ts.internal(t, "/internal/installations").JSON["installations"].([]any) {
		if in.(map[string]any)["installation_id"] == forgetest.InstallationID {
			t.Fatalf("the uninstalled installation is still listed: %v", in)
		}
	}
}

// A FIT minted before an uninstall stays valid for its few minutes: a chat
// open made with it after the uninstall finds the tombstone before it
// writes and answers 410 uninstalled; nothing of it is left, no member, no
// directory made again. (An open that was already past that look when the
// uninstall came is scheduler's TestOpenRacingItsUninstallLeavesNothing.)
func TestChatOpenAfterUninstall(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	uid := pageUID(forgetest.CloudID, pageP)
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	late := f.fit(t, bob, onPage(pageP)) // minted before the uninstall

	fit := forgetest.MintFIT(t, f.key, forgetest.WithNow(f.now), forgetest.WithPrincipal(""))
	if r := f.ts.post(t, "/triggers/uninstall", fit, nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("uninstall: %d %s", r.Status, r.Body)
	}
	waitPurged(t, f.ts)
	if p, _ := f.wv.App(uid); len(p.Members) != 0 || f.wv.Directory(dirS) {
		t.Fatalf("after the uninstall: members %v, directory %v", p.Members, f.wv.Directory(dirS))
	}

	r := f.open(t, late, `{}`)
	if r.Status != http.StatusGone || r.ErrCode != "uninstalled" {
		t.Fatalf("open with a FIT from before the uninstall: %d %s", r.Status, r.Body)
	}
	waitPurged(t, f.ts)
	if p, _ := f.wv.App(uid); len(p.Members) != 0 || f.wv.Directory(dirS) {
		t.Fatalf("after the late open: members %v, directory %v", p.Members, f.wv.Directory(dirS))
	}
}
