package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// The lease's life, one transition per test: each test opens and prunes
// through the Service with the fake clock, then reads the lease record in
// the store (decodeLease on its key), the member list in the simulator and
// the member calls the Service made (spyWeavy).

const testLease = time.Hour

const (
	// instStaging is a second installation on the site `cloud` (another
	// Forge environment): it shares the site's apps with inst.
	instStaging = "ari:cloud:ecosystem::installation/0f1e2d3c-4b5a-4987-a6b5-c4d3e2f1a0b9"
	// instOther is installed on another site, cloudOther.
	instOther  = "ari:cloud:ecosystem::installation/5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
	cloudOther = "d2c3b4a5-6e7f-4a8b-9c0d-1e2f3a4b5c6d"
)

// spyWeavy is the Weavy the Service calls: the simulator's client, with
// every PutMember and DeleteMember recorded ("put <app> <user>", "delete
// <app> <user>") and an optional hook run before each reaches Weavy.
type spyWeavy struct {
	Weavy
	mu       sync.Mutex
	calls    []string
	onPut    func(appID int64, user string)
	onDelete func(appID int64, user string)
}

func (w *spyWeavy) PutMember(ctx context.Context, appID int64, user string, access weavy.Access) error {
	w.mu.Lock()
	w.calls = append(w.calls, fmt.Sprintf("put %d %s", appID, user))
	hook := w.onPut
	w.mu.Unlock()
	if hook != nil {
		hook(appID, user)
	}
	return w.Weavy.PutMember(ctx, appID, user, access)
}

func (w *spyWeavy) DeleteMember(ctx context.Context, appID int64, user string) error {
	w.mu.Lock()
	w.calls = append(w.calls, fmt.Sprintf("delete %d %s", appID, user))
	hook := w.onDelete
	w.mu.Unlock()
	if hook != nil {
		hook(appID, user)
	}
	return w.Weavy.DeleteMember(ctx, appID, user)
}

func (w *spyWeavy) hooks(onPut, onDelete func(appID int64, user string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onPut, w.onDelete = onPut, onDelete
}

// mark is where the calls made from now on start.
func (w *spyWeavy) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls)
}

// since lists the member calls made from mark m on.
func (w *spyWeavy) since(m int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls[m:])
}

func put(appID int64, user string) string    { return fmt.Sprintf("put %d %s", appID, user) }
func remove(appID int64, user string) string { return fmt.Sprintf("delete %d %s", appID, user) }

func newLeaseFixture(t *testing.T) *accessFixture {
	t.Helper()
	f := newAccessFixture(t, Options{Lease: testLease})
	f.conf.allow("1", alice, bob)
	return f
}

// replica is another server process over the same store and Weavy: its
// memory holds nothing, so its opens go to the store.
func (f *accessFixture) replica() *Service {
	return New(f.weavy, f.kv, Options{Lease: testLease, Now: f.clock.now, Registerer: prometheus.NewRegistry()})
}

// reqOn is f.req for any installation and site.
func (f *accessFixture) reqOn(installation, cloudID, user, page string) Request {
	return Request{InstallationID: installation, CloudID: cloudID, User: user, Target: Target{KindPage, page},
		Check: f.conf.check(page, user)}
}

func (f *accessFixture) open(t *testing.T, s *Service, r Request) Chat {
	t.Helper()
	c, err := s.Open(context.Background(), r)
	if err != nil {
		t.Fatalf("open %s by %s under %s: %v", r.Target.ID, r.User, r.InstallationID, err)
	}
	return c
}

func (f *accessFixture) prune(t *testing.T, installation string) {
	t.Helper()
	if err := f.s.PruneLeases(context.Background(), installation); err != nil {
		t.Fatalf("prune %s: %v", installation, err)
	}
}

