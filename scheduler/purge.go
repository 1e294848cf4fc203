package scheduler

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/forge-remote/forge-remote/store"
)

// The uninstall purge is a durable job: the trigger stores a purge record
// and answers; a loop on every replica runs the records it finds (at start
// too, so a purge survives a restart or a crash), one replica at a time per
// installation (a lock record with a TTL, renewed while it runs, so a dead
// holder's lock lapses), retried with a capped back-off while Weavy fails.
// The tombstone does not stop it, and the installation's records go as its
// last step, so whatever it needs is there until it is done.

// Store keys of the purge.
const (
	purgePrefix     = "scheduler/purge/"     // + inst: a pending purge (purgeRecord)
	purgeLockPrefix = "scheduler/purgelock/" // + inst: the replica running it (TTL purgeLockTTL)
)

func purgeKey(inst string) string     { return purgePrefix + url.PathEscape(inst) }
func purgeLockKey(inst string) string { return purgeLockPrefix + url.PathEscape(inst) }

const (
	// DefaultPurgeBackoff and DefaultPurgeBackoffMax: a failed attempt is
	// retried after 5 s, doubling up to a minute, so that a purge finishes
	// within about a minute of Weavy's recovery however long it was down
	// (at most a minute more when a killed replica's lock must lapse first).
	DefaultPurgeBackoff    = 5 * time.Second
	DefaultPurgeBackoffMax = time.Minute
	// purgeLockTTL: how long a replica's claim on a purge lasts unless it
	// renews it (every third of it while the attempt runs); also how often a
	// replica looks for purges nobody is running.
	purgeLockTTL = time.Minute
	// purgeAttemptTimeout bounds one attempt; what it did is kept.
	purgeAttemptTimeout = 15 * time.Minute
	// purgeConcurrency: attempts running at once on one replica.
	purgeConcurrency = 4
	// maxPurgeError bounds the last error kept for the operator.
	maxPurgeError = 500

	purgeReasonUninstall = "uninstall"
	purgeReasonSilent    = "silent" // housekeeping: nothing heard for 30 days
)

// purgeRecord is a pending purge as stored.
type purgeRecord struct {
	InstallationID string    `json:"installationId"`
	Reason         string    `json:"reason"`
	RequestedAt    time.Time `json:"requestedAt"`
	Attempts       int       `json:"attempts,omitempty"`
	LastAttemptAt  time.Time `json:"lastAttemptAt,omitzero"`
	LastError      string    `json:"lastError,omitempty"`
	NextAttemptAt  time.Time `json:"nextAttemptAt,omitzero"`
	// Again counts the passes asked for after the first (PurgeAgain): an
	// attempt deletes the record only if it is the count it started with.
	Again int `json:"again,omitempty"`
}

// Purge is the operator's view of a pending purge (never a token).
type Purge struct {
	InstallationID string    `json:"installation_id"`
	Reason         string    `json:"reason"` // uninstall, or silent (housekeeping)
	RequestedAt    time.Time `json:"requested_at"`
	Attempts       int       `json:"attempts"` // failed attempts so far
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitzero"`
	// Running: a replica holds the purge's lock (an attempt is under way).
	Running bool `json:"running"`
}

// purges runs the stored purges of this replica's share.
type purges struct {
	s        *Service
	id       string // this replica's lock value
	after    func(time.Duration) <-chan time.Time
	min, max time.Duration
	wakeCh   chan struct{}
	stop     context.CancelFunc
	wg       sync.WaitGroup

	mu        sync.Mutex
	idle      *sync.Cond
	running   map[string]bool
	skipUntil map[string]time.Time // locked by another replica: not before
	parked    bool                 // the loop waits for a wake or its timer
	wakes     uint64               // wake calls so far
	seen      uint64               // wake calls before the loop's last scan

	pending  prometheus.Gauge
	attempts *prometheus.CounterVec
}

func newPurges(s *Service, o Options) *purges {
	var id [8]byte
	_, _ = rand.Read(id[:])
	p := &purges{
		s:         s,
		id:        hex.EncodeToString(id[:]),
		after:     o.After,
		min:       cmp.Or(max(o.PurgeBackoff, 0), DefaultPurgeBackoff),
		max:       cmp.Or(max(o.PurgeBackoffMax, 0), DefaultPurgeBackoffMax),
		wakeCh:    make(chan struct{}, 1),
		running:   map[string]bool{},
		skipUntil: map[string]time.Time{},
		pending: metrics.MustRegister(s.reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "uninstall_purges_pending",
			Help: "Uninstall purges stored and not done yet (fleet-wide, as this replica last read the store).",
		})),
		attempts: metrics.MustRegister(s.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "uninstall_purge_attempts_total",
			Help: "Uninstall purge attempts on this replica by result (ok, error, canceled, lock_lost, again).",
		}, []string{"result"})),
	}
	if p.after == nil {
		p.after = time.After
	}
	p.max = max(p.max, p.min)
	p.idle = sync.NewCond(&p.mu)
	ctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.wg.Go(func() { p.loop(ctx) })
	return p
}

