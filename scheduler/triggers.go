package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/store"
)

// Lifecycle event types this server acts on.
const (
	EventInstalled = "avi:forge:installed:app"
	EventUpgraded  = "avi:forge:upgraded:app"
)

// eventTTL keeps a handled lifecycle event's mark well beyond Forge's retries
// (4, 60 s apart).
const eventTTL = 7 * 24 * time.Hour

// Scheduled handles the hourly scheduled trigger of an installation (its app
// token was captured before): it records the trigger and queues the jobs,
// without waiting for them. A delivery within half an hour of the last one
// accepted for the installation is a duplicate and queues nothing; the
// decision is one atomic store update, so it holds across replicas. An
// uninstalled installation's trigger records and queues nothing.
func (s *Service) Scheduled(ctx context.Context, inv *forge.Invocation) error {
	inst := inv.InstallationID()
	if inst == "" {
		return fmt.Errorf("%w: the invocation names no installation", ErrBadEvent)
	}
	if gone, err := s.uninstalled(ctx, inst); err != nil || gone {
		if gone {
			s.log.Info("scheduled trigger of an uninstalled installation ignored", zap.String("installation_id", inst))
		}
		return err
	}
	now := s.now()
	var dup bool
	err := s.kv.Update(ctx, installationKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		r := decodeRecord(old, exists)
		// Negative gaps count too: another replica's clock may run ahead.
		dup = !r.LastScheduledAt.IsZero() && now.Sub(r.LastScheduledAt) < dedupeWindow
		if dup {
			return nil, 0, store.Keep
		}
		r.observe(inv, now)
		r.LastScheduledAt = now
		b, err := json.Marshal(r)
		return b, 0, err
	})
	if err != nil {
		return fmt.Errorf("scheduler: recording scheduled trigger: %w", err)
	}
	if !dup && s.undoIfUninstalled(ctx, inst) {
		return nil
	}
	if dup {
		s.duplicates.Inc()
		s.log.Info("duplicate scheduled trigger ignored", zap.String("installation_id", inst))
		return nil
	}
	s.enqueueJobs(inst)
	return nil
}

// RetryContext is what Forge adds to a redelivered event.
type RetryContext struct {
	RetryCount  int             `json:"retryCount"`
	RetryReason string          `json:"retryReason"`
	RetryData   json.RawMessage `json:"retryData,omitempty"`
}

// lifecycleEvent is the body of a lifecycle trigger, top-level or in "payload".
type lifecycleEvent struct {
	EventType          string `json:"eventType"`
	ID                 string `json:"id"`
	InstallerAccountID string `json:"installerAccountId"`
	UpgraderAccountID  string `json:"upgraderAccountId"`
	App                struct {
		ID      string          `json:"id"`
		Version json.RawMessage `json:"version"` // documented as a string; a number is tolerated
	} `json:"app"`
	Environment struct {
		ID string `json:"id"`
	} `json:"environment"`
	Context struct {
		CloudID string `json:"cloudId"`
	} `json:"context"`
	RetryContext *RetryContext   `json:"retryContext"`
	Payload      json.RawMessage `json:"payload"`
}

func (e *lifecycleEvent) version() string {
	v := bytes.TrimSpace(e.App.Version)
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	if len(v) > 0 && v[0] != 'n' && v[0] != '{' && v[0] != '[' { // a number
		return string(v)
	}
	return ""
}

// parseLifecycle reads both shapes Forge uses: the event at the top level (what
// deployed remotes see) or wrapped in "payload" (what the docs show).
func parseLifecycle(body []byte) (*lifecycleEvent, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, fmt.Errorf("%w: the body is not a JSON object", ErrBadEvent)
	}
	var ev lifecycleEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	if p := bytes.TrimSpace(ev.Payload); ev.EventType == "" && len(p) > 0 && p[0] == '{' {
		var inner lifecycleEvent
		if err := json.Unmarshal(p, &inner); err != nil {
			return nil, fmt.Errorf("%w: payload: %w", ErrBadEvent, err)
		}
		if inner.RetryContext == nil {
			inner.RetryContext = ev.RetryContext
		}
		return &inner, nil
	}
	return &ev, nil
}

