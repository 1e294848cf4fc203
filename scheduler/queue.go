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
	// Resync is how long a synced profile is left alone before it is read
	// from Confluence again; 0 means DefaultProfileResync.
	Resync time.Duration
	// FirstSyncWindow paces the syncs first tokens ask for: at most one
	// starts per window per installation, the asks within it batched; 0
	// means DefaultFirstSyncWindow.
	FirstSyncWindow time.Duration
	// Budget is asked before each bulk read of users; nil allows every read.
	Budget Budget

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
	resync   time.Duration
	budget   Budget
	first    *firstSyncs
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
		resync:   cmp.Or(max(o.Resync, 0), DefaultProfileResync),
		budget:   o.Budget,
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
	if s.budget == nil {
		s.budget = allowAll{}
	}
	s.first = newFirstSyncs(cmp.Or(max(o.FirstSyncWindow, 0), DefaultFirstSyncWindow), realAfter, s.enqueueFirstSync)
	s.run = newRunner(runnerOptions{
		workers:  cmp.Or(max(o.Concurrency, 0), defaultConcurrency),
		capacity: cmp.Or(max(o.QueueSize, 0), defaultQueueSize),
		timeout:  cmp.Or(max(o.JobTimeout, 0), defaultJobTimeout),
		log:      s.log,
		reg:      o.Registerer,
	})
	return s
}

// Close stops accepting work, drops the jobs still queued (and the first
// syncs still waiting for their window), cancels the running ones and waits
// for them to return. It is safe to call twice.
func (s *Queue) Close() {
	s.first.close()
	s.run.close()
}

// Forget drops the installation's queued jobs and waiting first sync, and
// cancels its running job, on this replica only, without touching the
// store: for a replica told that another one handled the installation's
// uninstall.
func (s *Queue) Forget(installationID string) {
	s.first.forget(installationID)
	s.run.forget(installationID)
}

func (s *Queue) profileSyncEnabled() bool {
	return s.weavy != nil && s.products != nil
}

// UserMinted records, off the caller's path, the user's first token
// (weavy.MintObserver): the user joins the installation's sync set and, if
// their profile is due, is synced within FirstSyncWindow, in one bulk read
// with the other users then due. A full queue drops it (counted in
// scheduler_queue_dropped_total); the user is picked up by a later mint. For
// an uninstalled installation it does nothing.
func (s *Queue) UserMinted(installationID, uid string) {
	if !s.profileSyncEnabled() || installationID == "" || uid == "" {
		return
	}
	s.run.enqueue(task{
		inst: installationID,
		job:  jobProfileMint,
		key:  jobProfileMint + "\x00" + uid,
		run: s.unlessUninstalled(installationID, func(ctx context.Context) error {
			return s.recordMint(ctx, installationID, uid)
		}),
	})
}

// enqueueFirstSync queues the sync first tokens asked for; one already
// waiting absorbs it. It is its own task (not the scheduled profile_sync):
// one bulk read, where the scheduled run does up to maxBatchesPerRun.
func (s *Queue) enqueueFirstSync(inst string) {
	s.run.enqueue(task{
		inst: inst,
		job:  jobProfileSync,
		key:  jobProfileSync + "\x00first",
		run: s.unlessUninstalled(inst, func(ctx context.Context) error {
			return s.syncFirst(ctx, inst)
		}),
	})
}
