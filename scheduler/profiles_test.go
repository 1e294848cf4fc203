package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/weavy"
)

const ada = "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"

// minted tells the Queue of the user's first token and lets the first-sync
// window pass: the user is synced (if due and Confluence answers).
func (e *env) minted(t *testing.T, inst, uid string) {
	t.Helper()
	e.svc.UserMinted(inst, uid)
	e.svc.run.waitIdle()
	e.windowEnds(t)
}

// windowEnds ends the first-sync windows open now and waits for the syncs
// they start.
func (e *env) windowEnds(t *testing.T) {
	t.Helper()
	e.timers.fire()
	e.svc.run.waitIdle()
}

func (e *env) wantProfile(t *testing.T, uid, name, picture, email string) {
	t.Helper()
	p, ok := e.weavy.Profile(uid)
	if !ok {
		t.Fatalf("no Weavy profile for %s", uid)
	}
	if p["name"] != name || p["picture"] != picture || (email == "" && p["email"] != nil) || (email != "" && p["email"] != email) {
		t.Fatalf("profile of %s = %v; want name %q, picture %q, email %q", uid, p, name, picture, email)
	}
}

func TestProfileSyncAfterFirstMint(t *testing.T) {
	e := newEnv(t, nil)
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
	e.scheduled(t, instA, cloudA) // the trigger records the installation's apiBaseUrl; no user yet
	e.conf.AddUser(ada, "Ada Lovelace", "ada@example.com", "/wiki/aa-avatar/"+ada)
	e.conf.AddUser("557058:hidden", "Grace Hopper", "", "/wiki/aa-avatar/557058:hidden")

	e.minted(t, instA, ada)
	// No site known (Confluence sent no _links.base): apiBaseUrl + path.
	e.wantProfile(t, ada, "Ada Lovelace", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+ada, "ada@example.com")
	e.minted(t, instA, "557058:hidden")
	e.wantProfile(t, "557058:hidden", "Grace Hopper", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/557058:hidden", "")

	// Another first mint within the resync period (a new session) costs no call.
	calls := e.conf.Calls()
	e.clock.Advance(time.Hour)
	e.minted(t, instA, ada)
	if e.conf.Calls() != calls {
		t.Fatalf("a recently synced user was fetched again")
	}
	if got := e.counter(t, "scheduler_job_runs_total", map[string]string{"job": "profile_mint", "result": "ok"}); got != 3 {
		t.Errorf("profile_mint ok runs = %v, want 3", got)
	}
	if got := e.counter(t, "scheduler_job_runs_total", map[string]string{"job": "profile_sync", "result": "ok"}); got != 3 {
		t.Errorf("profile_sync ok runs = %v, want 3 (the scheduled one, two first syncs)", got)
	}
	if n := e.conf.BulkUserCalls(); n != 2 {
		t.Errorf("bulk reads = %d, want 2", n)
	}
}

// With no trigger seen yet and no _links.base in Confluence's answer, the
// sync knows no site to make the avatar's path absolute with: the picture
// is left out (the next sync, with the site known, sets it); the name is
// synced. It never goes to the app token store for the apiBaseUrl.
func TestProfileSyncNoSiteKnownLeavesPictureOut(t *testing.T) {
	e := newEnv(t, nil)
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	e.minted(t, instA, ada)
	if p, _ := e.weavy.Profile(ada); p["name"] != "Ada Lovelace" || p["picture"] != nil {
		t.Fatalf("profile = %v, want the name and no picture", p)
	}
}

func TestProfileSyncSiteAvatar(t *testing.T) {
	e := newEnv(t, func(o *testOptions) { o.UIDScope = weavy.ScopeSite })
	e.scheduled(t, instA, cloudA) // the installation is recorded
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
	e.conf.SetSiteURL("https://acme.atlassian.net")
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	uid, err := weavy.UID(weavy.ScopeSite, cloudA, ada)
	if err != nil {
		t.Fatal(err)
	}
	e.minted(t, instA, uid)
	e.wantProfile(t, uid, "Ada Lovelace", "https://acme.atlassian.net/wiki/aa-avatar/"+ada, "")
	list, _ := e.svc.Installations(t.Context())
	if list[0].SiteURL != "https://acme.atlassian.net" {
		t.Errorf("site = %q", list[0].SiteURL)
	}
}

// A profile is read again once PROFILE_RESYNC (7 days by default) has
// passed since its last sync, not before.
func TestProfileResyncAfterResyncPeriod(t *testing.T) {
	for _, tt := range []struct {
		name   string
		resync time.Duration
	}{
		{"default", 0},
		{"PROFILE_RESYNC=36h", 36 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *testOptions) { o.Resync = tt.resync })
			period := cmp.Or(tt.resync, DefaultProfileResync)
			e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
			e.scheduled(t, instA, cloudA)
			e.conf.AddUser(ada, "Ada", "", "/wiki/aa-avatar/1")
			e.minted(t, instA, ada)
			e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/2")

			// Hourly runs up to an hour short of the period read nothing.
			calls := e.conf.Calls()
			for e.clock.Now().Before(start.Add(period - time.Hour)) {
				e.clock.Advance(time.Hour)
				e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
				e.scheduled(t, instA, cloudA)
			}
			if e.conf.Calls() != calls {
				t.Fatalf("a profile synced less than %v ago was read again (%d calls)", period, e.conf.Calls()-calls)
			}
			e.wantProfile(t, ada, "Ada", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/1", "")
			// The run at the period reads it.
			e.clock.Advance(time.Hour)
			e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
			e.scheduled(t, instA, cloudA)
			e.wantProfile(t, ada, "Ada Lovelace", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/2", "")
		})
	}
}

