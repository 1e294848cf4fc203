package chat

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/weavy"
)

// clock is a fake clock the Service reads.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// confluence is a page check's answers: viewers of each target id, and the
// calls it got.
type confluence struct {
	mu      sync.Mutex
	viewers map[string]map[string]bool // target id → users who can view it
	fail    error
	calls   int
	gate    chan struct{} // when set, each check waits for it
	started chan struct{} // when set, told of each check's start
}

func (c *confluence) allow(id string, users ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.viewers == nil {
		c.viewers = map[string]map[string]bool{}
	}
	c.viewers[id] = map[string]bool{}
	for _, u := range users {
		c.viewers[id][u] = true
	}
}

func (c *confluence) failWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = err
}

func (c *confluence) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *confluence) check(id, user string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		c.mu.Lock()
		c.calls++
		gate, fail, ok := c.gate, c.fail, c.viewers[id][user]
		c.mu.Unlock()
		if c.started != nil {
			c.started <- struct{}{}
		}
		if gate != nil {
			<-gate
		}
		return ok, fail
	}
}

type accessFixture struct {
	s     *Service
	wv    *weavysim.Server
	weavy *spyWeavy // what s calls: the simulator's client, its member calls recorded
	kv    store.KV
	clock *clock
	conf  *confluence
	reg   *prometheus.Registry // s's metrics
}

// newWeavyAndStore starts a Weavy simulator with a client on it and opens a
// memory store, both closed when t ends.
func newWeavyAndStore(t *testing.T) (*weavysim.Server, *weavy.Client, store.KV) {
	t.Helper()
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	c, err := weavy.NewClient(wv.URL, weavysim.APIKey, weavy.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := open.Store(context.Background(), open.Options{URL: "memory://"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	return wv, c, kv
}

func newAccessFixture(t *testing.T, o Options) *accessFixture {
	t.Helper()
	wv, c, kv := newWeavyAndStore(t)
	f := &accessFixture{wv: wv, weavy: &spyWeavy{Weavy: c}, kv: kv, clock: newClock(), conf: &confluence{},
		reg: prometheus.NewRegistry()}
	o.Now = f.clock.now
	o.Registerer = f.reg
	f.s = New(f.weavy, kv, o)
	return f
}

const (
	inst  = "ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	alice = "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	bob   = "5b10ac8d82e05b22cc7d4ef5"
)

func (f *accessFixture) req(user, page string) Request {
	return Request{InstallationID: inst, CloudID: cloud, User: user, Target: Target{KindPage, page},
		Check: f.conf.check(page, user)}
}

func (f *accessFixture) members(t *testing.T, page string) map[string]string {
	t.Helper()
	app, ok := f.wv.App(AppUID(cloud, Target{KindPage, page}))
	if !ok {
		return nil
	}
	return app.Members
}

func (f *accessFixture) hasLease(t *testing.T, user, page string) bool {
	t.Helper()
	_, err := f.kv.Get(context.Background(), leaseKey(inst, AppUID(cloud, Target{KindPage, page}), user))
	if err != nil && !errNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// A user Confluence refuses gets ErrNoAccess, costs no Weavy call, and the
// refusal is kept for Recheck: the next open within it asks nobody, the
// first after it asks again (and one just granted gets in).
func TestOpenDeniedCostsNoWeavyCall(t *testing.T) {
	f := newAccessFixture(t, Options{Recheck: 10 * time.Minute})
	f.conf.allow("1", alice)
	ctx := context.Background()
	admin := f.wv.AdminCalls()
	for range 2 {
		if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, ErrNoAccess) {
			t.Fatalf("bob: %v", err)
		}
	}
	if f.wv.AdminCalls() != admin || f.conf.count() != 1 {
		t.Fatalf("denied opens: %d Weavy calls, %d checks; want 0 and 1", f.wv.AdminCalls()-admin, f.conf.count())
	}
	f.conf.allow("1", alice, bob)
	f.clock.advance(10*time.Minute - 1)
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, ErrNoAccess) || f.conf.count() != 1 {
		t.Fatalf("within Recheck: %v, %d checks", err, f.conf.count())
	}
	f.clock.advance(1)
	if _, err := f.s.Open(ctx, f.req(bob, "1")); err != nil || f.conf.count() != 2 {
		t.Fatalf("after Recheck, granted: %v, %d checks", err, f.conf.count())
	}
	if m := f.members(t, "1"); m[bob] == "" {
		t.Fatalf("bob is no member: %v", m)
	}
}

// An allowed open is kept for Recheck: a second open within it makes no
// Confluence, Weavy or store call; the first after it asks Confluence once
// and, the membership still warm, nothing else.
func TestOpenAllowedIsCheapWhenWarm(t *testing.T) {
	f := newAccessFixture(t, Options{Recheck: 10 * time.Minute})
	f.conf.allow("1", alice)
	ctx := context.Background()
	if _, err := f.s.Open(ctx, f.req(alice, "1")); err != nil {
		t.Fatal(err)
	}
	admin, checks := f.wv.AdminCalls(), f.conf.count()
	f.clock.advance(5 * time.Minute)
	if _, err := f.s.Open(ctx, f.req(alice, "1")); err != nil {
		t.Fatal(err)
	}
	if f.wv.AdminCalls() != admin || f.conf.count() != checks {
		t.Fatalf("warm open: %d Weavy calls, %d checks", f.wv.AdminCalls()-admin, f.conf.count()-checks)
	}
	f.clock.advance(5 * time.Minute)
	if _, err := f.s.Open(ctx, f.req(alice, "1")); err != nil {
		t.Fatal(err)
	}
	if f.wv.AdminCalls() != admin || f.conf.count() != checks+1 {
		t.Fatalf("rechecked open: %d Weavy calls, %d checks", f.wv.AdminCalls()-admin, f.conf.count()-checks)
	}
}

// Bob was a member; the page is restricted; his first open after Recheck is
// refused and his membership goes, in Weavy and in the store.
func TestOpenDeniedRemovesMembership(t *testing.T) {
	f := newAccessFixture(t, Options{Recheck: 10 * time.Minute})
	f.conf.allow("1", alice, bob)
	ctx := context.Background()
	for _, u := range []string{alice, bob} {
		if _, err := f.s.Open(ctx, f.req(u, "1")); err != nil {
			t.Fatal(err)
		}
	}
	if m := f.members(t, "1"); m[bob] == "" || m[alice] == "" || !f.hasLease(t, bob, "1") {
		t.Fatalf("members before: %v", m)
	}
	f.conf.allow("1", alice)
	f.clock.advance(10 * time.Minute)
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, ErrNoAccess) {
		t.Fatalf("bob after the restriction: %v", err)
	}
	if m := f.members(t, "1"); m[bob] != "" || m[alice] == "" || f.hasLease(t, bob, "1") {
		t.Fatalf("members after: %v, bob's lease kept: %v", m, f.hasLease(t, bob, "1"))
	}
	// Alice, still allowed, keeps hers.
	if _, err := f.s.Open(ctx, f.req(alice, "1")); err != nil || f.members(t, "1")[alice] == "" {
		t.Fatalf("alice: %v", err)
	}
}

// Without a verdict (Confluence failed), nobody joins and nothing is kept:
// the next open asks again.
func TestOpenCheckErrorAddsNoMember(t *testing.T) {
	f := newAccessFixture(t, Options{Recheck: 10 * time.Minute})
	f.conf.allow("1", alice)
	boom := errors.New("confluence: 503")
	f.conf.failWith(boom)
	ctx := context.Background()
	admin := f.wv.AdminCalls()
	if _, err := f.s.Open(ctx, f.req(alice, "1")); !errors.Is(err, boom) {
		t.Fatalf("open: %v", err)
	}
	if f.wv.AdminCalls() != admin || f.hasLease(t, alice, "1") {
		t.Fatalf("a failed check called Weavy %d times or left a lease", f.wv.AdminCalls()-admin)
	}
	f.conf.failWith(nil)
	if _, err := f.s.Open(ctx, f.req(alice, "1")); err != nil || f.conf.count() != 2 {
		t.Fatalf("retry: %v, %d checks", err, f.conf.count())
	}
}

// Recheck 0 asks Confluence on every open.
func TestOpenRecheckZeroAsksEveryTime(t *testing.T) {
	f := newAccessFixture(t, Options{})
	f.conf.allow("1", alice)
	for i := 1; i <= 3; i++ {
		if _, err := f.s.Open(context.Background(), f.req(alice, "1")); err != nil || f.conf.count() != i {
			t.Fatalf("open %d: %v, %d checks", i, err, f.conf.count())
		}
	}
}

// Concurrent opens of one target by one user make one check.
func TestOpenConcurrentOneCheck(t *testing.T) {
	f := newAccessFixture(t, Options{Recheck: time.Minute})
	f.conf.allow("1", alice)
	f.conf.gate, f.conf.started = make(chan struct{}), make(chan struct{}, 8)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.s.Open(context.Background(), f.req(alice, "1"))
			errs <- err
		}()
	}
	// Let the first check through once it started; the others joined or
	// find its verdict.
	<-f.conf.started
	close(f.conf.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if f.conf.count() != 1 {
		t.Fatalf("%d checks for %d concurrent opens", f.conf.count(), n)
	}
}

