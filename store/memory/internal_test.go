package memory

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

func (m *Store) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

// Get and Scan remove the expired records they meet.
func TestExpiredRecordsAreRemoved(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := New(func() time.Time { return now })
	defer m.Close()
	for _, k := range []string{"get", "scan/1", "scan/2", "live"} {
		ttl := time.Minute
		if k == "live" {
			ttl = 0
		}
		if err := m.Put(ctx, k, []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(time.Minute)
	if _, err := m.Get(ctx, "get"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an expired record = %v", err)
	}
	if err := m.Scan(ctx, "scan/", func(string, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := m.count(); n != 1 {
		t.Errorf("memory holds %d records; want only the live one", n)
	}
}

// The reaper removes expired records nobody reads again, at most a batch per
// pass, and leaves live ones; Close stops it (synctest fails a test whose
// bubble still has a goroutine running).
func TestReaper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		const every, batch = time.Minute, 4
		m := newStore(nil, every, batch) // time.Now: the bubble's clock
		for i := range 10 {
			if err := m.Put(ctx, fmt.Sprint("short/", i), []byte("v"), 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 2 {
			if err := m.Put(ctx, fmt.Sprint("forever/", i), []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
		}

		time.Sleep(every) // the first pass: all 10 expired, 4 looked at
		synctest.Wait()
		if n := m.count(); n < 12-batch || n == 12 {
			t.Fatalf("after one pass %d records remain; want between %d and 11", n, 12-batch)
		}
		for pass := 0; m.count() > 2; pass++ {
			if pass == 1000 {
				t.Fatalf("after %d passes %d records remain; want the 2 without ttl", pass, m.count())
			}
			time.Sleep(every)
			synctest.Wait()
		}
		for i := range 2 {
			if _, err := m.Get(ctx, fmt.Sprint("forever/", i)); err != nil {
				t.Fatalf("a record without ttl was reaped: %v", err)
			}
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil { // twice is harmless
			t.Fatal(err)
		}
	})
}