func TestProfileSyncStaleTokenMakesNoCall(t *testing.T) {
	e := newEnv(t, nil)
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	// Three minutes left: under the 5 minutes a token needs to be handed out.
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Minute))

	e.minted(t, instA, ada)
	e.clock.Advance(10 * time.Minute)
	e.scheduled(t, instA, cloudA) // no fresh token came with it
	if e.conf.Calls() != 0 {
		t.Fatalf("Confluence got %d calls", e.conf.Calls())
	}
	stale := e.logsWith("code", "app_token_stale")
	if len(stale) != 2 {
		t.Fatalf("app_token_stale logged %d times, want 2; logs: %v", len(stale), e.logs.All())
	}
	for _, entry := range stale {
		if f := entry.ContextMap(); f["installation_id"] != instA || f["job"] != "profile_sync" {
			t.Errorf("stale log fields = %v", f)
		}
	}
	if got := e.counter(t, "scheduler_job_runs_total", map[string]string{"job": "profile_sync", "result": "stale"}); got != 2 {
		t.Errorf("stale runs = %v", got)
	}
	if _, ok := e.weavy.Profile(ada); ok {
		t.Fatal("a profile was written without Confluence")
	}

	// The user stays in the set: the next trigger with a fresh token syncs it.
	e.clock.Advance(time.Hour)
	e.deliverToken(t, instA, cloudA, e.clock.Now().Add(2*time.Hour))
	e.scheduled(t, instA, cloudA)
	e.wantProfile(t, ada, "Ada Lovelace", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+ada, "")
}

func TestProfileSync401StopsCalls(t *testing.T) {
	e := newEnv(t, nil)
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	// A token Confluence does not accept (revoked on its side).
	if err := e.tokens.Capture(t.Context(), e.inv(instA, cloudA), forgetest.MintAppToken(t, start.Add(3*time.Hour))); err != nil {
		t.Fatal(err)
	}
	e.minted(t, instA, ada)
	e.minted(t, instA, "557058:other")
	e.scheduled(t, instA, cloudA)
	if e.conf.Calls() != 1 {
		t.Fatalf("calls = %d, want 1: the 401 must stop the others", e.conf.Calls())
	}
	if n := len(e.logsWith("code", "app_token_stale")); n != 2 {
		t.Errorf("stale after the 401 logged %d times, want 2", n)
	}
	if len(e.logsWith("code", "job_failed")) != 1 {
		t.Errorf("the 401 was not logged as a job failure")
	}
}

