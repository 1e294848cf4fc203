package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store/redistest"
)

// advance moves the server's clock (and the FITs minted after) forward.
func (f *chatFixture) advance(d time.Duration) { f.offset.Add(int64(d)) }

// trigger sends the hourly scheduled trigger of a site (opts: onSiteT).
func (f *chatFixture) trigger(t *testing.T, opts ...forgetest.FITOption) {
	t.Helper()
	fit := forgetest.MintFIT(t, f.key, append([]forgetest.FITOption{forgetest.WithNow(f.now), forgetest.WithPrincipal("")}, opts...)...)
	runs := jobRuns(t, f.ts, "chat_leases")
	if r := f.ts.post(t, "/triggers/scheduled", fit, nil, `{}`); r.Status != http.StatusAccepted {
		t.Fatalf("scheduled: %d %s", r.Status, r.Body)
	}
	// The prune runs off the request path: wait until it has finished, so
	// what the test reads next is its outcome, not a race with it.
	testwait.For(t, "the lease prune to run", func() bool { return jobRuns(t, f.ts, "chat_leases") > runs })
}

func (f *chatFixture) member(uid, user string) bool {
	app, _ := f.wv.App(uid)
	_, ok := app.Members[user]
	return ok
}

// Membership does not outlive the right to it: each open renews a lease,
// and the hourly job removes memberships whose lease ran out. Measured on
// the server's injected clock.
func TestChatLeaseExpires(t *testing.T) {
	const lease = 12 * time.Hour
	f := newChatFixture(t, map[string]string{"CHAT_LEASE": "12h"})
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	uid := pageUID(forgetest.CloudID, pageP)
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	f.openOK(t, f.fit(t, bob, onPage(pageP)))

	// Alice still sees the page four hours later: her open renews the lease
	// in the store (older than a quarter of it), with no Weavy call.
	f.advance(4 * time.Hour)
	before := f.wv.AdminCalls()
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	if n := f.wv.AdminCalls() - before; n != 0 {
		t.Fatalf("a renewal made %d Weavy calls", n)
	}

	// Bob lost access (he never opens P again): gone once his lease is
	// over; alice, renewed, stays.
	f.advance(lease - 4*time.Hour + time.Minute) // bob's lease + 1 min
	f.trigger(t)
	if f.member(uid, bob) {
		t.Fatal("bob is still a member after his lease")
	}
	if !f.member(uid, alice) {
		t.Fatal("alice was removed with a live lease")
	}
	// Just before alice's lease ends she is still a member; just after the
	// next hourly run she is not: the bound is the lease plus the hour.
	f.advance(4*time.Hour - 2*time.Minute) // alice's renewal + lease - 1 min
	f.trigger(t)
	if !f.member(uid, alice) {
		t.Fatal("alice was removed before her lease ended")
	}
	f.advance(time.Hour)
	f.trigger(t)
	if f.member(uid, alice) {
		t.Fatal("alice is still a member an hour after her lease")
	}
	if _, m := f.ts.get(t, "/metrics", ""); !strings.Contains(string(m.Body), `chat_memberships_removed_total{reason="lease_expired"} 2`) {
		t.Errorf("metrics do not count the removals")
	}

	// Opening the page again (Confluence shows it to her) brings her back.
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	if !f.member(uid, alice) {
		t.Fatal("alice's new open did not make her a member again")
	}
}

