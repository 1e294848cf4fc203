package scheduler

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

// UserState is what the profile sync holds of one user of an installation:
// when they joined the sync set, their last token mint, their last sync
// (zero: never). For the scale run (bench/confluencescale), which seeds a
// fleet's known users straight into the store rather than minting a
// million tokens, and reads the ages of their profiles at the end.
type UserState struct {
	UID        string
	AddedAt    time.Time
	LastMintAt time.Time
	SyncedAt   time.Time
}

// SeedUser writes u as the profile sync's record of a user of
// installationID, as a mint and a sync would have left it.
func SeedUser(ctx context.Context, kv store.KV, installationID string, u UserState, now time.Time) error {
	r := userRecord(u)
	return kv.Put(ctx, userKey(installationID, u.UID), r.encode(), r.ttl(now))
}

// ReadUser returns the profile sync's record of a user of installationID;
// ok is false when there is none.
func ReadUser(ctx context.Context, kv store.KV, installationID, uid string) (u UserState, ok bool, err error) {
	v, err := kv.Get(ctx, userKey(installationID, uid))
	if errors.Is(err, store.ErrNotFound) {
		return u, false, nil
	}
	if err != nil {
		return u, false, err
	}
	r := userRecord{UID: uid}
	if !r.decode(v) {
		return u, false, nil
	}
	return UserState(r), true, nil
}

// ScanUsers calls fn on every user record of installationID.
func ScanUsers(ctx context.Context, kv store.KV, installationID string, fn func(UserState)) error {
	prefix := usersOf(installationID)
	return kv.Scan(ctx, prefix, func(key string, v []byte) error {
		r := userRecord{}
		r.UID, _ = url.PathUnescape(strings.TrimPrefix(key, prefix))
		if r.decode(v) {
			fn(UserState(r))
		}
		return nil
	})
}
