package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	redisstore "github.com/forge-remote/forge-remote/store/redis"
)

// -store redis: each server run gets a redis-server of its own, started by
// the tool as store/redistest starts one for tests (a free loopback port,
// nothing persisted), and killed when the run ends. Redis is a process of its
// own, so its memory is not in the server's RSS: the tool reads what Redis
// held once the server has stopped, to put beside it.

// redisFigures is read from the run's redis-server after the server stopped.
type redisFigures struct {
	EmptyMiB    float64       `json:"empty_used_mib"` // used_memory once started, before the server: Redis's own
	UsedMiB     float64       `json:"used_mib"`       // used_memory after the run: the keys, values and Redis's structures for them
	PeakUsedMiB float64       `json:"peak_used_mib"`  // used_memory_peak
	RSSMiB      float64       `json:"rss_mib"`        // used_memory_rss after the run
	PeakRSSMiB  float64       `json:"peak_rss_mib"`   // redis-server's VmHWM, over the whole run
	Keys        int           `json:"keys"`           // DBSIZE
	Kinds       []recordsKind `json:"record_kinds"`   // largest first; keys as stored, prefix included
	// The store's key index (store/redis/index.go), one sorted set of every
	// record's key, outside the kinds: its members and MEMORY USAGE.
	IndexMembers int     `json:"index_members"`
	IndexMB      float64 `json:"index_mb"`
}

// redisServer is one redis-server run by the tool.
type redisServer struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
	out    *tailBuffer
	addr   string
	c      *goredis.Client
	empty  int64 // used_memory once ready
}

// redisServerPath is redis-server on PATH, or an error that says so.
func redisServerPath() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("-store redis runs a redis-server, and there is none on PATH (apt-get install redis-server)")
	}
	return bin, nil
}

// startRedis runs a redis-server with its directory under tmp and waits
// until it answers PING, for at most readyTimeout.
func startRedis(ctx context.Context, tmp string, readyTimeout time.Duration) (*redisServer, error) {
	bin, err := redisServerPath()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tmp, "redis-*")
	if err != nil {
		return nil, err
	}
	// A free port can be taken by someone else between probing and binding;
	// try a few before giving up.
	for attempt := 1; ; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		s, err := startRedisOn(ctx, bin, dir, addr, readyTimeout)
		if err == nil || attempt == 3 || ctx.Err() != nil {
			return s, err
		}
	}
}

func startRedisOn(ctx context.Context, bin, dir, addr string, readyTimeout time.Duration) (*redisServer, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	// In the tool's process group (unlike the server under test): a Ctrl-C
	// that ends the tool ends Redis too, even before the tool's own cleanup.
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	s := &redisServer{cmd: cmd, exited: make(chan struct{}), out: &tailBuffer{max: 16 << 10}, addr: addr}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	s.c = goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})

	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		err := s.c.Ping(rctx).Err()
		if err == nil {
			break
		}
		select {
		case <-s.exited:
			err = errors.New("exited before answering PING")
		case <-rctx.Done():
			err = fmt.Errorf("no answer to PING within %v: %w", readyTimeout, err)
		case <-time.After(10 * time.Millisecond):
			continue
		}
		s.stop()
		return nil, fmt.Errorf("redis-server on %s: %w; its output:\n%s", addr, err, s.out)
	}
	mem, err := s.memory(ctx)
	if err != nil {
		s.stop()
		return nil, err
	}
	s.empty = mem.used
	return s, nil
}

// url is forge-remote's STORE_URL for this Redis.
func (s *redisServer) url() string { return "redis://" + s.addr + "/0" }

// stop kills redis-server (nothing in it is kept) and waits for it to exit.
func (s *redisServer) stop() {
	_ = s.c.Close()
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// newStoreKey is a fresh STORE_KEY (base64 of 32 random bytes, as
// store.ParseKey reads it), made for one run and never shown: redis
// requires one, and a key given on the command line would be in the report.
func newStoreKey() string {
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand, Go 1.24+)
	return base64.StdEncoding.EncodeToString(key)
}

// redisMemory is what INFO memory says, in bytes.
type redisMemory struct{ used, peak, rss int64 }

func (s *redisServer) memory(ctx context.Context) (redisMemory, error) {
	info, err := s.c.Info(ctx, "memory").Result()
	if err != nil {
		return redisMemory{}, fmt.Errorf("redis INFO memory: %w", err)
	}
	return parseRedisMemory(info)
}

// parseRedisMemory reads used_memory, used_memory_peak and used_memory_rss
// from INFO memory's "name:value" lines; each must be there.
func parseRedisMemory(info string) (redisMemory, error) {
	var m redisMemory
	fields := map[string]*int64{"used_memory": &m.used, "used_memory_peak": &m.peak, "used_memory_rss": &m.rss}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		p := fields[name]
		if !ok || p == nil {
			continue
		}
		v, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return redisMemory{}, fmt.Errorf("redis INFO memory: %s is %q, not a byte count", name, value)
		}
		*p = v
		delete(fields, name)
	}
	if len(fields) > 0 {
		missing := slices.Sorted(maps.Keys(fields))
		return redisMemory{}, fmt.Errorf("redis INFO memory: no %s", strings.Join(missing, ", "))
	}
	return m, nil
}

