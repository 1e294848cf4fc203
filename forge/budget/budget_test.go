package budget_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/redis"
	"github.com/forge-remote/forge-remote/store/redistest"
)

const (
	siteA = "https://api.atlassian.com/ex/confluence/11111111-1111-1111-1111-111111111111"
	siteB = "https://api.atlassian.com/ex/confluence/22222222-2222-2222-2222-222222222222"
	page  = "/wiki/api/v2/pages/98305"
	user  = "/wiki/rest/api/user?accountId=abc"
)

// clock is a settable time shared by the replicas of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 8, 12, 14, 5, 0, 0, time.UTC)} }
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newBudget(kv store.KV, c *clock, o budget.Options) *budget.Budget {
	o.KV, o.Now = kv, c.Now
	return budget.New(o)
}

// call makes one admitted call answering status with header h and body.
func call(t *testing.T, b *budget.Budget, kind budget.Kind, site, path string, status int, h http.Header, body string) error {
	t.Helper()
	tk, err := b.Take(context.Background(), kind, site, http.MethodGet, path)
	if err != nil {
		return err
	}
	b.Done(context.Background(), tk, http.MethodGet, path, status, h, []byte(body))
	return nil
}

func refused(err error, reason string) bool {
	var pe *budget.PausedError
	return errors.As(err, &pe) && pe.Reason == reason && errors.Is(err, budget.ErrRefused)
}

