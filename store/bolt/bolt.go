// Package bolt is a store.KV in one bbolt file: the embedded default for a
// single replica (STORE_URL bolt://<path>).
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/internal/record"
)

// bucket holds every record; keys are namespaced by the caller.
var bucket = []byte("kv")

const (
	// reapEvery is how often the reaper looks for expired records.
	reapEvery = time.Minute
	// reapBatch bounds the records one pass reads, and so the deletions one
	// write transaction makes.
	reapBatch = 10_000
)

// Store is a KV in one bbolt file. A record is an expiry header then the
// payload (store/internal/record). Expired records are absent for every call,
// removed when Get or Scan meets them, and reaped in the background: each
// minute the reaper reads the next reapBatch records in key order (wrapping
// at the end) and deletes the expired ones, so records nobody reads again do
// not hold their space for ever. Close stops the reaper.
type Store struct {
	db  *bbolt.DB
	now func() time.Time

	reapFrom []byte // where the reaper's next pass starts; only the reaper touches it

	stopOnce sync.Once
	stop     chan struct{} // closed by Close
	done     chan struct{} // closed when the reaper has returned
}

// Open opens or creates the database at path, creating its directory (0700),
// and starts its reaper. A database held by another process fails after one
// second rather than blocking start-up forever.
func Open(path string, now func() time.Time) (*Store, error) {
	return open(path, now, reapEvery, reapBatch)
}

func open(path string, now func() time.Time, every time.Duration, batch int) (*Store, error) {
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
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init bolt database %s: %w", path, err)
	}
	b := &Store{db: db, now: now, stop: make(chan struct{}), done: make(chan struct{})}
	go b.reap(every, batch)
	return b, nil
}

// decode splits a stored value into its expiry and payload. payload aliases
// raw, which bbolt only keeps valid until the transaction ends.
func decode(key string, raw []byte) (expires int64, payload []byte, err error) {
	expires, payload, ok := record.Decode(raw)
	if !ok {
		return 0, nil, fmt.Errorf("store: bolt record %q is corrupt (%d bytes)", key, len(raw))
	}
	return expires, payload, nil
}

// reap runs reapOnce every interval until Close.
func (b *Store) reap(every time.Duration, batch int) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.reapOnce(batch)
		}
	}
}

// reapOnce reads up to batch records from where the last pass stopped (the
// start after the end) in one read transaction, then deletes the expired
// ones in one write transaction. It returns how many it deleted. It is best
// effort: a failure leaves dead records that still read as absent.
func (b *Store) reapOnce(batch int) int {
	ctx := context.Background()
	var expired []string
	err := b.tx(ctx, "reap", false, func(bk *bbolt.Bucket) error {
		now := b.now()
		c := bk.Cursor()
		k, raw := c.Seek(b.reapFrom)
		for seen := 0; k != nil && seen < batch; k, raw = c.Next() {
			seen++
			if expires, _, err := decode(string(k), raw); err == nil && !record.Live(expires, now) {
				expired = append(expired, string(k))
			}
		}
		b.reapFrom = bytes.Clone(k) // nil at the end: the next pass starts over
		return nil
	})
	if err != nil || len(expired) == 0 {
		return 0
	}
	return b.removeExpired(ctx, expired)
}

// tx runs fn in a bbolt transaction. Errors fn returns are passed through
// unchanged (they are the caller's or the store's own); everything else comes
// from bbolt itself (closed database, failed commit or fsync) and wraps
// store.ErrUnavailable.
func (b *Store) tx(ctx context.Context, op string, write bool, fn func(*bbolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fnErr error
	run := func(tx *bbolt.Tx) error {
		fnErr = fn(tx.Bucket(bucket))
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
		return fmt.Errorf("%w: bolt %s: %w", store.ErrUnavailable, op, err)
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

// Get returns the value stored under key, or store.ErrNotFound.
func (b *Store) Get(ctx context.Context, key string) ([]byte, error) {
	var value []byte
	var found, expired bool
	err := b.tx(ctx, "get", false, func(bk *bbolt.Bucket) error {
		raw := bk.Get([]byte(key))
		if raw == nil {
			return nil
		}
		expires, payload, err := decode(key, raw)
		if err != nil {
			return err
		}
		if !record.Live(expires, b.now()) {
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
		return nil, store.ErrNotFound
	}
	return value, nil
}

// removeExpired deletes the keys that are still expired once inside a write
// transaction (another caller may have rewritten them meanwhile). It is best
// effort: failing leaves a dead record that is still read as absent. It
// returns how many it deleted.
func (b *Store) removeExpired(ctx context.Context, keys []string) int {
	removed := 0
	err := b.tx(ctx, "remove expired", true, func(bk *bbolt.Bucket) error {
		removed = 0 // a failed commit undoes them all
		now := b.now()
		for _, k := range keys {
			raw := bk.Get([]byte(k))
			if raw == nil {
				continue
			}
			if expires, _, err := decode(k, raw); err != nil || record.Live(expires, now) {
				continue
			}
			if err := bk.Delete([]byte(k)); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return 0
	}
	return removed
}

// Put stores value under key, replacing any record and its ttl.
func (b *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := record.CheckWrite(key, ttl); err != nil {
		return err
	}
	return b.tx(ctx, "put", true, func(bk *bbolt.Bucket) error {
		return boltErr("put", key, bk.Put([]byte(key), record.Encode(value, ttl, b.now())))
	})
}

// Update runs fn inside one bbolt read-write transaction; bbolt admits one
// writer at a time, so fn is called exactly once.
func (b *Store) Update(ctx context.Context, key string, fn store.UpdateFunc) error {
	if err := record.CheckWrite(key, 0); err != nil {
		return err
	}
	return b.tx(ctx, "update", true, func(bk *bbolt.Bucket) error {
		k := []byte(key)
		now := b.now()
		var old []byte
		var exists, stale bool
		if raw := bk.Get(k); raw != nil {
			expires, payload, err := decode(key, raw)
			if err != nil {
				return err
			}
			if record.Live(expires, now) {
				old, exists = bytes.Clone(payload), true
			} else {
				stale = true
			}
		}
		value, ttl, err := fn(old, exists)
		switch {
		case errors.Is(err, store.Keep):
			if stale {
				return boltErr("update", key, bk.Delete(k))
			}
			return nil
		case errors.Is(err, store.Remove):
			return boltErr("update", key, bk.Delete(k))
		case err != nil:
			return err // the caller's own error, unchanged
		}
		if err := record.CheckWrite(key, ttl); err != nil {
			return err
		}
		return boltErr("update", key, bk.Put(k, record.Encode(value, ttl, now)))
	})
}

// Delete removes key; a missing key is not an error.
func (b *Store) Delete(ctx context.Context, key string) error {
	if key == "" {
		return nil // bbolt rejects empty keys; none can exist
	}
	return b.tx(ctx, "delete", true, func(bk *bbolt.Bucket) error {
		return boltErr("delete", key, bk.Delete([]byte(key)))
	})
}

// Scan visits the matching live records in key order inside one read
// transaction, then removes the expired ones it met.
func (b *Store) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
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
			expires, payload, err := decode(key, raw)
			if err != nil {
				return err
			}
			if !record.Live(expires, now) {
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
func (b *Store) Ping(ctx context.Context) error {
	return b.tx(ctx, "ping", false, func(*bbolt.Bucket) error { return nil })
}

// Close stops the reaper, then closes the database and releases its file
// lock; closing twice is harmless.
func (b *Store) Close() error {
	b.stopOnce.Do(func() { close(b.stop) })
	<-b.done
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close bolt database: %w", err)
	}
	return nil
}