// leaseOn reads the stored lease of user on page under installation.
func (f *accessFixture) leaseOn(t *testing.T, installation, cloudID, user, page string) (lease, bool) {
	t.Helper()
	b, err := f.kv.Get(context.Background(), leaseKey(installation, AppUID(cloudID, Target{KindPage, page}), user))
	if errNotFound(err) {
		return lease{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	l, ok := decodeLease(b)
	if !ok {
		t.Fatalf("lease of %s on %s under %s does not decode: %x", user, page, installation, b)
	}
	return l, true
}

// isMember reports whether Weavy has user as a member of page's chat on cloudID.
func (f *accessFixture) isMember(user, cloudID, page string) bool {
	app, ok := f.wv.App(AppUID(cloudID, Target{KindPage, page}))
	return ok && app.Members[user] != ""
}

// removed reads chat_memberships_removed_total{reason} from the registry.
func (f *accessFixture) removed(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "chat_memberships_removed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// wantLease fails unless the stored lease is active, renewed at renewed,
// on app appID for user.
func wantLease(t *testing.T, l lease, ok bool, appID int64, user string, renewed time.Time) {
	t.Helper()
	switch {
	case !ok:
		t.Fatalf("no lease for %s", user)
	case l.State != stateActive || !l.Renewed.Equal(renewed) || l.AppID != appID || l.User != user:
		t.Fatalf("lease %+v; want active, renewed %v, app %d, user %s", l, renewed, appID, user)
	}
}

// New: the first open writes the lease pending, adds the member, and marks
// the lease active, renewed at the open.
func TestLeaseNew(t *testing.T) {
	f := newLeaseFixture(t)
	var mu sync.Mutex
	var atPut []lease
	f.weavy.hooks(func(int64, string) {
		// The Service's goroutine: no t.Fatal here.
		b, _ := f.kv.Get(context.Background(), leaseKey(inst, AppUID(cloud, Target{KindPage, "1"}), alice))
		l, _ := decodeLease(b)
		mu.Lock()
		atPut = append(atPut, l)
		mu.Unlock()
	}, nil)
	t0 := f.clock.now()
	m := f.weavy.mark()
	c := f.open(t, f.s, f.req(alice, "1"))
	if got := f.weavy.since(m); !slices.Equal(got, []string{put(c.AppID, alice)}) {
		t.Fatalf("member calls %q; want one put", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(atPut) != 1 || atPut[0].State != statePending || !atPut[0].Renewed.Equal(t0) {
		t.Fatalf("lease when the member was added: %+v; want pending, renewed %v", atPut, t0)
	}
	l, ok := f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t0)
	if l.AppUID != c.UID {
		t.Fatalf("lease app uid %q; want %q", l.AppUID, c.UID)
	}
	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice is no member in Weavy")
	}
}

// Renewed: within Lease/4 of the renewal nothing is written, whether memory
// vouches for it (this process) or the store's lease does (a replica that
// never saw the user); from Lease/4 on an open moves the stored renewal.
// No open makes a Weavy call, and a renewed lease outlives the prune that
// would have removed the first one.
func TestLeaseRenewed(t *testing.T) {
	f := newLeaseFixture(t)
	t0 := f.clock.now()
	c := f.open(t, f.s, f.req(alice, "1"))
	admin, m := f.wv.AdminCalls(), f.weavy.mark()
	noWeavy := func(when string) {
		t.Helper()
		if n := f.wv.AdminCalls() - admin; n != 0 {
			t.Fatalf("%s: %d Weavy calls %q; want none", when, n, f.weavy.since(m))
		}
	}

	f.clock.advance(testLease/4 - 1)
	f.open(t, f.s, f.req(alice, "1"))
	l, ok := f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t0)
	noWeavy("open within Lease/4")

	f.open(t, f.replica(), f.req(alice, "1"))
	l, ok = f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t0)
	noWeavy("a replica's open within Lease/4")

	f.clock.advance(1)
	t1 := f.clock.now()
	f.open(t, f.s, f.req(alice, "1"))
	l, ok = f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t1)
	noWeavy("open at Lease/4")

	f.clock.advance(testLease - 1)
	t2 := f.clock.now()
	f.open(t, f.replica(), f.req(alice, "1"))
	l, ok = f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t2)
	noWeavy("a replica's open before the lease's end")

	// Past the first renewals' lease, not the last one's.
	f.clock.advance(testLease / 2)
	f.prune(t, inst)
	l, ok = f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t2)
	noWeavy("prune of a renewed lease")
	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice lost her membership")
	}
}

