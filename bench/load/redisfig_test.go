package main

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/forge-remote/forge-remote/store"
	redisstore "github.com/forge-remote/forge-remote/store/redis"
)

// infoMemory is the start of Redis 7's INFO memory, as it answers it.
const infoMemory = "# Memory\r\nused_memory:914576\r\nused_memory_human:893.14K\r\nused_memory_rss:12042240\r\n" +
	"used_memory_rss_human:11.48M\r\nused_memory_peak:1914576\r\nused_memory_peak_human:1.83M\r\n" +
	"used_memory_peak_perc:102.32%\r\nused_memory_overhead:893464\r\n"

func TestParseRedisMemory(t *testing.T) {
	m, err := parseRedisMemory(infoMemory)
	if err != nil || m != (redisMemory{used: 914576, peak: 1914576, rss: 12042240}) {
		t.Fatalf("parseRedisMemory = %+v, %v", m, err)
	}
	_, err = parseRedisMemory(strings.Replace(infoMemory, "used_memory_rss:", "used_memory_rsx:", 1))
	if err == nil || !strings.Contains(err.Error(), "no used_memory_rss") {
		t.Errorf("INFO without used_memory_rss: %v", err)
	}
	_, err = parseRedisMemory(strings.Replace(infoMemory, "used_memory:914576", "used_memory:lots", 1))
	if err == nil || !strings.Contains(err.Error(), `used_memory is "lots"`) {
		t.Errorf("INFO with a used_memory that is no number: %v", err)
	}
}

func TestStoreFlag(t *testing.T) {
	if o, err := parseFlags([]string{"-store", "redis"}, io.Discard); err != nil || o.store != "redis" {
		t.Errorf("-store redis: %+v, %v", o, err)
	}
	if _, err := parseFlags([]string{"-store", "disk"}, io.Discard); err == nil || !strings.Contains(err.Error(), "-store must be bolt, memory or redis") {
		t.Errorf("-store disk: %v", err)
	}
}

// TestRedisNotOnPath: without redis-server the run stops at once and says
// what is missing.
func TestRedisNotOnPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := run(t.Context(), []string{"-store", "redis", "-cache", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "redis-server") || !strings.Contains(err.Error(), "PATH") {
		t.Fatalf("run without redis-server: %v", err)
	}
}

// TestNewStoreKey: the tool's STORE_KEY is one the server accepts, and
// every run makes its own.
func TestNewStoreKey(t *testing.T) {
	a, b := newStoreKey(), newStoreKey()
	if _, err := store.ParseKey(a); err != nil {
		t.Fatalf("the server refuses the tool's STORE_KEY: %v", err)
	}
	if a == b {
		t.Error("two runs made the same STORE_KEY")
	}
}

