package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/forge-remote/forge-remote/store/internal/sealkey"
)

// KeySize is the length of a sealing key: AES-256.
const KeySize = sealkey.Size

// sealVersion prefixes every sealed value so the format can change later
// without guessing what an old record holds.
const sealVersion byte = 1

// Sealed wraps a KV so that every value is sealed at rest with AES-256-GCM.
// A sealed value is
//
//	version (1 byte) | random nonce (12 bytes) | ciphertext | tag (16 bytes)
//
// with the record's key as additional data, so a value copied to another key
// does not open. Anything that does not open is never handed out: Get answers
// ErrSealed, while Update and Scan treat the record as absent (a STORE_KEY
// rotation must not leave records without a TTL failing for ever).
type Sealed struct {
	inner KV
	aead  cipher.AEAD

	unopened atomic.Uint64 // records Update or Scan treated as absent
}

// NewSealed wraps inner with a 32-byte key. Closing the Sealed closes inner.
func NewSealed(inner KV, key []byte) (*Sealed, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("store: sealing key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("store: sealing key: %w", err)
	}
	// Random 96-bit nonces, generated and prepended by Seal itself: safe for
	// 2^32 seals under one key, far beyond this store's write volume.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("store: sealing key: %w", err)
	}
	return &Sealed{inner: inner, aead: aead}, nil
}

// ParseKey decodes STORE_KEY: base64 (standard or URL alphabet, padded or
// not) of exactly 32 bytes. Surrounding whitespace is ignored. Errors never
// repeat the value.
func ParseKey(s string) ([]byte, error) {
	return sealkey.Parse(s, "STORE_KEY")
}

func (s *Sealed) seal(key string, plain []byte) []byte {
	out := make([]byte, 1, 1+s.aead.Overhead()+len(plain))
	out[0] = sealVersion
	return s.aead.Seal(out, nil, plain, []byte(key))
}

func (s *Sealed) open(key string, sealed []byte) ([]byte, error) {
	switch {
	case len(sealed) < 1+s.aead.Overhead():
		return nil, fmt.Errorf("%w: key %q: too short", ErrSealed, key)
	case sealed[0] != sealVersion:
		return nil, fmt.Errorf("%w: key %q: unknown format %d", ErrSealed, key, sealed[0])
	}
	plain, err := s.aead.Open(nil, nil, sealed[1:], []byte(key))
	if err != nil {
		// Wrong STORE_KEY, tampering, or a record moved from another key:
		// GCM cannot tell them apart, and neither should an attacker.
		return nil, fmt.Errorf("%w: key %q: authentication failed", ErrSealed, key)
	}
	return plain, nil
}

// Get returns the opened value stored under key.
func (s *Sealed) Get(ctx context.Context, key string) ([]byte, error) {
	sealed, err := s.inner.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.open(key, sealed)
}

// Put seals value and stores it under key.
func (s *Sealed) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return s.inner.Put(ctx, key, s.seal(key, value), ttl)
}

// Update opens the current value before fn sees it and seals what fn returns.
// A current value that does not open (sealed under another STORE_KEY, or
// tampered with) is passed to fn as absent, (nil, false), so that fn can
// replace it; the inner store still compares the raw bytes it read, so the
// update stays atomic. Returning Keep leaves the unopenable record as it is.
func (s *Sealed) Update(ctx context.Context, key string, fn UpdateFunc) error {
	return s.inner.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if exists {
			opened, err := s.open(key, old)
			if err != nil {
				s.unopened.Add(1)
				opened, exists = nil, false
			}
			old = opened
		}
		value, ttl, err := fn(old, exists)
		if err != nil {
			return nil, 0, err
		}
		return s.seal(key, value), ttl, nil
	})
}

// Delete removes key; a missing key is not an error.
func (s *Sealed) Delete(ctx context.Context, key string) error {
	return s.inner.Delete(ctx, key)
}

// Scan opens each matching value before fn sees it. A value that does not
// open is skipped, as if absent (counted by Unopened), and is no error.
func (s *Sealed) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	return s.inner.Scan(ctx, prefix, func(key string, sealed []byte) error {
		value, err := s.open(key, sealed)
		if err != nil {
			s.unopened.Add(1)
			return nil
		}
		return fn(key, value)
	})
}

// ScanKeys calls fn with the key of every matching record, those that do not
// open included: it opens nothing. For purges (DeletePrefix).
func (s *Sealed) ScanKeys(ctx context.Context, prefix string, fn func(key string) error) error {
	return s.inner.Scan(ctx, prefix, func(key string, _ []byte) error { return fn(key) })
}

// Unopened counts the records that Update and Scan met and treated as
// absent because they did not open (another STORE_KEY, or tampering), since
// the Sealed was made. Update counts once per attempt: an optimistic backend
// retrying on a concurrent write may count one record twice.
func (s *Sealed) Unopened() uint64 { return s.unopened.Load() }

// Ping checks the inner store.
func (s *Sealed) Ping(ctx context.Context) error { return s.inner.Ping(ctx) }

// PubSub passes on the wrapped store's publish/subscribe (see PubSubOf).
// Messages are not sealed: they carry ids, never secrets.
func (s *Sealed) PubSub() (PubSub, bool) { return PubSubOf(s.inner) }

// Close closes the inner store.
func (s *Sealed) Close() error { return s.inner.Close() }
