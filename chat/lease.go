package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/logctx"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// PruneLeases removes, for one installation, every membership whose lease
// expired: the user has not opened the chat (which needs Confluence to show
// them the page) for Lease. It is the hourly job of each installation, so a
// membership outlives the right to it by at most Lease plus an hour.
//
// Each removal marks the lease revoking before the Weavy call and deletes
// it after, both only if nobody renewed it meanwhile; a renewal that raced
// with the removal gets its membership back. A failed removal is retried by
// the next run.
func (s *Service) PruneLeases(ctx context.Context, inst string) error {
	now := s.now()
	var expired []string
	err := s.kv.Scan(ctx, leasesOf(inst), func(key string, v []byte) error {
		if l, ok := decodeLease(v); !ok || l.expired(now, s.lease) {
			expired = append(expired, key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("chat: listing leases: %w", err)
	}
	var errs []error
	removed := 0
	for _, key := range expired {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		ok, err := s.revoke(ctx, inst, key, now, "lease_expired")
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed++
		}
	}
	if removed > 0 {
		s.log.Info("chat memberships past their lease removed", zap.String("installation_id", inst), zap.Int("removed", removed))
	}
	if len(errs) > 0 {
		return fmt.Errorf("chat: pruning leases: %d failed, first: %w", len(errs), errs[0])
	}
	return nil
}

// revoke removes the membership of the lease under key if it is still
// expired at now; removed is false when it was renewed first.
func (s *Service) revoke(ctx context.Context, inst, key string, now time.Time, reason string) (removed bool, err error) {
	var l lease
	var valid bool
	err = s.kv.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		l, valid = decodeLease(old)
		switch {
		case !exists:
			return nil, 0, store.Keep
		case !valid:
			return nil, 0, store.Remove // unreadable: nothing to remove in Weavy
		case !l.expired(now, s.lease):
			return nil, 0, store.Keep
		}
		l.State = stateRevoking
		return l.encode(), s.leaseTTL(l.Renewed), nil
	})
	if err != nil || !valid || l.State != stateRevoking {
		return false, err
	}
	elsewhere, err := s.heldElsewhere(ctx, inst, l.AppUID, l.User, now)
	if err != nil {
		return false, err
	}
	if !elsewhere {
		if err := s.w.DeleteMember(ctx, l.AppID, l.User); err != nil {
			return false, err
		}
	}
	var renewed bool
	err = s.kv.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		cur, ok := decodeLease(old)
		renewed = exists && ok && cur.State != stateRevoking
		if renewed || !exists {
			return nil, 0, store.Keep
		}
		return nil, 0, store.Remove
	})
	if err != nil {
		return true, err
	}
	if elsewhere {
		return false, nil // the lease went; the membership is another installation's
	}
	if renewed {
		// An open renewed the lease while the member was being removed: it
		// counted on the membership, so it gets it back.
		return false, s.w.PutMember(ctx, l.AppID, l.User, weavy.AccessWrite)
	}
	// No process serves this membership from memory any more: memory is
	// trusted for Lease/4 after a renewal, and this lease is older than Lease.
	s.removed.WithLabelValues(reason).Inc()
	return true, nil
}

// removeDenied removes r.User's membership of r.Target's chat after
// Confluence said they cannot view it: the leases every installation on the
// site holds for them on the app go (the verdict is the site's, whichever
// Forge environment asked), and the member is removed from Weavy once. A
// user who holds no lease is no member this server made: no Weavy call.
func (s *Service) removeDenied(ctx context.Context, r Request) error {
	uid := AppUID(r.CloudID, r.Target)
	insts, err := s.installationsOn(ctx, r.CloudID)
	if err != nil {
		return err
	}
	if !slices.Contains(insts, r.InstallationID) {
		insts = append(insts, r.InstallationID)
	}
	var appID int64
	var held []string
	for _, inst := range insts {
		key := leaseKey(inst, uid, r.User)
		err := s.kv.Update(ctx, key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
			l, ok := decodeLease(old)
			switch {
			case !exists:
				return nil, 0, store.Keep
			case !ok:
				return nil, 0, store.Remove
			}
			appID, held = l.AppID, append(held, key)
			l.State = stateRevoking // a prune or renewal racing with this sees it going
			return l.encode(), 0, nil
		})
		if err != nil {
			return fmt.Errorf("chat: revoking a lease: %w", err)
		}
	}
	if appID == 0 {
		return nil
	}
	if err := s.w.DeleteMember(ctx, appID, r.User); err != nil {
		return err
	}
	for _, key := range held {
		if err := s.kv.Delete(ctx, key); err != nil && !errNotFound(err) {
			return fmt.Errorf("chat: deleting a lease: %w", err)
		}
	}
	s.removed.WithLabelValues("access_denied").Inc()
	logctx.Logger(ctx, s.log).Info("chat membership removed: Confluence says the user cannot view the target",
		zap.String("installation_id", r.InstallationID), zap.String("app_uid", uid))
	return nil
}

// errNotFound reports a store miss (or a record sealed under another key).
func errNotFound(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrSealed)
}
