package weavy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/forge-remote/forge-remote/store"
)

// Minter mints Weavy user tokens; *Client is one.
type Minter interface {
	IssueToken(ctx context.Context, uid string, ttl time.Duration) (Token, error)
}

// MintObserver learns of a user's first token: a user Weavy just created has
// no name yet, and a higher layer (the scheduler's profile sync) fills it in.
// The Broker declares it so that it needs nothing of that layer. UserMinted
// is called on the request path: it must be cheap (queue, not do, the work)
// and must not call back into the Broker. *scheduler.Queue is one.
type MintObserver interface {
	UserMinted(installationID, uid string)
}

// BrokerOptions configures a Broker. The zero value is usable: a zero
// duration or count means its default. A negative one is a programming error
// (the server validates what it reads from the environment), which NewBroker
// refuses rather than guess what was meant.
type BrokerOptions struct {
	// TTL is the lifetime asked of Weavy (WEAVY_TOKEN_TTL); 0 means 1 h.
	TTL time.Duration
	// Margin: a token is replaced this long before it expires; 0 means 5 min.
	// For short-lived tokens it is at most half the token's lifetime.
	Margin time.Duration
	// RefreshWindow: refreshes within this long of a refresh's mint get that
	// mint's token; 0 means 10 s.
	RefreshWindow time.Duration
	// RefreshLimit refreshes that mint are allowed per user per RefreshPer,
	// spread evenly (one every RefreshPer/RefreshLimit, no burst); 0 means 6
	// per minute, one every 10 s.
	RefreshLimit int
	RefreshPer   time.Duration

	Now        func() time.Time // nil means time.Now
	Logger     *zap.Logger      // nil means no logs
	Registerer prometheus.Registerer

	// Observer, if set, is told synchronously of each mint for a user who
	// had no token held (in memory or in the store).
	Observer MintObserver

	// Locker, set when kv is shared by replicas (Redis), makes one replica
	// mint a user's token while the others wait for it in the store. Nil
	// (a store of this process alone) costs no store write.
	Locker Locker
	// LockTTL is how long a replica that dies while minting keeps the others
	// waiting; it must exceed the Minter's own timeout (MintLockTTL gives it
	// for a Client's). 0 means 30 s.
	LockTTL time.Duration
}

// RateLimitedError is returned for a refresh beyond the per-user limit.
type RateLimitedError struct {
	RetryAfter time.Duration // whole seconds, at least 1 s
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("weavy: token refresh rate limited, retry after %s", e.RetryAfter)
}

const (
	defaultTTL           = time.Hour
	defaultMargin        = 5 * time.Minute
	defaultRefreshWindow = 10 * time.Second
	defaultRefreshLimit  = 6
	defaultRefreshPer    = time.Minute

	// maxSafety: when Weavy fails, a held token is still served until this long
	// before it expires (less for short-lived tokens), to leave the browser
	// time to use it.
	maxSafety = 30 * time.Second
	// failBackoff: after a failed re-mint, the held token is served this long
	// without asking Weavy again, so an outage doesn't cost every call a timeout.
	failBackoff = 5 * time.Second
	// flightTimeout bounds a detached mint should the Minter have no timeout of
	// its own (the Client's, 10 s by default, fires first).
	flightTimeout = 2 * time.Minute
	// defaultLockTTL: three default Weavy timeouts.
	defaultLockTTL = 30 * time.Second
)

// Broker hands out Weavy tokens per (installation, user): from memory while
// they have more than the margin of life left, else from the store (tokens
// minted by an earlier process or another replica), else minted, one mint per
// user at a time. It is safe for concurrent use.
type Broker struct {
	minter  Minter
	kv      store.KV
	ttl     time.Duration
	margin  time.Duration
	window  time.Duration
	now     func() time.Time
	log     *zap.Logger
	onMint  MintObserver
	locker  Locker
	lockTTL time.Duration

	cache cache

	fills     singleflight.Group // normal misses
	refreshes singleflight.Group // refresh=true; never shared with a fill, whose token may be the one to replace

	limiter *refreshLimiter

	mints, hits, refreshCalls, limited prometheus.Counter
}

type userKey struct{ inst, uid string }

