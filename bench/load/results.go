package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// RESULTS.md is written only by a -compare -results run: the figures come
// from the run, never from a hand. The latest report and a compact history are
// kept in HTML comments at the end so the next run can say what changed.

const (
	dataOpen    = "<!-- bench-load-data\n"
	historyOpen = "<!-- bench-load-history\n"
	commentEnd  = "\n-->"
	historyMax  = 30
)

// historyEntry is one past run, compactly.
type historyEntry struct {
	Date         string  `json:"date"`
	Commit       string  `json:"commit"`
	Dirty        bool    `json:"dirty,omitempty"`
	Command      string  `json:"command"`
	OursRPS      float64 `json:"ours_rps"`
	PeerRPS      float64 `json:"peer_rps"`
	OursCPU      float64 `json:"ours_cpu_us"`
	PeerCPU      float64 `json:"peer_cpu_us"`
	Verify       float64 `json:"verify_us"`
	OursP99      float64 `json:"ours_p99_ms"`
	PeerP99      float64 `json:"peer_p99_ms"`
	OursRSS      float64 `json:"ours_rss_mib"`
	PeerRSS      float64 `json:"peer_rss_mib"`
	OursReady    float64 `json:"ours_ready_ms"`
	PeerReady    float64 `json:"peer_ready_ms"`
	FloorRPS     float64 `json:"floor_rps,omitempty"`    // 0: no HTTP floor in that run
	FloorCPU     float64 `json:"floor_cpu_us,omitempty"` // 0: no HTTP floor in that run
	LoadAvgStart string  `json:"loadavg"`
	Note         string  `json:"note,omitempty"`
}

func (r *report) run(name string) runResult {
	for _, x := range r.Runs {
		if x.Name == name {
			return x
		}
	}
	return runResult{}
}

func entryOf(r *report, note string) historyEntry {
	o, p, f := r.run("forge-remote"), r.run("node-peer"), r.run(floorName)
	return historyEntry{
		Date: r.Date, Commit: r.Machine.Commit, Dirty: r.Machine.Dirty, Command: r.Command,
		OursRPS: o.RPS, PeerRPS: p.RPS, OursCPU: o.ServerCPUMicrosPerReq, PeerCPU: p.ServerCPUMicrosPerReq,
		Verify: r.BareVerify.CPUMicros, OursP99: o.P99Ms, PeerP99: p.P99Ms, OursRSS: o.PeakRSSMiB,
		PeerRSS: p.PeakRSSMiB, OursReady: o.StartToReadyMs, PeerReady: p.StartToReadyMs,
		FloorRPS: f.RPS, FloorCPU: f.ServerCPUMicrosPerReq, LoadAvgStart: r.Machine.LoadAvg, Note: note,
	}
}

func section(doc, open string) (string, bool) {
	i := strings.Index(doc, open)
	if i < 0 {
		return "", false
	}
	rest := doc[i+len(open):]
	j := strings.Index(rest, commentEnd)
	if j < 0 {
		return "", false
	}
	return rest[:j], true
}

