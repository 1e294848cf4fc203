package weavy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// cacheKey is what the memory cache keys a user by: 128 bits of a SHA-256,
// salted per Broker, of (installation, uid). Holding neither string halves
// what a cached user costs (BenchmarkBrokerMemory: about 150 B, against about
// 300 B keyed by both strings; 100,000 users about 15 MB); the chance of two
// users sharing a key is about n²/2¹²⁹, nil for any n a process holds.
type cacheKey [16]byte

// sweepEvery: how often entries that can no longer be served are dropped.
const sweepEvery = 5 * time.Minute

// cache holds users' tokens in memory: one map under one lock, read-locked on
// the hot path. Writers hold it for one store into the map (a fill or
// refresh installing its token) or for one pass over it (the sweep,
// ForgetInstallation, ForgetAll), during which hits wait.
type cache struct {
	seed      maphash.Seed
	salt      [16]byte // keys the cache's hash of (installation, uid)
	mu        sync.RWMutex
	m         map[cacheKey]entry
	lastSweep atomic.Int64 // unix nanoseconds
}

func (c *cache) init(now int64) {
	c.seed = maphash.MakeSeed()
	_, _ = rand.Read(c.salt[:])
	c.m = make(map[cacheKey]entry)
	c.lastSweep.Store(now)
}

// entry is a cached token, stored by value: 48 bytes. Times are unix
// nanoseconds (see nanos); keepUntil is derived from exp and minted.
type entry struct {
	tok        string
	exp        int64  // the token's expiry
	minted     int64  // just before the mint request was sent
	serveUntil int64  // served from memory before this
	inst       uint32 // tag of the installation, for ForgetInstallation (see instTag)
	refreshed  bool   // minted by a refresh (RefreshWindow applies)
}

// Bounds of the times an entry holds: every difference of two of them fits
// in an int64 (years 1823 to 2116; a token beyond is taken to expire then).
const (
	minNanos = math.MinInt64 / 2
	maxNanos = math.MaxInt64 / 2
)

// nanos is t in unix nanoseconds, clamped to [minNanos, maxNanos].
func nanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, minNanos)):
		return minNanos
	case t.After(time.Unix(0, maxNanos)):
		return maxNanos
	}
	return t.UnixNano()
}

func (e *entry) token() Token {
	return Token{AccessToken: e.tok, ExpiresAt: time.Unix(0, e.exp)}
}

// margin is how long before expiry e stops being served from memory: the
// Broker's margin, at most half the token's lifetime.
func (e *entry) margin(margin time.Duration) int64 {
	return min(int64(margin), (e.exp-e.minted)/2)
}

// keepUntil: when re-minting fails, e is still served before this.
func (e *entry) keepUntil(margin time.Duration) int64 {
	return e.exp - min(int64(maxSafety), e.margin(margin)/2)
}

func newEntry(tok Token, mintedAt time.Time, margin time.Duration, refreshed bool) *entry {
	e := &entry{tok: tok.AccessToken, exp: nanos(tok.ExpiresAt), minted: nanos(mintedAt), refreshed: refreshed}
	e.serveUntil = e.exp - e.margin(margin)
	return e
}

// key is k's cacheKey. The salt comes first, so that no one who does not
// know it can look for two users with the same key. The installation ARI's
// constant start is left out (a flag byte says so): the usual ids then fit
// in two SHA-256 blocks.
func (c *cache) key(k userKey) cacheKey {
	var buf [128]byte // enough for the usual ids; longer ones cost an allocation
	p := append(buf[:0], c.salt[:]...)
	inst, ari := strings.CutPrefix(k.inst, installationARI)
	if ari {
		p = append(p, 1)
	} else {
		p = append(p, 0)
	}
	p = binary.AppendUvarint(p, uint64(len(inst)))
	p = append(p, inst...)
	p = append(p, k.uid...)
	sum := sha256.Sum256(p)
	return cacheKey(sum[:len(cacheKey{})])
}

// instTag is the installation's tag in its users' entries: 32 bits of a
// hash, enough for ForgetInstallation to find them (and, rarely, a few of
// another installation's, which the next calls read back from the store).
func (c *cache) instTag(inst string) uint32 {
	return uint32(maphash.String(c.seed, inst))
}

func (c *cache) load(k userKey) (entry, bool) {
	ck := c.key(k)
	c.mu.RLock()
	e, ok := c.m[ck]
	c.mu.RUnlock()
	return e, ok
}

// install puts e in memory unless a newer entry that is still served at now
// got there first (a refresh finishing before an older fill); force is for
// refreshes, whose token must become the cached one.
func (c *cache) install(k userKey, e *entry, force bool, now int64) {
	ck := c.key(k)
	v := *e
	v.inst = c.instTag(k.inst)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[ck]; !force && ok && old.minted > v.minted && now < old.serveUntil {
		return
	}
	c.m[ck] = v
}

// maybeSweep drops, at most every sweepEvery, the entries that can no longer
// be served at now, so memory follows the active users rather than all users
// ever.
func (c *cache) maybeSweep(now int64, margin time.Duration) {
	last := c.lastSweep.Load()
	if now-last < int64(sweepEvery) || !c.lastSweep.CompareAndSwap(last, now) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if now >= e.keepUntil(margin) {
			delete(c.m, k)
		}
	}
}

// forgetInstallation drops inst's entries (and, rarely, a few of another
// installation whose tag is the same).
func (c *cache) forgetInstallation(inst string) {
	tag := c.instTag(inst)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.inst == tag {
			delete(c.m, k)
		}
	}
}

// forgetAll drops every entry.
func (c *cache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}
