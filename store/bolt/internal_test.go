package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.etcd.io/bbolt"

	"github.com/forge-remote/forge-remote/store"
)

// raw returns the bytes bolt holds for key, nil when there is no record.
func raw(t *testing.T, b *Store, key string) []byte {
	t.Helper()
	var v []byte
	if err := b.db.View(func(tx *bbolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucket).Get([]byte(key)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBoltRecordLayout(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	b, err := Open(filepath.Join(t.TempDir(), "x.db"), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if err := b.Put(ctx, "ttl", []byte("payload"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "forever", []byte("p"), 0); err != nil {
		t.Fatal(err)
	}
	got := raw(t, b, "ttl")
	if exp := int64(binary.BigEndian.Uint64(got)); exp != now.Add(time.Minute).UnixNano() || string(got[8:]) != "payload" {
		t.Errorf("record = %x; want expiry %d then the payload", got, now.Add(time.Minute).UnixNano())
	}
	if got := raw(t, b, "forever"); !bytes.Equal(got, []byte("\x00\x00\x00\x00\x00\x00\x00\x00p")) {
		t.Errorf("record without ttl = %x; want zero expiry then the payload", got)
	}

	// A record too short to carry its expiry is reported, not misread.
	if err := b.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucket).Put([]byte("bad"), []byte{1}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "bad"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a corrupt record = %v; want an error", err)
	}
}

func TestExpiredRecordsAreRemoved(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	b, err := Open(filepath.Join(t.TempDir(), "x.db"), clock)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	for _, k := range []string{"get", "scan/1", "scan/2", "live"} {
		ttl := time.Minute
		if k == "live" {
			ttl = 0
		}
		if err := b.Put(ctx, k, []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(time.Minute)

	if _, err := b.Get(ctx, "get"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an expired record = %v", err)
	}
	if err := b.Scan(ctx, "scan/", func(string, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"get", "scan/1", "scan/2"} {
		if raw(t, b, k) != nil {
			t.Errorf("bolt still holds expired %q", k)
		}
	}
}

// count is the number of records bolt holds, expired or not.
func count(t *testing.T, b *Store) int {
	t.Helper()
	n := 0
	if err := b.db.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// The reaper deletes expired records nobody reads again, reading a bounded
// batch per pass in key order and carrying on where it stopped, and leaves
// live ones; Close stops it (synctest fails a test whose bubble still has a
// goroutine running).
func TestReaper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		const every, batch = time.Minute, 4
		b, err := open(filepath.Join(t.TempDir(), "x.db"), nil, every, batch) // time.Now: the bubble's clock
		if err != nil {
			t.Fatal(err)
		}
		// In key order: a0..a3 expire, b0 and b1 do not, c0..c3 expire.
		for _, k := range []string{"a0", "a1", "a2", "a3", "c0", "c1", "c2", "c3"} {
			if err := b.Put(ctx, k, []byte("v"), 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		for _, k := range []string{"b0", "b1"} {
			if err := b.Put(ctx, k, []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
		}

		for pass, want := range []int{6, 4, 2, 2} {
			time.Sleep(every)
			synctest.Wait()
			if n := count(t, b); n != want {
				t.Fatalf("after pass %d bolt holds %d records; want %d", pass+1, n, want)
			}
		}
		for _, k := range []string{"b0", "b1"} {
			if _, err := b.Get(ctx, k); err != nil {
				t.Fatalf("a record without ttl was reaped: %v", err)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil { // twice is harmless
			t.Fatal(err)
		}
	})
}

func TestBoltUnavailableAfterClose(t *testing.T) {
	b, err := Open(filepath.Join(t.TempDir(), "x.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err = b.Close(); err != nil {
		t.Fatal(err)
	}
	err = b.Update(t.Context(), "k", func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, nil })
	if !errors.Is(err, store.ErrUnavailable) || !strings.HasPrefix(err.Error(), "store: ") {
		t.Errorf("Update after Close = %v; want ErrUnavailable", err)
	}
}