// Weavy down: a known chat still opens, from memory and, after a restart,
// from the store; an unknown one gets the token resolver's 502/504.
func TestChatWeavyDown(t *testing.T) {
	f := newChatFixture(t, nil)
	alice := forgetest.AccountID
	appID := f.openOK(t, f.fit(t, alice, onPage(pageP)))
	for _, c := range append(weavyOutages, weavyOutage{weavysim.Hang, http.StatusGatewayTimeout, "weavy_timeout"}) {
		f.wv.SetMode(c.mode)
		if id := f.openOK(t, f.fit(t, alice, onPage(pageP))); id != appID {
			t.Fatalf("known chat during the outage: app %d", id)
		}
		for _, fit := range []string{
			f.fit(t, alice, onPage("4711")),         // an unknown app
			f.fit(t, "acc-new-user", onPage(pageP)), // a known app, a new member
		} {
			if r := f.open(t, fit, `{}`); r.Status != c.status || r.ErrCode != c.code {
				t.Errorf("mode %d: %d %s, want %d %s", c.mode, r.Status, r.Body, c.status, c.code)
			}
		}
		f.wv.SetMode(weavysim.OK)
	}
	// A new process on the same store, Weavy still down.
	f.ts.Stop(t)
	f.wv.SetMode(weavysim.Fail500)
	f.ts = startServerWith(t, f.env, serverOptions(f.now))
	f.ts.waitReady(t)
	if id := f.openOK(t, f.fit(t, alice, onPage(pageP))); id != appID {
		t.Fatalf("known chat after a restart, Weavy down: app %d", id)
	}
	f.wv.SetMode(weavysim.OK)
}

// The store down: a cold open answers 503 store_unavailable; a warm one
// needs no store.
func TestChatStoreDown(t *testing.T) {
	rs := redistest.Start(t)
	raw := make([]byte, 32)
	rand.Read(raw)
	f := newChatFixture(t, map[string]string{"STORE_URL": rs.URL(), "STORE_KEY": base64.StdEncoding.EncodeToString(raw)})
	f.openOK(t, f.fit(t, forgetest.AccountID, onPage(pageP)))
	rs.Pause()
	defer rs.Resume()
	f.openOK(t, f.fit(t, forgetest.AccountID, onPage(pageP)))
	if r := f.open(t, f.fit(t, "acc-cold", onPage("5150")), `{}`); r.Status != http.StatusServiceUnavailable || r.ErrCode != "store_unavailable" {
		t.Fatalf("cold open, store down: %d %s", r.Status, r.Body)
	}
}

// A person on two sites (WEAVY_UID_SCOPE=account: one Weavy user) is in both
// sites' directories; uninstalling one site removes its memberships, closes
// its site-wide chat and deletes its directory, and leaves the other alone.
func TestChatUninstall(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	f.openOK(t, f.fit(t, bob, onPage(pageP)))
	f.openOK(t, f.fit(t, alice, extension(nil)))
	f.openOK(t, f.fit(t, alice, onSiteT, onPage("1234")))
	dirT := chat.DirectoryName(cloudT)
	if dirs := f.wv.UserDirectories(alice); !slices.Equal(dirs, []string{dirS, dirT}) {
		t.Fatalf("alice on two sites is in %v", dirs)
	}

	fit := forgetest.MintFIT(t, f.key, forgetest.WithNow(f.now), forgetest.WithPrincipal(""))
	if r := f.ts.post(t, "/triggers/uninstall", fit, nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("uninstall: %d %s", r.Status, r.Body)
	}
	waitPurged(t, f.ts)
	p, _ := f.wv.App(pageUID(forgetest.CloudID, pageP))
	site, _ := f.wv.App("confluence-" + forgetest.CloudID + "-global")
	if len(p.Members) != 0 || site.Access != "none" || f.wv.Directory(dirS) {
		t.Fatalf("after uninstall: page %+v, site chat %+v, directory kept %v", p, site, f.wv.Directory(dirS))
	}
	if dirs := f.wv.UserDirectories(alice); !slices.Equal(dirs, []string{dirT}) || !f.member(pageUID(cloudT, "1234"), alice) {
		t.Fatalf("site T was touched: alice in %v", dirs)
	}
	// A user of S with a token left can read nothing of S.
	tok := f.userToken(t, f.fit(t, alice, onSiteT))
	if st, _ := f.asUser(t, tok, "GET", "/api/apps/"+pageUID(forgetest.CloudID, pageP), ""); st != http.StatusForbidden {
		t.Fatalf("after uninstall alice reads P: %d", st)
	}
}

