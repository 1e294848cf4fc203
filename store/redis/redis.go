// Package redis is a store.KV in a Redis server shared by every replica
// (STORE_URL redis:// or rediss://), and the store.PubSub they talk over.
package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/ctxtime"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/internal/record"
)

// DefaultPrefix namespaces keys and channels when no prefix is set.
const DefaultPrefix = "forge-remote:"

// redisUpdateAttempts bounds Update's optimistic retries. Each conflict means
// another writer succeeded, so running out takes sustained contention on one
// key, which is reported rather than spun on.
const redisUpdateAttempts = 50

// Options configure Open. Zero values take the defaults.
type Options struct {
	// Prefix is prepended to every key and pub/sub channel, so that several
	// apps can share one Redis. It wins over the URL's prefix parameter;
	// both unset means DefaultPrefix.
	Prefix string
	// Now is the clock expiry is judged by (time.Now when nil).
	Now func() time.Time
	// Timeouts default to 1s each, so an unresponsive Redis becomes
	// store.ErrUnavailable within a couple of seconds instead of stalling requests.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
	// PoolSize is the number of connections (go-redis' default when 0).
	PoolSize int
	// ReindexEvery is how often the key index is repaired across replicas
	// (see index.go): 0 means an hour; negative, never by itself (tests
	// call Reindex).
	ReindexEvery time.Duration
	// Log receives the index repair's reports (nil: none).
	Log *zap.Logger
}

// Store is a KV in a Redis server shared by every replica.
//
// A record is stored as bolt stores it (store/internal/record), an 8-byte
// big-endian expiry (unix nanoseconds, 0 for none) then the payload, and a
// record with a ttl also carries Redis' own PX expiry. The header is what Get, Scan and Update
// judge by, so an injected clock works; PX makes Redis reclaim the memory.
type Store struct {
	c      *goredis.Client
	prefix string
	now    func() time.Time
	log    *zap.Logger

	// The key index (index.go): the sorted set, the repair's claim, how
	// often the repair runs, and how a Scan wakes it.
	index, claim string
	every        time.Duration
	wake         chan struct{}
	stopIndex    context.CancelFunc

	mu     sync.Mutex
	closed bool
	subs   map[int]func() // stop functions of the live subscriptions
	nextID int
	wg     sync.WaitGroup // subscription forwarders
}

// Open configures a client for a redis:// or rediss:// URL (user,
// password and db as goredis.ParseURL reads them, plus an optional prefix query
// parameter). It does not contact Redis: a Redis that is down at start-up is
// an unavailable store, reported by Ping and recovered from by itself, not a
// reason to refuse to start. Only a malformed URL is an error.
func Open(ctx context.Context, rawURL string, o Options) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, password included; keep only its reason.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store: STORE_URL is not a valid URL: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("store: STORE_URL %s: want redis:// or rediss://", u.Redacted())
	}
	q := u.Query()
	prefix := o.Prefix
	if prefix == "" {
		prefix = q.Get("prefix")
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	q.Del("prefix")
	u.RawQuery = q.Encode()
	opt, err := goredis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("store: STORE_URL %s: %v", u.Redacted(), err)
	}

	// Explicit options win over the URL's, which win over these defaults.
	opt.DialTimeout = firstPositive(o.DialTimeout, opt.DialTimeout, time.Second)
	opt.ReadTimeout = firstPositive(o.ReadTimeout, opt.ReadTimeout, time.Second)
	opt.WriteTimeout = firstPositive(o.WriteTimeout, opt.WriteTimeout, time.Second)
	opt.PoolSize = firstPositive(o.PoolSize, opt.PoolSize, 0)
	// Waiting longer for a pooled connection than for a reply would let a
	// stalled Redis queue callers up beyond the read timeout.
	opt.PoolTimeout = firstPositive(opt.PoolTimeout, opt.ReadTimeout)
	// One retry absorbs a connection Redis closed while idle; more would
	// multiply the time an outage takes to surface.
	opt.MaxRetries = 1
	opt.DialerRetries = 1
	// Callers' deadlines (request timeouts) cut Redis calls short too.
	opt.ContextTimeoutEnabled = true

	now := o.Now
	if now == nil {
		now = time.Now
	}
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	r := &Store{c: goredis.NewClient(opt), prefix: prefix, now: now, log: log, subs: map[int]func(){},
		// Under the prefix, so that an ACL that confines the app to its
		// prefix covers them; the NUL keeps them apart from every record.
		index: prefix + IndexName, claim: prefix + claimName,
		every: cmp.Or(o.ReindexEvery, reindexEvery), wake: make(chan struct{}, 1)}
	ictx, cancel := context.WithCancel(context.Background())
	r.stopIndex = cancel
	if r.every > 0 {
		r.wg.Go(func() { r.reindexLoop(ictx) })
	}
	return r, nil
}

