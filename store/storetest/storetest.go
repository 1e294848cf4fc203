// Package storetest is the conformance suite every store backend passes, so
// that memory, bolt, redis and their sealed forms behave alike.
package storetest

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

// Clock is a manual clock for backends that take an injected now.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock stopped at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Run checks the KV contract. newKV returns a fresh, empty store for each
// subtest; Run closes it. advance moves the clock those stores expire records
// by; Run never sleeps, and skips the expiry tests when advance is nil.
// Subtests run one after another, since they share the clock.
func Run(t *testing.T, newKV func(t *testing.T) store.KV, advance func(d time.Duration)) {
	ctx := t.Context()
	open := func(t *testing.T) store.KV {
		t.Helper()
		kv := newKV(t)
		t.Cleanup(func() { _ = kv.Close() })
		return kv
	}
	needClock := func(t *testing.T) {
		t.Helper()
		if advance == nil {
			t.Skip("no clock to advance")
		}
	}

	t.Run("GetMissing", func(t *testing.T) {
		kv := open(t)
		if v, err := kv.Get(ctx, "missing"); !errors.Is(err, store.ErrNotFound) || v != nil {
			t.Fatalf("Get(missing) = %q, %v; want nil, ErrNotFound", v, err)
		}
	})

	t.Run("PutGet", func(t *testing.T) {
		kv := open(t)
		value := []byte("value-1")
		mustPut(t, kv, "k", string(value), 0)
		value[0] = 'X' // the store must not keep the caller's slice
		got := mustGet(t, kv, "k", "value-1")
		got[0] = 'Y' // nor hand out its own
		mustGet(t, kv, "k", "value-1")

		mustPut(t, kv, "empty", "", 0)
		mustGet(t, kv, "empty", "")
	})

	t.Run("Overwrite", func(t *testing.T) {
		kv := open(t)
		mustPut(t, kv, "k", "one", 0)
		mustPut(t, kv, "k", "two, longer", 0)
		mustGet(t, kv, "k", "two, longer")
		mustPut(t, kv, "k", "3", 0)
		mustGet(t, kv, "k", "3")
	})

	t.Run("InvalidWrite", func(t *testing.T) {
		kv := open(t)
		if err := kv.Put(ctx, "", []byte("v"), 0); err == nil {
			t.Error("Put with an empty key succeeded")
		}
		if err := kv.Put(ctx, "k", []byte("v"), -time.Second); err == nil {
			t.Error("Put with a negative ttl succeeded")
		}
		err := kv.Update(ctx, "k", func([]byte, bool) ([]byte, time.Duration, error) {
			return []byte("v"), -time.Second, nil
		})
		if err == nil {
			t.Error("Update returning a negative ttl succeeded")
		}
		mustMiss(t, kv, "k")
	})

	t.Run("TTL", func(t *testing.T) {
		needClock(t)
		kv := open(t)
		mustPut(t, kv, "ttl/short", "s", time.Minute)
		mustPut(t, kv, "ttl/long", "l", time.Hour)
		mustPut(t, kv, "ttl/none", "n", 0)

		advance(59 * time.Second)
		mustGet(t, kv, "ttl/short", "s")
		advance(2 * time.Second)
		mustMiss(t, kv, "ttl/short")
		mustGet(t, kv, "ttl/long", "l")
		if got := scan(t, kv, "ttl/"); !pairs(got, "ttl/long", "l", "ttl/none", "n") {
			t.Errorf("Scan after expiry = %q", got)
		}
		update(t, kv, "ttl/short", func(old []byte, exists bool) ([]byte, time.Duration, error) {
			if exists || old != nil {
				t.Errorf("Update saw expired record: %q, %v", old, exists)
			}
			return nil, 0, store.Keep
		})
		mustMiss(t, kv, "ttl/short")

		// A plain Put replaces the ttl too.
		mustPut(t, kv, "ttl/long", "l2", 0)
		advance(2 * time.Hour)
		mustGet(t, kv, "ttl/long", "l2")
		mustGet(t, kv, "ttl/none", "n")

		// An expired key can be written again, and expires on its new ttl.
		mustPut(t, kv, "ttl/short", "again", time.Minute)
		mustGet(t, kv, "ttl/short", "again")
		advance(time.Minute + time.Second)
		mustMiss(t, kv, "ttl/short")
	})

	t.Run("UpdateTTL", func(t *testing.T) {
		needClock(t)
		kv := open(t)
		set := func(v string, ttl time.Duration) store.UpdateFunc {
			return func([]byte, bool) ([]byte, time.Duration, error) { return []byte(v), ttl, nil }
		}
		update(t, kv, "k", set("v", time.Minute))
		advance(30 * time.Second)
		// Keep leaves the record's expiry alone.
		update(t, kv, "k", func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, store.Keep })
		advance(31 * time.Second)
		mustMiss(t, kv, "k")

		update(t, kv, "k", set("v", time.Minute))
		update(t, kv, "k", set("w", 0)) // a written value takes the ttl fn returned
		advance(2 * time.Minute)
		mustGet(t, kv, "k", "w")
	})

	t.Run("Update", func(t *testing.T) {
		kv := open(t)
		update(t, kv, "k", func(old []byte, exists bool) ([]byte, time.Duration, error) {
			if exists || old != nil {
				t.Errorf("create: fn got %q, %v; want nil, false", old, exists)
			}
			return []byte("1"), 0, nil
		})
		mustGet(t, kv, "k", "1")

		update(t, kv, "k", func(old []byte, exists bool) ([]byte, time.Duration, error) {
			if !exists || string(old) != "1" {
				t.Errorf("modify: fn got %q, %v; want \"1\", true", old, exists)
			}
			return append(old, '2'), 0, nil
		})
		mustGet(t, kv, "k", "12")

		update(t, kv, "k", func([]byte, bool) ([]byte, time.Duration, error) {
			return []byte("ignored"), 0, store.Keep
		})
		mustGet(t, kv, "k", "12")

		errBoom := errors.New("boom")
		err := kv.Update(ctx, "k", func([]byte, bool) ([]byte, time.Duration, error) {
			return []byte("ignored"), 0, errBoom
		})
		if err != errBoom {
			t.Errorf("Update returned %v; want fn's error unchanged", err)
		}
		mustGet(t, kv, "k", "12")

		update(t, kv, "k", func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, store.Remove })
		mustMiss(t, kv, "k")

		// Keep and Remove on a missing key leave it missing.
		update(t, kv, "absent", func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, store.Keep })
		update(t, kv, "absent", func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, store.Remove })
		mustMiss(t, kv, "absent")
	})

	t.Run("UpdateAtomic", func(t *testing.T) {
		kv := open(t)
		const workers, rounds = 50, 4
		increment := func(old []byte, exists bool) ([]byte, time.Duration, error) {
			n := 0
			if exists {
				var err error
				if n, err = strconv.Atoi(string(old)); err != nil {
					return nil, 0, err
				}
			}
			return strconv.AppendInt(nil, int64(n+1), 10), 0, nil
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range rounds {
					// A backend may give up on a key it keeps losing to
					// other writers (Redis' bounded optimistic retries, on a
					// busy machine) with ErrUnavailable, having written
					// nothing: the caller may try again. No increment may be
					// lost or applied twice either way.
					err := kv.Update(ctx, "counter", increment)
					for try := 0; errors.Is(err, store.ErrUnavailable) && try < 100; try++ {
						err = kv.Update(ctx, "counter", increment)
					}
					if err != nil {
						t.Errorf("Update: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		mustGet(t, kv, "counter", strconv.Itoa(workers*rounds))
	})

	t.Run("Delete", func(t *testing.T) {
		kv := open(t)
		mustPut(t, kv, "k", "v", 0)
		mustPut(t, kv, "k2", "v2", 0)
		if err := kv.Delete(ctx, "k"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		mustMiss(t, kv, "k")
		mustGet(t, kv, "k2", "v2")
		if err := kv.Delete(ctx, "k"); err != nil {
			t.Errorf("Delete of a missing key: %v", err)
		}
	})

	t.Run("Scan", func(t *testing.T) {
		kv := open(t)
		for _, k := range []string{"a", "a/", "a/1", "a/2", "a/2/x", "a0", "b/1", "A/1", "/a/1"} {
			mustPut(t, kv, k, "v:"+k, 0)
		}
		if got := scan(t, kv, "a/"); !pairs(got, "a/", "v:a/", "a/1", "v:a/1", "a/2", "v:a/2", "a/2/x", "v:a/2/x") {
			t.Errorf("Scan(a/) = %q", got)
		}
		if got := scan(t, kv, "a/2"); !pairs(got, "a/2", "v:a/2", "a/2/x", "v:a/2/x") {
			t.Errorf("Scan(a/2) = %q", got)
		}
		if got := scan(t, kv, "zzz"); len(got) != 0 {
			t.Errorf("Scan(zzz) = %q", got)
		}
		if got := scan(t, kv, ""); len(got) != 2*9 {
			t.Errorf("Scan(\"\") returned %d records; want 9", len(got)/2)
		}

		errStop := errors.New("stop")
		calls := 0
		err := kv.Scan(ctx, "a/", func(string, []byte) error { calls++; return errStop })
		if !errors.Is(err, errStop) || calls != 1 {
			t.Errorf("Scan with a failing fn = %v after %d calls; want errStop after 1", err, calls)
		}
	})

	t.Run("ScanExpired", func(t *testing.T) {
		needClock(t)
		kv := open(t)
		mustPut(t, kv, "s/live", "1", time.Hour)
		mustPut(t, kv, "s/dead", "2", time.Minute)
		advance(2 * time.Minute)
		if got := scan(t, kv, "s/"); !pairs(got, "s/live", "1") {
			t.Errorf("Scan = %q; want only s/live", got)
		}
		mustMiss(t, kv, "s/dead")
	})

	t.Run("Close", func(t *testing.T) {
		kv := open(t) // closed again by the cleanup: must be harmless
		if err := kv.Ping(ctx); err != nil {
			t.Fatalf("Ping on an open store: %v", err)
		}
		mustPut(t, kv, "k", "v", 0)
		if err := kv.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := kv.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Ping after Close = %v; want ErrUnavailable", err)
		}
		if _, err := kv.Get(ctx, "k"); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Get after Close = %v; want ErrUnavailable", err)
		}
		if err := kv.Put(ctx, "k", []byte("v"), 0); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Put after Close = %v; want ErrUnavailable", err)
		}
	})
}

func mustPut(t *testing.T, kv store.KV, key, value string, ttl time.Duration) {
	t.Helper()
	if err := kv.Put(t.Context(), key, []byte(value), ttl); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func mustGet(t *testing.T, kv store.KV, key, want string) []byte {
	t.Helper()
	got, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("Get(%q) = %q; want %q", key, got, want)
	}
	return got
}

func mustMiss(t *testing.T, kv store.KV, key string) {
	t.Helper()
	if v, err := kv.Get(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, v, err)
	}
}

func update(t *testing.T, kv store.KV, key string, fn store.UpdateFunc) {
	t.Helper()
	if err := kv.Update(t.Context(), key, fn); err != nil {
		t.Fatalf("Update(%q): %v", key, err)
	}
}

// scan returns key, value pairs flattened and sorted by key.
func scan(t *testing.T, kv store.KV, prefix string) []string {
	t.Helper()
	got := map[string]string{}
	err := kv.Scan(t.Context(), prefix, func(k string, v []byte) error {
		if _, dup := got[k]; dup {
			t.Errorf("Scan(%q) visited %q twice", prefix, k)
		}
		got[k] = string(v)
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%q): %v", prefix, err)
	}
	var flat []string
	for _, k := range slices.Sorted(maps.Keys(got)) {
		flat = append(flat, k, got[k])
	}
	return flat
}

// pairs reports whether a scan result equals want, given as key, value, … in key order.
func pairs(got []string, want ...string) bool { return slices.Equal(got, want) }
