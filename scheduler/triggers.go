package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
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
		return errNoInstallation
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
	s.enqueueScheduled(inst)
	return nil
}

// BadEventError is a trigger whose body or invocation cannot be acted on: the
// server answers 400 bad_event with Msg, which names the field and what was
// expected but never repeats a value. It matches ErrBadEvent.
type BadEventError struct{ Msg string }

func (e *BadEventError) Error() string { return "scheduler: " + e.Msg }

// Is makes errors.Is(err, ErrBadEvent) true.
func (e *BadEventError) Is(target error) bool { return target == ErrBadEvent }

func badEvent(format string, a ...any) error {
	return &BadEventError{Msg: fmt.Sprintf(format, a...)}
}

var errNoInstallation = &BadEventError{Msg: "the invocation names no installation"}

// rawEvent holds the members of a lifecycle event this server may read, each
// still undecoded: a json.RawMessage takes a value of any type, so decoding
// into rawEvent fails only on invalid JSON, and a member read by nothing (the
// app's name, the new permissions, whatever Forge adds) is never looked at.
type rawEvent struct {
	EventType          json.RawMessage `json:"eventType"`
	ID                 json.RawMessage `json:"id"`
	InstallerAccountID json.RawMessage `json:"installerAccountId"`
	UpgraderAccountID  json.RawMessage `json:"upgraderAccountId"`
	App                json.RawMessage `json:"app"`
	Environment        json.RawMessage `json:"environment"`
	Context            json.RawMessage `json:"context"`
	RetryContext       json.RawMessage `json:"retryContext"`
	Payload            json.RawMessage `json:"payload"`
}

// lifecycleEvent is what this server reads of a lifecycle event. Only the
// event type is read of an event it does not act on.
type lifecycleEvent struct {
	EventType string
	ID        string // the installation, an ARI (deployed remotes) or a bare uuid (the docs)
	AccountID string // installerAccountId of an install, upgraderAccountId of an upgrade
	Version   string // app.version
	EnvID     string // environment.id
	CloudID   string // from context: a site ARI string (deployed remotes) or {cloudId} (the docs)
	Retries   int    // retryContext.retryCount
}

// parseLifecycle reads both shapes Forge uses: the event at the top level
// (what deployed remotes see) or wrapped in "payload" (what the docs show),
// its retryContext inside the event or beside the wrapper. A member it reads
// with a type it cannot use is a *BadEventError naming it; every other member
// is ignored, whatever its type.
func parseLifecycle(body []byte) (*lifecycleEvent, error) {
	top, err := rawObject(body)
	if err != nil {
		return nil, err
	}
	raw, prefix := top, ""
	if isAbsent(top.EventType) && !isAbsent(top.Payload) {
		if kind := jsonKind(top.Payload); kind != "an object" {
			return nil, badEvent("field %q must be an object, not %s", "payload", kind)
		}
		raw, prefix = new(rawEvent), "payload."
		if err := json.Unmarshal(top.Payload, raw); err != nil {
			return nil, badEvent("field %q is not valid JSON", "payload") // unreachable: top was valid
		}
	}
	f := fieldReader{prefix: prefix}
	ev := &lifecycleEvent{EventType: f.str("eventType", raw.EventType)}
	if f.err != nil || (ev.EventType != EventInstalled && ev.EventType != EventUpgraded) {
		return ev, f.err
	}
	ev.ID = f.str("id", raw.ID)
	if ev.EventType == EventInstalled {
		ev.AccountID = f.str("installerAccountId", raw.InstallerAccountID)
	} else {
		ev.AccountID = f.str("upgraderAccountId", raw.UpgraderAccountID)
	}
	var app struct {
		Version json.RawMessage `json:"version"`
	}
	if f.object("app", raw.App, &app) {
		ev.Version = f.version("app.version", app.Version)
	}
	var env struct {
		ID json.RawMessage `json:"id"`
	}
	if f.object("environment", raw.Environment, &env) {
		ev.EnvID = f.str("environment.id", env.ID)
	}
	ev.CloudID = f.siteContext("context", raw.Context)
	// The docs put retryContext inside the event; beside the wrapper is read too.
	retryRaw := raw.RetryContext
	if prefix != "" && isAbsent(retryRaw) {
		retryRaw, f.prefix = top.RetryContext, ""
	}
	var retry struct {
		RetryCount json.RawMessage `json:"retryCount"`
	}
	if f.object("retryContext", retryRaw, &retry) {
		ev.Retries = f.count("retryContext.retryCount", retry.RetryCount)
	}
	return ev, f.err
}

