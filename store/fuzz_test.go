package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
)

// FuzzSealedTamper flips, truncates and extends a sealed record: a tampered
// record must fail closed — Get with ErrSealed, Update and Scan as if it were
// absent — and never return bytes.
func FuzzSealedTamper(f *testing.F) {
	f.Add(0, byte(1), 0)
	f.Add(5, byte(0x80), 0)
	f.Add(40, byte(0xff), -3)
	f.Add(0, byte(0), 7)
	f.Fuzz(func(t *testing.T, pos int, mask byte, resize int) {
		ctx := context.Background()
		inner := memory.New(nil)
		key := bytes.Repeat([]byte{7}, store.KeySize)
		s, err := store.NewSealed(inner, key)
		if err != nil {
			t.Fatal(err)
		}
		secret := []byte("wyu_secret_token_value")
		if err := s.Put(ctx, "k", secret, 0); err != nil {
			t.Fatal(err)
		}
		raw, _ := inner.Get(ctx, "k")
		mut := append([]byte(nil), raw...)
		changed := false
		if len(mut) > 0 && mask != 0 {
			i := ((pos % len(mut)) + len(mut)) % len(mut)
			mut[i] ^= mask
			changed = true
		}
		switch {
		case resize < 0 && -resize < len(mut):
			mut = mut[:len(mut)+resize]
			changed = true
		case resize > 0:
			mut = append(mut, make([]byte, resize%64)...)
			changed = changed || resize%64 != 0
		}
		if err := inner.Put(ctx, "k", mut, 0); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "k")
		if !changed {
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("untouched record: %q %v", got, err)
			}
			return
		}
		if !errors.Is(err, store.ErrSealed) || got != nil {
			t.Fatalf("tampered record opened: %q %v", got, err)
		}
		err = s.Scan(ctx, "", func(k string, v []byte) error {
			t.Fatalf("Scan handed out a tampered record: %q = %q", k, v)
			return nil
		})
		if err != nil {
			t.Fatalf("Scan = %v; want the tampered record skipped", err)
		}
		err = s.Update(ctx, "k", func(old []byte, exists bool) ([]byte, time.Duration, error) {
			if exists || old != nil {
				t.Fatalf("Update handed out a tampered record: %q, %v", old, exists)
			}
			return nil, 0, store.Keep
		})
		if err != nil {
			t.Fatalf("Update = %v", err)
		}
		if after, _ := inner.Get(ctx, "k"); !bytes.Equal(after, mut) {
			t.Fatal("Update with Keep changed the tampered record")
		}
	})
}
