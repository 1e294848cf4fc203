package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/store/internal/record"
)

// The key index. SCAN MATCH walks the whole keyspace whatever the pattern,
// so a Scan of one installation's leases cost as much as a Scan of
// everything: about a second at 800,000 keys, run for each installation
// every hour (leases, profile sync) and at each uninstall. With 10,000
// installations that is more scanning than an hour holds.
//
// So the store keeps a sorted set of every key it holds (the index: member
// the key without the store's prefix, score 0), written in the same
// MULTI/EXEC or script as the record, and a Scan reads it with ZRANGEBYLEX:
// O(log n + m) for the m keys under the prefix.
//
// The index is only trusted while it carries its marker, the empty member
// (no key is empty). Reindex writes the marker once every key of the
// keyspace is in the index; until then, and whenever the marker is gone
// (the index evicted under maxmemory, a FLUSHDB, a restart without
// persistence), Scan walks the keyspace as before and wakes the rebuild.
//
// What the index cannot see by itself:
//   - keys that expire (PX) or that a previous version deleted leave their
//     member behind: a Scan that meets one removes it (atomically, only if
//     the key is still gone), and so does the hourly repair;
//   - keys written by a previous version during a rolling upgrade have no
//     member: the hourly repair adds them. Until it runs they are missed by
//     Scan (a lease pruned, a purge finished, an hour later).
//
// The scripts touch keys they do not declare (the records named by the
// index): fine on one Redis server, which is what this store connects to,
// not on Redis Cluster.

const (
	// IndexName is the index's key, after the store's prefix. Keys with a
	// NUL are the store's own (another store's too, whose prefix extends
	// this one's): writes of such keys are refused, deletes are no-ops,
	// and a walk of the keyspace or of the index passes them by.
	IndexName = "\x00index"
	claimName = "\x00index-claim" // the repair's claim, after the prefix
	reserved  = "\x00"
	// scanBatch is how many keys a Scan reads per round trip.
	scanBatch = 500
	// reindexEvery is how often, across replicas, the index is repaired.
	reindexEvery = time.Hour
	// reindexLease bounds a repair's claim, should its replica die.
	reindexLease = 10 * time.Minute
)