// A day of hourly triggers, some bringing a fresh app token and some not
// (two in a row without one let the held token run out), with users opening
// the app in between: no call ever reaches Confluence with an expired token,
// and every user ends up synced.
func TestSimulatedDayNoExpiredCalls(t *testing.T) {
	e := newEnv(t, nil)
	type site struct{ inst, cloud string }
	sites := []site{{instA, cloudA}, {instB, cloudB}}
	var users []struct{ inst, uid, name string }

	for h := range 24 {
		for i, s := range sites {
			switch (h + i) % 5 {
			case 0:
				e.deliverToken(t, s.inst, s.cloud, e.clock.Now().Add(4*time.Hour))
			case 1, 2:
				e.deliverToken(t, s.inst, s.cloud, e.clock.Now().Add(2*time.Hour)) // the documented minimum
			}
			if h%7 == 6 && i == 1 {
				continue // this trigger was lost
			}
			e.scheduled(t, s.inst, s.cloud)
		}
		e.clock.Advance(20 * time.Minute)
		for i, s := range sites {
			acc := fmt.Sprintf("557058:h%02d-s%d", h, i)
			e.conf.AddUser(acc, "User "+acc, "", "/wiki/aa-avatar/"+acc)
			users = append(users, struct{ inst, uid, name string }{s.inst, acc, "User " + acc})
			e.minted(t, s.inst, acc)
		}
		e.clock.Advance(40 * time.Minute)
	}
	// The next trigger brings a token and catches up.
	for _, s := range sites {
		e.deliverToken(t, s.inst, s.cloud, e.clock.Now().Add(3*time.Hour))
		e.scheduled(t, s.inst, s.cloud)
	}

	if n := e.conf.ExpiredCalls(); n != 0 {
		t.Fatalf("%d calls reached Confluence with an expired token", n)
	}
	if len(e.logsWith("code", "app_token_stale")) == 0 {
		t.Fatal("the day never had a stale token: the test proves nothing")
	}
	for _, u := range users {
		p, ok := e.weavy.Profile(u.uid)
		if !ok || p["name"] != u.name {
			t.Errorf("user %s: profile %v", u.uid, p)
		}
	}
}

// syncedUsers sets up n users synced a resync period ago, due again, with a
// fresh token held, and returns their uids.
func (e *env) syncedUsers(t *testing.T, n int) []string {
	t.Helper()
	e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
	var uids []string
	for i := range n {
		uid := fmt.Sprintf("557058:user-%d", i)
		e.conf.AddUser(uid, "User "+uid, "", "/wiki/aa-avatar/"+uid)
		e.minted(t, instA, uid)
		uids = append(uids, uid)
	}
	e.clock.Advance(DefaultProfileResync + time.Hour)
	e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
	return uids
}

// Confluence throttling (429) or failing (5xx) past the client's retries ends
// the run: the next users are not called for.
func TestProfileSyncThrottledOrFailingEndsRun(t *testing.T) {
	for _, tt := range []struct {
		name          string
		status, fails int // fails: what the client's 3 retries use up
	}{
		{"429", http.StatusTooManyRequests, 4},
		{"503", http.StatusServiceUnavailable, 4},
		{"500", http.StatusInternalServerError, 1}, // not retried
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.syncedUsers(t, 3)
			e.conf.FailNext(tt.fails, tt.status, "")
			calls := e.conf.Calls()
			e.scheduled(t, instA, cloudA)
			if got := e.conf.Calls() - calls; got != tt.fails {
				t.Fatalf("%d calls, want %d: the run went on past HTTP %d", got, tt.fails, tt.status)
			}
			if len(e.logsWith("code", "job_failed")) != 1 {
				t.Errorf("the ended run was not logged as a job failure")
			}

			// Held off for 5 minutes: a first mint meanwhile calls nothing.
			e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
			e.clock.Advance(4 * time.Minute)
			calls = e.conf.Calls()
			e.minted(t, instA, ada)
			if e.conf.Calls() != calls {
				t.Fatal("a sync called Confluence during the hold-off")
			}
			// Then the next run syncs everyone still due.
			e.clock.Advance(time.Hour)
			e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
			e.scheduled(t, instA, cloudA)
			e.wantProfile(t, ada, "Ada Lovelace", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+ada, "")
			for i := range 3 {
				uid := fmt.Sprintf("557058:user-%d", i)
				if p, _ := e.weavy.Profile(uid); p["name"] != "User "+uid {
					t.Errorf("%s not synced after the hold-off: %v", uid, p)
				}
			}
		})
	}
}

// A 429 asking for longer than the client waits is honoured by the next runs.
func TestProfileSyncHonoursLongRetryAfter(t *testing.T) {
	e := newEnv(t, nil)
	e.syncedUsers(t, 2)
	e.conf.FailNext(1, http.StatusTooManyRequests, "1200") // 20 minutes: beyond the client's 30 s
	calls := e.conf.Calls()
	e.scheduled(t, instA, cloudA)
	if got := e.conf.Calls() - calls; got != 1 {
		t.Fatalf("%d calls, want 1", got)
	}
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	e.clock.Advance(15 * time.Minute) // past the 5-minute minimum, not the Retry-After
	calls = e.conf.Calls()
	e.minted(t, instA, ada)
	if e.conf.Calls() != calls {
		t.Fatal("Confluence called before its Retry-After")
	}
	e.clock.Advance(6 * time.Minute)
	e.minted(t, instA, ada)
	e.wantProfile(t, ada, "Ada Lovelace", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+ada, "")
}