// spendAll has two replicas over kv spend page checks (2 points each) in
// turn until both are refused, and returns the points spent.
func spendAll(t *testing.T, kv store.KV, c *clock, limit int64) int64 {
	t.Helper()
	o := budget.Options{PointsPerHour: limit, Reserve: 0.3, Chunk: 50}
	r1, r2 := newBudget(kv, c, o), newBudget(kv, c, o)
	var spent int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, b := range []*budget.Budget{r1, r2} {
		wg.Go(func() {
			for {
				err := call(t, b, budget.PageCheck, siteA, page, 200, nil, `{"id":"98305"}`)
				if err != nil {
					if !refused(err, budget.ReasonExhausted) {
						t.Errorf("refused with %v, want exhausted", err)
					}
					return
				}
				mu.Lock()
				spent += 2
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return spent
}

// Two replicas together never spend more than the hour's budget, and a new
// hour gives them a new one.
func TestTwoReplicasShareTheBudget(t *testing.T) {
	c := newClock()
	kv := memory.New(c.Now)
	spent := spendAll(t, kv, c, 1000)
	if spent > 1000 || spent < 1000-2*50 {
		t.Fatalf("two replicas spent %d points of 1000 (at most one chunk each may be left unspent)", spent)
	}
	c.Add(time.Hour)
	if spent := spendAll(t, kv, c, 1000); spent > 1000 || spent < 900 {
		t.Fatalf("the next hour: %d points of 1000", spent)
	}
}

// The same over a real Redis, the store replicas share.
func TestTwoReplicasShareTheBudgetOverRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	kv, err := redis.Open(context.Background(), srv.URL(), redis.Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	if spent := spendAll(t, kv, c, 2000); spent > 2000 || spent < 2000-2*50 {
		t.Fatalf("two replicas over Redis spent %d points of 2000", spent)
	}
}

// Below the reserve, background calls are refused (logged once) while page
// checks go on to the end of the hour; the next hour background runs again.
func TestReserveIsForPageChecks(t *testing.T) {
	c := newClock()
	kv := memory.New(c.Now)
	b := newBudget(kv, c, budget.Options{PointsPerHour: 1000, Reserve: 0.3, Chunk: 20})
	n := 0
	for {
		err := call(t, b, budget.ProfileSync, siteA, user, 200, nil, `{"accountId":"abc"}`)
		if err != nil {
			if !refused(err, budget.ReasonReserve) {
				t.Fatalf("background refused with %v, want reserve", err)
			}
			break
		}
		n++
	}
	// At 14:05 the reserve is 0.3 of the 55 minutes left: 275 points.
	if spent := int64(n * 3); spent > 725 || spent < 725-30 {
		t.Fatalf("background spent %d points before the reserve; want about 725 of 1000", spent)
	}
	pages := 0
	for call(t, b, budget.PageCheck, siteA, page, 200, nil, `{}`) == nil {
		pages++
	}
	if spent := n*3 + pages*2; spent > 1000 || spent < 980 {
		t.Fatalf("page checks stopped at %d points of 1000", spent)
	}
	c.Add(time.Hour)
	if err := call(t, b, budget.ProfileSync, siteA, user, 200, nil, `{}`); err != nil {
		t.Fatalf("the next hour, background refused: %v", err)
	}
}

// The reserve is a share of the rest of the hour: in its last minutes
// background work may spend what page checks no longer need.
func TestReserveShrinksWithTheHour(t *testing.T) {
	c := newClock()
	c.Add(51 * time.Minute) // 14:56: 4 minutes left, the reserve 20 of 1000
	kv := memory.New(c.Now)
	b := newBudget(kv, c, budget.Options{PointsPerHour: 1000, Reserve: 0.3, Chunk: 20})
	n := 0
	for call(t, b, budget.ProfileSync, siteA, user, 200, nil, `{"accountId":"abc"}`) == nil {
		n++
	}
	if spent := n * 3; spent < 950 || spent > 980 {
		t.Fatalf("background spent %d points at 14:56; want about 980 of 1000", spent)
	}
}

// Atlassian's headers lower the remaining budget on both replicas: what one
// replica reads, the other believes.
func TestHeadersLowerTheBudgetOnEveryReplica(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.Header
	}{
		{"RateLimit r", http.Header{"Ratelimit": {`"global-app-quota";r=200;t=1800`}}},
		{"Beta-RateLimit r", http.Header{"Beta-Ratelimit": {`"other";r=1, "global-app-quota";r=200;t=1800`}}},
		{"NearLimit", http.Header{"X-Ratelimit-Nearlimit": {"true"}}},
		{"policy q", http.Header{"Ratelimit-Policy": {`"global-app-quota";q=20;w=3600`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			kv := memory.New(c.Now)
			o := budget.Options{PointsPerHour: 1000, Reserve: 0.3, Chunk: 20}
			r1, r2 := newBudget(kv, c, o), newBudget(kv, c, o)
			if err := call(t, r2, budget.ProfileSync, siteA, user, 200, nil, `{}`); err != nil {
				t.Fatal(err)
			}
			if err := call(t, r1, budget.PageCheck, siteA, page, 200, tc.h, `{}`); err != nil {
				t.Fatal(err)
			}
			c.Add(time.Second) // r2's view is refreshed
			for _, b := range []*budget.Budget{r1, r2} {
				if err := call(t, b, budget.ProfileSync, siteA, user, 200, nil, `{}`); !refused(err, budget.ReasonReserve) {
					t.Fatalf("background after Atlassian said little is left: %v, want refused (reserve)", err)
				}
				if rem := b.Remaining(); rem > 260 {
					t.Fatalf("remaining %d, want Atlassian's word (at most about 250)", rem)
				}
				if err := call(t, b, budget.PageCheck, siteA, page, 200, nil, `{}`); err != nil {
					t.Fatalf("page check refused: %v", err)
				}
			}
		})
	}
}

// A 429 naming the global pool (or none, with Retry-After) pauses every
// call of every replica until Retry-After; a tenant-based one pauses only
// that site; a burst 429 pauses nothing.
func TestPauses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		h      http.Header
		global bool
		site   bool
	}{
		{"global reason", http.Header{"Retry-After": {"120"}, "Ratelimit-Reason": {"confluence-quota-global-based"}}, true, true},
		{"field global reason", http.Header{"Retry-After": {"120"}, "Ratelimit-Reason": {"conf-global-based"}}, true, true},
		{"no reason, Retry-After", http.Header{"Retry-After": {"120"}}, true, true},
		{"tenant reason", http.Header{"Retry-After": {"120"}, "Ratelimit-Reason": {"confluence-quota-tenant-based"}}, false, true},
		{"burst", http.Header{"Retry-After": {"120"}, "Ratelimit-Reason": {"confluence-burst-based"}}, false, false},
		{"no reason, no Retry-After", http.Header{}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			kv := memory.New(c.Now)
			o := budget.Options{PointsPerHour: 1000, Reserve: 0.3}
			r1, r2 := newBudget(kv, c, o), newBudget(kv, c, o)
			for _, b := range []*budget.Budget{r1, r2} { // both have read the (absent) pauses
				if err := call(t, b, budget.PageCheck, siteB, page, 200, nil, `{}`); err != nil {
					t.Fatal(err)
				}
			}
			if err := call(t, r1, budget.PageCheck, siteA, page, 429, tc.h, ``); err != nil {
				t.Fatal(err)
			}
			c.Add(time.Second) // within Refresh every replica knows
			for i, b := range []*budget.Budget{r1, r2} {
				for _, s := range []struct {
					site   string
					paused bool
				}{{siteA, tc.site}, {siteB, tc.global}} {
					err := call(t, b, budget.PageCheck, s.site, page, 200, nil, `{}`)
					var pe *budget.PausedError
					switch {
					case s.paused && !errors.As(err, &pe):
						t.Fatalf("replica %d, %s: %v, want paused", i+1, s.site, err)
					case s.paused && pe.RetryAfter != 119*time.Second:
						t.Fatalf("replica %d: RetryAfter %v, want 119s", i+1, pe.RetryAfter)
					case !s.paused && err != nil:
						t.Fatalf("replica %d, %s: %v, want no pause", i+1, s.site, err)
					}
				}
			}
			c.Add(2 * time.Minute)
			for _, b := range []*budget.Budget{r1, r2} {
				if err := call(t, b, budget.ProfileSync, siteA, user, 200, nil, `{}`); err != nil {
					t.Fatalf("after Retry-After: %v", err)
				}
			}
		})
	}
}

// A quota 429 without Retry-After pauses until the reset Atlassian names,
// and never past the next top of the hour.
func TestPauseUntilReset(t *testing.T) {
	c := newClock() // 14:05
	kv := memory.New(c.Now)
	b := newBudget(kv, c, budget.Options{})
	h := http.Header{"Ratelimit-Reason": {"confluence-quota-global-based"}, "X-Ratelimit-Reset": {"2026-08-12T16:00Z"}}
	if err := call(t, b, budget.PageCheck, siteA, page, 429, h, ``); err != nil {
		t.Fatal(err)
	}
	err := call(t, b, budget.PageCheck, siteA, page, 200, nil, ``)
	var pe *budget.PausedError
	if !errors.As(err, &pe) || pe.RetryAfter != 55*time.Minute {
		t.Fatalf("%v, want paused 55m (to 15:00)", err)
	}
	st, err := b.Status(context.Background())
	if err != nil || len(st.Pauses) != 1 || st.Pauses[0].Scope != budget.ScopeApp || st.Pauses[0].RetryAfterSeconds != 3300 {
		t.Fatalf("status %+v, %v", st, err)
	}
}

// Spend is counted by kind, fleet-wide, in the operator's view; with
// PoolSite each site has its own hour.
func TestStatusAndSitePools(t *testing.T) {
	c := newClock()
	kv := memory.New(c.Now)
	o := budget.Options{PointsPerHour: 100, Pool: budget.PoolSite, Reserve: 0.5, Chunk: 10}
	r1, r2 := newBudget(kv, c, o), newBudget(kv, c, o)
	for call(t, r1, budget.PageCheck, siteA, page, 200, nil, `{}`) == nil {
	}
	if err := call(t, r2, budget.PageCheck, siteB, "/wiki/api/v2/spaces?keys=A", 200, nil, `{"results":[{"key":"A"},{"key":"B"}]}`); err != nil {
		t.Fatalf("site B has its own pool: %v", err)
	}
	if err := call(t, r2, budget.ConnectCapture, siteB, "/wiki/rest/atlassian-connect/1/addons/k/properties/p", 404, nil, `{}`); err != nil {
		t.Fatal(err)
	}
	c.Add(time.Second)
	call(t, r2, budget.Other, siteB, page, 200, nil, `{}`)
	c.Add(time.Second)
	call(t, r2, budget.PageCheck, siteB, page, 200, nil, `{}`) // flushes r2's spend
	st, err := r1.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]budget.PoolStatus{}
	for _, p := range st.Pools {
		got[p.Pool] = p
	}
	a, b := got["site/11111111-1111-1111-1111-111111111111"], got["site/22222222-2222-2222-2222-222222222222"]
	if a.Spent["page_check"] < 90 || a.Remaining > 10 {
		t.Fatalf("site A %+v", a)
	}
	if b.Spent["page_check"] != 3 || b.Spent["connect_capture"] != 1 || b.Spent["other"] != 2 {
		t.Fatalf("site B %+v", b)
	}
}

