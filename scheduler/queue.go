package scheduler

import (
	"cmp"
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// QueueOptions configures a Queue.
type QueueOptions struct {
	KV        store.KV
	AppTokens *forge.AppTokens
	// Products calls Confluence; with Weavy it enables the profile sync.
	Products *forge.Client
	// Weavy receives synced profiles; nil disables the profile sync.
	Weavy ProfileUpserter
	// Directories, if set, gives each synced user's Weavy directories (the
	// site's own among them); nil leaves directories alone.
	Directories Directories
	UIDScope    weavy.UIDScope // how uids were made from accountIds ("" = account)

	// 0 (or a negative value) means the default.
	Concurrency int           // jobs running at once; 0 means 4
	QueueSize   int           // jobs waiting at most; 0 means 1024
	JobTimeout  time.Duration // per job; 0 means 30 s
	// Spread, when set, is how long the jobs of an hourly trigger wait
	// before they are queued (budget.Delay: each installation at its own
	// moment of the hour); nil queues them at once.
	Spread func(installationID string, now time.Time) time.Duration

	Now        func() time.Time // nil: time.Now
	Logger     *zap.Logger      // nil: no logs
	Registerer prometheus.Registerer
}

// Queue is the lower half of the scheduler: the job runner and the profile
// sync, which need nothing above Weavy's client and the chat directories. It
// is what weavy.Broker tells of first mints (a weavy.MintObserver), so it is
// built before the Broker; the Service, whose uninstall purges the Broker,
// is built after both, on this Queue.
type Queue struct {
	kv       store.KV
	tokens   *forge.AppTokens
	products *forge.Client
	weavy    ProfileUpserter
	dirs     Directories
	scope    weavy.UIDScope
	now      func() time.Time
	log      *zap.Logger
	reg      prometheus.Registerer
	run      *runner
	spread   func(string, time.Time) time.Duration
}

var _ weavy.MintObserver = (*Queue)(nil)

// NewQueue returns a Queue with its workers started; Close stops them. It
// panics if o.Registerer rejects its metrics (a name clash: a programming
// error).
func NewQueue(o QueueOptions) *Queue {
	s := &Queue{
		kv:       o.KV,
		tokens:   o.AppTokens,
		products: o.Products,
		weavy:    o.Weavy,
		dirs:     o.Directories,
		scope:    cmp.Or(o.UIDScope, weavy.ScopeAccount),
		now:      o.Now,
		log:      o.Logger,
		reg:      o.Registerer,
		spread:   o.Spread,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.run = newRunner(runnerOptions{
		workers:  cmp.Or(max(o.Concurrency, 0), defaultConcurrency),
		capacity: cmp.Or(max(o.QueueSize, 0), defaultQueueSize),
		timeout:  cmp.Or(max(o.JobTimeout, 0), defaultJobTimeout),
		log:      s.log,
		reg:      o.Registerer,
	})
	return s
}

// Close stops accepting work, drops the jobs still queued, cancels the
// running ones and waits for them to return. It is safe to call twice.
func (s *Queue) Close() { s.run.close() }

// Forget drops the installation's queued jobs and cancels its running one on
// this replica only, without touching the store: for a replica told that
// another one handled the installation's uninstall.
func (s *Queue) Forget(installationID string) { s.run.forget(installationID) }

func (s *Queue) profileSyncEnabled() bool {
	return s.weavy != nil && s.products != nil
}

// UserMinted queues, without blocking, a profile sync for the user's first
// token (weavy.MintObserver). A full queue drops it (counted in
// scheduler_queue_dropped_total); the user is picked up by a later mint. For
// an uninstalled installation the queued sync does nothing.
func (s *Queue) UserMinted(installationID, uid string) {
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
