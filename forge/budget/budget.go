// Package budget is the Confluence points budget of the whole fleet: it
// meters every call by Atlassian's table, counts the UTC hour's spend in the
// shared store (so N replicas spend no more than one), believes Atlassian's
// rate-limit headers over its own meter, keeps a reserve of the hour for
// interactive page checks, and pauses every replica after a quota 429.
//
// The forge.Client asks Take before each attempt and calls Done after it.
// It imports only store and internal packages: forge imports it.
//
// Hot path: a replica takes points from the shared counter in chunks
// (Options.Chunk) and spends them from memory; it reads the shared pauses
// and Atlassian's reports at most every Options.Refresh. So a call costs a
// store round trip only once per chunk or per Refresh, at the price of:
//   - points taken but not spent by the hour's end are lost (at most
//     replicas × Chunk per hour), never overspent;
//   - a pause or a report one replica learned reaches the others within
//     Refresh (during which Atlassian refuses their calls itself);
//   - a call costing more than its estimate (a list) is charged after it
//     was made: the overspend is bounded by one call's excess per replica in
//     flight.
package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/forge-remote/forge-remote/store"
)

// Kind is what a call is for: the label of confluence_points_total.
type Kind string

const (
	PageCheck      Kind = "page_check"      // a person waits: may spend the whole hour
	ProfileSync    Kind = "profile_sync"    // background
	ConnectCapture Kind = "connect_capture" // background
	Other          Kind = "other"           // background
)

// Interactive reports whether a person waits for the call: only those may
// spend the reserve.
func (k Kind) Interactive() bool { return k == PageCheck }

func (k Kind) label() string {
	switch k {
	case PageCheck, ProfileSync, ConnectCapture:
		return string(k)
	}
	return string(Other)
}

// Pool is who shares the hour's points: the app (Atlassian's Tier 1
// global pool, every site together) or each site (Tier 2, per tenant).
type Pool string

const (
	PoolApp  Pool = "app"
	PoolSite Pool = "site"
)

// Defaults.
const (
	DefaultPointsPerHour = 65000
	DefaultReserve       = 0.3
	DefaultRefresh       = time.Second
)

// ErrRefused is matched (errors.Is) by every *PausedError.
var ErrRefused = errors.New("budget: Confluence call refused by the points budget")

// Reasons a call is refused.
const (
	ReasonGlobalPause = "global_pause" // Atlassian refused the app's pool: every site waits
	ReasonSitePause   = "site_pause"   // Atlassian refused this site's pool
	ReasonReserve     = "reserve"      // background work: the hour is down to the reserve
	ReasonExhausted   = "exhausted"    // the hour's budget is spent
)

// PausedError is a call the budget refused before it was made. A page check
// answers 503 confluence_busy with RetryAfter; background work waits.
type PausedError struct {
	Kind       Kind
	Reason     string // one of the Reason constants
	Detail     string // Atlassian's RateLimit-Reason, for a pause
	Site       string
	Until      time.Time
	RetryAfter time.Duration
}

func (e *PausedError) Error() string {
	s := "budget: Confluence call (" + string(e.Kind) + ") refused: " + e.Reason
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s + "; retry after " + e.RetryAfter.Round(time.Second).String()
}

func (e *PausedError) Is(target error) bool { return target == ErrRefused }

// Options configures a Budget.
type Options struct {
	KV            store.KV // required: the shared store (bolt or memory: one process)
	PointsPerHour int64    // per UTC hour, per pool; 0 means 65000
	Pool          Pool     // "" means app
	// Reserve is the fraction of the hour's points background work leaves
	// to page checks (0 to 1; CONFLUENCE_RESERVE's default is 0.3).
	Reserve float64
	// Chunk is how many points a replica takes from the shared counter at
	// once; 0 means PointsPerHour/200 (at least 10).
	Chunk int64
	// Refresh is how stale this replica's view of pauses and Atlassian's
	// reports may get; 0 means 1 s.
	Refresh    time.Duration
	Now        func() time.Time // nil: time.Now
	Logger     *zap.Logger      // nil: no logs
	Registerer prometheus.Registerer
}

