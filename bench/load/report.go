package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

type report struct {
	Date       string        `json:"date"`
	Machine    machine       `json:"machine"`
	Command    string        `json:"command"`
	Config     runConfig     `json:"config"`
	BareVerify verifyFigures `json:"bare_verify"`
	Runs       []runResult   `json:"runs"`
	Ratios     *ratios       `json:"ratios,omitempty"`
	Floor      *floorFigures `json:"http_floor,omitempty"`
	Targets    []target      `json:"targets"`
}

// floorName is the run of bench/floor: net/http + Gin answering a constant,
// what the HTTP stack alone costs on these requests. It counts in no ratio
// and no target.
const floorName = "http-floor"

// floorFigures is derived from the floor's run and the bare verify: what a
// server on net/http + Gin that only verified the FIT would cost at least.
type floorFigures struct {
	PlusVerifyMicros float64 `json:"floor_plus_verify_us"`
	PerVerify        float64 `json:"floor_plus_verify_per_bare_verify"`
}

type machine struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go"`
	NodeVersion string `json:"node,omitempty"`
	LoadAvg     string `json:"loadavg_at_start"`
	Commit      string `json:"commit,omitempty"`
	Dirty       bool   `json:"dirty,omitempty"`
}

type runConfig struct {
	Duration string `json:"duration"`
	Warmup   string `json:"warmup"`
	Conns    int    `json:"connections"`
	Users    int    `json:"users"`
	Installs int    `json:"installations"`
	Pool     int    `json:"distinct_fits"`
	Chats    int    `json:"page_chats,omitempty"` // opened by forge-remote before the load
	// ChatBudget is the Confluence pool the chats' page checks spent from.
	ChatBudget string `json:"chat_confluence_budget,omitempty"`
	Store      string `json:"store"`
	TempDir    string `json:"tmpdir,omitempty"` // TMPDIR: where the store's bolt file (or Redis's directory) was
	AppToken   bool   `json:"app_token_header"`
	Smoke      bool   `json:"smoke,omitempty"`
	// GC is what forge-remote and the HTTP floor ran with; none for -cmd.
	GC []gcSetting `json:"go_gc,omitempty"`
}

type verifyFigures struct {
	CPUMicros    float64 `json:"cpu_us"` // median of every round
	WallMicros   float64 `json:"wall_us"`
	Iterations   int     `json:"iterations"`
	Rounds       int     `json:"rounds,omitempty"`     // before the first run and after each
	MinCPUMicros float64 `json:"cpu_us_min,omitempty"` // the fastest round
	MaxCPUMicros float64 `json:"cpu_us_max,omitempty"` // the slowest round
}

// spread says over how many rounds the median was taken and their range.
func (v verifyFigures) spread() string {
	if v.Rounds == 0 {
		return ""
	}
	return fmt.Sprintf("; median of %d rounds before and after the runs, %.1f–%.1f µs", v.Rounds, v.MinCPUMicros, v.MaxCPUMicros)
}

type runResult struct {
	Name                  string        `json:"name"`
	Command               string        `json:"command"`
	StartToReadyMs        float64       `json:"start_to_ready_ms"`
	WarmUsers             int           `json:"warm_users"`
	WarmSeconds           float64       `json:"warm_s"`
	WarmWeavyCalls        int           `json:"warm_weavy_calls"`
	Requests              int64         `json:"requests"`
	Seconds               float64       `json:"seconds"`
	RPS                   float64       `json:"rps"`
	P50Ms                 float64       `json:"p50_ms"`
	P90Ms                 float64       `json:"p90_ms"`
	P99Ms                 float64       `json:"p99_ms"`
	P999Ms                float64       `json:"p999_ms"`
	MaxMs                 float64       `json:"max_ms"`
	ServerCPUSecs         float64       `json:"server_cpu_s"`
	ServerCPUMicrosPerReq float64       `json:"server_cpu_us_per_req"`
	CPUPerVerify          float64       `json:"server_cpu_per_bare_verify"`
	GenCPUMicrosPerReq    float64       `json:"loadgen_cpu_us_per_req"`
	PeakRSSMiB            float64       `json:"peak_rss_mib"`
	EndRSSMiB             float64       `json:"end_rss_mib"`  // resident after the run
	EndAnonMiB            float64       `json:"end_anon_mib"` // of which heap and stacks
	EndFileMiB            float64       `json:"end_file_mib"` // of which mapped files (bolt, the binary; on disk or tmpfs)
	WeavyCalls            int           `json:"weavy_calls"`
	JWKSFetches           int64         `json:"jwks_fetches"`
	Non2xx                int64         `json:"non_2xx"`
	BadBodies             int64         `json:"bad_bodies"`
	TransportErrs         int64         `json:"transport_errors"`
	FirstError            string        `json:"first_error,omitempty"`
	Statuses              map[int]int64 `json:"non_2xx_statuses,omitempty"`
	FITReuse              float64       `json:"fit_reuse"`
	// The page chats opened before the load (-chats), forge-remote only.
	ChatOpens      int64   `json:"chat_opens,omitempty"`
	ChatSeconds    float64 `json:"chat_s,omitempty"`
	ChatWeavyCalls int     `json:"chat_weavy_calls,omitempty"`
	ChatChecks     int     `json:"chat_confluence_checks,omitempty"` // as the user, on the simulator
	ChatPeakRSSMiB float64 `json:"chat_peak_rss_mib,omitempty"`      // VmHWM right after the chats
	// The Go runtime's, from the server's /metrics (forge-remote's only).
	GCPerSec    float64 `json:"gc_per_s,omitempty"`      // collections a second during the measured load
	LiveHeapMiB float64 `json:"live_heap_mib,omitempty"` // kept by the last collection, after the load
	GCLimitMiB  float64 `json:"gomemlimit_mib,omitempty"`
	// Store is what the bolt file held after the run (-store bolt).
	Store *storeFigures `json:"store,omitempty"`
	// Redis is what the run's redis-server held after it (-store redis).
	Redis *redisFigures `json:"redis,omitempty"`
}

