package scheduler

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/store"
)

const (
	// housekeepingEvery: the sweep runs at most this often across all
	// replicas, whichever installation's trigger queues it.
	housekeepingEvery = time.Hour
	// forgetAfter: an installation nothing was heard from for this long (no
	// trigger, no app token) was uninstalled without its preUninstall reaching
	// us; it is purged like an uninstall.
	forgetAfter = 30 * 24 * time.Hour
	// maxForgetPerRun bounds the purges of one sweep.
	maxForgetPerRun = 20
)

// housekeeping drops what is no longer needed; its work is bounded per run.
//
// Installations silent for 30 days are purged (at most 20 per run). Users
// without a first mint for 30 days, lifecycle marks after 7 days, app tokens
// 7 days after they expire and Weavy tokens when they expire all carry store
// TTLs, so every backend drops them itself: redis on time, memory and bolt
// when a read or scan meets them — which the sweep's scans do for the
// installation and app-token records.
func (s *Service) housekeeping(ctx context.Context, _ string) error {
	now := s.now()
	claimed := false
	err := s.kv.Update(ctx, housekeepingKey, func(_ []byte, exists bool) ([]byte, time.Duration, error) {
		claimed = !exists
		if exists {
			return nil, 0, store.Keep
		}
		return []byte(now.UTC().Format(time.RFC3339Nano)), housekeepingEvery, nil
	})
	if err != nil || !claimed {
		return err
	}

	var silent []record
	err = s.kv.Scan(ctx, installationPrefix, func(_ string, v []byte) error {
		if r := decodeRecord(v, true); r.InstallationID != "" && now.Sub(r.LastSeen) > forgetAfter {
			silent = append(silent, r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scheduler: housekeeping: listing installations: %w", err)
	}
	slices.SortFunc(silent, func(a, b record) int { return a.LastSeen.Compare(b.LastSeen) })

	forgotten := 0
	for _, r := range silent {
		if forgotten == maxForgetPerRun {
			break
		}
		if s.tokens != nil {
			// A UI call captures tokens without a trigger: still alive.
			if t, err := s.tokens.Lookup(ctx, r.InstallationID); err == nil && now.Sub(t.UpdatedAt) <= forgetAfter {
				continue
			}
		}
		s.run.forget(r.InstallationID)
		if err := s.purge(ctx, r.InstallationID); err != nil {
			return fmt.Errorf("scheduler: housekeeping: purging %s: %w", r.InstallationID, err)
		}
		forgotten++
		s.log.Info("silent installation forgotten", zap.String("installation_id", r.InstallationID),
			zap.Time("last_seen", r.LastSeen))
	}

	expired := 0
	if s.tokens != nil {
		err = s.tokens.List(ctx, func(t forge.AppToken) error {
			if !t.Exp.After(now) {
				expired++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scheduler: housekeeping: listing app tokens: %w", err)
		}
	}
	s.log.Info("housekeeping done", zap.Int("installations_forgotten", forgotten),
		zap.Int("app_tokens_expired", expired))
	return nil
}
