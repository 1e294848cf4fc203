package weavy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

var _ Locker = (*StoreLocker)(nil)

// fleet is n Brokers sharing one store and one Minter, as replicas do.
type fleet struct {
	brokers []*Broker
	kv      *memKV
	clk     *clock
	mints   atomic.Int64
	delay   time.Duration // how long each mint takes
}

func newFleet(t *testing.T, n int, o BrokerOptions) *fleet {
	t.Helper()
	f := &fleet{clk: newClock()}
	f.kv = newMemKV(f.clk.Now)
	minter := minterFunc(func(ctx context.Context, _ string, ttl time.Duration) (Token, error) {
		time.Sleep(f.delay)
		return Token{AccessToken: fmt.Sprintf("wyu_%d", f.mints.Add(1)), ExpiresAt: f.clk.Now().Add(ttl)}, nil
	})
	o.Now, o.Locker = f.clk.Now, NewStoreLocker(f.kv)
	for range n {
		f.brokers = append(f.brokers, NewBroker(minter, f.kv, o))
	}
	return f
}

func (f *fleet) token(t *testing.T, i int, refresh bool) string {
	t.Helper()
	tok, err := f.brokers[i].Token(t.Context(), inst1, alice, refresh)
	if err != nil {
		t.Fatalf("replica %d: Token(refresh=%v): %v", i, refresh, err)
	}
	return tok.AccessToken
}

func TestStoreLocker(t *testing.T) {
	clk := newClock()
	kv := newMemKV(clk.Now)
	l := NewStoreLocker(kv)
	ctx := t.Context()
	lock := func() (func(), bool) {
		t.Helper()
		release, held, err := l.Lock(ctx, "lock/a", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return release, held
	}

	release, held := lock()
	if !held {
		t.Fatal("free lock not taken")
	}
	if _, held := lock(); held {
		t.Fatal("held lock taken twice")
	}
	release()
	if len(kv.keys()) != 0 {
		t.Fatalf("release left %q", kv.keys())
	}

	// A holder that died: its lock expires and is taken over; its late
	// release must not free the new owner's lock.
	stale, _ := lock()
	clk.Advance(10 * time.Second)
	_, held = lock()
	if !held {
		t.Fatal("expired lock not taken over")
	}
	stale()
	if _, held := lock(); held {
		t.Fatal("a former owner's release freed the new owner's lock")
	}
}

// In a synctest bubble, so that the mint's 50 ms and the waiters' polls
// pass on the bubble's clock, not the machine's.
func TestFleetMintsOncePerUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFleet(t, 3, BrokerOptions{})
		f.delay = 50 * time.Millisecond // long enough for every replica to miss
		const perReplica = 30
		var wg sync.WaitGroup
		tokens := make([]string, 3*perReplica)
		errs := make([]error, len(tokens))
		start := make(chan struct{})
		for i := range tokens {
			wg.Go(func() {
				<-start
				tok, err := f.brokers[i%3].Token(context.Background(), inst1, alice, false)
				tokens[i], errs[i] = tok.AccessToken, err
			})
		}
		close(start)
		wg.Wait()
		for i := range tokens {
			if errs[i] != nil || tokens[i] != tokens[0] {
				t.Fatalf("call %d: %q, %v; want %q", i, tokens[i], errs[i], tokens[0])
			}
		}
		if n := f.mints.Load(); n != 1 {
			t.Fatalf("%d mints across 3 replicas, want 1", n)
		}
		if keys := f.kv.keys(); len(keys) != 1 || !strings.HasPrefix(keys[0], StorePrefix) {
			t.Fatalf("store keys %q: want the token only, the lock released", keys)
		}
	})
}

