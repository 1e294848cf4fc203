//go:build slow

package confluencescale

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/server"
)

var (
	scaleFlag   = flag.Float64("scale", 0.02, "fraction of the issue's fleet: 1 is 10,000 installations, 1,000,000 known users, 100,000 active a day, 20,000 chat opens an hour and Tier 1's 65,000 points an hour")
	heapFlag    = flag.String("heapprofile", "", "write a heap profile here at the day's end, before the server closes (what holds the peak: go tool pprof -top -inuse_space)")
	logFlag     = flag.Bool("log", false, "print the server's logs (info and up)")
	resultsFile = flag.String("results-file", "", "write the run's figures into this markdown file, between its confluence-scale markers (bench/RESULTS-scale.md)")
)

// The fleet, at scale 1.
const (
	fullInstallations = 10_000
	usersPerInst      = 100 // 1,000,000 known users
	fullActive        = 100_000
	fullOpensPerHour  = 20_000
	fullPoints        = 65_000
	fullBurst         = 100 // requests a second (Jira's published GET rate; Confluence publishes none)
	pagesPerInst      = 20
	newUserShare      = 0.02 // of the day's active users, never seen before: their first sync
	simHours          = 24
)

type params struct {
	scale                                    float64
	installs, active, opensPerHour, newUsers int
	points                                   int64
	burst                                    float64
}

func paramsFor(s float64) params {
	p := params{scale: s,
		installs:     max(int(fullInstallations*s), 1),
		active:       max(int(fullActive*s), 10),
		opensPerHour: max(int(fullOpensPerHour*s), 10),
		points:       max(int64(fullPoints*s), 100),
		burst:        max(fullBurst*s, 10),
	}
	p.newUsers = int(float64(p.active) * newUserShare)
	return p
}

// result is what one run measured.
type result struct {
	p                     params
	hours                 []Hour
	maxPoints, meanPoints int64
	refused429            map[string]int64
	pageChecks            int64
	budgetRefused         map[string]float64 // "kind/reason"
	opens                 map[string]int     // chat answers: status or error code
	oldestActive          time.Duration
	activeNeverSynced     int
	oldestKnown           time.Duration
	knownNeverSynced      int
	knownUsers            int
	maxFirstSync          time.Duration
	heapBaseline          uint64 // after seeding, before the server started
	liveEnd               uint64 // live heap at the day's end, after a GC, before the server closed
	peakHeapInuse         uint64
	peakSys               uint64
	wall                  time.Duration
	resync                time.Duration
}

// TestConfluenceScale runs the real server (server.New, in-process) against
// the Confluence model over a simulated day in a synctest bubble, and
// checks the targets: no hour past the pool, no 429 for the pool,
// no page check refused by the budget, and no active user's profile older
// than PROFILE_RESYNC + 1 h (all synced, the new ones within minutes).
// -scale=1 is the fleet; CI runs the default, 1/50 of it with the
// same ratios (users per installation, opens and points per user).
func TestConfluenceScale(t *testing.T) {
	p := paramsFor(*scaleFlag)
	t.Logf("scale %g: %d installations, %d known users, %d active (%d new), %d chat opens an hour, %d points an hour, burst %g/s",
		p.scale, p.installs, p.installs*usersPerInst, p.active, p.newUsers, p.opensPerHour, p.points, p.burst)
	began := time.Now()
	w := newWorld(t, p)
	var res result
	synctest.Test(t, func(t *testing.T) { res = w.run(t) })
	res.wall = time.Since(began)
	report := res.markdown()
	t.Log("\n" + report)
	if *resultsFile != "" {
		if err := writeResults(*resultsFile, report); err != nil {
			t.Error(err)
		}
	}

	if res.maxPoints > p.points {
		t.Errorf("an hour spent %d points, over the pool of %d", res.maxPoints, p.points)
	}
	if n := res.refused429[ReasonQuota]; n != 0 {
		t.Errorf("%d 429s for the hourly pool: the budget let the fleet hit Atlassian's wall", n)
	}
	var pageRefused float64
	for k, v := range res.budgetRefused {
		if strings.HasPrefix(k, "page_check/") {
			pageRefused += v
		}
	}
	if pageRefused != 0 {
		t.Errorf("%v page checks refused by the budget, want 0: %v", pageRefused, res.budgetRefused)
	}
	if res.activeNeverSynced != 0 {
		t.Errorf("%d active users never synced", res.activeNeverSynced)
	}
	if limit := res.resync + time.Hour; res.oldestActive > limit {
		t.Errorf("oldest profile of an active user %v, want ≤ PROFILE_RESYNC + 1h = %v", res.oldestActive, limit)
	}
	if res.maxFirstSync > 5*time.Minute {
		t.Errorf("a new user waited %v for their first sync", res.maxFirstSync)
	}
	if ok := res.opens["200"]; ok < p.opensPerHour*simHours*9/10 {
		t.Errorf("only %d chat opens answered 200: %v", ok, res.opens)
	}
}