// NewBroker returns a Broker minting with minter and persisting in kv. It panics
// on a negative option or if o.Registerer rejects its metrics (a name clash):
// both programming errors.
func NewBroker(minter Minter, kv store.KV, o BrokerOptions) *Broker {
	if err := o.check(); err != nil {
		panic(err)
	}
	b := &Broker{
		minter:  minter,
		kv:      kv,
		ttl:     cmp.Or(o.TTL, defaultTTL),
		margin:  cmp.Or(o.Margin, defaultMargin),
		window:  cmp.Or(o.RefreshWindow, defaultRefreshWindow),
		now:     o.Now,
		log:     o.Logger,
		onMint:  o.Observer,
		locker:  o.Locker,
		lockTTL: cmp.Or(o.LockTTL, defaultLockTTL),
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	b.cache.init(b.now().UnixNano())
	b.limiter = newRefreshLimiter(cmp.Or(o.RefreshLimit, defaultRefreshLimit), cmp.Or(o.RefreshPer, defaultRefreshPer), b.now())

	counter := func(name, help string) prometheus.Counter {
		c, err := metrics.Register(o.Registerer, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
		if err != nil {
			panic(fmt.Sprintf("weavy: registering %s: %v", name, err))
		}
		return c
	}
	b.mints = counter("weavy_token_mints_total", "Weavy user tokens minted.")
	b.hits = counter("weavy_token_cache_hits_total", "Token requests answered without a mint (memory or store).")
	b.refreshCalls = counter("weavy_token_refreshes_total", "Token requests with refresh=true.")
	b.limited = counter("weavy_token_refresh_limited_total", "Refreshes refused by the per-user rate limit.")
	return b
}

// check reports the first negative option.
func (o BrokerOptions) check() error {
	var negative string
	switch {
	case o.TTL < 0:
		negative = "TTL"
	case o.Margin < 0:
		negative = "Margin"
	case o.RefreshWindow < 0:
		negative = "RefreshWindow"
	case o.RefreshLimit < 0:
		negative = "RefreshLimit"
	case o.RefreshPer < 0:
		negative = "RefreshPer"
	case o.LockTTL < 0:
		negative = "LockTTL"
	default:
		return nil
	}
	return fmt.Errorf("weavy: BrokerOptions.%s is negative", negative)
}

// Token returns a token for user uid of installationID. With refresh, the
// held token is replaced by a new, different one (the caller was refused with
// it); refreshes are deduplicated within RefreshWindow and rate limited
// (*RateLimitedError). Errors: the Minter's (ErrTimeout, *APIError …), a
// store failure wrapping store.ErrUnavailable, or the caller's ctx.Err().
func (b *Broker) Token(ctx context.Context, installationID, uid string, refresh bool) (Token, error) {
	k := userKey{installationID, uid}
	if refresh {
		b.refreshCalls.Inc()
		return b.await(ctx, &b.refreshes, k, b.refresh)
	}
	// The hot path: one hash, one read-locked map lookup, no I/O, no allocation.
	if e, ok := b.cache.load(k); ok && b.now().UnixNano() < e.serveUntil {
		b.hits.Inc()
		return e.token(), nil
	}
	return b.await(ctx, &b.fills, k, b.fill)
}

// await runs fn in the user's flight of group, or joins the one running, and
// waits for it or for ctx, whichever ends first.
func (b *Broker) await(ctx context.Context, group *singleflight.Group, k userKey,
	fn func(context.Context, userKey) (Token, error)) (Token, error) {
	if k.inst == "" || hasSpaceOrControl(k.inst) {
		return Token{}, errors.New("weavy: token: empty or malformed installation id")
	}
	if err := checkUID(k.uid); err != nil { // also rules out the NUL of the flight key
		return Token{}, err
	}
	if err := ctx.Err(); err != nil {
		return Token{}, fmt.Errorf("weavy: token: %w", err)
	}
	b.cache.maybeSweep(b.now().UnixNano(), b.margin)

	ch := group.DoChan(k.inst+"\x00"+k.uid, func() (any, error) {
		// Detached from the first caller's cancellation: the others still wait
		// for this mint. Values (request id, trace) are kept for logs.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		return fn(fctx, k)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, fmt.Errorf("weavy: token: %w", ctx.Err())
	}
}

// fill answers a normal miss: the memory entry is missing or in its margin.
func (b *Broker) fill(ctx context.Context, k userKey) (Token, error) {
	now := b.now().UnixNano()
	var cur *entry
	if e, ok := b.cache.load(k); ok {
		if now < e.serveUntil {
			return e.token(), nil // filled by a flight that ended just before this one began
		}
		cur = &e
	}
	stored, err := b.loadStored(ctx, k)
	switch {
	case err != nil && cur == nil:
		return Token{}, err
	case err != nil:
		logctx.Logger(ctx, b.log).Warn("weavy: reading stored token failed, minting",
			zap.String("installation_id", k.inst), zap.String("uid", k.uid), zap.Error(err))
	case stored != nil && now < stored.serveUntil:
		b.install(k, stored, false)
		b.hits.Inc()
		return stored.token(), nil
	case stored != nil && (cur == nil || stored.keepUntil(b.margin) > cur.keepUntil(b.margin)):
		cur = stored // in its margin, but a fallback should Weavy fail
	}

	e, minted, err := b.mintShared(ctx, k, "", false, func(now int64, s *entry) bool {
		return now < s.serveUntil
	})
	if err != nil {
		keep := int64(0)
		if cur != nil {
			keep = cur.keepUntil(b.margin)
		}
		if cur == nil || now >= keep {
			return Token{}, err
		}
		// Weavy is failing but the held token is still good: serve it, and
		// leave Weavy alone for a few seconds.
		stale := *cur
		stale.serveUntil = min(now+int64(failBackoff), keep)
		b.install(k, &stale, false)
		logctx.Logger(ctx, b.log).Warn("weavy: re-minting token failed, serving the held one",
			zap.String("installation_id", k.inst), zap.String("uid", k.uid),
			zap.Object("token", cur.token()), zap.Error(err))
		return cur.token(), nil
	}
	b.install(k, e, false)
	if !minted {
		b.hits.Inc() // another replica minted it
		return e.token(), nil
	}
	if cur == nil && b.onMint != nil {
		b.onMint.UserMinted(k.inst, k.uid)
	}
	return e.token(), nil
}

// sharable reports whether a refresh at now gets e's token: e was minted by
// a refresh less than the window ago (the UIKit refreshes on every 401/403
// of every tab, and each tab may reach another replica).
func (b *Broker) sharable(now int64, e *entry) bool {
	return e.refreshed && now-e.minted < int64(b.window) && now < e.serveUntil
}

// install puts e in memory as of now (see cache.install).
func (b *Broker) install(k userKey, e *entry, force bool) {
	b.cache.install(k, e, force, b.now().UnixNano())
}

// refresh answers refresh=true. The held token stays cached for normal calls
// until a new one replaces it: a failed refresh evicts nothing.
func (b *Broker) refresh(ctx context.Context, k userKey) (Token, error) {
	nowT := b.now()
	now := nowT.UnixNano()
	var cur *entry
	e, inMemory := b.cache.load(k)
	if inMemory {
		cur = &e
	} else {
		var err error
		if cur, err = b.loadStored(ctx, k); err != nil {
			return Token{}, err
		}
	}
	if cur != nil && b.sharable(now, cur) {
		// A refresh moments ago already replaced the token this caller was
		// refused with.
		return cur.token(), nil
	}
	held := ""
	if cur != nil {
		held = cur.tok
	}
	// The refresh moments ago may have been another replica's. A store
	// failure here is left to the mint below to meet (or to get past).
	if b.locker != nil && inMemory {
		if s, _ := b.loadStored(ctx, k); s != nil && s.tok != held && b.sharable(now, s) {
			b.install(k, s, true)
			b.hits.Inc()
			return s.token(), nil
		}
	}
	wait, giveBack, ok := b.limiter.allow(k, nowT)
	if !ok {
		b.limited.Inc()
		return Token{}, &RateLimitedError{RetryAfter: wait}
	}
	n, minted, err := b.mintShared(ctx, k, held, true, func(now int64, s *entry) bool {
		return s.tok != held && b.sharable(now, s)
	})
	if err != nil {
		giveBack(b.now())
		return Token{}, err
	}
	b.install(k, n, true)
	if !minted {
		b.hits.Inc()
		return n.token(), nil
	}
	if cur == nil && b.onMint != nil {
		b.onMint.UserMinted(k.inst, k.uid)
	}
	return n.token(), nil
}

// mint asks the Minter for a token other than held (if set), once more if
// Weavy hands back the held one.
func (b *Broker) mint(ctx context.Context, k userKey, held string, refreshed bool) (*entry, error) {
	for range 2 {
		mintedAt := b.now()
		tok, err := b.minter.IssueToken(ctx, k.uid, b.ttl)
		if err != nil {
			return nil, err
		}
		// Checked here too: a Minter other than *Client may not, and a wys_
		// key must never reach a browser.
		if !validAccessToken(tok.AccessToken) {
			return nil, fmt.Errorf("%w: issued token is not a wyu_ user token", ErrBadResponse)
		}
		if !tok.ExpiresAt.After(mintedAt) {
			return nil, fmt.Errorf("%w: issued token has already expired", ErrBadResponse)
		}
		b.mints.Inc()
		if held != "" && tok.AccessToken == held {
			logctx.Logger(ctx, b.log).Warn("weavy: refresh got the held token back, retrying",
				zap.String("installation_id", k.inst), zap.String("uid", k.uid), zap.Object("token", tok))
			continue
		}
		return newEntry(tok, mintedAt, b.margin, refreshed), nil
	}
	return nil, fmt.Errorf("%w: Weavy returned the held token again instead of a new one", ErrBadResponse)
}

// PurgeInstallation forgets every token of installationID, in the store and in
// memory (the uninstall trigger). A mint in flight at that moment may still
// store its token; the record expires with the token.
func (b *Broker) PurgeInstallation(ctx context.Context, installationID string) error {
	if installationID == "" {
		return errors.New("weavy: purge: empty installation id")
	}
	// store.DeletePrefix also deletes records sealed under an earlier
	// STORE_KEY, which a Scan through the sealing skips.
	if err := store.DeletePrefix(ctx, b.kv, installationPrefix(installationID)); err != nil {
		return fmt.Errorf("weavy: purge: deleting stored tokens: %w", err)
	}
	// Memory last, so a fill racing with the purge is less likely to bring a
	// deleted record back into memory.
	b.ForgetInstallation(installationID)
	return nil
}

// ForgetInstallation drops installationID's tokens from this process's memory
// only: another replica purged the store. The next calls read the store.
func (b *Broker) ForgetInstallation(installationID string) {
	b.cache.forgetInstallation(installationID)
	b.limiter.forget(installationID)
}

// ForgetAll drops every token held in memory (not in the store): for a
// replica that may have missed another's purge.
func (b *Broker) ForgetAll() {
	b.cache.forgetAll()
}