// Budget is safe for concurrent use.
type Budget struct {
	kv      store.KV
	limit   int64
	pool    Pool
	reserve float64
	chunk   int64
	refresh time.Duration
	now     func() time.Time
	log     *zap.Logger
	points  *prometheus.CounterVec
	refused *prometheus.CounterVec

	mu     sync.Mutex
	pools  map[string]*poolState
	pauses map[string]*pauseView
	swept  time.Time // when sweepLocked last ran
}

// sweepEvery is how often the state of pools and pauses nobody needs any
// more is dropped (sweepLocked): with PoolSite there is a pool per site, and
// every site has a pause to check, so without it memory would hold every
// site that ever called Confluence (about 0.9 KB each with the memory
// store's records, BenchmarkSitePoolMemory).
const sweepEvery = time.Minute

// New returns a Budget. It panics if o.Registerer rejects its metrics.
func New(o Options) *Budget {
	b := &Budget{
		kv: o.KV, limit: o.PointsPerHour, pool: o.Pool, reserve: min(max(o.Reserve, 0), 1),
		chunk: o.Chunk, refresh: o.Refresh, now: o.Now, log: o.Logger,
		pools: map[string]*poolState{}, pauses: map[string]*pauseView{},
	}
	if b.limit <= 0 {
		b.limit = DefaultPointsPerHour
	}
	if b.pool == "" {
		b.pool = PoolApp
	}
	if b.chunk <= 0 {
		b.chunk = max(b.limit/200, 10)
	}
	if b.refresh <= 0 {
		b.refresh = DefaultRefresh
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	b.points = metrics.MustRegister(o.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "confluence_points_total",
		Help: "Confluence points spent by this replica, by Atlassian's table, by kind of call.",
	}, []string{"kind"}))
	b.refused = metrics.MustRegister(o.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "confluence_budget_refused_total",
		Help: "Confluence calls the points budget refused before they were made, by kind of call and reason (global_pause, site_pause, reserve, exhausted).",
	}, []string{"kind", "reason"}))
	metrics.MustRegister(o.Registerer, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "confluence_budget_remaining",
		Help: "Points left of the UTC hour's Confluence budget as this replica last saw it (with CONFLUENCE_POOL=site: the lowest site's).",
	}, func() float64 { return float64(b.Remaining()) }))
	return b
}

// Site names the site of an apiBaseUrl: the cloudId of
// https://api.atlassian.com/ex/confluence/<cloudId>, else host and path.
func Site(apiBaseURL string) string {
	u, err := url.Parse(strings.TrimRight(apiBaseURL, "/"))
	if err != nil {
		return apiBaseURL
	}
	if i := strings.LastIndex(u.Path, "/ex/confluence/"); i >= 0 {
		if id := u.Path[i+len("/ex/confluence/"):]; id != "" && !strings.Contains(id, "/") {
			return id
		}
	}
	return u.Host + u.Path
}

// Offset is an installation's own moment in the hour, from a hash of its
// id: where its hourly background work starts.
func Offset(installationID string) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(installationID))
	return time.Duration(h.Sum64()%3600) * time.Second
}

// Delay is how long the hourly jobs of an installation triggered at now
// wait to start at its Offset within the hour (under an hour).
func Delay(installationID string, now time.Time) time.Duration {
	into := now.Sub(now.UTC().Truncate(time.Hour))
	d := Offset(installationID) - into
	if d < 0 {
		d += time.Hour
	}
	return d
}

// Store keys. Sites are path-escaped.
const (
	hourPrefix  = "budget/hour/"  // + yyyymmddhh + "/" + pool key
	pausePrefix = "budget/pause/" // + pause key
)

func hourKey(hour time.Time, pool string) string {
	return hourPrefix + hour.UTC().Format("2006010215") + "/" + pool
}

// poolKey is where the hour's points of site are counted.
func (b *Budget) poolKey(site string) string {
	if b.pool == PoolSite {
		return "site/" + url.PathEscape(site)
	}
	return "app"
}