func TestUserRecordDecode(t *testing.T) {
	u := userRecord{UID: ada, AddedAt: start, LastMintAt: start.Add(time.Nanosecond)}
	var got userRecord
	if !got.decode(u.encode()) || !got.AddedAt.Equal(u.AddedAt) || !got.LastMintAt.Equal(u.LastMintAt) || !got.SyncedAt.IsZero() {
		t.Fatalf("round trip: %+v, want %+v", got, u)
	}
	for _, v := range [][]byte{nil, {userRecordV1}, append([]byte{2}, u.encode()[1:]...), []byte(`{"uid":`)} {
		if (&userRecord{}).decode(v) {
			t.Errorf("decode(%q) ok", v)
		}
	}
}

// addDue records n users of inst that never had a profile sync, without
// asking for one (as a sync set holds users a scheduled run finds due), each
// a Confluence user; it returns their uids.
func (e *env) addDue(t *testing.T, inst string, n int) []string {
	t.Helper()
	now := e.clock.Now()
	var uids []string
	for i := range n {
		uid := fmt.Sprintf("557058:due-%04d", i)
		e.conf.AddUser(uid, "User "+uid, "", "/wiki/aa-avatar/"+uid)
		u := userRecord{UID: uid, AddedAt: now, LastMintAt: now}
		if err := e.kv.Put(t.Context(), userKey(inst, uid), u.encode(), u.ttl(now)); err != nil {
			t.Fatal(err)
		}
		uids = append(uids, uid)
	}
	return uids
}

// hourly moves the clock an hour on and delivers the hourly trigger with a
// fresh token.
func (e *env) hourly(t *testing.T, inst, cloud string) {
	t.Helper()
	e.clock.Advance(time.Hour)
	e.deliverToken(t, inst, cloud, e.clock.Now().Add(3*time.Hour))
	e.scheduled(t, inst, cloud)
}

// N users' profiles cost ⌈N/100⌉ requests to Confluence, 100 being what its
// bulk lookup returns at most, counted at the simulator; each scheduled run
// makes at most maxBatchesPerRun of them.
func TestProfileSyncCostsCeilNOver100Requests(t *testing.T) {
	for _, n := range []int{1, 99, 100, 101, 250, 401} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := newEnv(t, nil)
			e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
			e.scheduled(t, instA, cloudA) // no user yet: no call
			uids := e.addDue(t, instA, n)
			want := (n + confluencesim.UserBulkMax - 1) / confluencesim.UserBulkMax

			for runs := 0; runs*maxBatchesPerRun < want; runs++ {
				before := e.conf.BulkUserCalls()
				e.hourly(t, instA, cloudA)
				if got := e.conf.BulkUserCalls() - before; got > maxBatchesPerRun {
					t.Fatalf("one run made %d bulk reads, want at most %d", got, maxBatchesPerRun)
				}
			}
			e.hourly(t, instA, cloudA) // nothing left due: no call
			if got := e.conf.BulkUserCalls(); got != want {
				t.Errorf("%d users cost %d bulk reads, want %d", n, got, want)
			}
			if got := e.conf.Calls(); got != want {
				t.Errorf("%d calls to Confluence, want %d (no single-user reads)", got, want)
			}
			for _, r := range e.conf.Requests() {
				if ids := strings.Count(r, "accountId="); ids > confluencesim.UserBulkMax {
					t.Errorf("a request asked for %d users: over Confluence's maximum", ids)
				}
			}
			for _, uid := range uids {
				if p, ok := e.weavy.Profile(uid); !ok || p["name"] != "User "+uid {
					t.Fatalf("%s: profile %v", uid, p)
				}
			}
		})
	}
}

