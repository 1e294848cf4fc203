package chat

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// fakeUninstalls is the scheduler's side: the installation uninstalled
// (gone) is so from its goneAfter-th question on; the passes asked for;
// an error to answer with.
type fakeUninstalls struct {
	mu        sync.Mutex
	gone      string
	goneAfter int
	asked     int
	again     []string
	failed    error
}

func (u *fakeUninstalls) Uninstalled(_ context.Context, inst string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.asked++
	return inst == u.gone && u.asked > u.goneAfter, u.failed
}

func (u *fakeUninstalls) PurgeAgain(_ context.Context, inst string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.again = append(u.again, inst)
	return nil
}

// uninstall makes inst uninstalled from the after-th question from now on.
func (u *fakeUninstalls) uninstall(inst string, after int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gone, u.goneAfter = inst, u.asked+after
}

// An open asks whether the installation was uninstalled before it writes
// and again after: not, it answers as ever and asks for nothing; a store
// that cannot say fails the open; uninstalled before, it writes nothing;
// uninstalled meanwhile, it records the app for the purge, asks for another
// pass and answers ErrUninstalled. A warm open writes nothing and asks
// nothing.
func TestOpenUninstalledMeanwhile(t *testing.T) {
	u := &fakeUninstalls{}
	f := newAccessFixture(t, Options{Lease: testLease, Uninstalls: u})
	f.conf.allow("1", alice, bob)
	ctx := context.Background()
	uid := AppUID(cloud, Target{KindPage, "1"})

	f.open(t, f.s, f.req(alice, "1"))
	f.open(t, f.s, f.req(alice, "1")) // warm
	if len(u.again) != 0 || u.asked != 2 {
		t.Fatalf("a cold and a warm open of an installed site: %d questions, passes %q; want 2, none", u.asked, u.again)
	}

	u.failed = errors.New("store down")
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, u.failed) {
		t.Fatalf("open with the tombstone unreadable = %v; want the store's error", err)
	}
	u.failed = nil

	u.uninstall(inst, 0)
	f.open(t, f.s, f.req(alice, "1")) // warm: nothing written, nothing asked
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, ErrUninstalled) {
		t.Fatalf("open of an installation uninstalled before = %v; want ErrUninstalled", err)
	}
	if _, held := f.leaseOn(t, inst, cloud, bob, "1"); held || f.isMember(bob, cloud, "1") || len(u.again) != 0 {
		t.Fatalf("uninstalled before the open: bob's lease %v, member %v, passes %q; want nothing", held,
			f.isMember(bob, cloud, "1"), u.again)
	}

	if err := f.kv.Delete(ctx, appKey(inst, uid)); err != nil { // as a finished pass left it
		t.Fatal(err)
	}
	u.uninstall(inst, 1) // the open's first question finds it installed, its second not
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, ErrUninstalled) {
		t.Fatalf("open of an installation uninstalled meanwhile = %v; want ErrUninstalled", err)
	}
	if len(u.again) != 1 || u.again[0] != inst {
		t.Errorf("passes asked for: %q; want one for %s", u.again, inst)
	}
	if _, err := f.kv.Get(ctx, appKey(inst, uid)); err != nil {
		t.Errorf("the app is not recorded for the next pass: %v", err)
	}
}