type ratios struct {
	RPS          float64 `json:"rps_ours_over_peer"`
	CPUPerReq    float64 `json:"cpu_per_req_peer_over_ours"`
	P99          float64 `json:"p99_peer_over_ours"`
	PeakRSS      float64 `json:"peak_rss_peer_over_ours"`
	StartToReady float64 `json:"start_to_ready_peer_over_ours"`
}

// target is one of issue 7's goals, judged on this run (informational: no
// timing is ever asserted by the smoke or the tests).
type target struct {
	Goal  string `json:"goal"`
	Value string `json:"value"`
	Met   bool   `json:"met"`
}

func (r *report) finish() {
	r.Date = time.Now().UTC().Format(time.RFC3339)
	var ours, peer *runResult
	for i := range r.Runs {
		switch r.Runs[i].Name {
		case "forge-remote":
			ours = &r.Runs[i]
		case "node-peer":
			peer = &r.Runs[i]
		}
	}
	if f := r.run(floorName); f.Requests > 0 && r.BareVerify.CPUMicros > 0 {
		sum := f.ServerCPUMicrosPerReq + r.BareVerify.CPUMicros
		r.Floor = &floorFigures{PlusVerifyMicros: sum, PerVerify: sum / r.BareVerify.CPUMicros}
	}
	if ours != nil && peer != nil {
		r.Ratios = &ratios{
			RPS:          div(ours.RPS, peer.RPS),
			CPUPerReq:    div(peer.ServerCPUMicrosPerReq, ours.ServerCPUMicrosPerReq),
			P99:          div(peer.P99Ms, ours.P99Ms),
			PeakRSS:      div(peer.PeakRSSMiB, ours.PeakRSSMiB),
			StartToReady: div(peer.StartToReadyMs, ours.StartToReadyMs),
		}
	}
	if ours == nil {
		return
	}
	if r.Ratios != nil {
		r.Targets = append(r.Targets, target{"requests/s ≥ 5× the Node peer", fmt.Sprintf("%.2f×", r.Ratios.RPS), r.Ratios.RPS >= 5})
	}
	r.Targets = append(r.Targets,
		target{"server CPU per request ≤ 2× bare RS256 verify", fmt.Sprintf("%.2f×", ours.CPUPerVerify), ours.CPUPerVerify > 0 && ours.CPUPerVerify <= 2},
		target{"p99 ≤ 15 ms", fmt.Sprintf("%.2f ms", ours.P99Ms), ours.P99Ms <= 15},
		target{"zero Weavy calls on the warm path", fmt.Sprint(ours.WeavyCalls), ours.WeavyCalls == 0},
		target{"zero non-2xx on the warm path", fmt.Sprint(ours.Non2xx + ours.BadBodies + ours.TransportErrs), ours.Non2xx+ours.BadBodies+ours.TransportErrs == 0},
		target{"start to ready ≤ 300 ms", fmt.Sprintf("%.1f ms", ours.StartToReadyMs), ours.StartToReadyMs <= 300},
	)
	mb := ours.PeakRSSMiB * (1 << 20) / 1e6
	switch {
	case r.MeasuresChatMemoryTarget():
		r.Targets = append(r.Targets, target{chatMemoryGoal, fmt.Sprintf("%.1f MB (%.1f MiB) peak", mb, ours.PeakRSSMiB), mb <= 150})
	case r.MeasuresMemoryTarget():
		r.Targets = append(r.Targets, target{memoryGoal, fmt.Sprintf("%.1f MB (%.1f MiB) peak", mb, ours.PeakRSSMiB), mb <= 100})
	}
}

