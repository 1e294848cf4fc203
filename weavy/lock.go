package weavy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/ctxtime"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/store"
)

// Locker takes short locks shared by the replicas; *StoreLocker is one. Lock
// tries once: held is false when another owner has key. A held lock lasts
// until release is called or ttl has passed, whichever comes first.
type Locker interface {
	Lock(ctx context.Context, key string, ttl time.Duration) (release func(), held bool, err error)
}

// MintLockTTL is the LockTTL for a Broker minting with a Client whose
// per-call timeout is clientTimeout: a mint is at most two Weavy calls (one
// retry when Weavy hands back the held token), and a holder silent past both
// and a few seconds more is taken for dead.
func MintLockTTL(clientTimeout time.Duration) time.Duration {
	return 2*clientTimeout + 5*time.Second
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

const (
	lockPrefix = "weavy/lock/"
	// pollFirst, pollMax: a replica waiting for another's mint looks in the
	// store after pollFirst, then twice as long each time up to pollMax.
	pollFirst = 25 * time.Millisecond
	pollMax   = 250 * time.Millisecond
)

// lockKey is the key of k's mint lock; like storeKey, it holds no token.
func lockKey(k userKey) string {
	return lockPrefix + url.PathEscape(k.inst) + "/" + url.PathEscape(k.uid)
}

// mintShared mints a token for k (other than held, if set) and stores it.
// With a Locker, only the replica holding the user's lock mints: it first
// looks in the store again, where another replica may just have put the
// token, and stores its own before releasing the lock. The others poll the
// store until ready accepts what they find there (minted is then false), and
// take the lock over if it is released or expires without a result. A store
// that cannot be reached leaves nothing to coordinate with: this replica
// mints on its own rather than fail a user a mint could serve.
func (b *Broker) mintShared(ctx context.Context, k userKey, held string, refreshed bool,
	ready func(now int64, stored *entry) bool) (e *entry, minted bool, err error) {
	mint := func() (*entry, bool, error) {
		e, err := b.mint(ctx, k, held, refreshed)
		if err != nil {
			return nil, false, err
		}
		b.persist(ctx, k, e)
		return e, true, nil
	}
	if b.locker == nil {
		return mint()
	}
	for wait := pollFirst; ; wait = min(2*wait, pollMax) {
		release, locked, err := b.locker.Lock(ctx, lockKey(k), b.lockTTL)
		if err != nil {
			logctx.Logger(ctx, b.log).Warn("weavy: mint lock unavailable, minting without it",
				zap.String("installation_id", k.inst), zap.String("uid", k.uid), zap.Error(err))
			return mint()
		}
		if locked {
			defer release()
			if s, _ := b.loadStored(ctx, k); s != nil && ready(b.now().UnixNano(), s) {
				return s, false, nil
			}
			return mint()
		}
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return nil, false, fmt.Errorf("weavy: waiting for another replica's mint: %w", err)
		}
		if s, _ := b.loadStored(ctx, k); s != nil && ready(b.now().UnixNano(), s) {
			return s, false, nil
		}
	}
}
