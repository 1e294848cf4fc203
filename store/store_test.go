package store_test

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/bolt"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/storetest"
)

var (
	_ store.KV = (*memory.Store)(nil)
	_ store.KV = (*bolt.Store)(nil)
	_ store.KV = (*store.Sealed)(nil)
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newBolt(t testing.TB, now func() time.Time) *bolt.Store {
	t.Helper()
	b, err := bolt.Open(filepath.Join(t.TempDir(), "test.db"), now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func newSealed(t testing.TB, inner store.KV) *store.Sealed {
	t.Helper()
	s, err := store.NewSealed(inner, bytes.Repeat([]byte{7}, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	clock := storetest.NewClock(epoch)
	backends := []struct {
		name  string
		newKV func(t *testing.T) store.KV
	}{
		{"Memory", func(t *testing.T) store.KV { return memory.New(clock.Now) }},
		{"Bolt", func(t *testing.T) store.KV { return newBolt(t, clock.Now) }},
		{"SealedMemory", func(t *testing.T) store.KV { return newSealed(t, memory.New(clock.Now)) }},
		{"SealedBolt", func(t *testing.T) store.KV { return newSealed(t, newBolt(t, clock.Now)) }},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			storetest.Run(t, b.newKV, clock.Advance)
		})
	}
}