// Expired: a lease is live until exactly Lease after its renewal; the prune
// then removes the member in Weavy, deletes the lease and counts it, once.
func TestLeaseExpired(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.req(alice, "1"))
	m := f.weavy.mark()

	f.clock.advance(testLease - 1)
	f.prune(t, inst)
	if _, ok := f.leaseOn(t, inst, cloud, alice, "1"); !ok || !f.isMember(alice, cloud, "1") || len(f.weavy.since(m)) != 0 {
		t.Fatalf("a live lease was pruned: lease %v, member %v, calls %q", ok, f.isMember(alice, cloud, "1"), f.weavy.since(m))
	}

	f.clock.advance(1)
	f.prune(t, inst)
	if got := f.weavy.since(m); !slices.Equal(got, []string{remove(c.AppID, alice)}) {
		t.Fatalf("member calls %q; want one delete", got)
	}
	if _, ok := f.leaseOn(t, inst, cloud, alice, "1"); ok || f.isMember(alice, cloud, "1") {
		t.Fatalf("after the prune: lease kept %v, member kept %v", ok, f.isMember(alice, cloud, "1"))
	}
	if n := f.removed(t, "lease_expired"); n != 1 {
		t.Fatalf("lease_expired %v; want 1", n)
	}

	f.prune(t, inst)
	if got := f.weavy.since(m); len(got) != 1 || f.removed(t, "lease_expired") != 1 {
		t.Fatalf("a second prune: calls %q, lease_expired %v", got, f.removed(t, "lease_expired"))
	}
}

// Removed, then re-opened: the membership is added again as a new lease;
// memory, which vouched for the old one, does not answer for it.
func TestLeaseReopenedAfterRemoval(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.req(alice, "1"))
	f.clock.advance(testLease)
	f.prune(t, inst)
	if f.isMember(alice, cloud, "1") {
		t.Fatal("alice still a member after the prune")
	}
	t1, m := f.clock.now(), f.weavy.mark()
	f.open(t, f.s, f.req(alice, "1"))
	if got := f.weavy.since(m); !slices.Equal(got, []string{put(c.AppID, alice)}) {
		t.Fatalf("member calls %q; want one put", got)
	}
	l, ok := f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t1)
	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice is no member after re-opening")
	}
}

// Expired but not yet pruned, re-opened: the expired lease vouches for
// nothing (its member may be gone, here removed behind the lease's back as
// another installation's provisioning would), so the member is added again.
func TestLeaseExpiredUnprunedReopened(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.req(alice, "1"))
	if err := f.weavy.Weavy.DeleteMember(context.Background(), c.AppID, alice); err != nil {
		t.Fatal(err)
	}
	f.clock.advance(testLease)
	t1, m := f.clock.now(), f.weavy.mark()
	f.open(t, f.replica(), f.req(alice, "1"))
	if got := f.weavy.since(m); !slices.Equal(got, []string{put(c.AppID, alice)}) {
		t.Fatalf("member calls %q; want one put", got)
	}
	l, ok := f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t1)
	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice is no member after re-opening")
	}
}