// world is the fleet, built outside the bubble (keys and FITs are signed
// here, on every core).
type world struct {
	p        params
	key      *forgetest.Key
	wv       *weavysim.Server
	start    time.Time // the bubble's clock at its start: midnight UTC, 2000-01-01
	insts    []inst
	active   []activeUser
	events   []event
	rng      *rand.Rand
	userFITs []string
}

type inst struct {
	id, ari, cloud, fit string
	phase               time.Duration // Forge's trigger, each hour
}

type activeUser struct {
	inst    int
	account string
	isNew   bool
	first   time.Duration // first open of the day
}

type event struct {
	at    time.Duration
	inst  int // trigger: the installation; open: -1
	user  int
	first bool
}

func account(inst, n int) string { return fmt.Sprintf("5b%06x%016x", inst, n) }

func newWorld(t *testing.T, p params) *world {
	w := &world{p: p, key: forgetest.NewKey(t, "k1"), rng: rand.New(rand.NewPCG(7, uint64(p.installs))),
		start: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}
	w.wv = weavysim.New("")
	t.Cleanup(w.wv.Close)
	end := w.start.Add(simHours * time.Hour)
	for i := range p.installs {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		w.insts = append(w.insts, inst{id: id, ari: "ari:cloud:ecosystem::installation/" + id,
			cloud: fmt.Sprintf("%08x-1111-4111-8111-%012x", i, i),
			phase: time.Duration(w.rng.Int64N(int64(time.Hour)))})
	}
	// The day's active users: mostly known ones, a few new (not seeded).
	seen := map[[2]int]bool{}
	for len(w.active) < p.active-p.newUsers {
		i, n := w.rng.IntN(p.installs), w.rng.IntN(usersPerInst)
		if seen[[2]int{i, n}] {
			continue
		}
		seen[[2]int{i, n}] = true
		w.active = append(w.active, activeUser{inst: i, account: account(i, n)})
	}
	for k := range p.newUsers {
		i := w.rng.IntN(p.installs)
		w.active = append(w.active, activeUser{inst: i, account: account(i, usersPerInst+k), isNew: true})
	}
	// Opens: one for each active user, the rest to random active users, at
	// uniform times of the day; a user's first open mints their token.
	total := p.opensPerHour * simHours
	opens := make([]event, 0, total)
	for u := range w.active {
		opens = append(opens, event{inst: -1, user: u})
	}
	for len(opens) < total {
		opens = append(opens, event{inst: -1, user: w.rng.IntN(len(w.active))})
	}
	for k := range opens {
		opens[k].at = time.Duration(w.rng.Int64N(int64(simHours * time.Hour)))
	}
	slices.SortFunc(opens, func(a, b event) int { return int(a.at - b.at) })
	firstDone := make([]bool, len(w.active))
	for k := range opens {
		if u := opens[k].user; !firstDone[u] {
			firstDone[u], opens[k].first = true, true
			w.active[u].first = opens[k].at
		}
	}
	w.events = opens
	for i := range w.insts {
		for h := range simHours {
			w.events = append(w.events, event{at: w.insts[i].phase + time.Duration(h)*time.Hour, inst: i})
		}
	}
	slices.SortStableFunc(w.events, func(a, b event) int { return int(a.at - b.at) })

	// FITs, valid for the whole day: one per installation for its triggers,
	// one per active user (their page) for the token and chat resolvers.
	w.userFITs = make([]string, len(w.active))
	var wg sync.WaitGroup
	for c := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			times := forgetest.WithTimes(w.start.Add(-time.Minute), end.Add(2*time.Hour))
			for i := c; i < len(w.insts); i += runtime.GOMAXPROCS(0) {
				in := &w.insts[i]
				in.fit = forgetest.MintFIT(t, w.key, forgetest.WithPrincipal(""), forgetest.WithInstallation(in.id, in.cloud), times)
			}
			for u := c; u < len(w.active); u += runtime.GOMAXPROCS(0) {
				a := w.active[u]
				in := w.insts[a.inst]
				page := strconv.Itoa(1000 + (u*7919)%pagesPerInst)
				w.userFITs[u] = forgetest.MintFIT(t, w.key, forgetest.WithPrincipal(a.account),
					forgetest.WithInstallation(in.id, in.cloud), times, onPage(page))
			}
		})
	}
	wg.Wait()
	return w
}