// memoryGoal is issue 7's memory target. 100 MB is 10⁸ bytes (95.4 MiB).
const memoryGoal = "100,000 cached users and 10,000 installations in ≤ 100 MB RSS"

// chatMemoryGoal is "Nothing left behind"'s: the memory target's users and
// sites, opening page chats too. 150 MB is 1.5×10⁸ bytes (143.1 MiB).
const chatMemoryGoal = "100,000 users on 10,000 sites opening 200,000 page chats in ≤ 150 MB RSS"

// MeasuresChatMemoryTarget: a memory-target run whose users opened at least
// 200,000 page chats first.
func (r *report) MeasuresChatMemoryTarget() bool {
	return r.MeasuresMemoryTarget() && r.Config.Chats >= 200_000
}

// MeasuresMemoryTarget: the run holds at least the users and installations
// of the memory target, each installation with its app token, as Forge sends
// them (its peak RSS is taken over the whole run); a smoke never judges it.
func (r *report) MeasuresMemoryTarget() bool {
	c := r.Config
	return c.AppToken && !c.Smoke && c.Users >= 100_000 && c.Installs >= 10_000
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// gcServers names the runs that had Config.GC.
func (r *report) gcServers() string {
	if r.run(floorName).Name != "" {
		return "forge-remote and the HTTP floor"
	}
	return "forge-remote"
}

// floorLine is the derived figure of the HTTP floor, in words.
func (r *report) floorLine() string {
	if r.Floor == nil {
		return ""
	}
	return fmt.Sprintf("HTTP floor + bare verify = %.1f µs = %.2f× bare verify (the least a server on net/http + Gin can reach with these requests)",
		r.Floor.PlusVerifyMicros, r.Floor.PerVerify)
}

// floorProblems fails a run whose HTTP floor did not answer every request
// with a 2xx: it would have measured some other path than the token answer.
// The floor's other figures (Weavy calls, bodies) are not checked.
func (r *report) floorProblems() error {
	for _, run := range r.Runs {
		switch {
		case run.Name != floorName:
		case run.Requests == 0:
			return fmt.Errorf("%s: no request answered (%s)", run.Name, run.FirstError)
		case run.Non2xx > 0:
			return fmt.Errorf("%s: %d non-2xx answers %v: the floor did not measure the token answer", run.Name, run.Non2xx, run.Statuses)
		}
	}
	return nil
}

// smokeProblems fails a smoke run only when the tool or the warm path broke.
// The HTTP floor is judged by floorProblems alone.
func (r *report) smokeProblems() error {
	var errs []error
	for _, run := range r.Runs {
		if run.Name == floorName {
			continue
		}
		switch {
		case run.Requests == 0:
			errs = append(errs, fmt.Errorf("%s: no request answered (%s)", run.Name, run.FirstError))
		case run.Non2xx > 0:
			errs = append(errs, fmt.Errorf("%s: %d non-2xx answers on the warm path %v", run.Name, run.Non2xx, run.Statuses))
		case run.BadBodies > 0:
			errs = append(errs, fmt.Errorf("%s: %d 2xx answers without a wyu_ token", run.Name, run.BadBodies))
		case run.TransportErrs > 0:
			errs = append(errs, fmt.Errorf("%s: %d transport errors, first: %s", run.Name, run.TransportErrs, run.FirstError))
		}
		if run.WeavyCalls > 0 {
			errs = append(errs, fmt.Errorf("%s: %d Weavy calls during the warm run", run.Name, run.WeavyCalls))
		}
		if c := r.Config.Chats; c > 0 && run.Name == "forge-remote" && (run.ChatOpens != int64(c) || run.ChatChecks < c) {
			errs = append(errs, fmt.Errorf("%s: %d of %d page chats opened, %d Confluence checks", run.Name, run.ChatOpens, c, run.ChatChecks))
		}
	}
	return errors.Join(errs...)
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "POST /resolvers/token · %d connections · %s measured after %s of warm-up · %d distinct FITs over %d users on %d sites · store %s\n",
		c.Conns, c.Duration, c.Warmup, c.Pool, c.Users, c.Installs, c.Store)
	if c.Chats > 0 {
		fmt.Fprintf(w, "forge-remote first opened %d distinct page chats (POST /resolvers/chat), Confluence simulated in the load tool, budget %s\n", c.Chats, orDash(c.ChatBudget))
	}
	m := r.Machine
	fmt.Fprintf(w, "machine: %s · %d cores · linux %s · %s", m.CPU, m.Cores, m.Kernel, m.GoVersion)
	if m.NodeVersion != "" {
		fmt.Fprintf(w, " · node %s", m.NodeVersion)
	}
	fmt.Fprintf(w, " · load avg at start %s\n", m.LoadAvg)
	if len(c.GC) > 0 {
		fmt.Fprintf(w, "Go GC of %s: %s\n", r.gcServers(), gcLine(c.GC))
	}
	fmt.Fprintf(w, "bare RS256 verify (sha256 + rsa.VerifyPKCS1v15, 2048-bit, one thread): %.1f µs CPU (%.1f µs wall)%s\n\n",
		r.BareVerify.CPUMicros, r.BareVerify.WallMicros, r.BareVerify.spread())

	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, cells := range r.rows() {
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	_ = tw.Flush()
	if line := r.floorLine(); line != "" {
		fmt.Fprintf(w, "\n%s\n", line)
	}
	for _, run := range r.Runs {
		if run.FirstError != "" {
			fmt.Fprintf(w, "%s: first transport error: %s\n", run.Name, run.FirstError)
		}
		if len(run.Statuses) > 0 {
			fmt.Fprintf(w, "%s: non-2xx statuses: %v\n", run.Name, run.Statuses)
		}
	}
	if st := r.run("forge-remote").Store; st != nil {
		fmt.Fprintf(w, "\nforge-remote's store after the run:\n")
		for _, line := range st.lines() {
			fmt.Fprintf(w, "  %s\n", line)
		}
		for _, k := range st.Kinds {
			fmt.Fprintf(w, "  %-22s %8d records  key %4.0f B  value %4.0f B  %7.1f MB\n", k.Kind, k.Count, k.KeyBytes, k.ValueBytes, k.Bytes()/1e6)
		}
	}
	if rd := r.run("forge-remote").Redis; rd != nil {
		fmt.Fprintf(w, "\nWhat Redis held after the run:\n")
		for _, line := range rd.lines() {
			fmt.Fprintf(w, "  %s\n", line)
		}
		for _, k := range rd.Kinds {
			fmt.Fprintf(w, "  %-22s %8d keys     key %4.0f B  value %4.0f B  %7.1f MB\n", k.Kind, k.Count, k.KeyBytes, k.ValueBytes, k.dataBytes()/1e6)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\nissue 7 targets for forge-remote (informational):")
		for _, t := range r.Targets {
			mark := "✗"
			if t.Met {
				mark = "✓"
			}
			fmt.Fprintf(w, "  %s %-48s %s\n", mark, t.Goal, t.Value)
		}
	}
}

// machineInfo describes where the figures were measured.
func machineInfo(root string, node bool) machine {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if node {
		m.NodeVersion = output(root, "node", "--version")
	}
	// Read-only git queries: which code was measured.
	m.Commit = output(root, "git", "rev-parse", "--short", "HEAD")
	if m.Commit != "" {
		m.Dirty = output(root, "git", "status", "--porcelain", "--untracked-files=no") != ""
	}
	return m
}

func output(dir string, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func runQuiet(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// commandLine is how to repeat this run from the module root; tmpdir, when
// set, is the TMPDIR it ran with (where the binaries and bolt's file went).
func commandLine(args []string, tmpdir string) string {
	q := make([]string, 0, len(args)+4)
	if tmpdir != "" {
		q = append(q, "TMPDIR="+tmpdir)
	}
	q = append(q, "go", "run", "./bench/load")
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\;&|<>()*?`") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
}

// rows is the figures table: a header, then one row per figure, a column per
// server and, when comparing, the ratio beside the two servers it compares;
// the HTTP floor, when run, comes last, outside the ratio.
func (r *report) rows() [][]string {
	var servers, floors []runResult
	for _, run := range r.Runs {
		if run.Name == floorName {
			floors = append(floors, run)
		} else {
			servers = append(servers, run)
		}
	}
	head := []string{"figure"}
	for _, run := range servers {
		head = append(head, run.Name)
	}
	if r.Ratios != nil {
		head = append(head, "ratio")
	}
	for _, run := range floors {
		head = append(head, run.Name)
	}
	out := [][]string{head}
	row := func(label string, ratio func(*ratios) float64, how string, f func(runResult) string) {
		cells := []string{label}
		for _, run := range servers {
			cells = append(cells, f(run))
		}
		if r.Ratios != nil {
			if ratio != nil {
				cells = append(cells, fmt.Sprintf("%.2f× %s", ratio(r.Ratios), how))
			} else {
				cells = append(cells, "")
			}
		}
		for _, run := range floors {
			cells = append(cells, f(run))
		}
		out = append(out, cells)
	}
	f1 := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	f2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	row("requests/s", func(x *ratios) float64 { return x.RPS }, "ours/peer", func(x runResult) string { return fmt.Sprintf("%.0f", x.RPS) })
	row("latency p50 (ms)", nil, "", func(x runResult) string { return f2(x.P50Ms) })
	row("latency p90 (ms)", nil, "", func(x runResult) string { return f2(x.P90Ms) })
	row("latency p99 (ms)", func(x *ratios) float64 { return x.P99 }, "peer/ours", func(x runResult) string { return f2(x.P99Ms) })
	row("latency p99.9 (ms)", nil, "", func(x runResult) string { return f2(x.P999Ms) })
	row("latency max (ms)", nil, "", func(x runResult) string { return f2(x.MaxMs) })
	row("server CPU per request (µs)", func(x *ratios) float64 { return x.CPUPerReq }, "peer/ours", func(x runResult) string { return f1(x.ServerCPUMicrosPerReq) })
	row("server CPU per request ÷ bare verify", nil, "", func(x runResult) string { return fmt.Sprintf("%.2f×", x.CPUPerVerify) })
	row("load generator CPU per request (µs)", nil, "", func(x runResult) string { return f1(x.GenCPUMicrosPerReq) })
	row("peak RSS (MiB)", func(x *ratios) float64 { return x.PeakRSS }, "peer/ours", func(x runResult) string { return f1(x.PeakRSSMiB) })
	if r.Config.Store == "redis" {
		row("redis-server beside it, not in peak RSS: peak RSS · used after (MiB)", nil, "", func(x runResult) string {
			if x.Redis == nil {
				return "—"
			}
			return f1(x.Redis.PeakRSSMiB) + " · " + f1(x.Redis.UsedMiB)
		})
	}
	row("RSS after the run: anon + file (MiB)", nil, "", func(x runResult) string {
		return f1(x.EndRSSMiB) + " = " + f1(x.EndAnonMiB) + " + " + f1(x.EndFileMiB)
	})
	row("Go GC: collections/s in the load · live heap after (MiB)", nil, "", func(x runResult) string {
		if x.LiveHeapMiB == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f/s · %.1f", x.GCPerSec, x.LiveHeapMiB)
	})
	row("start to ready (ms)", func(x *ratios) float64 { return x.StartToReady }, "peer/ours", func(x runResult) string { return f1(x.StartToReadyMs) })
	row("requests measured", nil, "", func(x runResult) string { return fmt.Sprint(x.Requests) })
	row("uses of each FIT", nil, "", func(x runResult) string { return f2(x.FITReuse) })
	row("non-2xx / bad body / transport errors", nil, "", func(x runResult) string {
		return fmt.Sprintf("%d / %d / %d", x.Non2xx, x.BadBodies, x.TransportErrs)
	})
	row("Weavy calls measured (in warm-up)", nil, "", func(x runResult) string { return fmt.Sprintf("%d (%d)", x.WeavyCalls, x.WarmWeavyCalls) })
	row("JWKS fetches measured", nil, "", func(x runResult) string { return fmt.Sprint(x.JWKSFetches) })
	if r.Config.Chats > 0 {
		chat := func(f func(runResult) string) func(runResult) string {
			return func(x runResult) string {
				if x.ChatOpens == 0 {
					return "—"
				}
				return f(x)
			}
		}
		row("page chats opened before the load (s)", nil, "", chat(func(x runResult) string {
			return fmt.Sprintf("%d (%.1f s)", x.ChatOpens, x.ChatSeconds)
		}))
		row("their Confluence checks / Weavy calls", nil, "", chat(func(x runResult) string {
			return fmt.Sprintf("%d / %d", x.ChatChecks, x.ChatWeavyCalls)
		}))
		row("peak RSS after the chats (MiB)", nil, "", chat(func(x runResult) string { return f1(x.ChatPeakRSSMiB) }))
	}
	return out
}
