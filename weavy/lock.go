package weavy

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/url"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

// Locker takes short locks shared by the replicas; *StoreLocker is one. Lock
// tries once: held is false when another owner has key. A held lock lasts
// until release is called or ttl has passed, whichever comes first.
type Locker interface {
	Lock(ctx context.Context, key string, ttl time.Duration) (release func(), held bool, err error)
}

// StoreLocker is a Locker over a store the replicas share. A lock is a record
// holding a random owner id, written by an atomic Update only when there is
// none (or it expired), and deleted only by an Update that still finds that
// owner's id in it. A holder that dies leaves its lock to expire.
type StoreLocker struct {
	kv store.KV
}

// NewStoreLocker returns a StoreLocker keeping its locks in kv.
func NewStoreLocker(kv store.KV) *StoreLocker { return &StoreLocker{kv: kv} }

// releaseTimeout bounds a release, which runs even if the caller's ctx has ended.
const releaseTimeout = 2 * time.Second

// Lock tries once to take key for ttl.
func (l *StoreLocker) Lock(ctx context.Context, key string, ttl time.Duration) (release func(), held bool, err error) {
	owner := []byte(rand.Text())
	err = l.kv.Update(ctx, key, func(_ []byte, exists bool) ([]byte, time.Duration, error) {
		held = !exists
		if exists {
			return nil, 0, store.Keep
		}
		return owner, ttl, nil
	})
	if err != nil || !held {
		return nil, false, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		// A failure is ignored: the lock expires after ttl.
		_ = l.kv.Update(ctx, key, func(cur []byte, exists bool) ([]byte, time.Duration, error) {
			if exists && bytes.Equal(cur, owner) {
				return nil, 0, store.Remove
			}
			return nil, 0, store.Keep // expired, and perhaps taken over since
		})
	}, true, nil
}

const lockPrefix = "weavy/lock/"

// lockKey is the key of k's mint lock; like storeKey, it holds no token.
func lockKey(k userKey) string {
	return lockPrefix + url.PathEscape(k.inst) + "/" + url.PathEscape(k.uid)
}
