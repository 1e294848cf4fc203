// Package store is the one small key-value interface the server keeps its state in,
// and the AES-256-GCM sealing of every value at rest. The backends live in
// subpackages (store/memory, store/bolt, store/redis) and store/open picks one
// from STORE_URL, so that importing this package links no database.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Backends wrap transport failures in ErrUnavailable so that
// server/ can answer 503 without knowing which backend is in use.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrUnavailable = errors.New("store: unavailable")
	// ErrSealed means a value could not be opened: wrong STORE_KEY, tampering, or a
	// record moved to another key. It fails closed: the value is never returned.
	ErrSealed = errors.New("store: sealed value could not be opened")
)

// UpdateFunc receives the current value (nil, false when absent or expired) and
// returns the value to write. Returning Keep leaves the record untouched;
// returning Remove deletes it. Any other error aborts the update and is returned
// by Update unchanged. It may be called more than once (optimistic backends
// retry on a concurrent write), so it must not have side effects.
type UpdateFunc func(old []byte, exists bool) (value []byte, ttl time.Duration, err error)

// Keep and Remove are the non-error answers an UpdateFunc can give instead of a value.
var (
	Keep   = errors.New("store: keep")
	Remove = errors.New("store: remove")
)

// KV is what every backend provides. Keys are plain non-empty strings made by
// the caller from identifiers (never from tokens), so they may appear in error
// messages. A ttl of 0 means no expiry; a negative ttl is an error. Expired
// records behave as absent everywhere. Values passed in and returned are never
// retained or shared by the store, so callers may reuse them.
type KV interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Update is an atomic compare-and-update of one key.
	Update(ctx context.Context, key string, fn UpdateFunc) error
	Delete(ctx context.Context, key string) error
	// Scan calls fn for every live record whose key starts with prefix, in no
	// particular order. fn must not call back into the store.
	Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error
	Ping(ctx context.Context) error
	Close() error
}

// DeletePrefix deletes every record whose key starts with prefix: a purge.
// Through a Sealed it deletes the records that do not open too (sealed under
// another STORE_KEY), which its Scan skips, so that a purge leaves nothing.
func DeletePrefix(ctx context.Context, kv KV, prefix string) error {
	var keys []string
	collect := func(key string) error {
		keys = append(keys, key)
		return nil
	}
	var err error
	if ks, ok := kv.(interface {
		ScanKeys(ctx context.Context, prefix string, fn func(key string) error) error
	}); ok {
		err = ks.ScanKeys(ctx, prefix, collect)
	} else {
		err = kv.Scan(ctx, prefix, func(key string, _ []byte) error { return collect(key) })
	}
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := kv.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
