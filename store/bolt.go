package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// boltBucket holds every record; keys are namespaced by the caller.
var boltBucket = []byte("kv")

// boltHeader is the size of the expiry that precedes every payload on disk:
// big-endian unix nanoseconds, 0 for none.
const boltHeader = 8

// Bolt is a KV in one bbolt file: the embedded default for a single replica.
// Expired records are absent for every call and removed when Get or Scan
// meets them, so a housekeeping Scan of "" also reclaims their space.
type Bolt struct {
	db  *bbolt.DB
	now func() time.Time
}

// OpenBolt opens or creates the database at path, creating its directory
// (0700). A database held by another process fails after one second rather
// than blocking start-up forever.
func OpenBolt(path string, now func() time.Time) (*Bolt, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: create directory for bolt database %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 1 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: bolt database %s is locked by another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open bolt database %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init bolt database %s: %w", path, err)
	}
	return &Bolt{db: db, now: now}, nil
}

// boltRecord decodes a stored value. payload aliases raw, which bbolt only
// keeps valid until the transaction ends.
func boltRecord(key string, raw []byte) (expires int64, payload []byte, err error) {
	if len(raw) < boltHeader {
		return 0, nil, fmt.Errorf("store: bolt record %q is corrupt (%d bytes)", key, len(raw))
	}
	return int64(binary.BigEndian.Uint64(raw)), raw[boltHeader:], nil
}

func boltLive(expires int64, now time.Time) bool {
	return expires == 0 || now.UnixNano() < expires
}

func boltEncode(value []byte, ttl time.Duration, now time.Time) []byte {
	var expires int64
	if ttl > 0 {
		expires = now.Add(ttl).UnixNano()
	}
	raw := make([]byte, boltHeader, boltHeader+len(value))
	binary.BigEndian.PutUint64(raw, uint64(expires))
	return append(raw, value...)
}

// tx runs fn in a bbolt transaction. Errors fn returns are passed through
// unchanged (they are the caller's or the store's own); everything else comes
// from bbolt itself (closed database, failed commit or fsync) and wraps
// ErrUnavailable.
func (b *Bolt) tx(ctx context.Context, op string, write bool, fn func(*bbolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	run := func(tx *bbolt.Tx) error {
		fnErr = fn(tx.Bucket(boltBucket))
		return fnErr
	}
	var err error
	if write {
		err = b.db.Update(run)
	} else {
		err = b.db.View(run)
	}
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("%w: bolt %s: %w", ErrUnavailable, op, err)
	}
	return nil
}

// boltErr prefixes an error bbolt returned inside a transaction (a key or
// value too large, say): a refusal of this record, not an outage.
func boltErr(op, key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: bolt %s %q: %w", op, key, err)
}

// Get returns the value stored under key, or ErrNotFound.
func (b *Bolt) Get(ctx context.Context, key string) ([]byte, error) {
	var value []byte
	var found, expired bool
	err := b.tx(ctx, "get", false, func(bk *bbolt.Bucket) error {
		raw := bk.Get([]byte(key))
		if raw == nil {
			return nil
		}
		expires, payload, err := boltRecord(key, raw)
		if err != nil {
			return err
		}
		if !boltLive(expires, b.now()) {
			expired = true
			return nil
		}
		value, found = bytes.Clone(payload), true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if expired {
		b.removeExpired(ctx, []string{key})
	}
	if !found {
		return nil, ErrNotFound
	}
	return value, nil
}

// removeExpired deletes the keys that are still expired once inside a write
// transaction (another caller may have rewritten them meanwhile). It is best
// effort: failing leaves a dead record that is still read as absent.
func (b *Bolt) removeExpired(ctx context.Context, keys []string) {
	_ = b.tx(ctx, "remove expired", true, func(bk *bbolt.Bucket) error {
		now := b.now()
		for _, k := range keys {
			raw := bk.Get([]byte(k))
			if raw == nil {
				continue
			}
			if expires, _, err := boltRecord(k, raw); err != nil || boltLive(expires, now) {
				continue
			}
			if err := bk.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Put stores value under key, replacing any record and its ttl.
func (b *Bolt) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkWrite(key, ttl); err != nil {
		return err
	}
	return b.tx(ctx, "put", true, func(bk *bbolt.Bucket) error {
		return boltErr("put", key, bk.Put([]byte(key), boltEncode(value, ttl, b.now())))
	})
}

// Update runs fn inside one bbolt read-write transaction; bbolt admits one
// writer at a time, so fn is called exactly once.
func (b *Bolt) Update(ctx context.Context, key string, fn UpdateFunc) error {
	if err := checkWrite(key, 0); err != nil {
		return err
	}
	return b.tx(ctx, "update", true, func(bk *bbolt.Bucket) error {
		k := []byte(key)
		now := b.now()
		var old []byte
		var exists, stale bool
		if raw := bk.Get(k); raw != nil {
			expires, payload, err := boltRecord(key, raw)
			if err != nil {
				return err
			}
			if boltLive(expires, now) {
				old, exists = bytes.Clone(payload), true
			} else {
				stale = true
			}
		}
		value, ttl, err := fn(old, exists)
		switch {
		case errors.Is(err, Keep):
			if stale {
				return boltErr("update", key, bk.Delete(k))
			}
			return nil
		case errors.Is(err, Remove):
			return boltErr("update", key, bk.Delete(k))
		case err != nil:
			return err // the caller's own error, unchanged
		}
		if err := checkWrite(key, ttl); err != nil {
			return err
		}
		return boltErr("update", key, bk.Put(k, boltEncode(value, ttl, now)))
	})
}

// Delete removes key; a missing key is not an error.
func (b *Bolt) Delete(ctx context.Context, key string) error {
	if key == "" {
		return nil // bbolt rejects empty keys; none can exist
	}
	return b.tx(ctx, "delete", true, func(bk *bbolt.Bucket) error {
		return boltErr("delete", key, bk.Delete([]byte(key)))
	})
}

// Scan visits the matching live records in key order inside one read
// transaction, then removes the expired ones it met.
func (b *Bolt) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	var expired []string
	err := b.tx(ctx, "scan", false, func(bk *bbolt.Bucket) error {
		now := b.now()
		p := []byte(prefix)
		c := bk.Cursor()
		for k, raw := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, raw = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := string(k)
			expires, payload, err := boltRecord(key, raw)
			if err != nil {
				return err
			}
			if !boltLive(expires, now) {
				expired = append(expired, key)
				continue
			}
			if err := fn(key, bytes.Clone(payload)); err != nil {
				return err
			}
		}
		return nil
	})
	if len(expired) > 0 {
		b.removeExpired(ctx, expired)
	}
	return err
}

// Ping returns nil while the database is open.
func (b *Bolt) Ping(ctx context.Context) error {
	return b.tx(ctx, "ping", false, func(*bbolt.Bucket) error { return nil })
}

// Close closes the database and releases its file lock; closing twice is
// harmless.
func (b *Bolt) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close bolt database: %w", err)
	}
	return nil
}
