package redis_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/redis"
	"github.com/forge-remote/forge-remote/store/redistest"
)

// scanCalls is how many SCAN commands the server has run.
func scanCalls(t *testing.T, rc *goredis.Client) int {
	t.Helper()
	info, err := rc.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`cmdstat_scan:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// members is the index of the store with prefix, marker left out.
func members(t *testing.T, rc *goredis.Client, prefix string) []string {
	t.Helper()
	ms, err := rc.ZRange(t.Context(), prefix+redis.IndexName, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(ms, func(m string) bool { return m == "" })
}

func hasMarker(t *testing.T, rc *goredis.Client, prefix string) bool {
	t.Helper()
	return rc.ZScore(t.Context(), prefix+redis.IndexName, "").Err() == nil
}

// writeAsPreviousVersion stores a record the way the version before the
// index did: a bare SET, no member.
func writeAsPreviousVersion(t *testing.T, rc *goredis.Client, prefix, key, value string) {
	t.Helper()
	raw := append(make([]byte, 8), value...) // expiry 0: none
	if err := rc.Set(t.Context(), prefix+key, raw, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

func scanKeys(t *testing.T, kv store.KV, prefix string) []string {
	t.Helper()
	var keys []string
	if err := kv.Scan(t.Context(), prefix, func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// A Scan of one installation's keys reads the index: no SCAN, whatever
// else the database holds.
func TestRedisScanReadsTheIndex(t *testing.T) {
	srv := redistest.Start(t)
	rc := srv.Client()
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "ix:", ReindexEvery: -1})
	if _, _, err := r.Reindex(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 1200 { // more than a batch, on either side of the prefix
		put(t, r, fmt.Sprintf("chat/lease/a/%04d", i), []byte("x"))
		put(t, r, fmt.Sprintf("chat/lease/c/%04d", i), []byte("x"))
	}
	var want []string
	for i := range 1100 {
		k := fmt.Sprintf("chat/lease/b/%04d", i)
		put(t, r, k, []byte("v"))
		want = append(want, k)
	}
	before := scanCalls(t, rc)
	if got := scanKeys(t, r, "chat/lease/b/"); !slices.Equal(got, want) {
		t.Fatalf("Scan found %d keys; want the %d under chat/lease/b/", len(got), len(want))
	}
	if got := scanKeys(t, r, ""); len(got) != 3500 {
		t.Fatalf("Scan(\"\") found %d keys; want 3500", len(got))
	}
	if n := scanCalls(t, rc) - before; n != 0 {
		t.Errorf("%d SCAN commands; want none once the index is built", n)
	}
}

// Every write keeps the index equal to the keys held: Put, Update that
// creates, rewrites and removes, Delete, and a record whose own expiry is
// read back through Update.
func TestRedisIndexFollowsWrites(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "w:", ReindexEvery: -1})
	set := func(v string, ttl time.Duration) store.UpdateFunc {
		return func([]byte, bool) ([]byte, time.Duration, error) { return []byte(v), ttl, nil }
	}
	remove := func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, store.Remove }
	keep := func([]byte, bool) ([]byte, time.Duration, error) { return nil, 0, store.Keep }

	put(t, r, "a", []byte("1"))
	put(t, r, "b", []byte("1"))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Update(ctx, "c", set("1", time.Hour)))
	must(r.Update(ctx, "c", set("2", 0)))
	must(r.Update(ctx, "d", set("1", 0)))
	must(r.Update(ctx, "d", remove))
	must(r.Update(ctx, "e", keep))
	must(r.Delete(ctx, "a"))
	must(r.Delete(ctx, "never"))
	if got, want := members(t, rc, "w:"), []string{"b", "c"}; !slices.Equal(got, want) {
		t.Errorf("index = %q; want %q", got, want)
	}
	if hasMarker(t, rc, "w:") {
		t.Error("the index carries its marker before any Reindex")
	}
}

// Before the index is built (the first start on a database the previous
// version wrote) Scan walks the keyspace and finds everything; Reindex adds
// what lacked a member and marks the index; then Scan reads it.
func TestRedisIndexBuiltFromTheKeyspace(t *testing.T) {
	srv := redistest.Start(t)
	rc := srv.Client()
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "old:", ReindexEvery: -1})
	for i := range 700 {
		writeAsPreviousVersion(t, rc, "old:", fmt.Sprintf("scheduler/user/i/%03d", i), "u")
	}
	put(t, r, "scheduler/user/i/new", []byte("u")) // written by this version meanwhile
	if err := rc.Set(t.Context(), "old:foreign/set", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.SAdd(t.Context(), "old:foreign/notastring", "x").Err(); err != nil {
		t.Fatal(err)
	}

	before := scanCalls(t, rc)
	if got := scanKeys(t, r, "scheduler/user/i/"); len(got) != 701 {
		t.Fatalf("Scan without the index found %d keys; want 701", len(got))
	}
	if scanCalls(t, rc) == before {
		t.Fatal("Scan without a marked index did not walk the keyspace")
	}

	added, _, err := r.Reindex(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if added != 701 { // 700 old records and the foreign string: every string under the prefix
		t.Errorf("Reindex added %d members; want 701", added)
	}
	if slices.Contains(members(t, rc, "old:"), "foreign/notastring") {
		t.Error("a key that holds no record (a set) was indexed")
	}
	if !hasMarker(t, rc, "old:") {
		t.Fatal("no marker after Reindex")
	}
	before = scanCalls(t, rc)
	if got := scanKeys(t, r, "scheduler/user/i/"); len(got) != 701 {
		t.Fatalf("Scan through the index found %d keys; want 701", len(got))
	}
	if n := scanCalls(t, rc) - before; n != 0 {
		t.Errorf("%d SCAN commands after the build; want none", n)
	}
	// Run again, it finds nothing missing.
	if added, removed, err := r.Reindex(t.Context()); err != nil || added != 0 || removed != 0 {
		t.Errorf("second Reindex = %d added, %d removed, %v; want nothing to do", added, removed, err)
	}
}

// Members outlive their keys when Redis expires a record (PX) or a previous
// version deletes one. They never come back as records; a Scan that meets
// one removes it, and so does Reindex.
func TestRedisIndexDropsWhatIsGone(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "g:", ReindexEvery: -1})
	if _, _, err := r.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	put(t, r, "s/live", []byte("1"))
	if err := r.Put(ctx, "s/short", []byte("2"), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	put(t, r, "t/deleted-by-old", []byte("3"))
	testwait.For(t, "Redis to expire s/short", func() bool { return rc.Exists(ctx, "g:s/short").Val() == 0 })
	if err := rc.Del(ctx, "g:t/deleted-by-old").Err(); err != nil {
		t.Fatal(err)
	}
	if got := members(t, rc, "g:"); !slices.Equal(got, []string{"s/live", "s/short", "t/deleted-by-old"}) {
		t.Fatalf("index = %q; want the three members still there", got)
	}

	if got := scanKeys(t, r, "s/"); !slices.Equal(got, []string{"s/live"}) {
		t.Errorf("Scan(s/) = %q; want only s/live", got)
	}
	if got := members(t, rc, "g:"); !slices.Equal(got, []string{"s/live", "t/deleted-by-old"}) {
		t.Errorf("index after the Scan = %q; want s/short removed", got)
	}
	if _, removed, err := r.Reindex(ctx); err != nil || removed != 1 {
		t.Errorf("Reindex removed %d, %v; want 1", removed, err)
	}
	if got := members(t, rc, "g:"); !slices.Equal(got, []string{"s/live"}) {
		t.Errorf("index after Reindex = %q; want only s/live", got)
	}
}

// An index that loses its marker (evicted under maxmemory, FLUSHDB, a
// restart without persistence) is not trusted: Scan walks the keyspace, so
// nothing is missed, and wakes the rebuild, which the running store does by
// itself.
func TestRedisIndexLostIsRebuilt(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "lost:"}) // the repair runs by itself
	testwait.For(t, "the store to build its index at start", func() bool {
		return hasMarker(t, rc, "lost:") && rc.Get(ctx, "lost:\x00index-claim").Val() == "done"
	})
	for i := range 50 {
		put(t, r, fmt.Sprintf("k/%02d", i), []byte("v"))
	}
	if err := rc.Del(ctx, "lost:"+redis.IndexName).Err(); err != nil {
		t.Fatal(err)
	}
	// The whole prefix: the walk passes the claim by (no record, and no
	// error for being none).
	if got := scanKeys(t, r, ""); len(got) != 50 {
		t.Fatalf("Scan with the index gone found %d keys; want 50", len(got))
	}
	testwait.For(t, "the Scan to have the index rebuilt", func() bool { return hasMarker(t, rc, "lost:") })
	if got := members(t, rc, "lost:"); len(got) != 50 {
		t.Errorf("rebuilt index holds %d members; want 50", len(got))
	}
}

// Replicas share the repair: one claims it, the others find it done for
// the hour unless the index lost its marker since.
func TestRedisReindexClaimedOnce(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	newRedis(t, srv.URL(), redis.Options{Prefix: "c:"}) // the first replica
	testwait.For(t, "the first replica's repair", func() bool {
		return hasMarker(t, rc, "c:") && rc.Get(ctx, "c:\x00index-claim").Val() == "done"
	})
	writeAsPreviousVersion(t, rc, "c:", "orphan", "v")
	calls, scripts := scanCalls(t, rc), scriptCalls(t, rc)
	b := newRedis(t, srv.URL(), redis.Options{Prefix: "c:"})
	// b's start-up repair runs its claim (one script call); a win would set
	// the claim to "running" in that same call.
	testwait.For(t, "the second replica's claim", func() bool { return scriptCalls(t, rc) > scripts })
	if v := rc.Get(ctx, "c:\x00index-claim").Val(); v != "done" {
		t.Fatalf("claim = %q after the second replica's start; want still done", v)
	}
	if n := scanCalls(t, rc) - calls; n != 0 {
		t.Errorf("the second replica ran %d SCANs; want the repair left to the first", n)
	}
	// So the orphan waits for the next hour's repair (or a lost marker).
	if got := scanKeys(t, b, ""); len(got) != 0 {
		t.Errorf("Scan = %q; want nothing yet", got)
	}
}

// scriptCalls is how many scripts the server has run.
func scriptCalls(t *testing.T, rc *goredis.Client) int {
	t.Helper()
	info, err := rc.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range regexp.MustCompile(`cmdstat_eval(?:sha)?:calls=(\d+)`).FindAllStringSubmatch(info, -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n
}

// BenchmarkRedisScanOneInstallation is the Scan the hourly jobs run per
// installation (20 leases) in a database of REDIS_BENCH_KEYS keys (default
// 100,000; the memory run's 800,000 is the figure in the README): first
// walking the keyspace, as before the index, then through the index. It
// logs how long building the index took.
//
//	REDIS_BENCH_KEYS=800000 go test -run '^$' -bench RedisScanOneInstallation ./store/redis
func BenchmarkRedisScanOneInstallation(b *testing.B) {
	total := 100_000
	if n, err := strconv.Atoi(os.Getenv("REDIS_BENCH_KEYS")); err == nil && n > 0 {
		total = n
	}
	srv := redistest.Start(b)
	rc := srv.Client()
	ctx := context.Background()
	r := newRedis(b, srv.URL(), redis.Options{Prefix: "bench:", ReindexEvery: -1})
	raw := append(make([]byte, 8), make([]byte, 150)...) // a record of about a lease's size
	for start := 0; start < total; start += 10_000 {
		p := rc.Pipeline()
		for i := start; i < min(start+10_000, total); i++ {
			inst := i / 20 // 20 leases an installation
			p.Set(ctx, fmt.Sprintf("bench:chat/lease/%08x-inst/app/%d", inst, i), raw, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	prefix := fmt.Sprintf("chat/lease/%08x-inst/", total/40)
	scan := func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := r.Scan(ctx, prefix, func(string, []byte) error { n++; return nil }); err != nil || n != 20 {
				b.Fatalf("Scan = %d records, %v; want 20", n, err)
			}
		}
	}
	b.Run("keyspace", scan)
	used := func() int64 {
		m := regexp.MustCompile(`used_memory:(\d+)`).FindStringSubmatch(rc.Info(ctx, "memory").Val())
		if m == nil {
			b.Fatal("no used_memory in INFO")
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	before, start := used(), time.Now()
	added, _, err := r.Reindex(ctx)
	if err != nil || added != total {
		b.Fatalf("Reindex added %d, %v; want %d", added, err, total)
	}
	b.Logf("index of %d keys built in %v; used_memory %.1f MB before, %.1f MB after: %.0f B a key",
		total, time.Since(start), float64(before)/1e6, float64(used())/1e6, float64(used()-before)/float64(total))
	b.Run("index", scan)
}

// Keys with a NUL are the store's own (its index and claim, or those of a
// store whose prefix extends this one's): a write of one is refused, a
// delete is a no-op, and neither changes anything.
func TestRedisReservedKeys(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "rsv:", ReindexEvery: -1})
	if _, _, err := r.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{redis.IndexName, "\x00index-claim", "\x00x", "staging:\x00index-claim"} {
		if err := r.Put(ctx, key, []byte("v"), 0); err == nil {
			t.Errorf("Put(%q) succeeded; want refused", key)
		}
		err := r.Update(ctx, key, func([]byte, bool) ([]byte, time.Duration, error) { return []byte("v"), 0, nil })
		if err == nil {
			t.Errorf("Update(%q) succeeded; want refused", key)
		}
	}
	// Deletes of them are no-ops: none can be a record.
	for _, key := range []string{"", redis.IndexName, "\x00index-claim", "a\x00b"} {
		if err := r.Delete(ctx, key); err != nil {
			t.Errorf("Delete(%q) = %v; want a no-op", key, err)
		}
	}
	if typ := rc.Type(ctx, "rsv:"+redis.IndexName).Val(); typ != "zset" || !hasMarker(t, rc, "rsv:") {
		t.Errorf("index is a %s after the refused writes and deletes; want the marked zset", typ)
	}
}

// Prefixes with bytes past ASCII are prefixes of bytes, not of runes.
func TestRedisScanHighBytes(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "hb:", ReindexEvery: -1})
	if _, _, err := r.Reindex(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a\xfe", "a\xfe\x01", "a\xff", "a\xff\x01", "a\xff\xff", "\x80", "\xff", "b"} {
		put(t, r, k, []byte("v"))
	}
	for _, tt := range []struct {
		prefix string
		want   []string
	}{
		{"a\xfe", []string{"a\xfe", "a\xfe\x01"}},
		{"a\xff", []string{"a\xff", "a\xff\x01", "a\xff\xff"}},
		{"\x80", []string{"\x80"}},
		{"\xff", []string{"\xff"}},
	} {
		if got := scanKeys(t, r, tt.prefix); !slices.Equal(got, tt.want) {
			t.Errorf("Scan(%q) = %q; want %q", tt.prefix, got, tt.want)
		}
	}
}

// A store whose prefix extends another's (app: and app:staging:, a
// misconfiguration, but one the keyspace walk always tolerated): the outer
// store's build passes the inner's index and claim by, so a Scan of the
// whole outer prefix does not fail on them.
func TestRedisNestedPrefixes(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := srv.Client()
	inner := newRedis(t, srv.URL(), redis.Options{Prefix: "app:staging:"})
	testwait.For(t, "the inner store's build", func() bool { return rc.Get(ctx, "app:staging:\x00index-claim").Val() == "done" })
	put(t, inner, "k", []byte("v"))
	outer := newRedis(t, srv.URL(), redis.Options{Prefix: "app:", ReindexEvery: -1})
	if _, _, err := outer.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	put(t, outer, "k", []byte("v"))
	if got := scanKeys(t, outer, ""); !slices.Equal(got, []string{"k", "staging:k"}) {
		t.Errorf("outer Scan = %q; want its key and the inner's record, as the keyspace walk saw them", got)
	}
}
