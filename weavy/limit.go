package weavy

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// refreshLimiter limits each user's refresh mints to limit per per, spread
// evenly: one every per/limit, with no burst. Any stretch of time per long
// thus holds at most limit of them, the bound the README promises, and
// refreshes are already shared within RefreshWindow (10 s by default, the
// same spacing), so a client refreshing in a loop is what it refuses.
type refreshLimiter struct {
	every rate.Limit
	per   time.Duration

	mu    sync.Mutex
	users map[userKey]*rate.Limiter
	swept time.Time
}

func newRefreshLimiter(limit int, per time.Duration, now time.Time) *refreshLimiter {
	return &refreshLimiter{
		every: rate.Every(per / time.Duration(limit)),
		per:   per,
		users: make(map[userKey]*rate.Limiter),
		swept: now,
	}
}

// allow counts a refresh mint for k at now. When refused it returns how long
// until one is allowed, in whole seconds (at least 1 s), for Retry-After.
// When allowed, giveBack returns the slot: a mint that failed made no token,
// so the client's retry must not wait for it (the limit bounds the tokens a
// user churns through; failed calls are bounded no more on a refresh than on
// a first mint).
func (l *refreshLimiter) allow(k userKey, now time.Time) (retryAfter time.Duration, giveBack func(time.Time), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= l.per {
		// A full limiter is the same as none: dropping them bounds the map
		// by the users who refreshed lately.
		for u, lim := range l.users {
			if lim.TokensAt(now) >= 1 {
				delete(l.users, u)
			}
		}
		l.swept = now
	}
	lim := l.users[k]
	if lim == nil {
		lim = rate.NewLimiter(l.every, 1)
		l.users[k] = lim
	}
	r := lim.ReserveN(now, 1)
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		return max(time.Second, (wait + time.Second - 1).Truncate(time.Second)), nil, false
	}
	return 0, func(at time.Time) {
		l.mu.Lock()
		defer l.mu.Unlock()
		r.CancelAt(at)
	}, true
}

// forget drops the limits of inst's users.
func (l *refreshLimiter) forget(inst string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.users {
		if k.inst == inst {
			delete(l.users, k)
		}
	}
}
