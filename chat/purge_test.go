package chat

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/storetest"
	"github.com/forge-remote/forge-remote/weavy"
)

const testInst = "ari:cloud:ecosystem::installation/inst-1"

// newTestService is a Service over weavysim and a memory store on a manual clock.
func newTestService(t *testing.T, lease time.Duration) (*Service, *weavysim.Server, *storetest.Clock, store.KV) {
	t.Helper()
	clock := storetest.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	kv := memory.New(clock.Now)
	t.Cleanup(func() { _ = kv.Close() })
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	c, err := weavy.NewClient(wv.URL, weavysim.APIKey, weavy.ClientOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return New(c, kv, Options{Lease: lease, Now: clock.Now}), wv, clock, kv
}

// A lease record carries a store TTL of the lease plus leaseMargin, kept
// when the membership is marked active: it does not outlive its meaning
// even if no prune ever runs.
func TestLeaseRecordExpiresInTheStore(t *testing.T) {
	const lease = 12 * time.Hour
	s, _, clock, kv := newTestService(t, lease)
	r := Request{InstallationID: testInst, CloudID: cloud, User: "ada", Target: Target{KindPage, "98305"}, Check: canView}
	if _, err := s.Open(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	key := leaseKey(testInst, AppUID(cloud, r.Target), "ada")
	b, err := kv.Get(t.Context(), key)
	if l, ok := decodeLease(b); err != nil || !ok || l.State != stateActive {
		t.Fatalf("lease after the open: %+v %v", l, err)
	}
	clock.Advance(lease + leaseMargin - time.Minute)
	if _, err := kv.Get(t.Context(), key); err != nil {
		t.Fatalf("lease record before lease + margin: %v", err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := kv.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lease record after lease + margin: %v", err)
	}
}

// The uninstall purge removes a member whose lease record the store already
// dropped (a purge delayed past lease + margin by a Weavy outage), and keeps
// a member another installation on the site still leases.
func TestPurgeRemovesMembersWithoutLeaseRecords(t *testing.T) {
	const lease = 12 * time.Hour
	s, wv, clock, _ := newTestService(t, lease)
	const other = "ari:cloud:ecosystem::installation/inst-2"
	page := Target{KindPage, "98305"}
	for _, r := range []Request{
		{InstallationID: testInst, CloudID: cloud, User: "ada", Target: page, Check: canView},
		{InstallationID: testInst, CloudID: cloud, User: "bob", Target: page, Check: canView},
		{InstallationID: other, CloudID: cloud, User: "bob", Target: page, Check: canView}, // provisions other's app record now
	} {
		if _, err := s.Open(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(lease + leaseMargin + time.Minute) // every lease record is gone
	// bob opens the page again through the other installation: a renewal,
	// no provisioning (which would remove ada as a squatter).
	if _, err := s.Open(t.Context(), Request{InstallationID: other, CloudID: cloud, User: "bob", Target: page, Check: canView}); err != nil {
		t.Fatal(err)
	}
	if err := s.PurgeInstallation(t.Context(), testInst); err != nil {
		t.Fatal(err)
	}
	app, _ := wv.App(AppUID(cloud, page))
	if _, ok := app.Members["ada"]; ok {
		t.Fatalf("ada, leased by no installation, is still a member: %v", app.Members)
	}
	if _, ok := app.Members["bob"]; !ok {
		t.Fatalf("bob, leased by the other installation, was removed: %v", app.Members)
	}
}

// canView is a page check Confluence always allows.
func canView(context.Context) (bool, error) { return true, nil }
