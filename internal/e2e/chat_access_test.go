package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/server"
)

// The page check, played from the attacker's side: every user here holds a
// valid FIT and their own valid user token, and names a page Confluence
// does not let them view.

const (
	bobID   = "5b10ac8d82e05b22cc7d4ef5"
	pageR   = "131073" // restricted to alice
	spaceID = "65537"
)

// A's FIT names restricted page R, which Confluence lets only A view: A
// opens its chat; B, with a FIT naming R and B's own user token, gets 403
// no_access, is no member, and Weavy saw no call for B's attempt. Every
// check was made with the user's token, never the app's.
func TestChatRestrictedPage(t *testing.T) {
	f := newChatFixture(t, nil)
	alice := forgetest.AccountID
	f.conf.Restrict(pageR, alice)
	if r := f.open(t, f.fit(t, alice, onPage(pageR)), `{}`); r.Status != http.StatusOK {
		t.Fatalf("alice: %d %s", r.Status, r.Body)
	}
	admin := f.wv.AdminCalls()
	for range 2 { // the second from the verdict held
		r := f.open(t, f.fit(t, bobID, onPage(pageR)), `{}`)
		if r.Status != http.StatusForbidden || r.ErrCode != "no_access" || !strings.Contains(string(r.Body), "can't view this page") {
			t.Fatalf("bob: %d %s", r.Status, r.Body)
		}
	}
	if n := f.wv.AdminCalls() - admin; n != 0 {
		t.Errorf("bob's refused opens made %d Weavy calls: %v", n, f.wv.AdminRequests(admin))
	}
	app, _ := f.wv.App(pageUID(forgetest.CloudID, pageR))
	if app.Members[bobID] != "" || app.Members[alice] == "" {
		t.Errorf("members of R: %v", app.Members)
	}
	checks := f.conf.ContentChecks()
	if len(checks) != 2 {
		t.Errorf("%d Confluence checks, want 2 (alice's, bob's first): %+v", len(checks), checks)
	}
	for i, c := range checks {
		want := []string{alice, bobID}[min(i, 1)]
		if c.As != want || c.As == confluencesim.AsApp || c.Path != "/wiki/api/v2/pages/"+pageR || c.CloudID != forgetest.CloudID {
			t.Errorf("check %d: %+v, want as %s", i, c, want)
		}
	}
	if m := metric(t, f.ts, `chat_access_checks_total{result="denied"}`); m != 1 {
		t.Errorf("denied checks: %v", m)
	}
	if m := metric(t, f.ts, `chat_access_checks_total{result="allowed"}`); m != 1 {
		t.Errorf("allowed checks: %v", m)
	}
}

// B was a member of P; P becomes restricted; B's next open after
// CHAT_RECHECK is 403 and B is no member of P's app any more. Before
// CHAT_RECHECK the open is answered from memory: zero Confluence and zero
// Weavy calls.
func TestChatRestrictionRemovesMember(t *testing.T) {
	f := newChatFixture(t, map[string]string{"CHAT_RECHECK": "10m"})
	alice := forgetest.AccountID
	for _, u := range []string{alice, bobID} {
		f.openOK(t, f.fit(t, u, onPage(pageP)))
	}
	calls, admin := len(f.conf.ContentChecks()), f.wv.AdminCalls()
	f.offset.Add(int64(5 * time.Minute))
	f.openOK(t, f.fit(t, bobID, onPage(pageP)))
	if n, w := len(f.conf.ContentChecks())-calls, f.wv.AdminCalls()-admin; n != 0 || w != 0 {
		t.Fatalf("a warm open within CHAT_RECHECK: %d Confluence and %d Weavy calls", n, w)
	}
	f.conf.Restrict(pageP, alice)
	f.offset.Add(int64(5 * time.Minute))
	r := f.open(t, f.fit(t, bobID, onPage(pageP)), `{}`)
	if r.Status != http.StatusForbidden || r.ErrCode != "no_access" {
		t.Fatalf("bob after the restriction: %d %s", r.Status, r.Body)
	}
	app, _ := f.wv.App(pageUID(forgetest.CloudID, pageP))
	if app.Members[bobID] != "" || app.Members[alice] == "" {
		t.Fatalf("members of P after bob's refusal: %v", app.Members)
	}
	if m := metric(t, f.ts, `chat_memberships_removed_total{reason="access_denied"}`); m != 1 {
		t.Errorf("removed for access_denied: %v", m)
	}
	// Access given back: within CHAT_RECHECK the refusal holds; after it,
	// bob is a member again.
	f.conf.Unrestrict(pageP)
	if r := f.open(t, f.fit(t, bobID, onPage(pageP)), `{}`); r.Status != http.StatusForbidden {
		t.Fatalf("bob within CHAT_RECHECK of his refusal: %d %s", r.Status, r.Body)
	}
	f.offset.Add(int64(10 * time.Minute))
	f.openOK(t, f.fit(t, bobID, onPage(pageP)))
	if app, _ := f.wv.App(pageUID(forgetest.CloudID, pageP)); app.Members[bobID] == "" {
		t.Fatalf("bob not a member again: %v", app.Members)
	}
}

// CHAT_RECHECK=0 asks Confluence on every open.
func TestChatRecheckZero(t *testing.T) {
	f := newChatFixture(t, map[string]string{"CHAT_RECHECK": "0"})
	for i := 1; i <= 3; i++ {
		f.openOK(t, f.fit(t, forgetest.AccountID, onPage(pageP)))
		if n := len(f.conf.ContentChecks()); n != i {
			t.Fatalf("open %d: %d checks", i, n)
		}
	}
}

