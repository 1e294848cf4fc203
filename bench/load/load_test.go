package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10000 * time.Microsecond}} {
		got := h.quantile(tc.q)
		if diff := float64(got-tc.want) / float64(tc.want); diff > 0.008 || diff < -0.008 {
			t.Errorf("q%.2f = %v, want %v within 0.8%%", tc.q, got, tc.want)
		}
	}
	for v := int64(0); v < 1<<20; v = v*5/4 + 1 {
		if i := histIndex(v); histIndex(histValue(i)) != i {
			t.Fatalf("bucket %d of %d does not hold its own middle %d", i, v, histValue(i))
		}
	}
}

func TestReadChunked(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("5\r\n{\"acc\r\n3;x=1\r\ness\r\n0\r\nTrailer: a\r\n\r\nNEXT"))
	b, err := readChunked(r, nil)
	if err != nil || string(b) != `{"access` {
		t.Fatalf("got %q, %v", b, err)
	}
	if rest, _ := r.ReadString(0); rest != "NEXT" {
		t.Fatalf("left %q after the body", rest)
	}
}

func TestCommandArgv(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"node bench/peer/server.mjs", []string{"node", "bench/peer/server.mjs"}},
		{"cd bench/peer && node server.mjs", []string{"/bin/sh", "-c", "cd bench/peer && node server.mjs"}},
		{"UV_THREADPOOL_SIZE=2 node server.mjs", []string{"/bin/sh", "-c", "UV_THREADPOOL_SIZE=2 node server.mjs"}},
	} {
		if got := commandArgv(tc.cmd); !slices.Equal(got, tc.want) {
			t.Errorf("commandArgv(%q) = %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

// prevResults is the end of a RESULTS.md written before the HTTP floor
// existed (the blocks are copied from such a file, shortened).
const prevResults = "# Load benchmark results\n\n" + dataOpen + `{
  "date": "2026-11-22T19:42:47Z",
  "machine": {"cpu": "test cpu", "cores": 2, "commit": "4d4adf9"},
  "command": "go run ./bench/load -compare -duration 10s -results",
  "bare_verify": {"cpu_us": 24.454, "wall_us": 24.452, "iterations": 2800},
  "runs": [
    {"name": "forge-remote", "requests": 166501, "rps": 16647.152804714606, "server_cpu_us_per_req": 92.73217578272804, "p99_ms": 13.27104},
    {"name": "node-peer", "requests": 59001, "rps": 5895.516348054198, "server_cpu_us_per_req": 209.48797478008848}
  ],
  "ratios": {"rps_ours_over_peer": 2.82369716610301},
  "targets": []
}` + commentEnd + "\n" + historyOpen + `[
  {
    "date": "2026-11-22T19:42:47Z",
    "commit": "4d4adf9",
    "command": "go run ./bench/load -compare -duration 10s -results",
    "ours_rps": 16647.152804714606,
    "peer_rps": 5895.516348054198,
    "ours_cpu_us": 92.73217578272804,
    "peer_cpu_us": 209.48797478008848,
    "verify_us": 24.454,
    "ours_p99_ms": 13.27104,
    "peer_p99_ms": 23.527424,
    "ours_rss_mib": 26.921875,
    "peer_rss_mib": 157.5703125,
    "ours_ready_ms": 12.089192,
    "peer_ready_ms": 220.473123,
    "loadavg": "0.95 1.85 1.43",
    "note": "before the floor"
  }
]` + commentEnd + "\n"

// TestResultsWithFloor writes RESULTS.md over one from before the HTTP floor
// existed, from a made-up report with a floor run: the floor counts in no
// ratio, the older rows read "—" for it, and the blocks read back.
func TestResultsWithFloor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := os.WriteFile(path, []byte(prevResults), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &report{
		Machine: machine{CPU: "test cpu", Cores: 2},
		Command: "go run ./bench/load -compare",
		Config: runConfig{Duration: "10s", Warmup: "2s", Conns: 64, Users: 300, Installs: 4, Pool: 20000, Store: "bolt", AppToken: true,
			GC: []gcSetting{{Name: "GOGC", Value: "200", From: "environment"}, {Name: "GOMEMLIMIT", Value: "40MiB", From: "Dockerfile"}}},
		BareVerify: verifyFigures{CPUMicros: 25, WallMicros: 25, Iterations: 2800},
		Runs: []runResult{
			{Name: "forge-remote", Requests: 1000, RPS: 20000, ServerCPUMicrosPerReq: 63, CPUPerVerify: 2.52},
			{Name: "node-peer", Requests: 1000, RPS: 6000, ServerCPUMicrosPerReq: 210, CPUPerVerify: 8.4},
			{Name: floorName, Requests: 1000, RPS: 40000, ServerCPUMicrosPerReq: 21, CPUPerVerify: 0.84},
		},
	}
	rep.finish()
	if rep.Floor == nil || rep.Floor.PlusVerifyMicros != 46 || rep.Floor.PerVerify != 46.0/25 {
		t.Fatalf("floor figures %+v, want 46 µs = 1.84×", rep.Floor)
	}
	if rep.Ratios == nil || rep.Ratios.RPS != 20000.0/6000 {
		t.Fatalf("ratios %+v: the floor must not count", rep.Ratios)
	}
	if err := rep.floorProblems(); err != nil {
		t.Fatal(err)
	}
	if err := writeResults(path, ".", rep, "floor test"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{
		"| figure | forge-remote | node-peer | ratio | http-floor |",
		"| server CPU per request (µs) | 63.0 | 210.0 | 3.33× peer/ours | 21.0 |",
		"HTTP floor + bare verify = 46.0 µs = 1.84× bare verify",
		"| 21.0 | 1.84× |",                 // this run's history row
		"| 92.7 | 3.79× | — | — | 13.27 |", // a run from before the floor
		"| http-floor CPU per request | — | 21.0 µs | — |",
		"forge-remote and the HTTP floor ran with GOGC=200 (environment), GOMEMLIMIT=40MiB (Dockerfile): the image's",
		"The previous run recorded no Go GC settings",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("RESULTS.md lacks %q:\n%s", want, doc)
		}
	}
	var got report
	if s, ok := section(doc, dataOpen); !ok || json.Unmarshal([]byte(s), &got) != nil || got.run(floorName).RPS != 40000 {
		t.Errorf("data block does not read back with the floor run")
	}
	if !slices.Equal(got.Config.GC, rep.Config.GC) {
		t.Errorf("data block's GC settings %+v, want %+v", got.Config.GC, rep.Config.GC)
	}
	var table strings.Builder
	rep.writeTable(&table)
	if want := "\nGo GC of forge-remote and the HTTP floor: GOGC=200 (environment), GOMEMLIMIT=40MiB (Dockerfile)\n"; !strings.Contains(table.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, &table)
	}
	var hist []historyEntry
	if s, ok := section(doc, historyOpen); !ok || json.Unmarshal([]byte(s), &hist) != nil || len(hist) < 2 || hist[0].FloorCPU != 21 || hist[1].FloorCPU != 0 {
		t.Errorf("history does not read back: %+v", hist)
	}

	// The next run says when the GC settings changed, and only then.
	const differ = "The Go GC settings differ from the previous run's (GOGC=200 GOMEMLIMIT=40MiB)"
	rep.Config.GC[0] = gcSetting{Name: "GOGC", Value: "400", From: "Dockerfile"}
	for i, want := range []bool{true, false} {
		if err := writeResults(path, ".", rep, "GC test"); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(b), "GC settings differ"); got != want {
			t.Errorf("write %d: says the GC settings differ: %v, want %v", i+2, got, want)
		}
		if want && !strings.Contains(string(b), differ) {
			t.Errorf("write %d lacks %q", i+2, differ)
		}
	}

	rep.Runs[2].Non2xx, rep.Runs[2].Statuses = 5, map[int]int64{401: 5}
	if rep.floorProblems() == nil {
		t.Error("a floor with non-2xx answers passed")
	}
}

// TestBuildLikeTheImage: the binaries under test are built with the
// Dockerfile's flags, so that the figures are those of what ships.
func TestBuildLikeTheImage(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^RUN CGO_ENABLED=0 .*go build (.*) -o `).FindSubmatch(b)
	if line == nil {
		t.Fatal("no `RUN CGO_ENABLED=0 … go build … -o` line in the Dockerfile")
	}
	got := strings.ReplaceAll(string(line[1]), `"`, "")
	if want := strings.Join(imageBuildFlags, " "); got != want {
		t.Errorf("Dockerfile builds with %q, bench/load with %q", got, want)
	}
}

// TestMemoryTarget: a run at the target's size judges its peak RSS against
// 10⁸ bytes; a smaller run says it did not measure it.
func TestMemoryTarget(t *testing.T) {
	judgeWith := func(c runConfig, peakMiB float64) (target, bool) {
		rep := &report{
			Config: c,
			Runs:   []runResult{{Name: "forge-remote", Requests: 1, PeakRSSMiB: peakMiB}},
		}
		rep.finish()
		for _, tg := range rep.Targets {
			if tg.Goal == memoryGoal || tg.Goal == chatMemoryGoal {
				return tg, true
			}
		}
		return target{}, false
	}
	judge := func(users, installs int, peakMiB float64) (target, bool) {
		return judgeWith(runConfig{Users: users, Installs: installs, AppToken: true}, peakMiB)
	}
	if tg, ok := judge(100_000, 10_000, 95.3); !ok || !tg.Met || tg.Value != "99.9 MB (95.3 MiB) peak" {
		t.Errorf("95.3 MiB: %+v %v", tg, ok)
	}
	if tg, ok := judge(100_000, 10_000, 95.5); !ok || tg.Met {
		t.Errorf("95.5 MiB (100.1 MB): %+v %v", tg, ok)
	}
	if tg, ok := judge(300, 4, 50); ok {
		t.Errorf("a 300-user run judged the memory target: %+v", tg)
	}
	// With 200,000 page chats opened first, the goal is 150 MB (143.1 MiB).
	chats := runConfig{Users: 100_000, Installs: 10_000, AppToken: true, Chats: 200_000}
	if tg, ok := judgeWith(chats, 143.0); !ok || !tg.Met || tg.Goal != chatMemoryGoal {
		t.Errorf("200,000 chats at 143.0 MiB: %+v %v", tg, ok)
	}
	if tg, ok := judgeWith(chats, 143.2); !ok || tg.Met {
		t.Errorf("200,000 chats at 143.2 MiB (150.2 MB): %+v %v", tg, ok)
	}
	// Without app tokens the installations hold nothing; a smoke is a smoke.
	for _, c := range []runConfig{{Users: 100_000, Installs: 10_000}, {Users: 100_000, Installs: 10_000, AppToken: true, Smoke: true}} {
		if tg, ok := judgeWith(c, 50); ok {
			t.Errorf("%+v judged the memory target: %+v", c, tg)
		}
	}
}

// TestChatsFlag: -chats is parsed and checked; the smoke opens 100 chats
// unless told otherwise.
func TestChatsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		err  string
	}{
		{nil, 0, ""},
		{[]string{"-chats", "200000"}, 200_000, ""},
		{[]string{"-smoke"}, 100, ""},
		{[]string{"-smoke", "-chats", "0"}, 0, ""},
		{[]string{"-smoke", "-chats", "7"}, 7, ""},
		{[]string{"-chats", "-1"}, 0, "-chats must not be negative"},
		{[]string{"-chats", "5", "-cmd", "node bench/peer/server.mjs"}, 0, "a -cmd server does not serve them"},
		{[]string{"-chats", "many"}, 0, "invalid value"},
	} {
		var stderr strings.Builder
		o, err := parseFlags(tc.args, &stderr)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one saying %q", tc.args, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case o.chats != tc.want:
			t.Errorf("%q: -chats %d, want %d", tc.args, o.chats, tc.want)
		}
	}
}

