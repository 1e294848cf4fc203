package weavy

import (
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// The cache's per-user layout: a user held in memory costs its key, its
// entry and its token's bytes, nothing else.
func TestCacheLayout(t *testing.T) {
	if s := unsafe.Sizeof(cacheKey{}) + unsafe.Sizeof(entry{}); s > 64 {
		t.Fatalf("key + entry = %d bytes, want at most 64", s)
	}
	b := NewBroker(nil, newMemKV(time.Now), BrokerOptions{})
	seen := map[cacheKey]userKey{}
	for _, k := range []userKey{{inst1, alice}, {inst2, alice}, {inst1, "bob"}, {"a", "bc"}, {"ab", "c"}} {
		ck := b.cache.key(k)
		if o, dup := seen[ck]; dup {
			t.Fatalf("%v and %v share a cache key", k, o)
		}
		seen[ck] = k
	}
}

// testEntry is a token minted at minted (unix ns) and living an hour.
func testEntry(tok string, minted int64, refreshed bool) *entry {
	return newEntry(Token{AccessToken: tok, ExpiresAt: time.Unix(0, minted).Add(time.Hour)},
		time.Unix(0, minted), defaultMargin, refreshed)
}

func TestCacheForgetInstallation(t *testing.T) {
	var c cache
	c.init(0)
	// inst2 starts with inst1, and instPrefix is a prefix of inst1: neither
	// may be taken for inst1.
	const (
		instPrefix = "ari:cloud:ecosystem::installation/1c2"
		unknown    = "ari:cloud:ecosystem::installation/unknown"
	)
	insts := []string{inst1, inst2, instPrefix}
	for _, inst := range insts {
		for _, uid := range []string{alice, bob} {
			c.install(userKey{inst, uid}, testEntry("wyu_"+inst+uid, 0, false), false, 0)
		}
	}
	c.forgetInstallation(inst1)
	c.forgetInstallation(unknown)
	left := 0
	for _, inst := range insts {
		// Entries are found by a 32-bit tag of their installation: another
		// installation's go too only if its tag is one of those forgotten
		// (about one chance in 2³¹ here).
		tag := c.instTag(inst)
		want := inst != inst1 && tag != c.instTag(inst1) && tag != c.instTag(unknown)
		for _, uid := range []string{alice, bob} {
			e, ok := c.load(userKey{inst, uid})
			if ok != want || ok && e.tok != "wyu_"+inst+uid {
				t.Errorf("%s %s after forgetting %s: held %v (%q), want %v", inst, uid, inst1, ok, e.tok, want)
			}
			if want {
				left++
			}
		}
	}
	if len(c.m) != left {
		t.Errorf("%d entries left, want %d", len(c.m), left)
	}
	c.forgetAll()
	if len(c.m) != 0 {
		t.Errorf("%d entries left after forgetAll", len(c.m))
	}
}

// collidingInsts returns two installation ids with the same tag in c: a
// birthday search, about 80,000 ids for 32-bit tags.
func collidingInsts(c *cache) (string, string) {
	seen := make(map[uint32]string)
	for i := 0; ; i++ {
		inst := "ari:cloud:ecosystem::installation/" + strconv.Itoa(i)
		tag := c.instTag(inst)
		if o, ok := seen[tag]; ok {
			return o, inst
		}
		seen[tag] = inst
	}
}

// Forgetting an installation whose tag another shares drops the other's
// users from memory too (ForgetInstallation says so); their next calls read
// their tokens back from the store, with no mint.
func TestBrokerForgetTagCollision(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	a, b := collidingInsts(&e.b.cache)
	e.token(t, a, alice, false)
	tb := e.token(t, b, alice, false)
	e.b.ForgetInstallation(a)
	if e.held(a, alice) || e.held(b, alice) {
		t.Fatal("an entry kept whose installation's tag was forgotten")
	}
	if got := e.token(t, b, alice, false); got.AccessToken != tb.AccessToken || e.mints() != 2 {
		t.Fatalf("after the collision: token %q, %d mints; want the stored one, 2 mints", got.AccessToken, e.mints())
	}
	if !e.held(b, alice) {
		t.Fatal("token read back from the store not held in memory")
	}
}

func TestCacheSweep(t *testing.T) {
	var c cache
	c.init(0)
	hour := int64(time.Hour)
	// At the sweep (now = hour), an entry minted at 0 is past its keepUntil
	// (30 s before it expires); one minted 4 minutes later is in its margin
	// (no longer served) but kept until 30 s before it expires, the fallback
	// should Weavy fail; one minted now is served.
	c.install(userKey{inst1, alice}, testEntry("wyu_old", 0, false), false, 0)
	c.install(userKey{inst1, bob}, testEntry("wyu_margin", int64(4*time.Minute), false), false, 0)
	c.install(userKey{inst2, alice}, testEntry("wyu_new", hour, false), false, hour)

	c.maybeSweep(int64(sweepEvery)-1, defaultMargin) // too soon: nothing dropped
	if len(c.m) != 3 {
		t.Fatalf("%d entries after an early sweep, want 3", len(c.m))
	}
	c.maybeSweep(hour, defaultMargin)
	if _, ok := c.load(userKey{inst1, alice}); ok {
		t.Error("entry past its keepUntil kept")
	}
	for _, k := range []userKey{{inst1, bob}, {inst2, alice}} {
		if _, ok := c.load(k); !ok {
			t.Errorf("%v dropped before its keepUntil", k)
		}
	}
	// The next sweep is sweepEvery after this one (wyu_margin, past its
	// keepUntil by then, is still held).
	c.maybeSweep(hour+int64(sweepEvery)-1, defaultMargin)
	if len(c.m) != 2 {
		t.Fatalf("%d entries after a sweep too soon after the last, want 2", len(c.m))
	}
	c.maybeSweep(hour+int64(55*time.Minute), defaultMargin)
	if _, ok := c.load(userKey{inst2, alice}); !ok || len(c.m) != 1 {
		t.Fatalf("%d entries after the next sweep, want 1 (the newest)", len(c.m))
	}
}

func TestCacheInstallKeepsNewer(t *testing.T) {
	k := userKey{inst1, alice}
	minute := int64(time.Minute)
	for _, tt := range []struct {
		name  string
		force bool
		now   int64 // when the older entry is installed
		want  string
	}{
		{"older fill after a newer refresh", false, 2 * minute, "wyu_newer"},
		{"older token forced", true, 2 * minute, "wyu_older"},
		{"newer entry no longer served", false, 56 * minute, "wyu_older"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c cache
			c.init(0)
			c.install(k, testEntry("wyu_newer", minute, true), true, minute)
			c.install(k, testEntry("wyu_older", 0, false), tt.force, tt.now)
			if e, _ := c.load(k); e.tok != tt.want {
				t.Fatalf("cached %q, want %q", e.tok, tt.want)
			}
		})
	}
	// A fill newer than the entry held replaces it.
	var c cache
	c.init(0)
	c.install(k, testEntry("wyu_first", 0, false), false, 0)
	c.install(k, testEntry("wyu_second", minute, false), false, minute)
	if e, _ := c.load(k); e.tok != "wyu_second" {
		t.Fatalf("cached %q, want the newer fill", e.tok)
	}
}