// What Confluence answers when it gives no verdict, and a call without the
// user token: each its documented answer, never 401, and no member added.
func TestChatCheckFailures(t *testing.T) {
	f := newChatFixtureWith(t, nil, server.Options{PageCheckTimeout: 2 * time.Second})
	alice := forgetest.AccountID
	uid := pageUID(forgetest.CloudID, pageP)
	for _, c := range []struct {
		name, code string
		status     int
		retryAfter string
		fail       func()
	}{
		// A burst 429 holds back only its call: a quota one would pause
		// every later check (TestQuota429PausesEveryReplica, resolvers).
		{"429 with Retry-After", "confluence_busy", 503, "42", func() {
			f.conf.FailNextWithHeaders(1, http.StatusTooManyRequests, http.Header{
				"Retry-After": {"42"}, "Ratelimit-Reason": {"confluence-burst-based"}})
		}},
		{"429 without Retry-After", "confluence_busy", 503, "5", func() { f.conf.FailNext(1, http.StatusTooManyRequests, "") }},
		{"500", "confluence_unavailable", 503, "", func() { f.conf.FailNext(1, http.StatusInternalServerError, "") }},
		{"401 (a stale user token)", "confluence_unavailable", 503, "", func() { f.conf.FailNext(1, http.StatusUnauthorized, "") }},
		{"a hang", "confluence_unavailable", 503, "", func() { f.conf.HangNext(1) }},
	} {
		c.fail()
		admin := f.wv.AdminCalls()
		r := f.open(t, f.fit(t, alice, onPage(pageP)), `{}`)
		if r.Status != c.status || r.ErrCode != c.code || r.Header.Get("Retry-After") != c.retryAfter {
			t.Errorf("%s: %d %s Retry-After %q", c.name, r.Status, r.Body, r.Header.Get("Retry-After"))
		}
		if n := f.wv.AdminCalls() - admin; n != 0 {
			t.Errorf("%s: %d Weavy calls", c.name, n)
		}
		if _, made := f.wv.App(uid); made {
			t.Errorf("%s: the app was made", c.name)
		}
	}
	if m := metric(t, f.ts, `chat_access_checks_total{result="error"}`); m != 5 {
		t.Errorf("checks without a verdict: %v", m)
	}

	// No x-forge-oauth-user: the manifest lacks appUserToken. Said once per
	// installation in the log; no Confluence or Weavy call.
	checks, admin := len(f.conf.ContentChecks()), f.wv.AdminCalls()
	for range 3 {
		r := f.openWith(t, f.fit(t, alice, onPage(pageP)), "", `{}`)
		if r.Status != http.StatusForbidden || r.ErrCode != "user_token_missing" || !strings.Contains(string(r.Body), "appUserToken") {
			t.Fatalf("no user token: %d %s", r.Status, r.Body)
		}
	}
	if n, w := len(f.conf.ContentChecks())-checks, f.wv.AdminCalls()-admin; n != 0 || w != 0 {
		t.Errorf("without a user token: %d Confluence and %d Weavy calls", n, w)
	}
	if n := strings.Count(f.ts.Logs.String(), "carries no app user token"); n != 1 {
		t.Errorf("the missing user token was logged %d times, want once", n)
	}
	// The site-wide chat needs no token and no check.
	if r := f.openWith(t, f.fit(t, alice, extension(nil)), "", `{}`); r.Status != http.StatusOK {
		t.Errorf("site chat without a user token: %d %s", r.Status, r.Body)
	}
	// Once Confluence answers, the same open succeeds.
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	if strings.Contains(f.ts.Logs.String(), `"status":401`) {
		t.Errorf("the server answered 401 for something Confluence said")
	}
}

// A space chat is checked as the user; one who cannot view the space is
// refused. Guests (unlicensed) fail every check as the user (ECO-1450).
func TestChatSpaceAndGuests(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, guest := forgetest.AccountID, "6c21bd9e93f16c33dd8e5f06"
	f.conf.RestrictSpace("SEC", alice)
	onSpace := func(key, id string) forgetest.FITOption {
		return extension(map[string]any{"space": map[string]any{"key": key, "id": id}})
	}
	if r := f.open(t, f.fit(t, alice, onSpace("SEC", "98")), `{}`); r.Status != http.StatusOK {
		t.Fatalf("alice, space SEC: %d %s", r.Status, r.Body)
	}
	if r := f.open(t, f.fit(t, bobID, onSpace("SEC", "98")), `{}`); r.Status != http.StatusForbidden || r.ErrCode != "no_access" {
		t.Fatalf("bob, space SEC: %d %s", r.Status, r.Body)
	}
	// A space named by id only.
	f.conf.AddSpace("ENG2", "4096")
	f.conf.RestrictSpace("ENG2", alice)
	byID := extension(map[string]any{"space": map[string]any{"id": "4096"}})
	if r := f.open(t, f.fit(t, bobID, byID), `{}`); r.Status != http.StatusForbidden {
		t.Fatalf("bob, space by id: %d %s", r.Status, r.Body)
	}
	if r := f.open(t, f.fit(t, alice, byID), `{}`); r.Status != http.StatusOK {
		t.Fatalf("alice, space by id: %d %s", r.Status, r.Body)
	}
	f.conf.SetGuest(guest)
	if r := f.open(t, f.fit(t, guest, onPage(pageP)), `{}`); r.Status != http.StatusForbidden || r.ErrCode != "no_access" {
		t.Fatalf("guest, page: %d %s", r.Status, r.Body)
	}
	if r := f.open(t, f.fit(t, guest, extension(nil)), `{}`); r.Status != http.StatusOK {
		t.Fatalf("guest, site chat: %d %s", r.Status, r.Body)
	}
}