func firstPositive[T int | time.Duration](vs ...T) T {
	for _, v := range vs {
		if v > 0 {
			return v
		}
	}
	return 0
}

// fail classifies an error from go-redis. Anything that kept Redis from
// answering (network, timeouts, a full pool, a closed client, Redis refusing
// to serve: loading, read-only, auth, OOM…) is store.ErrUnavailable, so the server
// answers 503 and /readyz reports it. The exceptions are the caller giving
// up, and a reply about the data itself (WRONGTYPE: a foreign key under our
// prefix).
func (r *Store) fail(ctx context.Context, op string, err error) error {
	if (errors.Is(err, context.Canceled) && ctx.Err() != nil) || goredis.HasErrorPrefix(err, "WRONGTYPE") {
		return fmt.Errorf("store: redis %s: %w", op, err)
	}
	return fmt.Errorf("%w: redis %s: %w", store.ErrUnavailable, op, err)
}

// decode splits a stored record into its expiry and payload.
func decode(key, raw string) (expires int64, payload []byte, err error) {
	expires, p, ok := record.Decode(raw)
	if !ok {
		return 0, nil, fmt.Errorf("store: redis record %q is corrupt (%d bytes)", key, len(raw))
	}
	return expires, []byte(p), nil
}

// px is ttl in whole milliseconds for Redis' PX, rounded up so that Redis
// never drops a record before its header says it expires.
func px(ttl time.Duration) int64 {
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// Get returns the value stored under key, or store.ErrNotFound.
func (r *Store) Get(ctx context.Context, key string) ([]byte, error) {
	raw, err := r.c.Get(ctx, r.prefix+key).Result()
	if errors.Is(err, goredis.Nil) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, r.fail(ctx, "get "+strconv.Quote(key), err)
	}
	expires, payload, err := decode(key, raw)
	if err != nil {
		return nil, err
	}
	if !record.Live(expires, r.now()) {
		return nil, store.ErrNotFound
	}
	return payload, nil
}

// Put stores value under key, replacing any record and its ttl.
func (r *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkKey(key, ttl); err != nil {
		return err
	}
	// go-redis sends PX (or EX for whole seconds); 0 means no expiry. The
	// index learns the key in the same transaction (one round trip).
	_, err := r.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, r.prefix+key, record.Encode(value, ttl, r.now()), time.Duration(px(ttl))*time.Millisecond)
		p.ZAdd(ctx, r.index, goredis.Z{Member: key})
		return nil
	})
	if err != nil {
		return r.fail(ctx, "put "+strconv.Quote(key), err)
	}
	return nil
}

// casScript writes KEYS[1] only if it still holds what Update read: ARGV[1]
// is "1" when a record was read, ARGV[2] its exact bytes. ARGV[3] is the new
// PX in ms (0: none, -1: delete), ARGV[4] the new record. KEYS[2] is the
// index, ARGV[5] the key's member there. It returns 1 when it wrote, 0 on a
// conflict.
var casScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
	if cur ~= ARGV[2] then return 0 end
elseif cur then
	return 0
end
local ms = tonumber(ARGV[3])
if ms < 0 then
	redis.call('DEL', KEYS[1])
	redis.call('ZREM', KEYS[2], ARGV[5])
	return 1