// rawObject decodes a body that must be a JSON object.
func rawObject(body []byte) (*rawEvent, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, badEvent("the event body is empty; a JSON object is expected")
	}
	if body[0] != '{' {
		if !json.Valid(body) {
			return nil, badEvent("the event body is not JSON; a JSON object is expected")
		}
		return nil, badEvent("the event body is %s; a JSON object is expected", jsonKind(body))
	}
	var raw rawEvent
	if err := json.Unmarshal(body, &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, badEvent("the event body is not valid JSON (at byte %d)", se.Offset)
		}
		return nil, badEvent("the event body is not valid JSON")
	}
	return &raw, nil
}

// isAbsent: a member left out or null, which this server reads as absent.
func isAbsent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// jsonKind names the type of a valid JSON value, for error messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// fieldReader decodes members by their expected type and keeps the first
// mismatch; prefix locates them in the body ("payload." when wrapped).
type fieldReader struct {
	prefix string
	err    error
}

func (f *fieldReader) wrong(field, want string, raw json.RawMessage) {
	if f.err == nil {
		f.err = badEvent("field %q must be %s, not %s", f.prefix+field, want, jsonKind(raw))
	}
}

// str decodes a string member; absent or null is "".
func (f *fieldReader) str(field string, raw json.RawMessage) string {
	var s string
	if isAbsent(raw) {
		return ""
	}
	if json.Unmarshal(raw, &s) != nil {
		f.wrong(field, "a string", raw)
	}
	return s
}

// object decodes an object member into dst and reports whether it was one.
func (f *fieldReader) object(field string, raw json.RawMessage, dst any) bool {
	if isAbsent(raw) {
		return false
	}
	if jsonKind(raw) != "an object" || json.Unmarshal(raw, dst) != nil {
		f.wrong(field, "an object", raw)
		return false
	}
	return true
}

// version decodes app.version: documented as a string; a number is taken as
// written.
func (f *fieldReader) version(field string, raw json.RawMessage) string {
	if jsonKind(raw) == "a number" {
		return string(bytes.TrimSpace(raw))
	}
	return f.str(field, raw)
}

// count decodes a non-negative count; a fraction is cut.
func (f *fieldReader) count(field string, raw json.RawMessage) int {
	if isAbsent(raw) {
		return 0
	}
	var n float64
	if jsonKind(raw) != "a number" || json.Unmarshal(raw, &n) != nil {
		f.wrong(field, "a number", raw)
		return 0
	}
	return int(min(max(n, 0), 1e6))
}

// siteContext reads the event's context: deployed remotes receive the site's
// ARI, "ari:cloud:confluence::site/<cloudId>"; the docs show an object with
// cloudId. Either gives the cloudId; a string that is no site ARI gives "".
func (f *fieldReader) siteContext(field string, raw json.RawMessage) string {
	switch jsonKind(raw) {
	case "a string":
		return cloudIDOfSiteARI(f.str(field, raw))
	case "an object":
		var c struct {
			CloudID json.RawMessage `json:"cloudId"`
		}
		if f.object(field, raw, &c) {
			return f.str(field+".cloudId", c.CloudID)
		}
		return ""
	case "null", "nothing":
		return ""
	}
	f.wrong(field, "a site ARI string or an object", raw)
	return ""
}

// cloudIDOfSiteARI is the cloudId in "ari:cloud:<product>::site/<cloudId>",
// or "".
func cloudIDOfSiteARI(ari string) string {
	if !strings.HasPrefix(ari, "ari:cloud:") {
		return ""
	}
	_, id, ok := strings.Cut(ari, "::site/")
	if !ok || id == "" || strings.ContainsAny(id, "/:") {
		return ""
	}
	return id
}

