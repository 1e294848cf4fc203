// Package scheduler handles Forge's scheduled, lifecycle and uninstall triggers
// and runs the background jobs they queue (profile sync, housekeeping).
package scheduler

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// ErrBadEvent is wrapped by the errors of a trigger whose body or invocation
// cannot be used (the server answers 400).
var ErrBadEvent = errors.New("scheduler: malformed event")

// ProfileUpserter writes a Weavy user's profile; *weavy.Client is one.
type ProfileUpserter interface {
	UpsertUser(ctx context.Context, uid string, p weavy.Profile) error
}

// Purger forgets an installation's cached Weavy tokens; *weavy.Broker is one.
type Purger interface {
	PurgeInstallation(ctx context.Context, installationID string) error
}

// Directories knows the Weavy directories a user belongs in; *chat.Service
// is one.
type Directories interface {
	UserDirectories(ctx context.Context, inst, cloudID, uid string) ([]string, error)
	DirectoryAssigned(ctx context.Context, inst, uid string) error
}

// Job is background work for one installation, queued by every scheduled
// trigger and by the initial sync after an install or upgrade.
type Job struct {
	Name string // the job label of the metrics and logs
	Run  func(ctx context.Context, installationID string) error
}

// Options configures a Service.
type Options struct {
	// Queue runs the jobs and holds what they need (the store, the app
	// tokens, Confluence, Weavy); required.
	Queue *Queue
	// Purger forgets Weavy tokens on uninstall; nil: nothing to purge.
	Purger Purger
	// Jobs are queued after the built-in ones on every scheduled trigger.
	Jobs []Job

	// After returns a channel that receives once d has passed, on the clock
	// the uninstall purges wait by (their retries, their lock renewals);
	// nil: time.After. Tests give a manual clock's.
	After func(d time.Duration) <-chan time.Time
	// PurgeBackoff is the wait after a purge's first failed attempt, doubled
	// after each next one up to PurgeBackoffMax; 0: 5 s and 5 min.
	PurgeBackoff, PurgeBackoffMax time.Duration
}

const (
	defaultConcurrency = 4
	defaultQueueSize   = 1024
	defaultJobTimeout  = 30 * time.Second

	// dedupeWindow: a scheduled trigger this soon after the last one of the
	// same installation is a duplicate delivery (half the hourly interval).
	dedupeWindow = 30 * time.Minute
	// staleAfter: no scheduled trigger for this long means an uninstall that
	// was never announced, or a broken manifest.
	staleAfter = 2 * time.Hour
	// uninstallBudget bounds the uninstall trigger's store writes (the
	// tombstone, the purge record), well inside Forge's 5 s.
	uninstallBudget = time.Second
	// tombstoneTTL: how long an uninstalled installation's triggers and jobs
	// are ignored. A reinstall gets a new installationId, so nothing that
	// should run is ever held back by it.
	tombstoneTTL = 30 * 24 * time.Hour

	jobProfileSync  = "profile_sync"
	jobProfileMint  = "profile_mint" // records a first token's user; the sync is profile_sync
	jobHousekeeping = "housekeeping"
)

// Store keys. Ids are path-escaped, so they contain no '/' and one
// installation's prefix never matches another's. No key contains a token.
const (
	installationPrefix = "scheduler/installation/" // + inst
	userPrefix         = "scheduler/user/"         // + inst + "/" + uid
	eventPrefix        = "scheduler/event/"        // + inst + "/" + eventType + "/" + version
	uninstalledPrefix  = "scheduler/uninstalled/"  // + inst: the tombstone of an uninstall
	notBeforePrefix    = "scheduler/notbefore/"    // + inst: no profile sync before the time held
	housekeepingKey    = "scheduler/housekeeping"
)

func installationKey(inst string) string { return installationPrefix + url.PathEscape(inst) }
func usersOf(inst string) string         { return userPrefix + url.PathEscape(inst) + "/" }
func userKey(inst, uid string) string    { return usersOf(inst) + url.PathEscape(uid) }
func eventsOf(inst string) string        { return eventPrefix + url.PathEscape(inst) + "/" }
func tombstoneKey(inst string) string    { return uninstalledPrefix + url.PathEscape(inst) }
func notBeforeKey(inst string) string    { return notBeforePrefix + url.PathEscape(inst) }

