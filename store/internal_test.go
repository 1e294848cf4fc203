package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// raw returns the bytes bolt holds for key, nil when there is no record.
func raw(t *testing.T, b *Bolt, key string) []byte {
	t.Helper()
	var v []byte
	if err := b.db.View(func(tx *bbolt.Tx) error {
		v = bytes.Clone(tx.Bucket(boltBucket).Get([]byte(key)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBoltRecordLayout(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	b, err := OpenBolt(filepath.Join(t.TempDir(), "x.db"), func() time.Time { return now })
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
	if err := b.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(boltBucket).Put([]byte("bad"), []byte{1}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "bad"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a corrupt record = %v; want an error", err)
	}
}

func TestExpiredRecordsAreRemoved(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	b, err := OpenBolt(filepath.Join(t.TempDir(), "x.db"), clock)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m := NewMemory(clock)

	for _, k := range []string{"get", "scan/1", "scan/2", "live"} {
		ttl := time.Minute
		if k == "live" {
			ttl = 0
		}
		for _, kv := range []KV{b, m} {
			if err := kv.Put(ctx, k, []byte("v"), ttl); err != nil {
				t.Fatal(err)
			}
		}
	}
	now = now.Add(time.Minute)

	for _, kv := range []KV{b, m} {
		if _, err := kv.Get(ctx, "get"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of an expired record = %v", err)
		}
		if err := kv.Scan(ctx, "scan/", func(string, []byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"get", "scan/1", "scan/2"} {
		if raw(t, b, k) != nil {
			t.Errorf("bolt still holds expired %q", k)
		}
	}
	if len(m.m) != 1 {
		t.Errorf("memory holds %d records; want only the live one", len(m.m))
	}
}