// Re-opened during removal: the prune marked the lease revoking and is in
// DeleteMember when the user opens the chat again, and the open finishes
// (its member added) before Weavy gets the delete. The prune sees the
// renewal and puts the member back: the user is a member with an active
// lease, and nothing is counted removed.
func TestLeaseReopenedDuringRemoval(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.req(alice, "1"))
	f.clock.advance(testLease)

	deleting, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.weavy.hooks(nil, func(int64, string) {
		once.Do(func() {
			close(deleting)
			<-proceed
		})
	})
	pruned := make(chan error, 1)
	go func() { pruned <- f.s.PruneLeases(context.Background(), inst) }()
	<-deleting
	if l, ok := f.leaseOn(t, inst, cloud, alice, "1"); !ok || l.State != stateRevoking {
		t.Fatalf("lease during the removal: %+v %v; want revoking", l, ok)
	}
	t1, m := f.clock.now(), f.weavy.mark()
	f.open(t, f.s, f.req(alice, "1"))
	close(proceed)
	if err := <-pruned; err != nil {
		t.Fatal(err)
	}

	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice re-opened during the removal and is no member")
	}
	l, ok := f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t1)
	want := []string{put(c.AppID, alice), put(c.AppID, alice)} // the open's, then the prune's put-back
	if got := f.weavy.since(m); !slices.Equal(got, want) {
		t.Fatalf("member calls after the delete began %q; want %q", got, want)
	}
	if n := f.removed(t, "lease_expired"); n != 0 {
		t.Fatalf("lease_expired %v; want 0", n)
	}
}

// scanHookKV runs afterScan once a Scan has returned: the moment between
// the prune's listing of expired leases and its revoking of each.
type scanHookKV struct {
	store.KV
	afterScan func()
}

func (k scanHookKV) Scan(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	err := k.KV.Scan(ctx, prefix, fn)
	k.afterScan()
	return err
}

// Renewed after the prune listed the lease as expired, before it revoked
// it: the lease is left alone, with no Weavy call.
func TestLeaseRenewedBeforeRevoke(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.req(alice, "1"))
	f.clock.advance(testLease)
	t1 := f.clock.now()
	var once sync.Once
	hooked := scanHookKV{KV: f.kv, afterScan: func() {
		once.Do(func() { f.open(t, f.s, f.req(alice, "1")) })
	}}
	pruner := New(f.weavy, hooked, Options{Lease: testLease, Now: f.clock.now, Registerer: prometheus.NewRegistry()})
	m := f.weavy.mark()
	if err := pruner.PruneLeases(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
	if got := f.weavy.since(m); !slices.Equal(got, []string{put(c.AppID, alice)}) {
		t.Fatalf("member calls %q; want the open's put alone", got)
	}
	l, ok := f.leaseOn(t, inst, cloud, alice, "1")
	wantLease(t, l, ok, c.AppID, alice, t1)
	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice is no member")
	}
}

// Two sites sharing a person (WEAVY_UID_SCOPE=account: one Weavy uid on
// both): each site's page is its own app, and pruning one installation's
// leases, even when the other site's have expired too, leaves the other
// site's membership and lease as they are.
func TestLeaseTwoSitesSharingAPerson(t *testing.T) {
	f := newLeaseFixture(t)
	here := f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	there := f.open(t, f.s, f.reqOn(instOther, cloudOther, alice, "1"))
	if here.AppID == there.AppID {
		t.Fatalf("both sites' page 1 is app %d", here.AppID)
	}
	before, _ := f.leaseOn(t, instOther, cloudOther, alice, "1")
	f.clock.advance(testLease)
	m := f.weavy.mark()
	f.prune(t, inst)
	if got := f.weavy.since(m); !slices.Equal(got, []string{remove(here.AppID, alice)}) {
		t.Fatalf("member calls %q; want one delete on app %d", got, here.AppID)
	}
	if f.isMember(alice, cloud, "1") || !f.isMember(alice, cloudOther, "1") {
		t.Fatalf("member here %v (want false), there %v (want true)", f.isMember(alice, cloud, "1"), f.isMember(alice, cloudOther, "1"))
	}
	if after, ok := f.leaseOn(t, instOther, cloudOther, alice, "1"); !ok || after != before {
		t.Fatalf("the other site's lease: %+v %v; want untouched %+v", after, ok, before)
	}
	f.prune(t, instOther)
	if f.isMember(alice, cloudOther, "1") {
		t.Fatal("the other site's own prune kept alice")
	}
}