// TestChatPages: every chat of a run names its own page, and the chat FITs'
// cache reads back what was written.
func TestChatPages(t *testing.T) {
	seen := map[string]bool{}
	for i := range 1000 {
		if p := chatPage(i); seen[p] || !digitsOnly(p) {
			t.Fatalf("chat %d: page %q repeated or not numeric", i, p)
		}
		seen[chatPage(i)] = true
	}
	path := filepath.Join(t.TempDir(), "chat.txt")
	f := &chatFITs{Header: chatHeader{poolHeader{Version: poolVersion, Users: 2, N: 2}, "http://127.0.0.1:1234"}, FITs: []string{"a.b.c", "d.e.f"}}
	if err := writeChatFITs(path, f); err != nil {
		t.Fatal(err)
	}
	got, err := readChatFITs(path)
	if err != nil || got.Header != f.Header || !slices.Equal(got.FITs, f.FITs) {
		t.Fatalf("read back %+v, %v; want %+v", got, err, f)
	}
	if id, _, ok := checkUserToken(benchUserToken(3)); !ok || id != accountID(3) {
		t.Errorf("user token of user 3 reads back as %q, %v", id, ok)
	}
	if _, _, ok := checkUserToken("simuser.x"); ok {
		t.Error("another token read as a bench user's")
	}
}

func digitsOnly(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// TestCommandLineTMPDIR: a run made with TMPDIR says so in its command.
func TestCommandLineTMPDIR(t *testing.T) {
	if got, want := commandLine([]string{"-chats", "5"}, "/dev/shm"), "TMPDIR=/dev/shm go run ./bench/load -chats 5"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := commandLine([]string{"-note", "a b"}, ""), "go run ./bench/load -note 'a b'"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
