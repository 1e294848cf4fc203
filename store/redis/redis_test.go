package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/store/redis"
	"github.com/forge-remote/forge-remote/store/redistest"
	"github.com/forge-remote/forge-remote/store/storetest"
)

var (
	_ store.KV     = (*redis.Store)(nil)
	_ store.PubSub = (*redis.Store)(nil)
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Secrets of the shapes the server keeps: a Weavy user token and a Forge app
// system token (a JWT).
const (
	weavyToken = "wyu_SECRETSECRET"
	appToken   = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhcHAtc3lzdGVtIiwiZXhwIjoxODAwMDAwMDAwfQ.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)

func newSealed(t testing.TB, inner store.KV) *store.Sealed {
	t.Helper()
	s, err := store.NewSealed(inner, bytes.Repeat([]byte{7}, store.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustOpen(t *testing.T, o open.Options) store.KV {
	t.Helper()
	kv, err := open.Store(t.Context(), o)
	if err != nil {
		t.Fatalf("Open(%q): %v", o.URL, err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	return kv
}

func put(t *testing.T, kv store.KV, key string, value []byte) {
	t.Helper()
	if err := kv.Put(t.Context(), key, value, 0); err != nil {
		t.Fatal(err)
	}
}

// prefixes hands out a fresh key prefix per store, so the stores of one test
// share a server without seeing each other.
var prefixes atomic.Int64

func newRedis(t testing.TB, url string, o redis.Options) *redis.Store {
	t.Helper()
	if o.Prefix == "" {
		o.Prefix = fmt.Sprintf("test%d:", prefixes.Add(1))
	}
	r, err := redis.Open(t.Context(), url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	clock := storetest.NewClock(epoch)
	o := redis.Options{Now: clock.Now}
	t.Run("Redis", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.KV { return newRedis(t, srv.URL(), o) }, clock.Advance)
	})
	t.Run("SealedRedis", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.KV { return newSealed(t, newRedis(t, srv.URL(), o)) }, clock.Advance)
	})
}

// TestRedisRealExpiry checks the other half of expiry: Redis drops a record
// by itself once its PX passes, without the store's clock moving.
func TestRedisRealExpiry(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "x:"})
	put(t, r, "forever", []byte("v"))
	const px = 500 * time.Millisecond
	if err := r.Put(t.Context(), "short", []byte("v"), px); err != nil {
		t.Fatal(err)
	}
	// -2 (gone already) only if the machine took longer than px to ask.
	if ms := srv.Client().PTTL(t.Context(), "x:short").Val(); ms > px || ms == -1 {
		t.Errorf("PTTL = %v; want Redis' own expiry of at most %v", ms, px)
	}
	if ttl := srv.Client().PTTL(t.Context(), "x:forever").Val(); ttl != -1 {
		t.Errorf("PTTL of a record without ttl = %v; want none (-1)", ttl)
	}
	testwait.For(t, "Redis to drop the record at its PX", func() bool {
		return srv.Client().Exists(t.Context(), "x:short").Val() == 0
	})
}

func TestRedisPrefixIsolation(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	a := newRedis(t, srv.URL(), redis.Options{Prefix: "app-a:"})
	b := newRedis(t, srv.URL(), redis.Options{Prefix: "app-b:"})
	put(t, a, "user/1", []byte("a1"))
	put(t, a, "user/2", []byte("a2"))
	put(t, b, "user/1", []byte("b1"))

	if v, err := b.Get(ctx, "user/2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.Get(a's key) = %q, %v; want ErrNotFound", v, err)
	}
	if v, err := b.Get(ctx, "user/1"); err != nil || string(v) != "b1" {
		t.Errorf("b.Get(user/1) = %q, %v; want b1", v, err)
	}
	for _, tt := range []struct {
		kv   store.KV
		want string
	}{{a, "user/1=a1 user/2=a2"}, {b, "user/1=b1"}} {
		if got := scanAll(t, tt.kv, ""); got != tt.want {
			t.Errorf("Scan = %s; want %s", got, tt.want)
		}
	}

	// The URL's prefix parameter names the namespace when the options do not.
	c2, err := redis.Open(ctx, srv.URL()+"?prefix=myapp:", redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	put(t, c2, "k", []byte("v"))
	if n := srv.Client().Exists(ctx, "myapp:k").Val(); n != 1 {
		t.Error("prefix=myapp: in the URL did not name the key myapp:k")
	}
	d, err := redis.Open(ctx, srv.URL(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	put(t, d, "k", []byte("v"))
	if n := srv.Client().Exists(ctx, redis.DefaultPrefix+"k").Val(); n != 1 {
		t.Errorf("without a prefix the key is not under %q", redis.DefaultPrefix)
	}
}

func TestRedisScanGlobPrefix(t *testing.T) {
	srv := redistest.Start(t)
	// The store's own prefix holds metacharacters too.
	r := newRedis(t, srv.URL(), redis.Options{Prefix: "p[*]?:"})
	for _, k := range []string{"a*", "a*b", "ab", "a[1]", "a[1]x", "a1", "a?", "ax", `a\`, `a\b`, "b"} {
		put(t, r, k, []byte("v"))
	}
	other := newRedis(t, srv.URL(), redis.Options{Prefix: "pX*Y:"})
	put(t, other, "a*", []byte("other"))

	for _, tt := range []struct{ prefix, want string }{
		{"a*", "a*=v a*b=v"},
		{"a[1]", "a[1]=v a[1]x=v"},
		{"a?", "a?=v"},
		{`a\`, `a\=v a\b=v`},
		{"a", `a*=v a*b=v a1=v a?=v a[1]=v a[1]x=v a\=v a\b=v ab=v ax=v`},
	} {
		if got := scanAll(t, r, tt.prefix); got != tt.want {
			t.Errorf("Scan(%q) = %s; want %s", tt.prefix, got, tt.want)
		}
	}
}

// TestRedisUnavailable freezes Redis: every call must fail with
// ErrUnavailable (a frozen Redis never answers: failing at all is the
// store's own timeout at work), and the same store must work again
// once Redis is back, without being reopened.
func TestRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	kv := newSealed(t, newRedis(t, srv.URL(), redis.Options{}))
	put(t, kv, "k", []byte("v"))

	checkDown := func(t *testing.T) {
		t.Helper()
		calls := map[string]func(ctx context.Context) error{
			"Get": func(ctx context.Context) error { _, err := kv.Get(ctx, "k"); return err },
			"Put": func(ctx context.Context) error { return kv.Put(ctx, "k2", []byte("v"), 0) },
			"Update": func(ctx context.Context) error {
				return kv.Update(ctx, "k", func([]byte, bool) ([]byte, time.Duration, error) { return []byte("w"), 0, nil })
			},
			"Delete": func(ctx context.Context) error { return kv.Delete(ctx, "k2") },
			"Scan": func(ctx context.Context) error {
				return kv.Scan(ctx, "", func(string, []byte) error { return nil })
			},
			"Ping": func(ctx context.Context) error { return kv.Ping(ctx) },
		}
		errs := make(chan error, len(calls))
		for name, call := range calls {
			go func() {
				start := time.Now()
				err := call(t.Context())
				elapsed := time.Since(start)
				switch {
				case !errors.Is(err, store.ErrUnavailable):
					errs <- fmt.Errorf("%s = %v; want ErrUnavailable", name, err)
				case !strings.HasPrefix(err.Error(), "store: "):
					errs <- fmt.Errorf("%s: error %q lacks the store: prefix", name, err)
				default:
					t.Logf("%s failed after %v: %v", name, elapsed.Round(time.Millisecond), err)
					errs <- nil
				}
			}()
		}
		for range calls {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	checkUp := func(t *testing.T, want string) {
		t.Helper()
		if err := kv.Ping(t.Context()); err != nil {
			t.Fatalf("Ping after recovery: %v", err)
		}
		if v, err := kv.Get(t.Context(), "k"); err != nil || string(v) != want {
			t.Fatalf("Get after recovery = %q, %v; want %q", v, err, want)
		}
	}

	t.Run("Paused", func(t *testing.T) {
		srv.Pause()
		checkDown(t)
		srv.Resume()
		checkUp(t, "v")
	})
	t.Run("Killed", func(t *testing.T) {
		srv.Kill()
		checkDown(t)
		srv.Restart()
		// Nothing is persisted (--save ""), so the data is gone; the store
		// works again all the same.
		if _, err := kv.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after restart = %v; want ErrNotFound", err)
		}
		put(t, kv, "k", []byte("again"))
		checkUp(t, "again")
	})
}

// TestOpenRedis goes through open.Store as the server does: sealed values,
// token-free key names, no failure at start when Redis is down.
func TestOpenRedis(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	key := bytes.Repeat([]byte{9}, store.KeySize)

	kv := mustOpen(t, open.Options{URL: srv.URL(), Key: key})
	if _, ok := kv.(*store.Sealed); !ok {
		t.Errorf("Open returned %T; want *store.Sealed", kv)
	}
	put(t, kv, "user/1/weavy-token", []byte(weavyToken))
	put(t, kv, "installation/1/app-token", []byte(appToken))
	if err := kv.Update(ctx, "user/2/weavy-token", func([]byte, bool) ([]byte, time.Duration, error) {
		return []byte(weavyToken + "2"), time.Hour, nil
	}); err != nil {
		t.Fatal(err)
	}
	// The same secrets written unsealed, to show the check would see them.
	plain := newRedis(t, srv.URL(), redis.Options{Prefix: "plain:"})
	put(t, plain, "user/1/weavy-token", []byte(weavyToken))
	put(t, plain, "installation/1/app-token", []byte(appToken))

	rc := srv.Client()
	var keys []string
	iter := rc.Scan(ctx, 0, "*", 0).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	// Beside the records: each store's key index (a sorted set of the key
	// names) and the claim of its repair.
	var records []string
	var names, sealed, clear strings.Builder
	for _, k := range keys {
		switch {
		case strings.HasSuffix(k, redis.IndexName):
			members, err := rc.ZRange(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			names.WriteString(strings.Join(members, "\n") + "\n")
		case !strings.HasSuffix(k, "\x00index-claim"):
			records = append(records, k)
		}
	}
	if len(records) != 6 || !slices.Contains(records, redis.DefaultPrefix+store.SchemaKey) {
		t.Fatalf("Redis holds %q; want 5 keys and the schema version", keys)
	}
	for _, k := range records {
		v, err := rc.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		names.WriteString(k + "\n")
		if strings.HasPrefix(k, "plain:") {
			clear.WriteString(v)
		} else {
			sealed.WriteString(v)
		}
	}
	for _, needle := range []string{weavyToken, "SECRETSECRET", appToken, strings.Split(appToken, ".")[1]} {
		if strings.Contains(names.String(), needle) {
			t.Errorf("a key name holds %q: %s", needle, names.String())
		}
		if strings.Contains(sealed.String(), needle) {
			t.Errorf("GET shows %q in clear", needle)
		}
		if !strings.Contains(clear.String(), needle) {
			t.Errorf("%q not found in the unsealed values; the check is looking in the wrong place", needle)
		}
	}
	if v, err := kv.Get(ctx, "user/2/weavy-token"); err != nil || string(v) != weavyToken+"2" {
		t.Errorf("Get = %q, %v", v, err)
	}

	t.Run("RedisDownAtStart", func(t *testing.T) {
		down := redistest.Start(t)
		down.Kill()
		kv, err := open.Store(ctx, open.Options{URL: down.URL(), Key: key})
		if err != nil {
			t.Fatalf("Open with Redis down: %v; want it to start and report through Ping", err)
		}
		defer kv.Close()
		if err := kv.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Ping with Redis down = %v; want ErrUnavailable", err)
		}
		down.Restart()
		if err := kv.Ping(ctx); err != nil {
			t.Fatalf("Ping once Redis is up: %v", err)
		}
	})
}

func TestOpenRedisErrors(t *testing.T) {
	key := make([]byte, store.KeySize)
	for _, tt := range []struct {
		name, url string
		key       []byte
		want      string
	}{
		{"no key", "redis://localhost:6379/0", nil, "STORE_KEY"},
		{"no key, TLS", "rediss://localhost:6379/0", nil, "STORE_KEY"},
		{"bad port", "redis://:hunter2@localhost:port/0", key, "STORE_URL"},
		{"bad db", "redis://:hunter2@localhost:6379/zero", key, "STORE_URL"},
		{"unknown option", "redis://:hunter2@localhost:6379/0?bogus=1", key, "STORE_URL"},
		{"bad escape", "redis://:hun%zzter2@localhost:6379/0", key, "STORE_URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kv, err := open.Store(t.Context(), open.Options{URL: tt.url, Key: tt.key})
			if err == nil {
				kv.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "store: ") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q; want it to start with store: and name %s", msg, tt.want)
			}
			if strings.Contains(msg, "hunter2") || strings.Contains(msg, "hun%zzter2") {
				t.Errorf("error repeats the password: %q", msg)
			}
		})
	}
}

func TestRedisPassword(t *testing.T) {
	srv := redistest.StartWithPassword(t, "s3cret")
	addr := srv.Addr()
	for _, tt := range []struct {
		name, url string
		ok        bool
	}{
		{"right", "redis://:s3cret@" + addr + "/0", true},
		{"right with user", "redis://default:s3cret@" + addr + "/1", true},
		{"wrong", "redis://:wrong@" + addr + "/0", false},
		{"none", "redis://" + addr + "/0", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRedis(t, tt.url, redis.Options{})
			err := r.Put(t.Context(), "k", []byte("v"), 0)
			if tt.ok {
				if err != nil {
					t.Fatalf("Put: %v", err)
				}
				if v, err := r.Get(t.Context(), "k"); err != nil || string(v) != "v" {
					t.Fatalf("Get = %q, %v", v, err)
				}
				return
			}
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Put = %v; want ErrUnavailable", err)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("error repeats the password: %v", err)
			}
		})
	}
}

func TestRedisPubSub(t *testing.T) {
	srv := redistest.Start(t)
	ignore := goleak.IgnoreCurrent() // the server's own goroutines
	ctx := t.Context()
	func() {
		a := newRedis(t, srv.URL(), redis.Options{Prefix: "shared:"})
		b := newRedis(t, srv.URL(), redis.Options{Prefix: "shared:"})
		foreign := newRedis(t, srv.URL(), redis.Options{Prefix: "foreign:"})
		defer a.Close()
		defer b.Close()
		defer foreign.Close()

		msgs, stop := a.Subscribe(ctx, "invalidate", nil)
		foreignMsgs, stopForeign := foreign.Subscribe(ctx, "invalidate", nil)
		defer stopForeign()

		for _, m := range []string{"user/1", "user/2"} {
			if err := b.Publish(ctx, "invalidate", []byte(m)); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-msgs:
				if string(got) != m {
					t.Fatalf("received %q; want %q", got, m)
				}
			case <-testwait.After(t):
				t.Fatalf("%q not received", m)
			}
		}
		if n := srv.Client().PubSubNumSub(ctx, "shared:invalidate").Val()["shared:invalidate"]; n != 1 {
			t.Errorf("%d subscribers on shared:invalidate; want the prefix applied", n)
		}
		select {
		case got := <-foreignMsgs:
			t.Errorf("another prefix received %q", got)
		case <-time.After(50 * time.Millisecond):
		}

		stop()
		stop() // harmless
		if _, open := <-msgs; open {
			t.Error("channel still open after stop")
		}

		// Ending ctx ends the subscription too, and so does Close.
		subCtx, cancel := context.WithCancel(ctx)
		msgs, _ = a.Subscribe(subCtx, "other", nil)
		cancel()
		waitClosed(t, msgs)
		msgs, _ = b.Subscribe(ctx, "other", nil)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, msgs)
		if msgs, _ := b.Subscribe(ctx, "late", nil); !isClosed(msgs) {
			t.Error("Subscribe after Close returned an open channel")
		}
		if err := b.Publish(ctx, "x", nil); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Publish after Close = %v; want ErrUnavailable", err)
		}
	}()
	testwait.NoLeaks(t, ignore)
}

func waitClosed(t *testing.T, c <-chan []byte) {
	t.Helper()
	select {
	case _, open := <-c:
		if open {
			t.Error("received a message; want the channel closed")
		}
	case <-testwait.After(t):
		t.Error("channel not closed")
	}
}

func isClosed(c <-chan []byte) bool {
	select {
	case _, open := <-c:
		return !open
	case <-time.After(time.Second):
		return false
	}
}

// scanAll returns "key=value" pairs sorted by key, space separated.
func scanAll(t *testing.T, kv store.KV, prefix string) string {
	t.Helper()
	var got []string
	err := kv.Scan(t.Context(), prefix, func(k string, v []byte) error {
		got = append(got, k+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatalf("Scan(%q): %v", prefix, err)
	}
	slices.Sort(got)
	return strings.Join(got, " ")
}

var benchValue = bytes.Repeat([]byte("x"), 256)

var benchRedis = []struct {
	name string
	new  func(b *testing.B, url string) store.KV
}{
	{"redis", func(b *testing.B, url string) store.KV { return newRedis(b, url, redis.Options{}) }},
	{"sealed-redis", func(b *testing.B, url string) store.KV {
		return newSealed(b, newRedis(b, url, redis.Options{}))
	}},
}

func BenchmarkRedisGet(b *testing.B) {
	srv := redistest.Start(b)
	for _, bb := range benchRedis {
		b.Run(bb.name, func(b *testing.B) {
			kv := bb.new(b, srv.URL())
			ctx := b.Context()
			if err := kv.Put(ctx, "user/500", benchValue, 0); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kv.Get(ctx, "user/500"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRedisPut(b *testing.B) {
	srv := redistest.Start(b)
	for _, bb := range benchRedis {
		b.Run(bb.name, func(b *testing.B) {
			kv := bb.new(b, srv.URL())
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if err := kv.Put(ctx, "user/500", benchValue, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