// sameInstallation compares an event's installation id with the FIT's: the
// docs show a bare uuid, deployed remotes receive the ARI.
func sameInstallation(eventID, inst string) bool {
	const prefix = "ari:cloud:ecosystem::installation/"
	return strings.TrimPrefix(eventID, prefix) == strings.TrimPrefix(inst, prefix)
}

// Lifecycle handles a lifecycle trigger. Installed and upgraded events record
// the installation (its identity from the FIT, never from the body) and queue
// an initial sync once per event, however often Forge retries it; other event
// types are logged and acknowledged. A body that is not a JSON object, or a
// member read with a type it cannot have, is a *BadEventError.
func (s *Service) Lifecycle(ctx context.Context, inv *forge.Invocation, body []byte) error {
	ev, err := parseLifecycle(body)
	if err != nil {
		return err
	}
	inst := inv.InstallationID()
	log := s.log.With(zap.String("installation_id", inst), zap.String("event_type", ev.EventType),
		zap.Int("retry_count", ev.Retries))
	if ev.EventType != EventInstalled && ev.EventType != EventUpgraded {
		log.Info("lifecycle event acknowledged, nothing to do")
		return nil
	}
	if inst == "" {
		return errNoInstallation
	}
	if ev.ID != "" && !sameInstallation(ev.ID, inst) {
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
	version := ev.Version
	err = s.kv.Update(ctx, installationKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		r := decodeRecord(old, exists)
		r.observe(inv, now)
		setIf(&r.AppVersion, version)
		setIf(&r.EnvironmentID, ev.EnvID)
		if r.CloudID == "" { // the FIT's, when it names one, is what counts
			r.CloudID = ev.CloudID
		}
		if ev.EventType == EventInstalled {
			setIf(&r.InstallerAccountID, ev.AccountID)
		} else {
			setIf(&r.UpgraderAccountID, ev.AccountID)
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

// Uninstall handles preUninstall. It answers at once, whatever the state of
// Weavy: it stores the installation's tombstone (kept 30 days: later
// triggers, mints and jobs of the installation, on any replica, do nothing)
// and a purge record, cancels the installation's jobs on this replica,
// forgets its app token, and wakes the purge loop. The purge itself (Weavy
// memberships, directory and tokens, then the installation's records) is a
// durable job (purge.go) the tombstone does not stop. An error here is the
// store's: the trigger fails and Forge retries it.
func (s *Service) Uninstall(ctx context.Context, inv *forge.Invocation) error {
	inst := inv.InstallationID()
	if inst == "" {
		return errNoInstallation
	}
	ctx, cancel := context.WithTimeout(ctx, uninstallBudget)
	defer cancel()
	// The tombstone first: a job starting from now on sees it.
	tombErr := s.kv.Put(ctx, tombstoneKey(inst), []byte(s.now().UTC().Format(time.RFC3339Nano)), tombstoneTTL)
	if err := errors.Join(tombErr, s.requestPurge(ctx, inst, purgeReasonUninstall)); err != nil {
		return fmt.Errorf("scheduler: uninstall: %w", err)
	}
	s.Forget(inst) // its jobs and waiting first syncs on this replica
	// The app token is a credential nothing of the purge needs: it goes now
	// (and again with the records, should this fail).
	if s.tokens != nil {
		if err := s.tokens.PurgeInstallation(ctx, inst); err != nil {
			s.log.Warn("uninstall: deleting the app token failed; the purge retries it",
				zap.String("installation_id", inst), zap.Error(err))
		}
	}
	s.purges.wake()
	s.log.Info("installation uninstalled; its purge is stored and runs in the background", zap.String("installation_id", inst))
	return nil
}

// purge deletes every record the scheduler holds of the installation (the
// last step of its purge, once the Weavy side is done); it keeps going past
// a failure so that one bad record does not keep the rest.
func (s *Service) purge(ctx context.Context, inst string) error {
	var errs []error
	if s.tokens != nil {
		errs = append(errs, s.tokens.PurgeInstallation(ctx, inst))
	}
	errs = append(errs,
		s.kv.Delete(ctx, installationKey(inst)),
		store.DeletePrefix(ctx, s.kv, usersOf(inst)),
		store.DeletePrefix(ctx, s.kv, eventsOf(inst)),
		s.kv.Delete(ctx, notBeforeKey(inst)),
	)
	return errors.Join(errs...)
}
