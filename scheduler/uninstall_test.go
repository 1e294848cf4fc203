package scheduler

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/storetest"
)

// schedulerKeysOf lists the scheduler's own records of inst, the uninstall
// tombstone aside.
func (e *env) schedulerKeysOf(t *testing.T, inst string) []string {
	t.Helper()
	var out []string
	for _, k := range e.keys(t) {
		if strings.HasPrefix(k, "scheduler/") && !strings.HasPrefix(k, uninstalledPrefix) && belongsTo(k, inst) {
			out = append(out, k)
		}
	}
	return out
}

// After an uninstall, the installation's triggers and mints record and run
// nothing until the tombstone expires 30 days later; another installation
// is not affected.
func TestUninstallTombstone(t *testing.T) {
	var c countJob
	e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{c.job()} })
	ctx := t.Context()
	if err := e.svc.Lifecycle(ctx, e.inv(instA, cloudA), []byte(installedEvent(instA))); err != nil {
		t.Fatal(err)
	}
	e.svc.run.waitIdle()
	e.deliverToken(t, instA, cloudA, start.Add(3*time.Hour))
	e.conf.AddUser(ada, "Ada Lovelace", "", "/wiki/aa-avatar/"+ada)
	if err := e.svc.Uninstall(ctx, e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(e.keys(t), tombstoneKey(instA)) {
		t.Fatalf("no tombstone; keys: %q", e.keys(t))
	}
	runs := c.n(instA)

	// Forge (or a slow replica) still calls: all answered, nothing kept.
	e.clock.Advance(time.Hour)
	e.deliverToken(t, instA, cloudA, e.clock.Now().Add(3*time.Hour))
	calls := e.conf.Calls()
	if err := e.svc.Scheduled(ctx, e.inv(instA, cloudA)); err != nil {
		t.Fatalf("scheduled after uninstall: %v", err)
	}
	if err := e.svc.Lifecycle(ctx, e.inv(instA, cloudA), []byte(installedEvent(instA))); err != nil {
		t.Fatalf("lifecycle after uninstall: %v", err)
	}
	e.svc.UserMinted(instA, ada)
	e.svc.settle()
	if got := e.schedulerKeysOf(t, instA); len(got) != 0 {
		t.Fatalf("recorded after uninstall: %q", got)
	}
	if c.n(instA) != runs {
		t.Fatal("a job ran after the uninstall")
	}
	if e.conf.Calls() != calls {
		t.Fatal("Confluence was called after the uninstall")
	}
	if _, ok := e.weavy.Profile(ada); ok {
		t.Fatal("a profile was synced after the uninstall")
	}
	if list, _ := e.svc.Installations(ctx); slices.ContainsFunc(list, func(in Installation) bool {
		return in.InstallationID == instA && !in.LastScheduledAt.IsZero()
	}) {
		t.Fatalf("uninstalled installation listed as scheduled: %+v", list)
	}

	// Another installation goes on as before.
	e.scheduled(t, instB, cloudB)
	if c.n(instB) != 1 {
		t.Fatalf("B's jobs ran %d times, want 1", c.n(instB))
	}

	// The tombstone lasts 30 days.
	e.clock.Advance(30 * 24 * time.Hour)
	e.scheduled(t, instA, cloudA)
	if c.n(instA) != runs+1 || !slices.Contains(e.keys(t), installationKey(instA)) {
		t.Fatalf("after 30 days: runs %d (want %d), keys %q", c.n(instA), runs+1, e.keys(t))
	}
}

// A replica's queued jobs of an installation another replica uninstalled end
// at once, doing nothing.
func TestJobsOfInstallationUninstalledElsewhereExitEarly(t *testing.T) {
	var c countJob
	release, blocked := make(chan struct{}), make(chan struct{})
	e := newEnv(t, func(o *testOptions) {
		o.Jobs = []Job{
			{Name: "block", Run: func(context.Context, string) error {
				close(blocked)
				<-release
				return nil
			}},
			c.job(), // queued behind "block"
		}
	})
	other := testOptions{QueueOptions: QueueOptions{KV: e.kv, AppTokens: e.tokens, Now: e.clock.Now}}.build() // another replica
	defer other.Close()

	if err := e.svc.Scheduled(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, blocked, "the blocking job")
	if err := other.Uninstall(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	close(release)
	e.svc.settle()
	other.settle()
	if n := c.n(instA); n != 0 {
		t.Fatalf("a job queued before the uninstall ran %d times on the other replica", n)
	}
	if got := e.schedulerKeysOf(t, instA); len(got) != 0 {
		t.Fatalf("left after uninstall: %q", got)
	}
}

// Forget cancels the running job and drops the queued ones, on this replica,
// leaving the store alone.
func TestForgetCancelsJobsWithoutTouchingStore(t *testing.T) {
	var c countJob
	started, done := make(chan struct{}), make(chan error, 1)
	e := newEnv(t, func(o *testOptions) {
		o.Jobs = []Job{
			{Name: "long", Run: func(ctx context.Context, _ string) error {
				close(started)
				<-ctx.Done()
				done <- ctx.Err()
				return ctx.Err()
			}},
			c.job(),
		}
	})
	if err := e.svc.Scheduled(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, started, "the long job")
	before := e.keys(t)
	e.svc.Forget(instA)
	if err := testwait.Recv(t, "Forget to cancel the running job", done); !errors.Is(err, context.Canceled) {
		t.Fatalf("job ended with %v", err)
	}
	e.svc.run.waitIdle()
	if c.n(instA) != 0 {
		t.Fatal("a queued job ran after Forget")
	}
	if after := e.keys(t); !slices.Equal(after, before) {
		t.Fatalf("Forget changed the store:\n%q\nwas\n%q", after, before)
	}
}

// The tombstone's TTL is 30 days and it holds no data.
func TestUninstallTombstoneExpires(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.svc.Uninstall(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(tombstoneTTL - time.Minute)
	if _, err := e.kv.Get(t.Context(), tombstoneKey(instA)); err != nil {
		t.Fatalf("tombstone before 30 days: %v", err)
	}
	e.clock.Advance(2 * time.Minute)
	if _, err := e.kv.Get(t.Context(), tombstoneKey(instA)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tombstone after 30 days: %v", err)
	}
}

// Records sealed under an old STORE_KEY are purged with the rest on uninstall,
// though Scan skips them.
func TestUninstallPurgesUnopenableRecords(t *testing.T) {
	ctx := t.Context()
	clock := storetest.NewClock(start)
	mem := memory.New(clock.Now)
	defer mem.Close()
	oldKV, err := store.NewSealed(mem, bytes.Repeat([]byte{1}, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{userKey(instA, ada), eventsOf(instA) + "x/1", userKey(instB, ada)} {
		if err := oldKV.Put(ctx, k, []byte(`{}`), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := store.NewSealed(mem, bytes.Repeat([]byte{2}, store.KeySize)) // STORE_KEY rotated
	if err != nil {
		t.Fatal(err)
	}
	s := testOptions{QueueOptions: QueueOptions{KV: kv, Now: clock.Now}}.build()
	defer s.Close()
	if err := s.Uninstall(ctx, trigger("inst-1")); err != nil {
		t.Fatal(err)
	}
	s.settle()
	var left []string
	if err := mem.Scan(ctx, "scheduler/", func(k string, _ []byte) error { left = append(left, k); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(left)
	if want := []string{tombstoneKey(instA), userKey(instB, ada)}; !slices.Equal(left, want) {
		t.Fatalf("left after uninstall: %q, want %q", left, want)
	}
}