// wake makes the loop read the store now.
func (p *purges) wake() {
	p.mu.Lock()
	p.wakes++
	p.mu.Unlock()
	p.signal()
}

// signal wakes the loop if it waits (a wake already counted).
func (p *purges) signal() {
	select {
	case p.wakeCh <- struct{}{}:
	default:
	}
}

// close stops the loop and the attempts (what they did is kept; the record
// stays for the next start) and waits for them.
func (p *purges) close() {
	p.stop()
	p.wg.Wait()
}

func (p *purges) loop(ctx context.Context) {
	for {
		p.mu.Lock()
		p.parked, p.seen = false, p.wakes
		p.mu.Unlock()
		wait := p.scan(ctx)
		p.mu.Lock()
		p.parked = true
		p.idle.Broadcast()
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-p.wakeCh:
		case <-p.after(wait):
		}
	}
}

// waitIdle returns once the loop waits and no attempt runs: what tests wait
// for instead of sleeping.
func (p *purges) waitIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.parked || len(p.running) > 0 || p.seen != p.wakes {
		p.idle.Wait()
	}
}

// scan starts an attempt for every stored purge that is due and returns how
// long to wait before looking again.
func (p *purges) scan(ctx context.Context) time.Duration {
	var recs []purgeRecord
	err := p.s.kv.Scan(ctx, purgePrefix, func(_ string, v []byte) error {
		var r purgeRecord
		if json.Unmarshal(v, &r) == nil && r.InstallationID != "" {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			p.s.log.Warn("uninstall purges: listing failed, retrying", zap.Error(err))
		}
		return p.min
	}
	p.pending.Set(float64(len(recs)))
	slices.SortFunc(recs, func(a, b purgeRecord) int { return a.NextAttemptAt.Compare(b.NextAttemptAt) })
	now := p.s.now()
	next := purgeLockTTL // another replica's purge may be left to us
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range recs {
		inst := r.InstallationID
		due := r.NextAttemptAt
		if until, ok := p.skipUntil[inst]; ok {
			if until.After(due) {
				due = until
			}
		}
		if due.After(now) {
			next = min(next, due.Sub(now))
			continue
		}
		if p.running[inst] || len(p.running) >= purgeConcurrency {
			continue // an ending attempt wakes the loop
		}
		delete(p.skipUntil, inst)
		p.running[inst] = true
		p.wg.Go(func() {
			p.attempt(ctx, inst)
			// Out of running and counted as a wake in one step: a wake
			// before leaving running could be taken by a look that still
			// saw it running (a pass asked for meanwhile then waited for the
			// loop's timer), and waitIdle must not find the loop idle in
			// between.
			p.mu.Lock()
			delete(p.running, inst)
			p.wakes++
			p.idle.Broadcast()
			p.mu.Unlock()
			p.signal()
		})
	}
	return max(next, 0)
}

// attempt runs one attempt of inst's purge if this replica gets its lock.
func (p *purges) attempt(ctx context.Context, inst string) {
	log := p.s.log.With(zap.String("installation_id", inst))
	got, err := p.lock(ctx, inst)
	if err != nil || !got {
		if err != nil && ctx.Err() == nil {
			log.Warn("uninstall purge: taking its lock failed", zap.Error(err))
		}
		wait := purgeLockTTL // held by another replica: until it lapses at the latest
		if err != nil {
			wait = p.min
		}
		p.mu.Lock()
		p.skipUntil[inst] = p.s.now().Add(wait)
		p.mu.Unlock()
		return
	}
	// The scan read the record before the lock was ours: meanwhile the
	// holder may have finished the purge (it deletes the record, then
	// releases the lock) or recorded a failure and its back-off. Only the
	// record as read under the lock says whether an attempt is due.
	if due, err := p.due(ctx, inst); err != nil || !due {
		if err != nil && ctx.Err() == nil {
			log.Warn("uninstall purge: reading its record failed", zap.Error(err))
			p.mu.Lock()
			p.skipUntil[inst] = p.s.now().Add(p.min)
			p.mu.Unlock()
		}
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer ucancel()
		if uerr := p.unlock(uctx, inst); uerr != nil {
			log.Warn("uninstall purge: releasing its lock failed; it lapses by itself", zap.Error(uerr))
		}
		return // the loop, woken as the attempt ends, rescans
	}
	actx, cancel := context.WithTimeout(ctx, purgeAttemptTimeout)
	lost := make(chan struct{})
	var renewer sync.WaitGroup
	renewer.Go(func() {
		for {
			select {
			case <-actx.Done():
				return
			case <-p.after(purgeLockTTL / 3):
			}
			if ok, err := p.lock(actx, inst); actx.Err() == nil && (err != nil || !ok) {
				log.Warn("uninstall purge: lock lost, attempt stopped", zap.Error(err))
				close(lost)
				cancel()
				return
			}
		}
	})
	err = p.s.purgeOnce(actx, inst)
	cancel()
	renewer.Wait()
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer ucancel()
	if uerr := p.unlock(uctx, inst); uerr != nil {
		log.Warn("uninstall purge: releasing its lock failed; it lapses by itself", zap.Error(uerr))
	}
	select {
	case <-lost:
		p.attempts.WithLabelValues("lock_lost").Inc()
		return
	default:
	}
	switch {
	case errors.Is(err, errPurgeAgain):
		// Done, but another pass was asked for meanwhile: its record,
		// due now, is found by the rescan this attempt's end wakes.
		p.attempts.WithLabelValues("again").Inc()
		log.Info("uninstall purge pass done; another was asked for meanwhile (a write of the installation came late)")
		return
	case err == nil:
		p.attempts.WithLabelValues("ok").Inc()
		log.Info("uninstall purge done: the installation's Weavy memberships, directory, tokens and records are gone")
		return
	case ctx.Err() != nil:
		// Shutting down: the record stays, the next start resumes it.
		p.attempts.WithLabelValues("canceled").Inc()
		return
	}
	p.attempts.WithLabelValues("error").Inc()
	r, ferr := p.failed(uctx, inst, err)
	if ferr != nil {
		log.Warn("uninstall purge: recording the failed attempt failed", zap.Error(ferr))
	}
	log.Warn("uninstall purge attempt failed, will retry", zap.Int("attempts", r.Attempts),
		zap.Time("next_attempt_at", r.NextAttemptAt), zap.Error(err))
}

// due reports whether inst's purge is still pending and due, as stored now
// (read under its lock: no other replica changes it meanwhile).
func (p *purges) due(ctx context.Context, inst string) (bool, error) {
	v, err := p.s.kv.Get(ctx, purgeKey(inst))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // done
	}
	if err != nil {
		return false, err
	}
	var r purgeRecord
	if json.Unmarshal(v, &r) != nil || r.InstallationID == "" {
		return false, nil // unreadable: the scan skips it too
	}
	return !r.NextAttemptAt.After(p.s.now()), nil
}