// A user's first token syncs their profile at once in a quiet installation;
// the first tokens minted within the next minute are synced together when it
// ends, in one read with the users then due for a resync.
func TestFirstSyncsBatchedPerWindow(t *testing.T) {
	e := newEnv(t, nil)
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
	e.scheduled(t, instA, cloudA)
	const old = "557058:old"
	e.conf.AddUser(old, "Old Name", "", "/wiki/aa-avatar/old")
	e.minted(t, instA, old)
	e.conf.AddUser(old, "New Name", "", "/wiki/aa-avatar/old")
	e.clock.Advance(DefaultProfileResync + time.Minute) // old is due again; no scheduled run since
	e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
	reads := e.conf.BulkUserCalls()

	users := []string{"557058:n0", "557058:n1", "557058:n2", "557058:n3"}
	for _, u := range users {
		e.conf.AddUser(u, "User "+u, "", "/wiki/aa-avatar/"+u)
	}
	e.svc.UserMinted(instA, users[0])
	e.svc.run.waitIdle()
	if got := e.conf.BulkUserCalls() - reads; got != 1 {
		t.Fatalf("first token in a quiet installation: %d reads, want 1", got)
	}
	e.wantProfile(t, users[0], "User "+users[0], e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+users[0], "")
	e.wantProfile(t, old, "New Name", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/old", "") // batched with it

	for _, u := range users[1:] {
		e.svc.UserMinted(instA, u)
	}
	e.svc.run.waitIdle()
	if got := e.conf.BulkUserCalls() - reads; got != 1 {
		t.Fatalf("first tokens within the window: %d reads before it ended, want still 1", got)
	}
	if _, ok := e.weavy.Profile(users[1]); ok {
		t.Fatal("synced before the window ended")
	}
	e.windowEnds(t)
	if got := e.conf.BulkUserCalls() - reads; got != 2 {
		t.Fatalf("%d reads after the window, want 2: the three new users in one", got)
	}
	reqs := e.conf.Requests()
	if last := reqs[len(reqs)-1]; strings.Count(last, "accountId=") != 3 {
		t.Errorf("the window's read = %s, want the three users", last)
	}
	for _, u := range users {
		e.wantProfile(t, u, "User "+u, e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+u, "")
	}

	// A quiet window later, the next first token is synced at once again.
	e.windowEnds(t)
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	e.svc.UserMinted(instA, ada)
	e.svc.run.waitIdle()
	if got := e.conf.BulkUserCalls() - reads; got != 3 {
		t.Fatalf("%d reads, want 3", got)
	}
	// Another installation is paced apart.
	e.deliverToken(t, instB, cloudB, e.clock.Now().Add(3*time.Hour))
	e.conf.AddUser("557058:b", "B", "", "/wiki/aa-avatar/b")
	e.svc.UserMinted(instB, "557058:b")
	e.svc.run.waitIdle()
	if _, ok := e.weavy.Profile("557058:b"); !ok {
		t.Fatal("B's first token waited for A's window")
	}
}

// fakeBudget answers Allow with allow and records the points asked.
type fakeBudget struct {
	mu    sync.Mutex
	allow bool
	asked []int
}

func (b *fakeBudget) Allow(_ context.Context, inst string, points int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.asked = append(b.asked, points)
	return b.allow
}

func (b *fakeBudget) set(allow bool) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allow = allow
	asked := b.asked
	b.asked = nil
	return asked
}

// The budget is asked before every bulk read, with its expected points: a
// refusal makes no call and leaves the users due; a deferred first sync is
// tried again when the window ends.
func TestProfileSyncAsksTheBudget(t *testing.T) {
	b := &fakeBudget{}
	e := newEnv(t, func(o *testOptions) { o.Budget = b })
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
	e.scheduled(t, instA, cloudA)
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)

	e.svc.UserMinted(instA, ada)
	e.svc.run.waitIdle()
	if e.conf.Calls() != 0 {
		t.Fatal("Confluence called with the budget refusing")
	}
	if asked := b.set(true); !slices.Equal(asked, []int{BulkReadPoints(1)}) || BulkReadPoints(1) != 3 {
		t.Fatalf("budget asked for %v points, want [3]", asked)
	}
	e.windowEnds(t) // the deferred first sync, now allowed
	e.wantProfile(t, ada, "Ada Lovelace", e.conf.APIBaseURL(cloudA)+"/wiki/aa-avatar/"+ada, "")

	// The scheduled run asks per batch: 150 users are 201 then 101 points.
	e.addDue(t, instA, 150)
	b.set(true)
	e.hourly(t, instA, cloudA)
	if asked := b.set(false); !slices.Equal(asked, []int{201, 101}) {
		t.Fatalf("budget asked for %v, want [201 101]", asked)
	}
	if e.conf.BulkUserCalls() != 3 {
		t.Fatalf("%d reads, want 3", e.conf.BulkUserCalls())
	}
}
