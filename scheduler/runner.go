package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/internal/metrics"
)

// task is one queued run of a job for an installation.
type task struct {
	inst string
	job  string // metrics and logs label
	key  string // a task with the same inst and key already queued absorbs this one
	run  func(ctx context.Context) error
}

type runnerOptions struct {
	workers, capacity int
	timeout           time.Duration
	log               *zap.Logger
	reg               prometheus.Registerer
}

// runner runs tasks on a fixed set of workers. Tasks of one installation run
// one at a time, in order; installations take turns, so a busy one cannot
// starve the others.
type runner struct {
	// root is the parent of every task's context; close cancels it, so that
	// running tasks end at once rather than by their timeout.
	root     context.Context
	stop     context.CancelFunc
	timeout  time.Duration
	log      *zap.Logger
	capacity int

	mu      sync.Mutex
	wake    *sync.Cond // a task is ready, or the runner closed
	idle    *sync.Cond // nothing waits and nothing runs
	closed  bool
	queued  int
	queues  map[string][]task             // per installation, waiting
	ready   []string                      // installations with waiting tasks and none running
	running map[string]context.CancelFunc // installations with a task running
	keys    map[string]struct{}           // inst + "\x00" + key of waiting tasks
	wg      sync.WaitGroup

	runs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	dropped  prometheus.Counter
}

func newRunner(o runnerOptions) *runner {
	root, stop := context.WithCancel(context.Background())
	r := &runner{
		root:     root,
		stop:     stop,
		timeout:  o.timeout,
		log:      o.log,
		capacity: o.capacity,
		queues:   make(map[string][]task),
		running:  make(map[string]context.CancelFunc),
		keys:     make(map[string]struct{}),
		runs: metrics.MustRegister(o.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scheduler_job_runs_total",
			Help: "Background job runs by job and result (ok, error, stale, waiting for the Confluence budget, timeout, canceled).",
		}, []string{"job", "result"})),
		duration: metrics.MustRegister(o.reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scheduler_job_duration_seconds",
			Help:    "Duration of background job runs by job.",
			Buckets: []float64{.01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"job"})),
		dropped: metrics.MustRegister(o.reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scheduler_queue_dropped_total",
			Help: "Jobs dropped because the queue was full.",
		})),
	}
	r.wake = sync.NewCond(&r.mu)
	r.idle = sync.NewCond(&r.mu)
	metrics.MustRegister(o.reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "scheduler_jobs_pending",
		Help: "Jobs queued or running on this replica.",
	}, r.pending))
	for range o.workers {
		r.wg.Go(r.work)
	}
	return r
}

// enqueue queues t without blocking. It reports false when t was dropped:
// the queue is full (counted) or the runner closed.
func (r *runner) enqueue(t task) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	k := t.inst + "\x00" + t.key
	if _, waiting := r.keys[k]; waiting {
		return true // the waiting one will do the same work
	}
	if r.queued >= r.capacity {
		r.dropped.Inc()
		r.log.Warn("job dropped: queue full", zap.String("installation_id", t.inst), zap.String("job", t.job))
		return false
	}
	r.keys[k] = struct{}{}
	r.queued++
	r.queues[t.inst] = append(r.queues[t.inst], t)
	if _, busy := r.running[t.inst]; !busy && len(r.queues[t.inst]) == 1 {
		r.ready = append(r.ready, t.inst)
		r.wake.Signal()
	}
	return true
}

func (r *runner) work() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		for len(r.ready) == 0 && !r.closed {
			r.wake.Wait()
		}
		if r.closed {
			return
		}
		inst := r.ready[0]
		r.ready = r.ready[1:]
		q := r.queues[inst]
		t := q[0]
		if len(q) == 1 {
			delete(r.queues, inst)
		} else {
			r.queues[inst] = q[1:]
		}
		delete(r.keys, inst+"\x00"+t.key)
		r.queued--
		ctx, cancel := context.WithTimeout(r.root, r.timeout)
		r.running[inst] = cancel

		r.mu.Unlock()
		r.execute(ctx, t)
		cancel()
		r.mu.Lock()

		delete(r.running, inst)
		if len(r.queues[inst]) > 0 {
			r.ready = append(r.ready, inst)
			r.wake.Signal()
		}
		r.signalIdle()
	}
}

// pending is how many tasks wait or run.
func (r *runner) pending() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return float64(r.queued + len(r.running))
}

// signalIdle wakes waitIdle callers when nothing is left to do. r.mu is held.
func (r *runner) signalIdle() {
	if r.queued == 0 && len(r.running) == 0 {
		r.idle.Broadcast()
	}
}

// waitIdle returns once no task waits and none runs: what tests wait for
// instead of sleeping.
func (r *runner) waitIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.queued > 0 || len(r.running) > 0 {
		r.idle.Wait()
	}
}

// execute runs t, records its metrics and logs a failure once, here.
func (r *runner) execute(ctx context.Context, t task) {
	start := time.Now() // real elapsed time, for the histogram
	err := safeRun(ctx, t.run)
	r.duration.WithLabelValues(t.job).Observe(time.Since(start).Seconds())
	result, code := classify(err)
	r.runs.WithLabelValues(t.job, result).Inc()
	if err == nil {
		return
	}
	fields := []zap.Field{
		zap.String("installation_id", t.inst), zap.String("job", t.job),
		zap.String("code", code), zap.Error(err),
	}
	if result == "waiting" {
		// The budget logged it once for the hour: no line per job.
		r.log.Debug("job waits for the Confluence budget", fields...)
		return
	}
	if result == "stale" || result == "canceled" {
		r.log.Warn("job skipped", fields...)
		return
	}
	r.log.Error("job failed", fields...)
}

// safeRun turns a panicking job into an error: one bad job must not stop the server.
func safeRun(ctx context.Context, run func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("scheduler: job panicked: %v", p)
		}
	}()
	return run(ctx)
}

// classify gives a job's error its metrics result and log code.
func classify(err error) (result, code string) {
	switch {
	case err == nil:
		return "ok", ""
	case errors.Is(err, forge.ErrAppTokenStale):
		return "stale", "app_token_stale"
	case errors.Is(err, forge.ErrUnknownInstallation):
		return "stale", "app_token_unknown"
	case errors.Is(err, budget.ErrRefused):
		return "waiting", "confluence_budget"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", "job_timeout"
	case errors.Is(err, context.Canceled):
		return "canceled", "job_canceled"
	}
	return "error", "job_failed"
}

// forget drops the installation's waiting tasks and cancels its running one
// (uninstall).
func (r *runner) forget(inst string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.queues[inst] {
		delete(r.keys, inst+"\x00"+t.key)
		r.queued--
	}
	delete(r.queues, inst)
	r.ready = slices.DeleteFunc(r.ready, func(s string) bool { return s == inst })
	if cancel := r.running[inst]; cancel != nil {
		cancel()
	}
	r.signalIdle()
}

// close drops the waiting tasks, cancels the running ones and waits for
// them to return.
func (r *runner) close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		r.stop()
		if r.queued > 0 {
			r.log.Info("scheduler closing: queued jobs dropped", zap.Int("jobs", r.queued))
		}
		r.queues, r.ready, r.queued = map[string][]task{}, nil, 0
		clear(r.keys)
		r.wake.Broadcast()
		r.signalIdle()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