func TestCost(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
		want         int64
	}{
		{"GET", "/wiki/rest/api/content/123456", 200, `{"id":"123456"}`, 2},
		{"GET", "/wiki/rest/api/user?accountId=x", 200, `{"accountId":"x"}`, 3},
		{"GET", "/wiki/rest/api/group/member", 200, `{"results":[` + "{},{},{},{},{},{},{},{}" + `]}`, 17},
		{"GET", "/wiki/api/v2/spaces?keys=A", 200, `{"results":[]}`, 1},
		{"POST", "/wiki/rest/api/content", 200, `{"id":"1"}`, 1},
		{"PUT", "/wiki/rest/api/content/1", 200, `{"id":"1"}`, 1},
		{"GET", "/wiki/api/v2/pages/1", 404, `{}`, 1},
		{"GET", "/wiki/api/v2/pages/1", 429, ``, 1},
	} {
		if got := budget.Cost(tc.method, tc.path, tc.status, []byte(tc.body)); got != tc.want {
			t.Errorf("Cost(%s %s %d) = %d, want %d", tc.method, tc.path, tc.status, got, tc.want)
		}
	}
}

func TestParseHeaders(t *testing.T) {
	now := time.Date(2026, 3, 26, 15, 40, 0, 0, time.UTC)
	h := budget.ParseHeaders(http.Header{
		"Ratelimit":             {`"burst";r=5, "tenant-app-quota";r=1234;t=1200`},
		"Beta-Ratelimit-Policy": {`"global-app-quota";q=65000;w=3600, "tenant-app-quota";q=100100;w=3600`},
		"X-Ratelimit-Nearlimit": {"true"},
		"Retry-After":           {"1847"},
		"Ratelimit-Reason":      {"confluence-quota-global-based"},
		"X-Ratelimit-Reset":     {"2026-03-26T16:00Z"},
	}, now)
	if !h.HasRemaining || h.Remaining != 1234 || h.Reset != 20*time.Minute || h.Quota != 65000 || h.Window != time.Hour ||
		!h.NearLimit || h.RetryAfter != 1847*time.Second || h.Reason != "confluence-quota-global-based" ||
		!h.ResetAt.Equal(time.Date(2026, 3, 26, 16, 0, 0, 0, time.UTC)) {
		t.Fatalf("%+v", h)
	}
	if budget.ParseHeaders(http.Header{}, now).Informs() {
		t.Fatal("no headers inform")
	}
}

func TestSiteAndDelay(t *testing.T) {
	if s := budget.Site(siteA + "/"); s != "11111111-1111-1111-1111-111111111111" {
		t.Fatalf("Site = %q", s)
	}
	if s := budget.Site("http://127.0.0.1:8080/x"); s != "127.0.0.1:8080/x" {
		t.Fatalf("Site = %q", s)
	}
	for _, inst := range []string{"a", "b", "c"} {
		off := budget.Offset(inst)
		at := time.Date(2026, 8, 12, 14, 0, 0, 0, time.UTC)
		for _, into := range []time.Duration{0, off, off + time.Second, 59 * time.Minute} {
			d := budget.Delay(inst, at.Add(into))
			if d < 0 || d >= time.Hour || at.Add(into+d).Sub(at.Add(into+d).Truncate(time.Hour)) != off {
				t.Fatalf("Delay(%s, +%v) = %v, offset %v", inst, into, d, off)
			}
		}
	}
}