// A page or space chat without a check is refused; the site chat needs none.
func TestOpenNeedsCheck(t *testing.T) {
	f := newAccessFixture(t, Options{})
	r := f.req(alice, "1")
	r.Check = nil
	if _, err := f.s.Open(context.Background(), r); err == nil {
		t.Fatal("a page chat opened without a check")
	}
	site := Request{InstallationID: inst, CloudID: cloud, User: alice, Target: Target{Kind: KindSite}}
	if _, err := f.s.Open(context.Background(), site); err != nil {
		t.Fatal(err)
	}
}

// Memory holds at most MaxEntries, live or not.
func TestEntriesBounded(t *testing.T) {
	const max = 16
	f := newAccessFixture(t, Options{Recheck: time.Hour, MaxEntries: max})
	for i := range 100 {
		id := string(rune('1'+i%9)) + "0" + string(rune('0'+i/9%10)) + string(rune('0'+i/90))
		f.conf.allow(id, bob)
		if _, err := f.s.Open(context.Background(), f.req(bob, id)); !errors.Is(err, ErrNoAccess) && err != nil {
			t.Fatal(err)
		}
		f.s.mu.RLock()
		n := len(f.s.members)
		f.s.mu.RUnlock()
		if n > max {
			t.Fatalf("after %d opens memory holds %d entries, bound %d", i+1, n, max)
		}
	}
}