func pauseKey(scope Scope, site string) string {
	if scope == ScopeSite {
		return "site/" + url.PathEscape(site)
	}
	return "app"
}

// record is one pool's hour in the shared store.
type record struct {
	Reserved int64            `json:"reserved"` // points taken by replicas (spent or held)
	ByKind   map[string]int64 `json:"byKind,omitempty"`
	// Atlassian's word: Remaining points when Reserved was At.
	Remaining *int64 `json:"remaining,omitempty"`
	At        int64  `json:"at,omitempty"`
	Near      bool   `json:"near,omitempty"`
	Quota     int64  `json:"quota,omitempty"`
}

// pauseRecord is a pause in the shared store (with a TTL to Until).
type pauseRecord struct {
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail,omitempty"`
}

type poolState struct {
	mu      sync.Mutex
	key     string
	hour    time.Time
	local   int64 // points taken and not spent (negative: spent beyond)
	pending map[string]int64
	report  *Headers // Atlassian's word, to write at the next sync
	view    record
	readAt  time.Time
	warned  bool      // the reserve was logged this hour
	seen    time.Time // last handed out by poolState; b.mu guards it
}

// reset starts a new hour: what was taken of the last one is lost with it.
func (ps *poolState) reset(hour time.Time) {
	ps.hour, ps.local, ps.pending, ps.report = hour, 0, map[string]int64{}, nil
	ps.view, ps.readAt, ps.warned = record{}, time.Time{}, false
}

type pauseView struct {
	mu     sync.Mutex
	rec    pauseRecord
	readAt time.Time
	seen   time.Time // last handed out by pauseView; b.mu guards it
}

// Ticket is an admitted call, for Done.
type Ticket struct {
	kind     Kind
	site     string
	estimate int64
	ps       *poolState
}

func (b *Budget) poolState(key string) *poolState {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweepLocked(now)
	ps := b.pools[key]
	if ps == nil {
		ps = &poolState{key: key, pending: map[string]int64{}}
		b.pools[key] = ps
	}
	ps.seen = now
	return ps
}

func (b *Budget) pauseView(key string) *pauseView {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweepLocked(now)
	pv := b.pauses[key]
	if pv == nil {
		pv = &pauseView{}
		b.pauses[key] = pv
	}
	pv.seen = now
	return pv
}

// sweepLocked drops, at most every sweepEvery, what holds nothing any more:
// a pool of a past hour (take resets it before any use, and Done ignores a
// ticket of another hour) and a pause view whose pause has ended, unless
// handed out within sweepEvery (a caller may be about to lock it). One that
// is locked at that moment stays for the next sweep. Dropping a pool of
// this hour would lose its points not yet written, so none is dropped.
// b.mu is held; it takes the pools' and views' locks with TryLock, as the
// usual order is theirs first (take holds a pool's lock while syncing).
func (b *Budget) sweepLocked(now time.Time) {
	if now.Sub(b.swept) < sweepEvery {
		return
	}
	b.swept = now
	hour := now.UTC().Truncate(time.Hour)
	for key, ps := range b.pools {
		if now.Sub(ps.seen) < sweepEvery || !ps.mu.TryLock() {
			continue
		}
		past := !ps.hour.Equal(hour)
		ps.mu.Unlock()
		if past {
			delete(b.pools, key)
		}
	}
	for key, pv := range b.pauses {
		if now.Sub(pv.seen) < sweepEvery || !pv.mu.TryLock() {
			continue
		}
		ended := !now.Before(pv.rec.Until)
		pv.mu.Unlock()
		if ended {
			delete(b.pauses, key)
		}
	}
}

// effLimit is the hour's points of a pool: the configured figure, or
// Atlassian's quota when it says less.
func (b *Budget) effLimit(r record) int64 {
	if r.Quota > 0 && r.Quota < b.limit {
		return r.Quota
	}
	return b.limit
}

// left is the points of the hour not yet taken by any replica, lowered to
// what Atlassian said is left (less what the fleet took since).
func (b *Budget) left(r record) int64 {
	n := b.effLimit(r) - r.Reserved
	if r.Remaining != nil {
		n = min(n, *r.Remaining-(r.Reserved-r.At))
	}
	return n
}