// Lifecycle handles a lifecycle trigger. Installed and upgraded events record
// the installation (its identity from the FIT, never from the body) and queue
// an initial sync once per event, however often Forge retries it; other event
// types are logged and acknowledged. A body that is not a JSON object is an
// error wrapping ErrBadEvent.
func (s *Service) Lifecycle(ctx context.Context, inv *forge.Invocation, body []byte) error {
	ev, err := parseLifecycle(body)
	if err != nil {
		return err
	}
	retries := 0
	if ev.RetryContext != nil {
		retries = ev.RetryContext.RetryCount
	}
	inst := inv.InstallationID()
	log := s.log.With(zap.String("installation_id", inst), zap.String("event_type", ev.EventType),
		zap.Int("retry_count", retries))
	if ev.EventType != EventInstalled && ev.EventType != EventUpgraded {
		log.Info("lifecycle event acknowledged, nothing to do")
		return nil
	}
	if inst == "" {
		return fmt.Errorf("%w: the invocation names no installation", ErrBadEvent)
	}
	if ev.ID != "" && ev.ID != inst {
		log.Warn("lifecycle event names another installation than its FIT; the FIT's is used",
			zap.String("event_id", ev.ID))
	}
	if gone, err := s.uninstalled(ctx, inst); err != nil || gone {
		if gone {
			log.Info("lifecycle event of an uninstalled installation acknowledged, nothing recorded")
		}
		return err
	}

	now := s.now()
	version := ev.version()
	err = s.kv.Update(ctx, installationKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		r := decodeRecord(old, exists)
		r.observe(inv, now)
		setIf(&r.AppVersion, version)
		setIf(&r.EnvironmentID, ev.Environment.ID)
		if r.CloudID == "" {
			r.CloudID = ev.Context.CloudID
		}
		if ev.EventType == EventInstalled {
			setIf(&r.InstallerAccountID, ev.InstallerAccountID)
		} else {
			setIf(&r.UpgraderAccountID, ev.UpgraderAccountID)
		}
		b, err := json.Marshal(r)
		return b, 0, err
	})
	if err != nil {
		return fmt.Errorf("scheduler: recording installation: %w", err)
	}
	if s.undoIfUninstalled(ctx, inst) {
		return nil
	}

	// One mark per (installation, event type, version): a retry finds it. It is
	// set after the record, so a failure in between is retried by Forge whole.
	first := false
	key := eventsOf(inst) + url.PathEscape(ev.EventType) + "/" + url.PathEscape(version)
	err = s.kv.Update(ctx, key, func(_ []byte, exists bool) ([]byte, time.Duration, error) {
		first = !exists
		if exists {
			return nil, 0, store.Keep
		}
		return []byte(now.UTC().Format(time.RFC3339Nano)), eventTTL, nil
	})
	if err != nil {
		return fmt.Errorf("scheduler: marking lifecycle event: %w", err)
	}
	if !first {
		log.Info("lifecycle event already handled", zap.String("app_version", version))
		return nil
	}
	log.Info("installation recorded, initial sync queued", zap.String("app_version", version))
	s.enqueueJobs(inst)
	return nil
}

// undoIfUninstalled deletes the installation record just written when an
// uninstall's tombstone appeared meanwhile (its purge may have run between
// the caller's check and its write), and reports whether it did.
func (s *Service) undoIfUninstalled(ctx context.Context, inst string) bool {
	gone, err := s.uninstalled(ctx, inst)
	if err != nil || !gone {
		return false
	}
	if err := s.kv.Delete(ctx, installationKey(inst)); err != nil {
		s.log.Warn("deleting the record of an uninstalled installation failed",
			zap.String("installation_id", inst), zap.Error(err))
	}
	s.log.Info("installation uninstalled meanwhile, nothing recorded", zap.String("installation_id", inst))
	return true
}

// Uninstall handles preUninstall: it forgets everything held for the
// installation, and nothing of any other — app token, installation record,
// users and their sync state, lifecycle marks, cached Weavy tokens — and
// cancels its jobs. A tombstone kept for 30 days makes later triggers, mints
// and jobs of the installation (on any replica) do nothing. It gives up after
// 4 s so that Forge gets its answer in 5.
func (s *Service) Uninstall(ctx context.Context, inv *forge.Invocation) error {
	inst := inv.InstallationID()
	if inst == "" {
		return fmt.Errorf("%w: the invocation names no installation", ErrBadEvent)
	}
	ctx, cancel := context.WithTimeout(ctx, uninstallBudget)
	defer cancel()
	// The tombstone first: a job starting from now on sees it; the running
	// one is cancelled next.
	tombErr := s.kv.Put(ctx, tombstoneKey(inst), []byte(s.now().UTC().Format(time.RFC3339Nano)), tombstoneTTL)
	s.run.forget(inst)
	if err := errors.Join(tombErr, s.purge(ctx, inst)); err != nil {
		return fmt.Errorf("scheduler: uninstall: %w", err)
	}
	s.log.Info("installation purged", zap.String("installation_id", inst))
	return nil
}

// purge deletes every record of the installation; it keeps going past a
// failure so that one bad record does not keep the rest.
func (s *Service) purge(ctx context.Context, inst string) error {
	var errs []error
	if s.tokens != nil {
		errs = append(errs, s.tokens.PurgeInstallation(ctx, inst))
	}
	errs = append(errs,
		s.kv.Delete(ctx, installationKey(inst)),
		s.deletePrefix(ctx, usersOf(inst)),
		s.deletePrefix(ctx, eventsOf(inst)),
		s.kv.Delete(ctx, notBeforeKey(inst)),
	)
	if s.purger != nil {
		errs = append(errs, s.purger.PurgeInstallation(ctx, inst))
	}
	return errors.Join(errs...)
}

// deletePrefix deletes every record under prefix, those sealed under another
// STORE_KEY included (they are listed beneath the sealing, which skips them).
func (s *Service) deletePrefix(ctx context.Context, prefix string) error {
	var keys []string
	err := s.rawKV().Scan(ctx, prefix, func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.kv.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// UserMinted is the weavy.Broker's OnMint hook: it queues, without blocking, a
// profile sync for the user's first token. A full queue drops it (counted in
// scheduler_queue_dropped_total); the user is picked up by a later mint. For
// an uninstalled installation the queued sync does nothing.
func (s *Service) UserMinted(installationID, uid string) {
	if !s.profileSyncEnabled() || installationID == "" || uid == "" {
		return
	}
	s.run.enqueue(task{
		inst: installationID,
		job:  jobProfileSync,
		key:  jobProfileSync + "\x00" + uid,
		run: s.unlessUninstalled(installationID, func(ctx context.Context) error {
			return s.syncMintedUser(ctx, installationID, uid)
		}),
	})
}