// backoff is the wait after the n-th failed attempt: min doubling to max.
func (p *purges) backoff(n int) time.Duration {
	d := p.min
	for i := 1; i < n && d < p.max; i++ {
		d *= 2
	}
	return min(d, p.max)
}

// failed records a failed attempt and when the next is due.
func (p *purges) failed(ctx context.Context, inst string, cause error) (purgeRecord, error) {
	now := p.s.now()
	msg := cause.Error()
	if len(msg) > maxPurgeError {
		msg = msg[:maxPurgeError] + "…"
	}
	var r purgeRecord
	err := p.s.kv.Update(ctx, purgeKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if !exists || json.Unmarshal(old, &r) != nil {
			return nil, 0, store.Keep // done or unreadable meanwhile
		}
		r.Attempts++
		r.LastAttemptAt, r.LastError = now, msg
		r.NextAttemptAt = now.Add(p.backoff(r.Attempts))
		b, err := json.Marshal(r)
		return b, 0, err
	})
	return r, err
}

// lock takes or renews this replica's claim on inst's purge; false when
// another replica holds it.
func (p *purges) lock(ctx context.Context, inst string) (bool, error) {
	got := false
	err := p.s.kv.Update(ctx, purgeLockKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if exists && string(old) != p.id {
			return nil, 0, store.Keep
		}
		got = true
		return []byte(p.id), purgeLockTTL, nil
	})
	return got && err == nil, err
}

// unlock releases the claim if this replica still holds it.
func (p *purges) unlock(ctx context.Context, inst string) error {
	err := p.s.kv.Update(ctx, purgeLockKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		if !exists || string(old) != p.id {
			return nil, 0, store.Keep
		}
		return nil, 0, store.Remove
	})
	return err
}