// floor is what background work leaves to page checks at now: the reserve's
// share of the rest of the hour. A person opening a chat in the hour's last
// minute needs a sixtieth of what the hour's page checks need, and points
// held back past the top of the hour are lost: a fixed floor (the reserve of
// the whole hour, to its end) starved the profile sync of a tenth of the
// pool each hour under the load (bench/confluencescale).
func (b *Budget) floor(r record, now time.Time) int64 {
	rest := nextHour(now).Sub(now)
	return int64(b.reserve * float64(b.effLimit(r)) * float64(rest) / float64(time.Hour))
}

func nextHour(now time.Time) time.Time { return now.UTC().Truncate(time.Hour).Add(time.Hour) }

// Take admits a call of kind to the site of apiBaseURL, or refuses it with
// a *PausedError: a pause is on for the app or the site; the hour is spent;
// or, for background kinds, the hour is down to the reserve. Only a failing
// store makes it return another error, and then only for background kinds
// (a page check goes on, counted in memory).
func (b *Budget) Take(ctx context.Context, kind Kind, apiBaseURL, method, path string) (*Ticket, error) {
	t, err := b.take(ctx, kind, apiBaseURL, method, path)
	if pe := (*PausedError)(nil); errors.As(err, &pe) {
		b.refused.WithLabelValues(kind.label(), pe.Reason).Inc()
	}
	return t, err
}

func (b *Budget) take(ctx context.Context, kind Kind, apiBaseURL, method, path string) (*Ticket, error) {
	now := b.now()
	site := Site(apiBaseURL)
	for _, scope := range []Scope{ScopeApp, ScopeSite} {
		p, err := b.paused(ctx, pauseKey(scope, site), now)
		if err != nil && !kind.Interactive() {
			return nil, err
		}
		if now.Before(p.Until) {
			reason := ReasonGlobalPause
			if scope == ScopeSite {
				reason = ReasonSitePause
			}
			return nil, &PausedError{Kind: kind, Reason: reason, Detail: p.Detail, Site: site,
				Until: p.Until, RetryAfter: p.Until.Sub(now)}
		}
	}

	est := Estimate(method, path)
	ps := b.poolState(b.poolKey(site))
	ps.mu.Lock()
	defer ps.mu.Unlock()
	hour := now.UTC().Truncate(time.Hour)
	if !ps.hour.Equal(hour) {
		ps.reset(hour)
	}
	if ps.local < est || now.Sub(ps.readAt) >= b.refresh {
		if err := b.sync(ctx, ps, now, est, kind.Interactive()); err != nil {
			if !kind.Interactive() {
				return nil, err
			}
			b.log.Warn("Confluence budget: the shared store failed; the page check goes on, counted here only", zap.Error(err))
			ps.local = max(ps.local, est)
		}
	}
	until := nextHour(now)
	if !kind.Interactive() && b.left(ps.view)+ps.local-est < b.floor(ps.view, now) {
		if !ps.warned {
			ps.warned = true
			b.log.Warn("Confluence budget: the hour is down to its reserve for page checks; background work waits for the next hour",
				zap.String("pool", ps.key), zap.Int64("left", max(b.left(ps.view)+ps.local, 0)),
				zap.Int64("reserve", b.floor(ps.view, now)), zap.Time("until", until))
		}
		return nil, &PausedError{Kind: kind, Reason: ReasonReserve, Site: site, Until: until, RetryAfter: until.Sub(now)}
	}
	if ps.local < est {
		return nil, &PausedError{Kind: kind, Reason: ReasonExhausted, Site: site, Until: until, RetryAfter: until.Sub(now)}
	}
	ps.local -= est
	return &Ticket{kind: kind, site: site, estimate: est, ps: ps}, nil
}