func onPage(id string) forgetest.FITOption {
	return forgetest.WithClaims(func(c map[string]any) {
		c["context"].(map[string]any)["extension"] = map[string]any{"type": "macro",
			"content": map[string]any{"id": id, "type": "page"}, "space": map[string]any{"key": "ENG"}}
	})
}

// run plays the day in the bubble.
func (w *world) run(t *testing.T) result {
	ctx := context.Background()
	p := w.p
	if now := time.Now(); !now.Equal(w.start) {
		t.Fatalf("the bubble starts at %v, not %v", now, w.start)
	}
	res := result{p: p, refused429: map[string]int64{}, budgetRefused: map[string]float64{}, opens: map[string]int{}}

	// The known users, seeded as the profile sync leaves them: their last
	// sync spread over the last PROFILE_RESYNC (7 days), so that a seventh
	// of them fall due during the day; their last mint within 30 days.
	kv := NewKV(time.Now)
	resync := scheduler.DefaultProfileResync
	res.resync = resync
	for i := range w.insts {
		for n := range usersPerInst {
			acct := account(i, n)
			err := scheduler.SeedUser(ctx, kv, w.insts[i].ari, scheduler.UserState{UID: acct,
				AddedAt:    w.start.Add(-60 * 24 * time.Hour),
				LastMintAt: w.start.Add(-time.Duration(w.rng.Int64N(int64(29 * 24 * time.Hour)))),
				SyncedAt:   w.start.Add(-time.Duration(w.rng.Int64N(int64(resync)))),
			}, w.start)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.heapBaseline = ms.HeapInuse

	model := NewModel(p.points, p.burst, time.Now)
	jwks := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		writeJSON(rw, http.StatusOK, map[string]any{"keys": []any{w.key.JWK()}})
	})
	env := map[string]string{
		"FORGE_APP_ID": forgetest.AppID, "STORE_URL": "memory://", "LOG_LEVEL": "warn",
		"WEAVY_URL": w.wv.URL, "WEAVY_API_KEY": weavysim.APIKey,
		"CONFLUENCE_POINTS_PER_HOUR": strconv.FormatInt(p.points, 10),
	}
	cfg, err := server.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	logger := zap.NewNop()
	if *logFlag {
		logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	}
	srv, err := server.New(ctx, cfg, server.Options{
		Logger: logger, KV: kv, HTTPClient: Client(jwks), ProductHTTPClient: Client(model),
		WeavyHTTPClient: Client(w.wv.Config.Handler),
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // Forge's keys load
	synctest.Wait()
	if rr := serve(srv, http.MethodGet, "/readyz", nil, ""); rr.Code != http.StatusOK {
		t.Fatalf("readyz: %d %s", rr.Code, rr.Body)
	}

	// Memory, every simulated minute.
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			res.peakHeapInuse = max(res.peakHeapInuse, ms.HeapInuse)
			res.peakSys = max(res.peakSys, ms.Sys)
			select {
			case <-stop:
				return
			case <-time.After(time.Minute):
			}
		}
	}()

	// The installations were there before the day: the trigger of the hour
	// before midnight recorded each and its app token. It is played at
	// 00:00; one of the day's first triggers within 30 min of it is then a
	// duplicate delivery the server ignores (its jobs ran from this one).
	logged := 0
	warm := make([]event, 0, len(w.insts)+len(w.events))
	for i := range w.insts {
		warm = append(warm, event{inst: i})
	}
	hourLogged := 0
	for _, ev := range append(warm, w.events...) {
		if d := ev.at - time.Since(w.start); d > 0 {
			time.Sleep(d)
		}
		if h := int(ev.at / time.Hour); h > hourLogged && testing.Verbose() {
			hourLogged = h
			t.Logf("simulated hour %02d begins", h) // progress, with -v
		}
		if ev.inst >= 0 {
			in := w.insts[ev.inst]
			// Forge hands each invocation a fresh app token (capped at 4 h
			// by the server): one living 2 h.
			rr := serve(srv, http.MethodPost, "/triggers/scheduled", map[string]string{
				"Authorization": "Bearer " + in.fit, "x-forge-oauth-system": forgetest.MintAppToken(t, time.Now().Add(2*time.Hour))}, `{}`)
			if rr.Code != http.StatusAccepted && logged < 5 {
				logged++
				t.Logf("scheduled trigger: %d %s", rr.Code, rr.Body)
			}
			continue
		}
		a := w.active[ev.user]
		h := map[string]string{"Authorization": "Bearer " + w.userFITs[ev.user],
			"x-forge-oauth-user": "utok-" + a.account}
		if ev.first {
			if rr := serve(srv, http.MethodPost, "/resolvers/token", h, `{}`); rr.Code != http.StatusOK && logged < 5 {
				logged++
				t.Logf("token: %d %s", rr.Code, rr.Body)
			}
		}
		rr := serve(srv, http.MethodPost, "/resolvers/chat", h, `{}`)
		key := strconv.Itoa(rr.Code)
		if rr.Code != http.StatusOK {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.Unmarshal(rr.Body.Bytes(), &e)
			key += " " + e.Error.Code
			if logged < 5 {
				logged++
				t.Logf("chat at %v: %d %s", ev.at, rr.Code, rr.Body)
			}
		}
		res.opens[key]++
	}
	if d := simHours*time.Hour - time.Since(w.start); d > 0 {
		time.Sleep(d)
	}
	synctest.Wait()
	end := time.Now()
	close(stop)
	<-sampled

	// The hours, as Atlassian's model counted them.
	all := model.Hours()
	var sum int64
	for h := range simHours {
		x := all[w.start.Add(time.Duration(h)*time.Hour)]
		res.hours = append(res.hours, x)
		res.maxPoints = max(res.maxPoints, x.Points)
		sum += x.Points
		res.pageChecks += x.PageChecks
		for k, v := range x.Refused {
			res.refused429[k] += v
		}
	}
	res.meanPoints = sum / simHours
	// What the budget refused before calling, from the server's metrics.
	rr := serve(srv, http.MethodGet, "/metrics", nil, "")
	for line := range strings.SplitSeq(rr.Body.String(), "\n") {
		rest, ok := strings.CutPrefix(line, "confluence_budget_refused_total{")
		if !ok {
			continue
		}
		labels, val, _ := strings.Cut(rest, "} ")
		f, _ := strconv.ParseFloat(val, 64)
		kind, reason := label(labels, "kind"), label(labels, "reason")
		res.budgetRefused[kind+"/"+reason] += f
	}
	// Profile ages at the end of the day.
	for _, a := range w.active {
		u, ok, err := scheduler.ReadUser(ctx, kv, w.insts[a.inst].ari, a.account)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || u.SyncedAt.IsZero() {
			res.activeNeverSynced++
			continue
		}
		res.oldestActive = max(res.oldestActive, end.Sub(u.SyncedAt))
		if a.isNew {
			res.maxFirstSync = max(res.maxFirstSync, u.SyncedAt.Sub(w.start.Add(a.first)))
		}
	}
	for i := range w.insts {
		err := scheduler.ScanUsers(ctx, kv, w.insts[i].ari, func(u scheduler.UserState) {
			res.knownUsers++
			if u.SyncedAt.IsZero() {
				res.knownNeverSynced++
				return
			}
			res.oldestKnown = max(res.oldestKnown, end.Sub(u.SyncedAt))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	res.liveEnd = ms.HeapAlloc
	if *heapFlag != "" {
		f, err := os.Create(*heapFlag)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Error(err)
		}
		f.Close()
	}
	srv.Close()
	return res
}

func label(labels, name string) string {
	for kv := range strings.SplitSeq(labels, ",") {
		if v, ok := strings.CutPrefix(kv, name+`="`); ok {
			return strings.TrimSuffix(v, `"`)
		}
	}
	return ""
}

func serve(h http.Handler, method, path string, headers map[string]string, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r result) markdown() string {
	p := r.p
	var b strings.Builder
	fmt.Fprintf(&b, "Scale %g of the issue's fleet: %d installations, %d known users (%d per installation), %d active in the day (%d of them new), %d chat opens an hour (%d in the day), %d scheduled triggers; pool %d points an hour (CONFLUENCE_POINTS_PER_HOUR), reserve 0.3, CONFLUENCE_SPREAD=on, CHAT_RECHECK 10m, PROFILE_RESYNC %v; model burst limit %g requests/s for the app.\n\n",
		p.scale, p.installs, p.installs*usersPerInst, usersPerInst, p.active, p.newUsers, p.opensPerHour, p.opensPerHour*simHours, p.installs*simHours, p.points, r.resync, p.burst)
	var burst int64 = r.refused429[ReasonBurst]
	rows := [][3]string{
		{"points per hour, max", fmt.Sprintf("%d of %d (%.1f%%)", r.maxPoints, p.points, 100*float64(r.maxPoints)/float64(p.points)), "≤ the pool"},
		{"points per hour, mean", fmt.Sprintf("%d (%.1f%%)", r.meanPoints, 100*float64(r.meanPoints)/float64(p.points)), ""},
		{"429s received: hourly pool (" + ReasonQuota + ")", strconv.FormatInt(r.refused429[ReasonQuota], 10), "0"},
		{"429s received: burst (" + ReasonBurst + ")", strconv.FormatInt(burst, 10), ""},
		{"page checks made (Confluence answered)", strconv.FormatInt(r.pageChecks, 10), ""},
		{"page checks refused for budget", fmt.Sprintf("%v", sumPrefix(r.budgetRefused, "page_check/")), "**0**"},
		{"background calls deferred by the budget", fmt.Sprintf("%v", r.budgetRefused), ""},
		{"chat opens by answer", fmt.Sprintf("%v", r.opens), ""},
		{"oldest profile of an active user at the day's end", fmt.Sprintf("%v (%d never synced)", r.oldestActive.Round(time.Second), r.activeNeverSynced), fmt.Sprintf("≤ PROFILE_RESYNC + 1 h = %v", r.resync+time.Hour)},
		{"a new user's first sync, slowest", r.maxFirstSync.Round(time.Second).String(), "within minutes"},
		{"oldest profile of any known user", fmt.Sprintf("%v (%d of %d never synced)", r.oldestKnown.Round(time.Second), r.knownNeverSynced, r.knownUsers), ""},
		{"peak heap in use (process: server + store + models)", mib(r.peakHeapInuse), ""},
		{"heap in use after seeding the store, before the server", mib(r.heapBaseline), ""},
		{"peak heap in use less that baseline", mib(r.peakHeapInuse - min(r.heapBaseline, r.peakHeapInuse)), ""},
		{"peak memory from the OS (runtime Sys)", mib(r.peakSys), ""},
		{"live heap at the day's end (after a GC, server still open)", mib(r.liveEnd), ""},
		{"wall time of the run", r.wall.Round(time.Second).String(), ""},
	}
	b.WriteString("| figure | this run | target |\n| --- | --- | --- |\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row[0], row[1], row[2])
	}
	b.WriteString("\nPoints by hour (UTC), by kind, and the model's 429s:\n\n| hour | points | page_check | profile_sync | other | page checks | users read | bulk reads | 429 pool | 429 burst |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for h, x := range r.hours {
		fmt.Fprintf(&b, "| %02d | %d | %d | %d | %d | %d | %d | %d | %d | %d |\n", h, x.Points, x.ByKind["page_check"], x.ByKind["profile_sync"],
			x.ByKind["other"], x.PageChecks, x.UsersRead, x.BulkReads, x.Refused[ReasonQuota], x.Refused[ReasonBurst])
	}
	return b.String()
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

const (
	markStart = "<!-- confluence-scale:start -->"
	markEnd   = "<!-- confluence-scale:end -->"
)

// writeResults puts the run's section between the markers of path, or at
// its end when it has none.
func writeResults(path, report string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cmd := fmt.Sprintf("go test -count=1 -tags slow -run '^TestConfluenceScale$' -timeout 60m -v ./bench/confluencescale -scale=%g -results-file=../RESULTS-scale.md", *scaleFlag)
	section := markStart + "\n\n## Confluence scale run (issue \"One Confluence budget for every site\", part 7)\n\n" +
		"Written by `TestConfluenceScale` (`bench/confluencescale`, `-tags slow`) from the run it just made, at " +
		time.Now().UTC().Format(time.RFC3339) + " (" + runtime.Version() + ", " + strconv.Itoa(runtime.NumCPU()) + " CPUs, without -race). Reproduce from the module root:\n\n```sh\n" + cmd + "\n```\n\n" +
		report + "\n" + markEnd
	s := string(old)
	if i, j := strings.Index(s, markStart), strings.Index(s, markEnd); i >= 0 && j > i {
		s = s[:i] + section + s[j+len(markEnd):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