// TestRedisFigures starts the tool's redis-server, writes keys as
// store/redis does (strings under its prefix, some with a PX expiry), and
// reads them back by kind; an empty Redis has no figures, and stop ends the
// process.
func TestRedisFigures(t *testing.T) {
	if _, err := redisServerPath(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	tmp := t.TempDir()
	s, err := startRedis(t.Context(), tmp, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "redis-*")); len(dirs) != 1 {
		t.Errorf("redis-server's directories under the tool's temp dir: %q, want one", dirs)
	}
	if f, err := s.figures(t.Context()); f != nil || err != nil {
		t.Fatalf("an empty Redis has figures %+v, %v", f, err)
	}

	p := redisstore.DefaultPrefix
	put := map[string]int{ // key → value length
		p + "chat/lease/i1/a1/u1": 1000, p + "chat/lease/i1/a2/u1": 1200, p + "chat/lease/i2/a1/u9": 1100,
		p + "weavy/u/x": 500, p + "schema/version": 9,
	}
	for k, n := range put {
		ttl := time.Duration(0)
		if strings.Contains(k, "lease") {
			ttl = time.Hour
		}
		if err := s.c.Set(t.Context(), k, strings.Repeat("v", n), ttl).Err(); err != nil {
			t.Fatal(err)
		}
	}
	f, err := s.figures(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if f.Keys != 5 || len(f.Kinds) != 3 || f.records() != 5 {
		t.Fatalf("%d keys in %d kinds, want 5 in 3: %+v", f.Keys, len(f.Kinds), f.Kinds)
	}
	lease := f.Kinds[0]
	if want := float64(len(p + "chat/lease/i1/a1/u1")); lease.Kind != "chat/lease" || lease.Count != 3 || lease.KeyBytes != want || lease.ValueBytes != 1100 {
		t.Errorf("largest kind %+v, want chat/lease: 3 keys, %v B keys (prefix included), 1100 B values", lease, want)
	}
	if f.Kinds[1].Kind != "weavy/u" || f.Kinds[2].Kind != "schema/version" {
		t.Errorf("kinds not largest first: %+v", f.Kinds)
	}
	if f.EmptyMiB <= 0 || f.UsedMiB <= f.EmptyMiB || f.PeakUsedMiB < f.UsedMiB || f.RSSMiB <= 0 || f.PeakRSSMiB <= 0 {
		t.Errorf("memory figures %+v", f)
	}
	if f.IndexMembers != 0 {
		t.Errorf("%d index members without an index", f.IndexMembers)
	}

	// The store's key index and its repair's claim are no records: they are
	// reported apart, the marker not counted.
	index := []goredis.Z{{Member: ""}}
	for k := range put {
		index = append(index, goredis.Z{Member: strings.TrimPrefix(k, p)})
	}
	if err := s.c.ZAdd(t.Context(), p+redisstore.IndexName, index...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.c.Set(t.Context(), p+"\x00index-claim", "done", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if f, err = s.figures(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.Keys != 7 || len(f.Kinds) != 3 || f.records() != 5 || f.IndexMembers != 5 || f.IndexMB <= 0 {
		t.Errorf("with the index: %d keys, %d records in %d kinds, index %d members %.3f MB; want 7 keys, 5 records in 3 kinds, 5 members",
			f.Keys, f.records(), len(f.Kinds), f.IndexMembers, f.IndexMB)
	}

	pid := s.cmd.Process.Pid
	s.stop()
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("redis-server (pid %d) still there after stop", pid)
	}
}

// TestRedisReport: a run with Redis figures says, in the table and in
// RESULTS.md, what Redis held and that the server's peak RSS leaves it out.
func TestRedisReport(t *testing.T) {
	rep := &report{
		Machine: machine{CPU: "test cpu", Cores: 2},
		Config:  runConfig{Duration: "1s", Warmup: "0s", Conns: 1, Users: 1, Installs: 1, Pool: 1, Store: "redis", AppToken: true},
		Runs: []runResult{{Name: "forge-remote", Requests: 1, PeakRSSMiB: 30, Redis: &redisFigures{
			EmptyMiB: 1, UsedMiB: 3, PeakUsedMiB: 4, RSSMiB: 10, PeakRSSMiB: 12.5, Keys: 2,
			Kinds: []recordsKind{{Kind: "chat/lease", Count: 2, KeyBytes: 100, ValueBytes: 900}},
		}}},
	}
	rep.finish()
	var table strings.Builder
	rep.writeTable(&table)
	for _, want := range []string{
		"redis-server beside it, not in peak RSS: peak RSS · used after (MiB)   12.5 · 3.0",
		"What Redis held after the run:",
		"forge-remote's peak RSS excludes Redis, a process of its own: redis-server's peak RSS was 12.5 MiB beside it.",
		"2 keys (DBSIZE); their keys and values (expiry header and seal included) take 0.0 MB, and Redis 1047576 B a key besides",
		"chat/lease                    2 keys     key  100 B  value  900 B      0.0 MB",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, &table)
		}
	}
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := writeResults(path, ".", rep, ""); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"forge-remote store: redis (a redis-server of its own for each server",
		"## What Redis held after the run",
		"| `chat/lease` | 2 | 100 | 900 | 0.0 | 100 % |",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("RESULTS.md lacks %q:\n%s", want, b)
		}
	}
}