// sync writes what this replica spent and learned to the pool's shared
// hour, reads it back, and takes a chunk of points when this replica holds
// fewer than want. ps.mu is held.
func (b *Budget) sync(ctx context.Context, ps *poolState, now time.Time, want int64, interactive bool) error {
	var rec record
	var took int64
	report := ps.report
	pending := ps.pending
	local := ps.local
	err := b.kv.Update(ctx, hourKey(ps.hour, ps.key), func(old []byte, exists bool) ([]byte, time.Duration, error) {
		rec = record{}
		if exists {
			_ = json.Unmarshal(old, &rec) // unreadable: start the hour afresh
		}
		took = 0
		if local < 0 { // spent beyond what was taken: the fleet must know
			rec.Reserved += -local
			took = -local
		}
		if len(pending) > 0 && rec.ByKind == nil {
			rec.ByKind = map[string]int64{}
		}
		for k, n := range pending {
			rec.ByKind[k] += n
		}
		if report != nil {
			applyReport(&rec, *report, b.limit)
		}
		if local+took < want {
			avail := b.left(rec)
			if !interactive {
				avail -= b.floor(rec, now)
			}
			// Near the end, smaller chunks: one replica must not hold the
			// last points while the others starve.
			n := min(max(b.chunk, want), max(avail/8, want))
			n = min(n, avail)
			if n > 0 {
				rec.Reserved += n
				took += n
			}
		}
		v, err := json.Marshal(rec)
		return v, 2 * time.Hour, err
	})
	if err != nil {
		return fmt.Errorf("budget: the hour's points in the store: %w", err)
	}
	ps.local += took
	ps.pending = map[string]int64{}
	ps.report = nil
	ps.view = rec
	ps.readAt = now
	return nil
}

// applyReport folds Atlassian's headers into the hour's record: the lowest
// word wins within the hour (the record starts afresh with the next one).
func applyReport(rec *record, h Headers, limit int64) {
	if h.Quota > 0 {
		rec.Quota = h.Quota
	}
	q := limit
	if rec.Quota > 0 && rec.Quota < q {
		q = rec.Quota
	}
	r, ok := h.Remaining, h.HasRemaining
	if h.NearLimit {
		rec.Near = true
		if !ok {
			r, ok = q/5, true // under 20% left: believe 20% at most
		}
	}
	if !ok {
		return
	}
	if rec.Remaining == nil || r < *rec.Remaining-(rec.Reserved-rec.At) {
		rec.Remaining = &r
		rec.At = rec.Reserved
	}
}

// paused returns the pause held for key, read from the store at most every
// Refresh.
func (b *Budget) paused(ctx context.Context, key string, now time.Time) (pauseRecord, error) {
	pv := b.pauseView(key)
	pv.mu.Lock()
	defer pv.mu.Unlock()
	if !pv.readAt.IsZero() && now.Sub(pv.readAt) < b.refresh {
		return pv.rec, nil
	}
	v, err := b.kv.Get(ctx, pausePrefix+key)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrSealed):
		// None held (a pause this replica recorded itself stays until it ends).
	case err != nil:
		return pv.rec, fmt.Errorf("budget: reading the pause: %w", err)
	default:
		var p pauseRecord
		if json.Unmarshal(v, &p) == nil && p.Until.After(pv.rec.Until) {
			pv.rec = p
		}
	}
	pv.readAt = now
	return pv.rec, nil
}