elseif ms == 0 then
	redis.call('SET', KEYS[1], ARGV[4])
else
	redis.call('SET', KEYS[1], ARGV[4], 'PX', ms)
end
redis.call('ZADD', KEYS[2], 0, ARGV[5])
return 1
`)

// Update is optimistic: it reads the record, runs fn without holding
// anything, and writes with casScript only if the record is byte for byte
// what fn saw, else starts over. A script rather than WATCH/MULTI/EXEC
// because it needs no connection pinned for the read-fn-write span (it
// takes the same two round trips) and works the same on Redis Cluster.
// Comparing bytes is safe against ABA: a record carries its expiry and, once
// sealed, a random nonce, so equal bytes mean an unchanged record.
func (r *Store) Update(ctx context.Context, key string, fn store.UpdateFunc) error {
	if err := checkKey(key, 0); err != nil {
		return err
	}
	k := r.prefix + key
	op := "update " + strconv.Quote(key)
	for attempt := range redisUpdateAttempts {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
		raw, err := r.c.Get(ctx, k).Result()
		found := err == nil
		if err != nil && !errors.Is(err, goredis.Nil) {
			return r.fail(ctx, op, err)
		}
		now := r.now()
		var old []byte
		var exists bool
		if found {
			expires, payload, err := decode(key, raw)
			if err != nil {
				return err
			}
			if record.Live(expires, now) {
				old, exists = payload, true
			}
		}

		value, ttl, err := fn(old, exists)
		ms, rec := int64(-1), []byte(nil)
		switch {
		case errors.Is(err, store.Keep):
			return nil // an expired record is left to its PX
		case errors.Is(err, store.Remove):
			if !found {
				return nil
			}
		case err != nil:
			return err // the caller's own error, unchanged
		default:
			if err := record.CheckWrite(key, ttl); err != nil {
				return err
			}
			ms, rec = px(ttl), record.Encode(value, ttl, now)
		}

		wrote, err := casScript.Run(ctx, r.c, []string{k, r.index}, found, raw, ms, rec, key).Int()
		if err != nil {
			return r.fail(ctx, op, err)
		}
		if wrote == 1 {
			return nil
		}
	}
	return fmt.Errorf("%w: redis %s: still conflicting after %d attempts", store.ErrUnavailable, op, redisUpdateAttempts)
}

// backoff sleeps a random time below a bound that grows with attempt (to
// 16 ms), so that writers that conflicted once do not collide again in step.
func backoff(ctx context.Context, attempt int) error {
	limit := 250 * time.Microsecond << min(attempt, 6)
	return ctxtime.Sleep(ctx, rand.N(limit))
}

// Delete removes key; a missing key is not an error.
func (r *Store) Delete(ctx context.Context, key string) error {
	if key == "" || !ours(key) {
		return nil // none can exist: writes of them are refused
	}
	_, err := r.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, r.prefix+key)
		p.ZRem(ctx, r.index, key)
		return nil
	})
	if err != nil {
		return r.fail(ctx, "delete "+strconv.Quote(key), err)
	}
	return nil
}

// Scan reads the keys under prefix from the key index (index.go), about 500
// records per round trip, in key order. While the index is not trusted it
// walks the keyspace with SCAN MATCH instead, reading each batch's values
// with one MGET, and wakes the index's rebuild. Keys written during the scan
// may or may not be seen.
func (r *Store) Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	seen := map[string]struct{}{} // what the index delivered before it failed us; SCAN repeats
	ok, err := r.scanIndex(ctx, prefix, seen, fn)
	if ok || err != nil {
		return err
	}
	r.wakeReindex()
	return r.scanKeyspace(ctx, prefix, seen, fn)
}

// scanKeyspace is Scan without the index: SCAN MATCH, which walks every key
// of the database whatever the pattern.
func (r *Store) scanKeyspace(ctx context.Context, prefix string, seen map[string]struct{}, fn func(key string, value []byte) error) error {
	match := globEscape(r.prefix+prefix) + "*"
	op := "scan " + strconv.Quote(prefix)
	var cursor uint64
	for {
		keys, next, err := r.c.Scan(ctx, cursor, match, scanBatch).Result()
		if err != nil {
			return r.fail(ctx, op, err)
		}
		if len(keys) > 0 {
			values, err := r.c.MGet(ctx, keys...).Result()
			if err != nil {
				return r.fail(ctx, op, err)
			}
			now := r.now()
			for i, v := range values {
				raw, ok := v.(string) // nil: deleted since SCAN saw it
				key, mine := strings.CutPrefix(keys[i], r.prefix)
				if _, dup := seen[key]; !ok || !mine || dup || !ours(key) {
					continue
				}
				seen[key] = struct{}{}
				expires, payload, err := decode(key, raw)
				if err != nil {
					return err
				}
				if !record.Live(expires, now) {
					continue
				}
				if err := fn(key, payload); err != nil {
					return err
				}
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// globEscape quotes the characters SCAN MATCH treats as a pattern, so that
// a prefix like "a*" or "a[1]" matches only itself.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, c := range []byte(s) {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Ping checks that Redis answers.
func (r *Store) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil {
		return r.fail(ctx, "ping", err)
	}
	return nil
}

// Publish implements store.PubSub: msg goes to every current subscriber of
// channel (under the store's prefix), on any replica.
func (r *Store) Publish(ctx context.Context, channel string, msg []byte) error {
	if err := r.c.Publish(ctx, r.prefix+channel, msg).Err(); err != nil {
		return r.fail(ctx, "publish "+strconv.Quote(channel), err)
	}
	return nil
}

// Subscribe implements store.PubSub. It returns once Redis has confirmed the
// subscription, or after the read timeout if Redis does not answer, in which
// case it keeps trying to subscribe in the background (as it does after
// losing its connection); messages published meanwhile are lost. A reader
// that falls far behind loses messages too. gap is called, from the
// delivering goroutine, each time Redis confirms the subscription after
// Subscribe has returned: after a lost connection was restored, or when the
// first confirmation came late.
func (r *Store) Subscribe(ctx context.Context, channel string, gap func()) (msgs <-chan []byte, stop func()) {
	out := make(chan []byte)
	ps := r.c.Subscribe(ctx, r.prefix+channel)
	// Wait for the confirmation, so that a message published after Subscribe
	// returns is delivered; a failure here is retried by go-redis itself.
	_, _ = ps.ReceiveTimeout(ctx, r.c.Options().ReadTimeout)

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		_ = ps.Close()
		close(out)
		return out, func() {}
	}
	id := r.nextID
	r.nextID++
	done := make(chan struct{})
	stop = sync.OnceFunc(func() {
		close(done)
		_ = ps.Close()
		r.mu.Lock()
		delete(r.subs, id)
		r.mu.Unlock()
	})
	unhook := context.AfterFunc(ctx, stop)
	r.subs[id] = stop

	// With subscriptions: go-redis resubscribes by itself after a
	// reconnection, and its confirmation is how a gap shows.
	in := ps.ChannelWithSubscriptions()
	r.wg.Go(func() {
		defer close(out)
		defer unhook() // a stop by hand need not wait for ctx
		for {
			select {
			case m, ok := <-in:
				if !ok {
					return
				}
				msg, isMsg := m.(*goredis.Message)
				if !isMsg {
					if sub, ok := m.(*goredis.Subscription); ok && sub.Kind == "subscribe" && gap != nil {
						gap()
					}
					continue
				}
				select {
				case out <- []byte(msg.Payload):
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	})
	return out, stop
}

// Close ends the subscriptions and closes the client. Later calls fail with
// store.ErrUnavailable; closing twice is harmless.
func (r *Store) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.stopIndex()
	stops := make([]func(), 0, len(r.subs))
	for _, stop := range r.subs {
		stops = append(stops, stop)
	}
	r.mu.Unlock()

	for _, stop := range stops {
		stop()
	}
	r.wg.Wait()
	if err := r.c.Close(); err != nil {
		return fmt.Errorf("store: close redis client: %w", err)
	}
	return nil
}