// Two installations on one site (say the production and staging Forge
// environments) share the site's apps and directory: one's first
// provisioning of a page keeps the other's members, and one's uninstall
// leaves the other's members, site-wide chat and directory alone.
func TestChatTwoInstallationsOneSite(t *testing.T) {
	f := newChatFixture(t, nil)
	const instS2 = "ari:cloud:ecosystem::installation/22222222-3333-4444-8555-666666666666"
	onS2 := forgetest.WithInstallation(instS2, forgetest.CloudID)
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	uid := pageUID(forgetest.CloudID, pageP)
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	f.openOK(t, f.fit(t, alice, extension(nil)))
	if id := f.openOK(t, f.fit(t, bob, onS2, onPage(pageP))); !f.member(uid, bob) || !f.member(uid, alice) {
		t.Fatalf("after S2's first open (app %d): alice member %v, bob member %v", id, f.member(uid, alice), f.member(uid, bob))
	}

	fit := forgetest.MintFIT(t, f.key, forgetest.WithNow(f.now), forgetest.WithPrincipal(""), onS2)
	if r := f.ts.post(t, "/triggers/uninstall", fit, nil, `{}`); r.Status != http.StatusOK {
		t.Fatalf("uninstall of S2: %d %s", r.Status, r.Body)
	}
	waitPurged(t, f.ts)
	site, _ := f.wv.App("confluence-" + forgetest.CloudID + "-global")
	if f.member(uid, bob) || !f.member(uid, alice) || site.Access != "write" || !f.wv.Directory(dirS) {
		t.Fatalf("after S2's uninstall: bob %v, alice %v, site chat %+v, directory %v",
			f.member(uid, bob), f.member(uid, alice), site, f.wv.Directory(dirS))
	}
	// Alice, still on S, keeps reading and posting.
	tok := f.userToken(t, f.fit(t, alice))
	if st, b := f.asUser(t, tok, "POST", fmt.Sprintf("/api/apps/%d/messages", site.ID), `{"text":"still here"}`); st != http.StatusCreated {
		t.Fatalf("alice posting in S's site chat: %d %s", st, b)
	}
}

// A lease past its end vouches for nothing, even before the hourly prune
// has run: whatever removed the member meanwhile (another installation's
// provisioning or prune, an operator), the next open adds it again.
func TestChatExpiredLeaseReadds(t *testing.T) {
	f := newChatFixture(t, nil)
	alice := forgetest.AccountID
	uid := pageUID(forgetest.CloudID, pageP)
	appID := f.openOK(t, f.fit(t, alice, onPage(pageP)))
	f.advance(chat.DefaultLease + time.Minute)
	if st, b := f.asUser(t, weavysim.APIKey, "DELETE", fmt.Sprintf("/api/apps/%d/members/%s", appID, alice), ""); st != http.StatusNoContent {
		t.Fatalf("removing alice: %d %s", st, b)
	}
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	if !f.member(uid, alice) {
		t.Fatal("an open after the lease ended trusted the expired lease and did not add alice back")
	}
}

// CHAT_CACHE_ENTRIES bounds the chat's three large in-memory maps (members,
// apps, directory), and /metrics shows each map's bound and size.
func TestChatCacheEntries(t *testing.T) {
	f := newChatFixture(t, map[string]string{"CHAT_CACHE_ENTRIES": "1000"})
	f.openOK(t, f.fit(t, forgetest.AccountID, onPage(pageP)))
	// members, apps and directory at 1,000; sites and dirs at their own 50,000.
	if got, want := metric(t, f.ts, "chat_memory_entries_max"), 3*1000.0+2*chat.DefaultMaxSites; got != want {
		t.Errorf("chat_memory_entries_max sums to %v, want %v", got, want)
	}
	// One open: a membership, an app, a user in the directory, a site, its directory.
	if got := metric(t, f.ts, "chat_memory_entries"); got != 5 {
		t.Errorf("chat_memory_entries sums to %v after one open, want 5", got)
	}
}