// Done charges an admitted call by what Atlassian's table makes of its
// answer (status 0: no answer, charged the request), believes the answer's
// rate-limit headers, and on a 429 pauses the app or the site (ScopeOf)
// until Retry-After, else the reset Atlassian named, else the next hour; it
// returns the scope paused.
func (b *Budget) Done(ctx context.Context, t *Ticket, method, path string, status int, header http.Header, body []byte) Scope {
	if t == nil {
		return ScopeNone
	}
	now := b.now()
	cost := Cost(method, path, status, body)
	b.points.WithLabelValues(t.kind.label()).Add(float64(cost))
	h := ParseHeaders(header, now)

	ps := t.ps
	ps.mu.Lock()
	if ps.hour.Equal(now.UTC().Truncate(time.Hour)) {
		ps.local += t.estimate - cost
		ps.pending[t.kind.label()] += cost
		if h.Informs() {
			ps.report = &h
			if ps.local < 0 || now.Sub(ps.readAt) >= b.refresh || ps.view.Remaining == nil || h.HasRemaining && h.Remaining < *ps.view.Remaining-(ps.view.Reserved-ps.view.At) {
				// What one replica learns, the fleet knows: at once.
				if err := b.sync(ctx, ps, now, 0, t.kind.Interactive()); err != nil {
					b.log.Warn("Confluence budget: recording Atlassian's rate-limit headers failed", zap.Error(err))
				}
			}
		}
	}
	ps.mu.Unlock()

	if status != http.StatusTooManyRequests {
		return ScopeNone
	}
	scope := ScopeOf(h)
	if scope == ScopeNone {
		return ScopeNone
	}
	until := nextHour(now)
	switch {
	case h.HasRetryAfter:
		until = now.Add(h.RetryAfter)
	case h.Reset > 0:
		until = now.Add(h.Reset)
	case h.ResetAt.After(now):
		until = h.ResetAt
	}
	// Never past the next top of the hour, when the pools reset; at least 1 s.
	if nh := nextHour(now); until.After(nh) {
		until = nh
	}
	if floor := now.Add(time.Second); until.Before(floor) {
		until = floor
	}
	b.Pause(ctx, scope, t.site, until, h.Reason)
	return scope
}

// Pause stops every Confluence call of every replica to the app (scope
// app) or to site (scope site) until until.
func (b *Budget) Pause(ctx context.Context, scope Scope, site string, until time.Time, detail string) {
	now := b.now()
	key := pauseKey(scope, site)
	reason := ReasonGlobalPause
	if scope == ScopeSite {
		reason = ReasonSitePause
	}
	p := pauseRecord{Until: until.UTC(), Reason: reason, Detail: detail}
	pv := b.pauseView(key)
	pv.mu.Lock()
	known := !now.Before(pv.rec.Until) || pv.rec.Until.Before(p.Until)
	if known {
		pv.rec, pv.readAt = p, now
	}
	pv.mu.Unlock()
	err := b.kv.Update(ctx, pausePrefix+key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		var cur pauseRecord
		if exists && json.Unmarshal(old, &cur) == nil && !cur.Until.Before(p.Until) {
			return nil, 0, store.Keep // a longer pause is on already
		}
		v, err := json.Marshal(p)
		return v, max(p.Until.Sub(now), time.Second), err
	})
	if err != nil {
		b.log.Warn("Confluence budget: recording the pause for the other replicas failed", zap.Error(err))
	}
	if known {
		fields := []zap.Field{zap.String("scope", string(scope)), zap.Time("until", p.Until), zap.String("rate_limit_reason", detail)}
		if scope == ScopeSite {
			fields = append(fields, zap.String("site", site))
		}
		b.log.Warn("Confluence answered 429: its calls are paused on every replica", fields...)
	}
}

// Remaining is the points left of the hour as this replica last saw them:
// the app's pool, or with PoolSite the lowest site's.
func (b *Budget) Remaining() int64 {
	hour := b.now().UTC().Truncate(time.Hour)
	b.mu.Lock()
	pools := make([]*poolState, 0, len(b.pools))
	for _, ps := range b.pools {
		pools = append(pools, ps)
	}
	b.mu.Unlock()
	least := b.limit
	for _, ps := range pools {
		ps.mu.Lock()
		if ps.hour.Equal(hour) && !ps.readAt.IsZero() {
			least = min(least, max(b.left(ps.view)+max(ps.local, 0), 0))
		}
		ps.mu.Unlock()
	}
	return least
}

// Status is the operator's view of the hour (GET /internal/confluence).
type Status struct {
	Hour          time.Time     `json:"hour"`
	Pool          Pool          `json:"pool"`
	PointsPerHour int64         `json:"points_per_hour"`
	Reserve       float64       `json:"reserve"`
	Pools         []PoolStatus  `json:"pools"`
	Pauses        []PauseStatus `json:"pauses"`
}