func TestFleetRefresh(t *testing.T) {
	f := newFleet(t, 2, BrokerOptions{})
	held := f.token(t, 0, false)
	if got := f.token(t, 1, false); got != held || f.mints.Load() != 1 {
		t.Fatalf("replica 1 got %q after %d mints; want replica 0's token", got, f.mints.Load())
	}

	// A refresh on one replica is shared by a refresh on the other within
	// the window, although that one held the old token.
	fresh := f.token(t, 0, true)
	if fresh == held {
		t.Fatal("refresh returned the held token")
	}
	f.clk.Advance(5 * time.Second)
	if got := f.token(t, 1, true); got != fresh || f.mints.Load() != 2 {
		t.Fatalf("replica 1 refresh: %q after %d mints; want %q shared", got, f.mints.Load(), fresh)
	}
	if got := f.token(t, 1, false); got != fresh {
		t.Fatalf("replica 1 caches %q after the shared refresh", got)
	}

	// Past the window a refresh mints a token neither replica held.
	f.clk.Advance(5 * time.Second)
	if got := f.token(t, 1, true); got == fresh || got == held || f.mints.Load() != 3 {
		t.Fatalf("refresh after the window: %q after %d mints", got, f.mints.Load())
	}

	// A replica that holds nothing shares a stored refresh within its window.
	cold := NewBroker(minterFunc(func(context.Context, string, time.Duration) (Token, error) {
		return Token{}, fmt.Errorf("cold replica minted")
	}), f.kv, BrokerOptions{Now: f.clk.Now, Locker: NewStoreLocker(f.kv)})
	got, err := cold.Token(t.Context(), inst1, alice, true)
	if want := f.token(t, 1, false); err != nil || got.AccessToken != want {
		t.Fatalf("cold replica refresh: %q, %v; want the stored refresh %q", got.AccessToken, err, want)
	}
}

// A replica that took the lock and died: the waiter polls the store, never
// mints under the lock, and takes it over once it expires. In a synctest
// bubble: "never mints" is checked once every goroutine waits, after 200 ms
// of polls on the bubble's clock.
func TestFleetTakesOverDeadHoldersLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFleet(t, 1, BrokerOptions{LockTTL: 20 * time.Second})
		if err := f.kv.Put(t.Context(), lockKey(userKey{inst1, alice}), []byte("dead"), 20*time.Second); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := f.brokers[0].Token(context.Background(), inst1, alice, false)
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("minted under another's lock: %v", err)
		default:
		}
		f.clk.Advance(20 * time.Second)
		if err := <-done; err != nil || f.mints.Load() != 1 {
			t.Fatalf("after the lock expired: %v, %d mints", err, f.mints.Load())
		}
	})
}

// In a synctest bubble: the context's 100 ms pass on the bubble's clock.
func TestFleetWaiterHonoursItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFleet(t, 1, BrokerOptions{})
		if err := f.kv.Put(t.Context(), lockKey(userKey{inst1, alice}), []byte("other"), time.Minute); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		// The lock is held for a minute of a clock that does not move: only
		// ctx can end the wait.
		if _, err := f.brokers[0].Token(ctx, inst1, alice, false); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("waiting past the deadline: %v", err)
		}
		// The shared wait outlives its caller (the next to ask joins it):
		// once the lock expires it mints, and ends before the bubble does.
		f.clk.Advance(time.Minute)
		time.Sleep(pollMax)
		synctest.Wait()
		if n := f.mints.Load(); n != 1 {
			t.Fatalf("%d mints once the lock expired, want 1", n)
		}
	})
}

func TestBrokerForget(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	e.token(t, inst1, alice, false)
	e.token(t, inst2, alice, false)
	e.b.ForgetInstallation(inst1)
	if e.held(inst1, alice) || !e.held(inst2, alice) {
		t.Fatal("ForgetInstallation dropped the wrong entries")
	}
	if len(e.kv.keys()) != 2 {
		t.Fatalf("ForgetInstallation touched the store: %q", e.kv.keys())
	}
	e.b.ForgetAll()
	if e.held(inst2, alice) {
		t.Fatal("ForgetAll kept an entry")
	}
	e.token(t, inst2, alice, false) // from the store again
	if e.mints() != 2 {
		t.Fatalf("%d mints", e.mints())
	}
}
