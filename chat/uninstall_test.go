package chat

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// fakeUninstalls is the scheduler's side: a tombstone per installation,
// the passes asked for, and an error to answer with.
type fakeUninstalls struct {
	mu     sync.Mutex
	gone   map[string]bool
	again  []string
	failed error
}

func (u *fakeUninstalls) Uninstalled(_ context.Context, inst string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gone[inst], u.failed
}

func (u *fakeUninstalls) PurgeAgain(_ context.Context, inst string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.again = append(u.again, inst)
	return nil
}

// An open asks after its writes whether the installation was uninstalled:
// not, it answers as ever and asks for nothing; a store that cannot say
// fails the open; uninstalled, it records the app for the purge, asks for
// another pass and answers ErrUninstalled. A warm open writes nothing and
// asks nothing.
func TestOpenUninstalledMeanwhile(t *testing.T) {
	u := &fakeUninstalls{gone: map[string]bool{}}
	f := newAccessFixture(t, Options{Lease: testLease, Uninstalls: u})
	f.conf.allow("1", alice, bob)
	ctx := context.Background()

	f.open(t, f.s, f.req(alice, "1"))
	f.open(t, f.s, f.req(alice, "1")) // warm
	if len(u.again) != 0 {
		t.Fatalf("passes asked for an installation still installed: %q", u.again)
	}

	u.failed = errors.New("store down")
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, u.failed) {
		t.Fatalf("open with the tombstone unreadable = %v; want the store's error", err)
	}
	u.failed = nil

	u.gone[inst] = true
	f.open(t, f.s, f.req(alice, "1")) // warm: nothing written, nothing asked
	if len(u.again) != 0 {
		t.Fatalf("a warm open asked for a pass: %q", u.again)
	}
	uid := AppUID(cloud, Target{KindPage, "1"})
	if err := f.kv.Delete(ctx, appKey(inst, uid)); err != nil { // as a finished pass left it
		t.Fatal(err)
	}
	if _, err := f.s.Open(ctx, f.req(bob, "1")); !errors.Is(err, ErrUninstalled) {
		t.Fatalf("open of an uninstalled installation = %v; want ErrUninstalled", err)
	}
	if len(u.again) != 1 || u.again[0] != inst {
		t.Errorf("passes asked for: %q; want one for %s", u.again, inst)
	}
	if _, err := f.kv.Get(ctx, appKey(inst, uid)); err != nil {
		t.Errorf("the app is not recorded for the next pass: %v", err)
	}
}