// record is an installation as stored.
type record struct {
	InstallationID     string    `json:"installationId"`
	CloudID            string    `json:"cloudId,omitempty"`
	SiteURL            string    `json:"siteUrl,omitempty"`
	APIBaseURL         string    `json:"apiBaseUrl,omitempty"`
	AppVersion         string    `json:"appVersion,omitempty"`
	EnvironmentType    string    `json:"environmentType,omitempty"`
	EnvironmentID      string    `json:"environmentId,omitempty"`
	InstallerAccountID string    `json:"installerAccountId,omitempty"`
	UpgraderAccountID  string    `json:"upgraderAccountId,omitempty"`
	FirstSeen          time.Time `json:"firstSeen"`
	LastSeen           time.Time `json:"lastSeen"`
	LastScheduledAt    time.Time `json:"lastScheduledAt,omitzero"`
}

// observe folds what a verified invocation says about the installation into r.
func (r *record) observe(inv *forge.Invocation, now time.Time) {
	r.InstallationID = inv.InstallationID()
	if r.FirstSeen.IsZero() || now.Before(r.FirstSeen) {
		r.FirstSeen = now
	}
	if now.After(r.LastSeen) {
		r.LastSeen = now
	}
	setIf(&r.CloudID, inv.CloudID())
	setIf(&r.SiteURL, inv.Context.SiteURL)
	setIf(&r.APIBaseURL, inv.APIBaseURL())
	setIf(&r.AppVersion, inv.App.AppVersion)
	setIf(&r.EnvironmentType, inv.App.Environment.Type)
	setIf(&r.EnvironmentID, inv.App.Environment.ID)
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// decodeRecord reads a stored record; an unreadable one starts afresh rather
// than blocking every later trigger of the installation.
func decodeRecord(b []byte, exists bool) record {
	var r record
	if exists {
		_ = json.Unmarshal(b, &r)
	}
	return r
}

// Installation is the operator's view of one installation. It never holds a token.
type Installation struct {
	InstallationID     string    `json:"installation_id"`
	CloudID            string    `json:"cloud_id,omitempty"`
	SiteURL            string    `json:"site_url,omitempty"`
	APIBaseURL         string    `json:"api_base_url,omitempty"`
	AppVersion         string    `json:"app_version,omitempty"`
	EnvironmentType    string    `json:"environment_type,omitempty"`
	EnvironmentID      string    `json:"environment_id,omitempty"`
	InstallerAccountID string    `json:"installer_account_id,omitempty"`
	UpgraderAccountID  string    `json:"upgrader_account_id,omitempty"`
	AppTokenExpiresAt  time.Time `json:"app_token_expires_at,omitzero"`
	AppTokenFresh      bool      `json:"app_token_fresh"`
	LastScheduledAt    time.Time `json:"last_scheduled_at,omitzero"`
	// Stale: no scheduled trigger for over 2 h (or none yet, the installation
	// being known for over 2 h): it was uninstalled unannounced, or its
	// manifest is broken.
	Stale     bool      `json:"stale"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// ConnectClientKey is the installation's Connect clientKey, once the
	// Connect bridge captured it (set by the server, never the secret).
	ConnectClientKey string `json:"connect_client_key,omitempty"`
	// PurgePending: the installation was uninstalled (or forgotten) and its
	// purge is not done yet; /internal/purges tells how it goes.
	PurgePending bool `json:"purge_pending,omitempty"`
}

// Service holds the trigger handlers and runs their jobs on its Queue, whose
// methods (UserMinted, Forget, Close) it has too.
type Service struct {
	*Queue
	purger Purger
	jobs   []Job
	purges *purges // the durable uninstall purges (purge.go)

	duplicates prometheus.Counter
}

// New returns a Service running its jobs on o.Queue. It panics if the
// Queue's Registerer rejects its metrics (a name clash: a programming error).
func New(o Options) *Service {
	s := &Service{
		Queue:  o.Queue,
		purger: o.Purger,
	}
	s.duplicates = metrics.MustRegister(s.reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "scheduler_duplicate_triggers_total",
		Help: "Scheduled triggers ignored as a duplicate delivery.",
	}))
	if s.profileSyncEnabled() {
		s.jobs = append(s.jobs, Job{Name: jobProfileSync, Run: s.syncProfiles})
	}
	s.jobs = append(s.jobs, Job{Name: jobHousekeeping, Run: s.housekeeping})
	s.jobs = append(s.jobs, o.Jobs...)
	// Started at once: purges stored by a process that stopped or crashed
	// before finishing them are resumed now.
	s.purges = newPurges(s, o)
	return s
}

// Close stops the uninstall purges (each stays stored, to be resumed by the
// next start) and then the Queue. It is safe to call twice.
func (s *Service) Close() {
	s.purges.close()
	s.Queue.Close()
}

// enqueueJobs queues every registered job for the installation.
func (s *Service) enqueueJobs(inst string) {
	for _, j := range s.jobs {
		s.run.enqueue(task{inst: inst, job: j.Name, key: j.Name, run: s.unlessUninstalled(inst, func(ctx context.Context) error {
			return j.Run(ctx, inst)
		})})
	}
}

// unlessUninstalled returns run guarded by the installation's tombstone: a
// job queued before an uninstall (on any replica) ends at once, doing nothing.
func (s *Queue) unlessUninstalled(inst string, run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		gone, err := s.uninstalled(ctx, inst)
		if err != nil {
			return err
		}
		if gone {
			s.log.Debug("job skipped: the installation was uninstalled", zap.String("installation_id", inst))
			return nil
		}
		return run(ctx)
	}
}

// Uninstalled reports whether inst was uninstalled (its tombstone, kept 30
// days, is held): what a write made for an installation checks after it.
func (s *Queue) Uninstalled(ctx context.Context, inst string) (bool, error) {
	return s.uninstalled(ctx, inst)
}

// uninstalled reports whether the installation's uninstall tombstone is held.
// One sealed under another STORE_KEY still counts: it is there.
func (s *Queue) uninstalled(ctx context.Context, inst string) (bool, error) {
	_, err := s.kv.Get(ctx, tombstoneKey(inst))
	switch {
	case err == nil, errors.Is(err, store.ErrSealed):
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, fmt.Errorf("scheduler: reading the uninstall tombstone: %w", err)
}

// readRecord returns the installation's record; ok is false when there is none
// (or only one sealed under another STORE_KEY, which counts as none).
func (s *Queue) readRecord(ctx context.Context, inst string) (record, bool, error) {
	b, err := s.kv.Get(ctx, installationKey(inst))
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrSealed) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, fmt.Errorf("scheduler: reading installation: %w", err)
	}
	return decodeRecord(b, true), true, nil
}

// Installations lists every installation known from a trigger or from a
// captured app token, sorted by id: the operator's view (never a token).
func (s *Service) Installations(ctx context.Context) ([]Installation, error) {
	now := s.now()
	byID := map[string]*Installation{}
	err := s.kv.Scan(ctx, installationPrefix, func(_ string, v []byte) error {
		r := decodeRecord(v, true)
		if r.InstallationID == "" {
			return nil
		}
		byID[r.InstallationID] = &Installation{
			InstallationID:     r.InstallationID,
			CloudID:            r.CloudID,
			SiteURL:            r.SiteURL,
			APIBaseURL:         r.APIBaseURL,
			AppVersion:         r.AppVersion,
			EnvironmentType:    r.EnvironmentType,
			EnvironmentID:      r.EnvironmentID,
			InstallerAccountID: r.InstallerAccountID,
			UpgraderAccountID:  r.UpgraderAccountID,
			LastScheduledAt:    r.LastScheduledAt,
			FirstSeen:          r.FirstSeen,
			LastSeen:           r.LastSeen,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing installations: %w", err)
	}
	// When an installation was last heard of, for those only a token tells of.
	tokenSeen := map[string]time.Time{}
	if s.tokens != nil {
		err = s.tokens.List(ctx, func(t forge.AppToken) error {
			in := byID[t.InstallationID]
			if in == nil {
				in = &Installation{InstallationID: t.InstallationID, CloudID: t.CloudID, APIBaseURL: t.APIBaseURL}
				byID[t.InstallationID] = in
				tokenSeen[t.InstallationID] = t.UpdatedAt
			}
			in.AppTokenExpiresAt = t.Exp
			in.AppTokenFresh = s.tokens.Fresh(t)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("scheduler: listing app tokens: %w", err)
		}
	}
	err = s.kv.Scan(ctx, purgePrefix, func(_ string, v []byte) error {
		var r purgeRecord
		if json.Unmarshal(v, &r) == nil && byID[r.InstallationID] != nil {
			byID[r.InstallationID].PurgePending = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing purges: %w", err)
	}
	list := make([]Installation, 0, len(byID))
	for id, in := range byID {
		switch {
		case !in.LastScheduledAt.IsZero():
			in.Stale = now.Sub(in.LastScheduledAt) > staleAfter
		case !in.FirstSeen.IsZero():
			in.Stale = now.Sub(in.FirstSeen) > staleAfter
		default:
			// Known only from a token: its last capture bounds when it was first seen.
			in.Stale = now.Sub(tokenSeen[id]) > staleAfter
		}
		list = append(list, *in)
	}
	slices.SortFunc(list, func(a, b Installation) int { return cmp.Compare(a.InstallationID, b.InstallationID) })
	return list, nil
}