// PoolStatus is one pool's hour: "app", or "site/<site>".
type PoolStatus struct {
	Pool string `json:"pool"`
	// Spent by kind, as charged by the table; each replica adds its spend at
	// its next store round trip (within a chunk or Refresh).
	Spent map[string]int64 `json:"spent_by_kind"`
	// Taken is what the replicas took from the hour (spent or held).
	Taken         int64  `json:"taken"`
	Remaining     int64  `json:"remaining"`
	ReservePoints int64  `json:"reserve_points"`
	Background    string `json:"background"` // "running" or "waiting for the next hour"
	// Atlassian's word, when it gave one this hour.
	AtlassianRemaining *int64 `json:"atlassian_remaining,omitempty"`
	AtlassianQuota     int64  `json:"atlassian_quota,omitempty"`
	NearLimit          bool   `json:"near_limit,omitempty"`
}

// PauseStatus is a pause on now.
type PauseStatus struct {
	Scope             Scope     `json:"scope"`
	Site              string    `json:"site,omitempty"`
	Until             time.Time `json:"until"`
	RetryAfterSeconds int       `json:"retry_after_seconds"`
	Reason            string    `json:"reason"`
	RateLimitReason   string    `json:"rate_limit_reason,omitempty"`
}

// Status reads the hour and the pauses from the shared store.
func (b *Budget) Status(ctx context.Context) (Status, error) {
	now := b.now()
	hour := now.UTC().Truncate(time.Hour)
	st := Status{Hour: hour, Pool: b.pool, PointsPerHour: b.limit, Reserve: b.reserve,
		Pools: []PoolStatus{}, Pauses: []PauseStatus{}}
	prefix := hourPrefix + hour.Format("2006010215") + "/"
	err := b.kv.Scan(ctx, prefix, func(key string, v []byte) error {
		var r record
		if json.Unmarshal(v, &r) != nil {
			return nil
		}
		p := PoolStatus{Pool: strings.TrimPrefix(key, prefix), Spent: r.ByKind, Taken: r.Reserved,
			Remaining: max(b.left(r), 0), ReservePoints: b.floor(r, now), Background: "running",
			AtlassianRemaining: r.Remaining, AtlassianQuota: r.Quota, NearLimit: r.Near}
		if p.Spent == nil {
			p.Spent = map[string]int64{}
		}
		if p.Remaining <= p.ReservePoints {
			p.Background = "waiting for the next hour"
		}
		if p.AtlassianRemaining != nil {
			n := max(*r.Remaining-(r.Reserved-r.At), 0)
			p.AtlassianRemaining = &n
		}
		st.Pools = append(st.Pools, p)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("budget: reading the hour: %w", err)
	}
	if len(st.Pools) == 0 && b.pool == PoolApp {
		st.Pools = append(st.Pools, PoolStatus{Pool: "app", Spent: map[string]int64{}, Remaining: b.limit,
			ReservePoints: b.floor(record{}, now), Background: "running"})
	}
	err = b.kv.Scan(ctx, pausePrefix, func(key string, v []byte) error {
		var p pauseRecord
		if json.Unmarshal(v, &p) != nil || !now.Before(p.Until) {
			return nil
		}
		ps := PauseStatus{Scope: ScopeApp, Until: p.Until, Reason: p.Reason, RateLimitReason: p.Detail,
			RetryAfterSeconds: int((p.Until.Sub(now) + time.Second - 1) / time.Second)}
		if s, ok := strings.CutPrefix(strings.TrimPrefix(key, pausePrefix), "site/"); ok {
			ps.Scope = ScopeSite
			ps.Site, _ = url.PathUnescape(s)
		}
		st.Pauses = append(st.Pauses, ps)
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("budget: reading the pauses: %w", err)
	}
	return st, nil
}

// String prints the settings, for the start's log line.
func (b *Budget) String() string {
	return "pool=" + string(b.pool) + " points_per_hour=" + strconv.FormatInt(b.limit, 10) +
		" reserve=" + strconv.FormatFloat(b.reserve, 'f', -1, 64)
}
