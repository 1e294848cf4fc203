package store_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/bolt"
	"github.com/forge-remote/forge-remote/store/memory"
)

func TestSealedFormat(t *testing.T) {
	ctx := t.Context()
	inner := memory.New(nil)
	s := newSealed(t, inner)
	secret := []byte("wyu_SECRETSECRET")
	if err := s.Put(ctx, "k", secret, 0); err != nil {
		t.Fatal(err)
	}
	first, err := inner.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 12 + len(secret) + 16; len(first) != want || first[0] != 1 {
		t.Errorf("sealed value: %d bytes, version %d; want %d bytes, version 1", len(first), first[0], want)
	}
	if bytes.Contains(first, secret) || bytes.Contains(first, []byte("SECRET")) {
		t.Error("sealed value holds the plaintext")
	}
	if err := s.Put(ctx, "k", secret, 0); err != nil {
		t.Fatal(err)
	}
	if second, _ := inner.Get(ctx, "k"); bytes.Equal(first, second) {
		t.Error("sealing the same value twice gave the same bytes; the nonce is not random")
	}
}

func TestSealedFailsClosed(t *testing.T) {
	const key = "installation/1/app-token"
	secret := []byte("wyu_SECRETSECRET")
	tests := []struct {
		name   string
		mangle func(t *testing.T, inner *memory.Store, sealed []byte) (getKey string)
		// Sealed over the same inner store with another key.
		otherKey bool
	}{
		{name: "flipped version", mangle: flip(0)},
		{name: "flipped nonce", mangle: flip(1)},
		{name: "flipped ciphertext", mangle: flip(1 + 12)},
		{name: "flipped tag", mangle: flip(-1)},
		{name: "truncated", mangle: func(t *testing.T, inner *memory.Store, sealed []byte) string {
			put(t, inner, key, sealed[:len(sealed)-1])
			return key
		}},
		{name: "too short", mangle: func(t *testing.T, inner *memory.Store, sealed []byte) string {
			put(t, inner, key, sealed[:20])
			return key
		}},
		{name: "empty", mangle: func(t *testing.T, inner *memory.Store, sealed []byte) string {
			put(t, inner, key, nil)
			return key
		}},
		{name: "plaintext planted", mangle: func(t *testing.T, inner *memory.Store, sealed []byte) string {
			put(t, inner, key, append([]byte{1}, bytes.Repeat(secret, 3)...))
			return key
		}},
		{name: "moved to another key", mangle: func(t *testing.T, inner *memory.Store, sealed []byte) string {
			put(t, inner, "installation/2/app-token", sealed)
			return "installation/2/app-token"
		}},
		{name: "wrong key", otherKey: true, mangle: func(*testing.T, *memory.Store, []byte) string { return key }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			inner := memory.New(nil)
			s := newSealed(t, inner)
			if err := s.Put(ctx, key, secret, 0); err != nil {
				t.Fatal(err)
			}
			sealed, err := inner.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			getKey := tt.mangle(t, inner, sealed)
			if tt.otherKey {
				if s, err = store.NewSealed(inner, bytes.Repeat([]byte{8}, store.KeySize)); err != nil {
					t.Fatal(err)
				}
			}

			v, err := s.Get(ctx, getKey)
			if !errors.Is(err, store.ErrSealed) || v != nil {
				t.Errorf("Get = %q, %v; want nil, ErrSealed", v, err)
			}
			if err != nil && strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error repeats the value: %v", err)
			}
			// Scan skips the bad record, without an error, and goes on.
			if err := s.Put(ctx, "installation/0/ok", []byte("fine"), 0); err != nil {
				t.Fatal(err)
			}
			before := s.Unopened()
			var seen []string
			err = s.Scan(ctx, "", func(k string, v []byte) error {
				if k == getKey {
					t.Errorf("Scan handed out %q = %q", k, v)
				}
				seen = append(seen, k)
				return nil
			})
			if err != nil {
				t.Errorf("Scan = %v; want the bad record skipped", err)
			}
			if !slices.Contains(seen, "installation/0/ok") {
				t.Errorf("Scan stopped at the bad record; saw %q", seen)
			}
			if got := s.Unopened() - before; got != 1 {
				t.Errorf("Unopened grew by %d over the scan, want 1", got)
			}
			// Update hands fn the bad record as absent, never its bytes;
			// Keep leaves it as it is.
			rawBefore, _ := inner.Get(ctx, getKey)
			err = s.Update(ctx, getKey, func(old []byte, exists bool) ([]byte, time.Duration, error) {
				if old != nil || exists {
					t.Errorf("Update fn got %q, %v; want nil, false", old, exists)
				}
				return nil, 0, store.Keep
			})
			if err != nil {
				t.Errorf("Update (keep) = %v", err)
			}
			if rawAfter, _ := inner.Get(ctx, getKey); !bytes.Equal(rawAfter, rawBefore) {
				t.Error("Update with Keep changed the bad record")
			}
			if _, err := s.Get(ctx, getKey); !errors.Is(err, store.ErrSealed) {
				t.Errorf("Get after a kept Update = %v; want ErrSealed", err)
			}
			// ... and what fn returns replaces it.
			err = s.Update(ctx, getKey, func(old []byte, exists bool) ([]byte, time.Duration, error) {
				if old != nil || exists {
					t.Errorf("Update fn got %q, %v; want nil, false", old, exists)
				}
				return []byte("new"), 0, nil
			})
			if err != nil {
				t.Errorf("Update = %v; want the bad record replaced", err)
			}
			if v, err := s.Get(ctx, getKey); err != nil || string(v) != "new" {
				t.Errorf("Get after Update = %q, %v", v, err)
			}
			put(t, inner, getKey, rawBefore) // bad again
			// A Put replaces the bad record; it is not stuck for ever.
			if err := s.Put(ctx, getKey, []byte("fresh"), 0); err != nil {
				t.Fatal(err)
			}
			if v, err := s.Get(ctx, getKey); err != nil || string(v) != "fresh" {
				t.Errorf("Get after Put = %q, %v", v, err)
			}
		})
	}
}