// figures reads what Redis holds, with no server writing any more. nil: it
// holds no key, so the server ignored STORE_URL (the Node peer and the HTTP
// floor do).
func (s *redisServer) figures(ctx context.Context) (*redisFigures, error) {
	mem, err := s.memory(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := s.c.DBSize(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redis DBSIZE: %w", err)
	}
	if keys == 0 {
		return nil, nil
	}
	kinds, err := s.kinds(ctx)
	if err != nil {
		return nil, err
	}
	index := redisstore.DefaultPrefix + redisstore.IndexName
	members, err := s.c.ZCard(ctx, index).Result()
	if err != nil {
		return nil, fmt.Errorf("redis ZCARD: %w", err)
	}
	var indexBytes int64
	if members > 0 {
		if indexBytes, err = s.c.MemoryUsage(ctx, index, 0).Result(); err != nil { // SAMPLES 0: every member
			return nil, fmt.Errorf("redis MEMORY USAGE: %w", err)
		}
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	return &redisFigures{EmptyMiB: mib(s.empty), UsedMiB: mib(mem.used), PeakUsedMiB: mib(mem.peak), RSSMiB: mib(mem.rss),
		PeakRSSMiB: mib(treePeakRSS(s.cmd.Process.Pid)), Keys: int(keys), Kinds: kinds,
		IndexMembers: max(int(members)-1, 0), IndexMB: float64(indexBytes) / 1e6}, nil // less its marker
}

// kinds counts the keys by kind (the key past forge-remote's prefix, up to
// its second '/'), with their key and value lengths: every key is a string,
// a record as store/redis writes it (expiry header, sealed value). SCAN
// takes about 1,000 keys a call and one pipeline of STRLEN measures them;
// SCAN may return a key twice, so keys seen are remembered.
func (s *redisServer) kinds(ctx context.Context) ([]recordsKind, error) {
	sums := kindSums{}
	seen := map[string]struct{}{}
	var cursor uint64
	for {
		keys, next, err := s.c.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("redis SCAN: %w", err)
		}
		fresh := keys[:0]
		for _, k := range keys {
			if strings.HasPrefix(k, redisstore.DefaultPrefix+"\x00") {
				continue // the store's own: its key index and the index repair's claim
			}
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				fresh = append(fresh, k)
			}
		}
		if len(fresh) > 0 {
			pipe := s.c.Pipeline()
			lens := make([]*goredis.IntCmd, len(fresh))
			for i, k := range fresh {
				lens[i] = pipe.StrLen(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("redis STRLEN: %w", err)
			}
			for i, k := range fresh {
				// 0: expired since SCAN saw it (a record is never empty).
				if n := lens[i].Val(); n > 0 {
					sums.add(kindOf(strings.TrimPrefix(k, redisstore.DefaultPrefix)), len(k), int(n))
				}
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	return sums.largestFirst(recordsKind.dataBytes), nil
}

// dataBytes is what the kind's keys and values take, without what Redis
// spends on each key besides them.
func (k recordsKind) dataBytes() float64 {
	return float64(k.Count) * (k.KeyBytes + k.ValueBytes)
}

// records is how many keys the kinds count.
func (f *redisFigures) records() int {
	n := 0
	for _, k := range f.Kinds {
		n += k.Count
	}
	return n
}

// dataBytes is what every key and value takes.
func (f *redisFigures) dataBytes() float64 {
	var sum float64
	for _, k := range f.Kinds {
		sum += k.dataBytes()
	}
	return sum
}

// lines says what the figures mean, in words.
func (f *redisFigures) lines() []string {
	out := []string{
		fmt.Sprintf("forge-remote's peak RSS excludes Redis, a process of its own: redis-server's peak RSS was %.1f MiB beside it.", f.PeakRSSMiB),
		fmt.Sprintf("Redis used %.1f MiB after the run (%.1f MiB at its peak, %.1f MiB empty at start), %.1f MiB resident (used_memory_rss).",
			f.UsedMiB, f.PeakUsedMiB, f.EmptyMiB, f.RSSMiB),
	}
	if n := f.records(); n > 0 {
		over := ((f.UsedMiB-f.EmptyMiB)*(1<<20) - f.dataBytes()) / float64(n)
		out = append(out, fmt.Sprintf("%d keys (DBSIZE); their keys and values (expiry header and seal included) take %.1f MB, and Redis %.0f B a key besides (what used memory grew by beyond them, the key index included).",
			f.Keys, f.dataBytes()/1e6, over))
	}
	if f.IndexMembers > 0 {
		out = append(out, fmt.Sprintf("The store's key index (what a Scan reads instead of walking the keyspace): %d members, %.1f MB (MEMORY USAGE), %.0f B a record.",
			f.IndexMembers, f.IndexMB, f.IndexMB*1e6/float64(f.IndexMembers)))
	}
	return out
}