// scanIndexScript reads one batch of the index and the records it names.
// KEYS[1] is the index; ARGV: min, max (ZRANGEBYLEX bounds), count, the
// store's key prefix, and "1" to return values. It returns nil when the index
// lacks its marker, else {more, last member, key, value, key, value…} (no
// values when ARGV[5] is not "1"); members whose key is gone are removed.
var scanIndexScript = goredis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], '') then return false end
local count = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, count)
local n = #members
local out = {n == count and 1 or 0, members[n] or ''}
if n == 0 then return out end
local keys = {}
for i, m in ipairs(members) do keys[i] = ARGV[4] .. m end
local values = redis.call('MGET', unpack(keys))
for i, m in ipairs(members) do
	local v = values[i]
	if v then
		out[#out + 1] = m
		if ARGV[5] == '1' then out[#out + 1] = v end
	elseif redis.call('EXISTS', keys[i]) == 0 then
		redis.call('ZREM', KEYS[1], m)
	end
end
return out
`)

// indexKeysScript adds to the index KEYS[1] those of the keys ARGV[2:] that
// still hold a record (a string), as members without the prefix ARGV[1]. It
// returns how many were missing from the index.
var indexKeysScript = goredis.NewScript(`
local plen = #ARGV[1]
local added = 0
for i = 2, #ARGV do
	if redis.call('TYPE', ARGV[i]).ok == 'string' then
		added = added + redis.call('ZADD', KEYS[1], 0, string.sub(ARGV[i], plen + 1))
	end
end
return added
`)

// afterWalk, when set (by a test), runs between Reindex's walk of the
// keyspace and its marking of the index.
var afterWalk func()

// markIndexScript writes the marker in the index KEYS[1] if the build's
// sentinel ARGV[1] is still there, and removes the sentinel. 1: marked.
var markIndexScript = goredis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], 0, '')
return 1
`)

// claimReindexScript claims the repair for ARGV[1] ms: not while another
// replica runs one (0), nor within the hour after one finished unless the
// index lost its marker since (-1). KEYS: the claim, the index. 1: claimed.
var claimReindexScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == 'running' then return 0 end
if cur and redis.call('ZSCORE', KEYS[2], '') then return -1 end
redis.call('SET', KEYS[1], 'running', 'PX', ARGV[1])
return 1
`)

// checkKey is record.CheckWrite, and keeps the store's own names for it.
func checkKey(key string, ttl time.Duration) error {
	if strings.Contains(key, reserved) {
		return fmt.Errorf("store: redis keys with a NUL are reserved: %q", key)
	}
	return record.CheckWrite(key, ttl)
}

// ours reports whether key (past the prefix) can be a record: no NUL.
func ours(key string) bool { return !strings.Contains(key, reserved) }

// lexRange returns the ZRANGEBYLEX bounds of the members that start with
// prefix.
func lexRange(prefix string) (lo, hi string) {
	lo = "[" + prefix
	if prefix == "" {
		lo = "[\x01" // no key starts with NUL: not the marker (""), nor a build's sentinel
	}
	// The least string above every string that starts with prefix: drop
	// trailing 0xff bytes (bytes, not runes: TrimRight would take any byte
	// that is no UTF-8 for U+FFFD) and increment the last.
	i := len(prefix)
	for i > 0 && prefix[i-1] == 0xff {
		i--
	}
	if i == 0 {
		return lo, "+"
	}
	return lo, "(" + prefix[:i-1] + string([]byte{prefix[i-1] + 1})
}

// scanIndex walks the keys under prefix through the index, calling fn for
// each live record not in seen (and adding it). ok is false when the index
// is not trusted (no marker), which may happen midway.
func (r *Store) scanIndex(ctx context.Context, prefix string, seen map[string]struct{}, fn func(key string, value []byte) error) (ok bool, err error) {
	op := "scan " + strconv.Quote(prefix)
	lo, hi := lexRange(prefix)
	for {
		res, err := scanIndexScript.Run(ctx, r.c, []string{r.index}, lo, hi, scanBatch, r.prefix, "1").Slice()
		if errors.Is(err, goredis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, r.fail(ctx, op, err)
		}
		if len(res) < 2 {
			return false, errors.New("store: redis " + op + ": short reply from the index")
		}
		more, _ := res[0].(int64)
		last, _ := res[1].(string)
		now := r.now()
		for i := 2; i+1 < len(res); i += 2 {
			key, _ := res[i].(string)
			raw, _ := res[i+1].(string)
			if _, dup := seen[key]; dup || !strings.HasPrefix(key, prefix) || !ours(key) {
				continue
			}
			seen[key] = struct{}{}
			expires, payload, err := decode(key, raw)
			if err != nil {
				return false, err
			}
			if !record.Live(expires, now) {
				continue
			}
			if err := fn(key, payload); err != nil {
				return false, err
			}
		}
		if more == 0 {
			return true, nil
		}
		lo = "(" + last
	}
}

// Reindex makes the index whole: it adds every record of the keyspace that
// lacks its member, then marks the index complete, then removes the members
// whose key is gone. It returns how many members it added and removed. The
// store runs it by itself (once an hour across replicas, and at once when a
// Scan finds the index untrusted); it is exported for tests and tools.
func (r *Store) Reindex(ctx context.Context) (added, removed int, err error) {
	const op = "reindex"
	// A member of this build, lost with the index should the index go
	// during the walk (no key has a NUL, so no Scan meets it).
	sentinel := reserved + "build:" + strconv.FormatUint(rand.Uint64(), 36)
	if err := r.c.ZAdd(ctx, r.index, goredis.Z{Member: sentinel}).Err(); err != nil {
		return 0, 0, r.fail(ctx, op, err)
	}
	defer r.c.ZRem(context.WithoutCancel(ctx), r.index, sentinel) // if it failed before marking
	match := globEscape(r.prefix) + "*"
	var cursor uint64
	for {
		keys, next, err := r.c.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return added, removed, r.fail(ctx, op, err)
		}
		args := make([]any, 0, len(keys)+1)
		args = append(args, r.prefix)
		for _, k := range keys {
			if ours(strings.TrimPrefix(k, r.prefix)) {
				args = append(args, k)
			}
		}
		if len(args) > 1 {
			n, err := indexKeysScript.Run(ctx, r.c, []string{r.index}, args...).Int()
			if err != nil {
				return added, removed, r.fail(ctx, op, err)
			}
			added += n
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if afterWalk != nil {
		afterWalk()
	}
	// The marker only if the index held through the walk: one lost
	// meanwhile (evicted, flushed) lost members of keys already walked.
	marked, err := markIndexScript.Run(ctx, r.c, []string{r.index}, sentinel).Int()
	if err != nil {
		return added, removed, r.fail(ctx, op, err)
	}
	if marked == 0 {
		return added, removed, errors.New("store: redis reindex: the index was lost while it was being built")
	}

	// Members of keys that expired or were deleted by a previous version.
	before, err := r.c.ZCard(ctx, r.index).Result()
	if err != nil {
		return added, removed, r.fail(ctx, op, err)
	}
	lo, hi := lexRange("")
	for {
		res, err := scanIndexScript.Run(ctx, r.c, []string{r.index}, lo, hi, 1000, r.prefix, "0").Slice()
		if errors.Is(err, goredis.Nil) {
			return added, removed, errors.New("store: redis reindex: the index lost its marker while being repaired")
		}
		if err != nil {
			return added, removed, r.fail(ctx, op, err)
		}
		if len(res) < 2 || res[0] == int64(0) {
			break
		}
		lo = "(" + res[1].(string)
	}
	after, err := r.c.ZCard(ctx, r.index).Result()
	if err != nil {
		return added, removed, r.fail(ctx, op, err)
	}
	// Writers add and remove meanwhile: the difference is an estimate.
	return added, max(int(before-after), 0), nil
}

// wakeReindex asks the background repair to run now (it still claims it
// first, so that one replica rebuilds).
func (r *Store) wakeReindex() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// reindexLoop repairs the index at start, every reindexEvery (claimed across
// replicas) and when woken, until ctx ends.
func (r *Store) reindexLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
		busy, err := r.claimedReindex(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("store: redis index repair failed; retrying", zap.Error(err))
		}
		t.Reset(r.nextRepair(busy, err))
	}
}

// nextRepair is how long the loop waits after a look that found another
// replica's build running (busy) or failed (err).
func (r *Store) nextRepair(busy bool, err error) time.Duration {
	wait := r.every + rand.N(r.every/10+1) // replicas drift apart
	switch {
	case err != nil:
		return time.Minute
	case busy:
		// Should that replica die building, its claim lapses after
		// reindexLease, and this one takes over.
		return min(wait, reindexLease+time.Second)
	}
	return wait
}

// claimedReindex runs Reindex if this replica wins the claim; busy: another
// replica is running one.
func (r *Store) claimedReindex(ctx context.Context) (busy bool, err error) {
	won, err := claimReindexScript.Run(ctx, r.c, []string{r.claim, r.index}, reindexLease.Milliseconds()).Int()
	if err != nil {
		return false, r.fail(ctx, "reindex claim", err)
	}
	if won != 1 {
		return won == 0, nil
	}
	start := time.Now()
	added, removed, err := r.Reindex(ctx)
	if err != nil {
		_ = r.c.Del(context.WithoutCancel(ctx), r.claim).Err() // let another replica try
		return false, err
	}
	// The claim now says "done" for most of the period, so that the other
	// replicas' timers find nothing to do.
	if err := r.c.Set(ctx, r.claim, "done", r.every*9/10).Err(); err != nil {
		return false, r.fail(ctx, "reindex claim", err)
	}
	if added > 0 || removed > 0 {
		r.log.Info("store: redis index repaired", zap.Int("added", added), zap.Int("removed", removed),
			zap.Duration("took", time.Since(start)))
	}
	return false, nil
}