// requestPurge stores a purge of inst unless one is pending (a retried
// trigger keeps the first record and its progress).
func (s *Service) requestPurge(ctx context.Context, inst, reason string) error {
	now := s.now()
	return s.kv.Update(ctx, purgeKey(inst), func(_ []byte, exists bool) ([]byte, time.Duration, error) {
		if exists {
			return nil, 0, store.Keep
		}
		b, err := json.Marshal(purgeRecord{InstallationID: inst, Reason: reason, RequestedAt: now, NextAttemptAt: now})
		return b, 0, err
	})
}

// purgeOnce is one attempt: the Weavy side (memberships, directory, Weavy
// tokens, through the Purger), then, only once it is done, the
// installation's own records, and last the purge record. Every step is
// idempotent, so a failed or interrupted attempt is simply run again.
func (s *Service) purgeOnce(ctx context.Context, inst string) error {
	again, err := s.purgeAgainCount(ctx, inst)
	if err != nil {
		return err
	}
	if s.purger != nil {
		if err := s.purger.PurgeInstallation(ctx, inst); err != nil {
			return err
		}
	}
	if err := s.purge(ctx, inst); err != nil {
		return err
	}
	// The record goes unless another pass was asked for since this one
	// read it: what came late may have come after this pass looked.
	rerun := false
	err = s.kv.Update(ctx, purgeKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		var r purgeRecord
		rerun = exists && json.Unmarshal(old, &r) == nil && r.Again != again
		if !exists || rerun {
			return nil, 0, store.Keep
		}
		return nil, 0, store.Remove
	})
	if err != nil {
		return fmt.Errorf("scheduler: deleting the purge record: %w", err)
	}
	if rerun {
		return errPurgeAgain
	}
	return nil
}

// errPurgeAgain: an attempt finished, and another pass is due.
var errPurgeAgain = errors.New("scheduler: another purge pass was asked for")

// purgeAgainCount is the Again of inst's purge record (0 if unreadable).
func (s *Service) purgeAgainCount(ctx context.Context, inst string) (int, error) {
	v, err := s.kv.Get(ctx, purgeKey(inst))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("scheduler: reading the purge record: %w", err)
	}
	var r purgeRecord
	_ = json.Unmarshal(v, &r)
	return r.Again, nil
}

// PurgeAgain asks for one more pass of inst's uninstall purge: a
// write made for the installation while it was being uninstalled (a chat
// open in flight at the uninstall) may have come after the pass that ran or
// is running looked. A pending purge keeps its progress and back-off; a
// finished one is stored again, due now. Any replica runs it.
func (s *Service) PurgeAgain(ctx context.Context, inst string) error {
	if inst == "" {
		return errNoInstallation
	}
	now := s.now()
	err := s.kv.Update(ctx, purgeKey(inst), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		var r purgeRecord
		if !exists || json.Unmarshal(old, &r) != nil || r.InstallationID == "" {
			r = purgeRecord{InstallationID: inst, Reason: purgeReasonUninstall, RequestedAt: now, NextAttemptAt: now}
		}
		r.Again++ // a pending purge keeps its back-off: Weavy may be why it is pending
		b, err := json.Marshal(r)
		return b, 0, err
	})
	if err != nil {
		return fmt.Errorf("scheduler: asking for another purge pass: %w", err)
	}
	s.purges.wake()
	return nil
}

// Purges lists the pending purges, oldest first: the operator's view.
func (s *Service) Purges(ctx context.Context) ([]Purge, error) {
	var list []Purge
	err := s.kv.Scan(ctx, purgePrefix, func(_ string, v []byte) error {
		var r purgeRecord
		if json.Unmarshal(v, &r) != nil || r.InstallationID == "" {
			return nil
		}
		list = append(list, Purge{
			InstallationID: r.InstallationID, Reason: r.Reason, RequestedAt: r.RequestedAt,
			Attempts: r.Attempts, LastAttemptAt: r.LastAttemptAt, LastError: r.LastError,
			NextAttemptAt: r.NextAttemptAt,
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: listing purges: %w", err)
	}
	for i := range list {
		_, err := s.kv.Get(ctx, purgeLockKey(list[i].InstallationID))
		switch {
		case err == nil, errors.Is(err, store.ErrSealed):
			list[i].Running = true
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("scheduler: reading a purge lock: %w", err)
		}
	}
	slices.SortFunc(list, func(a, b Purge) int {
		return cmp.Or(a.RequestedAt.Compare(b.RequestedAt), cmp.Compare(a.InstallationID, b.InstallationID))
	})
	if list == nil {
		list = []Purge{}
	}
	return list, nil
}