func writeResults(path, root string, r *report, note string) error {
	var prev *report
	var history []historyEntry
	if b, err := os.ReadFile(path); err == nil {
		doc := string(b)
		if s, ok := section(doc, dataOpen); ok {
			prev = new(report)
			if json.Unmarshal([]byte(s), prev) != nil {
				prev = nil
			}
		}
		if s, ok := section(doc, historyOpen); ok {
			_ = json.Unmarshal([]byte(s), &history)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	history = append([]historyEntry{entryOf(r, note)}, history...)
	if len(history) > historyMax {
		history = history[:historyMax]
	}

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	m := r.Machine
	p("# Load benchmark results\n\n")
	p("Written by `bench/load -compare -results` from the run it just made: every figure below was measured\n")
	p("by the tool, none typed in. See `bench/README.md` for what each figure means.\n\n")
	p("Latest run: %s, commit `%s`%s.\n\n", r.Date, orDash(m.Commit), map[bool]string{true: " with uncommitted changes", false: ""}[m.Dirty])
	p("Reproduce from the module root (on a quiet machine):\n\n```sh\n%s\n```\n\n", r.Command)
	p("## Machine\n\n")
	p("- CPU: %s, %d cores (the load generator runs on the same cores as the server)\n", orDash(m.CPU), m.Cores)
	p("- Linux %s, %s, Node %s\n", orDash(m.Kernel), m.GoVersion, orDash(m.NodeVersion))
	p("- load average when the run started: %s\n\n", orDash(m.LoadAvg))
	c := r.Config
	p("## Configuration\n\n")
	p("`POST /resolvers/token` with `{\"refresh\":false}`, %d keep-alive connections, %s measured per server after a\n", c.Conns, c.Duration)
	p("per-user warm-up and %s of unmeasured load; %d distinct FITs (RS256, 2048-bit) over %d users on %d sites,\n", c.Warmup, c.Pool, c.Users, c.Installs)
	store := c.Store
	switch {
	case c.Store == "bolt" && c.TempDir != "":
		store += " (its file in TMPDIR=" + c.TempDir + ")"
	case c.Store == "redis":
		store += " (a redis-server of its own for each server, started by the tool, nothing persisted)"
	}
	p("a different FIT on each request; app token header: %v; forge-remote store: %s. The servers run one after\n", c.AppToken, store)
	if r.Floor != nil {
		p("the other, forge-remote first, then the node peer, then the HTTP floor: `bench/floor`, net/http + Gin with the same\n")
		p("server limits and no middleware, reading each request and answering a constant token, with no verification.\n")
		p("The floor is what the HTTP stack alone costs on these requests, not a server anyone should run; it counts in\n")
		p("no ratio and no target.\n\n")
	} else {
		p("the other, forge-remote first.\n\n")
	}
	if c.Chats > 0 {
		p("Before the load, forge-remote's users opened %d distinct page chats (`POST /resolvers/chat` with the user's FIT and\n", c.Chats)
		p("`x-forge-oauth-user` token and `{\"contentId\":…}`, chat i by user i mod %d on that user's site): each a Confluence check as\n", c.Users)
		p("the user (simulated in the load tool, not counted in the server's RSS), the app provisioned in Weavy, the member\n")
		p("added, the user put in the site's directory. Their peak RSS counts in forge-remote's. The peer and the floor open none.\n")
		p("Their page checks spent from the Confluence budget as %s.\n\n", orDash(c.ChatBudget))
	}
	if len(c.GC) > 0 {
		p("%s ran with %s: the image's Go GC settings, unless the tool's environment set others.\n\n",
			r.gcServers(), gcLine(c.GC))
	}
	p("Bare RS256 verify (sha256 + `rsa.VerifyPKCS1v15`, one thread, median of rounds): **%.1f µs CPU** (%.1f µs wall, %d iterations%s).\n\n",
		r.BareVerify.CPUMicros, r.BareVerify.WallMicros, r.BareVerify.Iterations, r.BareVerify.spread())
	p("## Figures\n\n")
	for i, cells := range r.rows() {
		p("| %s |\n", strings.Join(cells, " | "))
		if i == 0 {
			p("|%s\n", strings.Repeat(" --- |", len(cells)))
		}
	}
	if line := r.floorLine(); line != "" {
		p("\n%s.\n", line)
	}
	if st := r.run("forge-remote").Store; st != nil {
		p("\n## What forge-remote's store held after the run\n\n")
		for _, line := range st.lines() {
			p("%s\n", line)
		}
		p("\n| record kind | records | key (B, mean) | value (B, mean) | in leaf pages (MB) | share |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, k := range st.Kinds {
			p("| `%s` | %d | %.0f | %.0f | %.1f | %.0f %% |\n", k.Kind, k.Count, k.KeyBytes, k.ValueBytes, k.Bytes()/1e6, 100*k.Bytes()/st.kindBytes())
		}
	}
	if rd := r.run("forge-remote").Redis; rd != nil {
		p("\n## What Redis held after the run\n\n")
		for _, line := range rd.lines() {
			p("%s\n", line)
		}
		p("\n| record kind | keys | key (B, mean) | value (B, mean) | keys + values (MB) | share |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, k := range rd.Kinds {
			p("| `%s` | %d | %.0f | %.0f | %.1f | %.0f %% |\n", k.Kind, k.Count, k.KeyBytes, k.ValueBytes, k.dataBytes()/1e6, 100*k.dataBytes()/rd.dataBytes())
		}
	}
	p("\n## Targets of issue 7 (forge-remote)\n\n| goal | this run | met |\n| --- | --- | --- |\n")
	for _, t := range r.Targets {
		p("| %s | %s | %s |\n", t.Goal, t.Value, map[bool]string{true: "yes", false: "**no**"}[t.Met])
	}
	if !r.MeasuresMemoryTarget() {
		p("\nNot measured by this run: %s\n", memoryGoal)
		p("(`go run ./bench/load -users 100000 -installs 10000 -pool 100000` measures it).\n")
	}

	p("\n## What changed since the previous run\n\n")
	if note != "" {
		p("%s\n\n", note)
	}
	if prev == nil {
		p("No previous run recorded.\n")
	} else {
		pm := prev.Machine
		switch {
		case pm.Commit == "" || m.Commit == "":
			p("Commits unknown.\n")
		case pm.Commit == m.Commit:
			p("Same commit `%s` as the previous run (%s).\n", m.Commit, prev.Date)
		default:
			log := output(root, "git", "log", "--oneline", "--no-decorate", pm.Commit+"..HEAD")
			p("Previous run: %s at `%s`. Commits since:\n\n```\n%s\n```\n", prev.Date, pm.Commit, orDash(log))
		}
		if m.Dirty || pm.Dirty {
			p("\n(Uncommitted changes were present in %s.)\n", map[bool]string{true: "this run", false: "the previous run"}[m.Dirty])
		}
		if pm.CPU != m.CPU || pm.Cores != m.Cores {
			p("\nThe machine differs from the previous run's (%s, %d cores): compare with care.\n", orDash(pm.CPU), pm.Cores)
		}
		if pg := prev.Config.GC; len(c.GC) > 0 {
			switch {
			case len(pg) == 0:
				p("\nThe previous run recorded no Go GC settings (until they were recorded, forge-remote and the floor tuned their GC themselves unless GOGC or GOMEMLIMIT was set): compare with care.\n")
			case !slices.Equal(gcEnv(pg), gcEnv(c.GC)):
				p("\nThe Go GC settings differ from the previous run's (%s): compare with care.\n", strings.Join(gcEnv(pg), " "))
			}
		}
		p("\n| figure | previous | this run | change |\n| --- | --- | --- | --- |\n")
		po, pp := prev.run("forge-remote"), prev.run("node-peer")
		o, pe := r.run("forge-remote"), r.run("node-peer")
		d := func(label string, a, b float64, unit string) {
			p("| %s | %.1f%s | %.1f%s | %s |\n", label, a, unit, b, unit, change(a, b))
		}
		d("forge-remote requests/s", po.RPS, o.RPS, "")
		d("forge-remote CPU per request", po.ServerCPUMicrosPerReq, o.ServerCPUMicrosPerReq, " µs")
		d("forge-remote p99", po.P99Ms, o.P99Ms, " ms")
		d("forge-remote peak RSS", po.PeakRSSMiB, o.PeakRSSMiB, " MiB")
		d("forge-remote start to ready", po.StartToReadyMs, o.StartToReadyMs, " ms")
		d("node-peer requests/s", pp.RPS, pe.RPS, "")
		d("node-peer CPU per request", pp.ServerCPUMicrosPerReq, pe.ServerCPUMicrosPerReq, " µs")
		d("bare verify", prev.BareVerify.CPUMicros, r.BareVerify.CPUMicros, " µs")
		if f := r.run(floorName); f.Requests > 0 {
			pf := prev.run(floorName)
			df := func(label string, a, b float64, unit string) {
				if a == 0 { // the previous run had no floor
					p("| %s | — | %.1f%s | — |\n", label, b, unit)
					return
				}
				d(label, a, b, unit)
			}
			df("http-floor requests/s", pf.RPS, f.RPS, "")
			df("http-floor CPU per request", pf.ServerCPUMicrosPerReq, f.ServerCPUMicrosPerReq, " µs")
		}
	}

	p("\n## History (newest first)\n\n")
	p("| date | commit | ours req/s | peer req/s | ours/peer | ours CPU µs/req | ÷ verify | floor CPU µs/req | floor + verify ÷ verify | ours p99 ms | ours RSS MiB | ours ready ms | note |\n")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, h := range history {
		commit := orDash(h.Commit)
		if h.Dirty {
			commit += "+"
		}
		floorCPU, floorRatio := "—", "—" // runs before the HTTP floor existed
		if h.FloorCPU > 0 {
			floorCPU = fmt.Sprintf("%.1f", h.FloorCPU)
			if h.Verify > 0 {
				floorRatio = fmt.Sprintf("%.2f×", (h.FloorCPU+h.Verify)/h.Verify)
			}
		}
		p("| %s | %s | %.0f | %.0f | %.2f× | %.1f | %.2f× | %s | %s | %.2f | %.1f | %.1f | %s |\n", h.Date, commit, h.OursRPS, h.PeerRPS,
			div(h.OursRPS, h.PeerRPS), h.OursCPU, div(h.OursCPU, h.Verify), floorCPU, floorRatio, h.OursP99, h.OursRSS, h.OursReady,
			strings.ReplaceAll(h.Note, "|", `\|`))
	}

	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	hist, err := json.MarshalIndent(history, "", "  ")
	if err != nil {
		return err
	}
	p("\n%s%s%s\n", dataOpen, data, commentEnd)
	p("%s%s%s\n", historyOpen, hist, commentEnd)
	return writeAtomic(path, []byte(b.String()), 0o644)
}

func change(a, b float64) string {
	if a == 0 {
		return "–"
	}
	return fmt.Sprintf("%+.1f %%", (b-a)/a*100)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