// Two installations on one site (Forge environments) share the site's app:
// the second's first provisioning keeps the first's member, and pruning one
// installation's expired lease keeps the member while the other still
// leases it; the last lease's prune removes it.
func TestLeaseTwoInstallationsOneSite(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	f.clock.advance(testLease / 2)
	m := f.weavy.mark()
	cs := f.open(t, f.s, f.reqOn(instStaging, cloud, alice, "1"))
	if cs.AppID != c.AppID {
		t.Fatalf("the site's page 1 is app %d under one installation, %d under the other", c.AppID, cs.AppID)
	}
	if got := f.weavy.since(m); !slices.Equal(got, []string{put(c.AppID, alice)}) || f.removed(t, "squatter") != 0 {
		t.Fatalf("the second installation's first open: member calls %q, squatters %v; want one put, none",
			got, f.removed(t, "squatter"))
	}
	stagingLease, _ := f.leaseOn(t, instStaging, cloud, alice, "1")

	f.clock.advance(testLease / 2) // inst's lease expired, instStaging's not
	m = f.weavy.mark()
	f.prune(t, inst)
	if got := f.weavy.since(m); len(got) != 0 {
		t.Fatalf("member calls %q; want none", got)
	}
	if !f.isMember(alice, cloud, "1") {
		t.Fatal("alice lost the membership the other installation leases")
	}
	if _, ok := f.leaseOn(t, inst, cloud, alice, "1"); ok {
		t.Fatal("the expired lease was kept")
	}
	if l, ok := f.leaseOn(t, instStaging, cloud, alice, "1"); !ok || l != stagingLease {
		t.Fatalf("the other installation's lease: %+v %v; want untouched %+v", l, ok, stagingLease)
	}
	if n := f.removed(t, "lease_expired"); n != 0 {
		t.Fatalf("lease_expired %v; want 0", n)
	}

	f.clock.advance(testLease / 2)
	f.prune(t, instStaging)
	if got := f.weavy.since(m); !slices.Equal(got, []string{remove(c.AppID, alice)}) || f.isMember(alice, cloud, "1") {
		t.Fatalf("the last lease's prune: member calls %q, member %v", got, f.isMember(alice, cloud, "1"))
	}
	if n := f.removed(t, "lease_expired"); n != 1 {
		t.Fatalf("lease_expired %v; want 1", n)
	}
}

// Denied: Confluence's verdict is the site's, so a denied member loses the
// lease under every installation on the site and the Weavy membership, in
// one DeleteMember; another member keeps theirs.
func TestLeaseDeniedRemovesEveryInstallationsLease(t *testing.T) {
	f := newLeaseFixture(t)
	c := f.open(t, f.s, f.reqOn(inst, cloud, bob, "1"))
	f.open(t, f.s, f.reqOn(instStaging, cloud, bob, "1"))
	f.open(t, f.s, f.reqOn(inst, cloud, alice, "1"))
	aliceLease, _ := f.leaseOn(t, inst, cloud, alice, "1")

	f.conf.allow("1", alice) // the page is restricted: bob can no longer view it
	m := f.weavy.mark()
	if _, err := f.s.Open(context.Background(), f.reqOn(inst, cloud, bob, "1")); !errors.Is(err, ErrNoAccess) {
		t.Fatalf("bob's open: %v; want ErrNoAccess", err)
	}
	if got := f.weavy.since(m); !slices.Equal(got, []string{remove(c.AppID, bob)}) {
		t.Fatalf("member calls %q; want one delete", got)
	}
	for _, i := range []string{inst, instStaging} {
		if l, ok := f.leaseOn(t, i, cloud, bob, "1"); ok {
			t.Fatalf("bob's lease under %s kept: %+v", i, l)
		}
	}
	if f.isMember(bob, cloud, "1") {
		t.Fatal("bob is still a member")
	}
	if n := f.removed(t, "access_denied"); n != 1 {
		t.Fatalf("access_denied %v; want 1", n)
	}
	if l, ok := f.leaseOn(t, inst, cloud, alice, "1"); !ok || l != aliceLease || !f.isMember(alice, cloud, "1") {
		t.Fatalf("alice's lease %+v %v, member %v; want untouched", l, ok, f.isMember(alice, cloud, "1"))
	}
}