// TestSealedKeyRotation: records sealed under an old STORE_KEY are absent
// under the new one — Get says ErrSealed, Scan skips them, Update replaces
// them — never a permanent failure (installation records have no TTL).
func TestSealedKeyRotation(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "rot.db")
	oldKey, newKey := bytes.Repeat([]byte{1}, store.KeySize), bytes.Repeat([]byte{2}, store.KeySize)
	var raw store.KV // the bolt beneath the last open
	open := func(key []byte) *store.Sealed {
		t.Helper()
		b, err := bolt.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		raw = b
		s, err := store.NewSealed(b, key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open(oldKey)
	for _, k := range []string{"scheduler/installation/a", "scheduler/installation/b", "scheduler/installation/c"} {
		if err := s.Put(ctx, k, []byte("old "+k), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(newKey)
	defer s.Close()
	if err := s.Put(ctx, "scheduler/installation/b", []byte("new b"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "scheduler/installation/a"); !errors.Is(err, store.ErrSealed) {
		t.Fatalf("Get of an old record = %v; want ErrSealed", err)
	}
	got := map[string]string{}
	err := s.Scan(ctx, "scheduler/installation/", func(k string, v []byte) error {
		got[k] = string(v)
		return nil
	})
	if err != nil || len(got) != 1 || got["scheduler/installation/b"] != "new b" {
		t.Fatalf("Scan = %v, %q; want only the record sealed under the new key", err, got)
	}
	if n := s.Unopened(); n != 2 {
		t.Errorf("Unopened = %d, want 2", n)
	}
	// A first-seen style update: absent, so it writes.
	err = s.Update(ctx, "scheduler/installation/a", func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if exists {
			return nil, 0, store.Keep
		}
		return []byte("fresh a"), 0, nil
	})
	if err != nil {
		t.Fatalf("Update over an old record = %v", err)
	}
	if v, err := s.Get(ctx, "scheduler/installation/a"); err != nil || string(v) != "fresh a" {
		t.Fatalf("Get after Update = %q, %v", v, err)
	}
	// Remove deletes an old record.
	err = s.Update(ctx, "scheduler/installation/c", func([]byte, bool) ([]byte, time.Duration, error) {
		return nil, 0, store.Remove
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Get(ctx, "scheduler/installation/c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old record after Remove: %v", err)
	}
}

// flip returns a mangle that flips one bit of the sealed value at i (from the
// end when negative).
func flip(i int) func(t *testing.T, inner *memory.Store, sealed []byte) string {
	return func(t *testing.T, inner *memory.Store, sealed []byte) string {
		if i < 0 {
			i += len(sealed)
		}
		sealed[i] ^= 0x01
		put(t, inner, "installation/1/app-token", sealed)
		return "installation/1/app-token"
	}
}

func put(t *testing.T, kv store.KV, key string, value []byte) {
	t.Helper()
	if err := kv.Put(t.Context(), key, value, 0); err != nil {
		t.Fatal(err)
	}
}

func TestNewSealedKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := store.NewSealed(memory.New(nil), make([]byte, n)); err == nil {
			t.Errorf("NewSealed accepted a %d-byte key", n)
		}
	}
}

func TestParseKey(t *testing.T) {
	key := make([]byte, store.KeySize)
	for i := range key {
		key[i] = byte(0xf0 + i) // high bytes, so std and url alphabets differ
	}
	short := base64.StdEncoding.EncodeToString(key[:16])
	for _, tt := range []struct {
		name, in string
		ok       bool
	}{
		{"std", base64.StdEncoding.EncodeToString(key), true},
		{"raw std", base64.RawStdEncoding.EncodeToString(key), true},
		{"url", base64.URLEncoding.EncodeToString(key), true},
		{"raw url", base64.RawURLEncoding.EncodeToString(key), true},
		{"trailing newline", base64.StdEncoding.EncodeToString(key) + "\n", true},
		{"empty", "", false},
		{"16 bytes", short, false},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(key, 1)), false},
		{"not base64", "not*base64*at*all*SECRETSECRET*SECRETSECRET", false},
		{"hex", strings.Repeat("ab", 32), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.ParseKey(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseKey accepted %q", tt.in)
				}
				if !strings.Contains(err.Error(), "STORE_KEY") {
					t.Errorf("error does not name STORE_KEY: %v", err)
				}
				if tt.in != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
					t.Errorf("error repeats the value: %v", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, key) {
				t.Errorf("ParseKey = %x, %v; want %x", got, err, key)
			}
		})
	}
}

// DeletePrefix purges everything under a prefix, through a Sealed the
// records sealed under another key too, and nothing outside it.
func TestDeletePrefix(t *testing.T) {
	ctx := t.Context()
	mem := memory.New(nil)
	defer mem.Close()
	old, err := store.NewSealed(mem, bytes.Repeat([]byte{1}, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	put(t, old, "p/old", []byte("v"))
	cur := newSealed(t, mem)
	put(t, cur, "p/new", []byte("v"))
	put(t, cur, "q/keep", []byte("v"))
	if err := store.DeletePrefix(ctx, cur, "p/"); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := mem.Scan(ctx, "", func(k string, _ []byte) error { left = append(left, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != "q/keep" {
		t.Fatalf("left after DeletePrefix: %q; want only q/keep", left)
	}

	put(t, mem, "r/1", []byte("v")) // a KV without ScanKeys
	if err := store.DeletePrefix(ctx, mem, "r/"); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Get(ctx, "r/1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("r/1 after DeletePrefix: %v", err)
	}
}
