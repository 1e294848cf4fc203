//go:build slow

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/store/redistest"
)

// TestChaos runs two replicas of the built binary over one Redis for
// CHAOS_DURATION (default 3m) of mixed traffic (installs, uninstalls, token
// calls, chat opens, hourly triggers, operator reads) while Weavy and
// Confluence fail or hang in random windows and one replica is SIGKILLed and
// restarted every 30 s. Once traffic and faults have stopped and the purges
// are done, it checks and prints the invariants: no chat member without a
// live lease; no member, directory entry or token left of an uninstalled
// site; every installed site's app token the newest delivered; no 5xx
// outside the fault windows; no secret in any log line. For a short local run:
//
//	CHAOS_DURATION=40s go test -count=1 -tags slow -run '^TestChaos$' -v ./internal/e2e
func TestChaos(t *testing.T) {
	duration := 3 * time.Minute
	if v := os.Getenv("CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 20*time.Second {
			t.Fatalf("CHAOS_DURATION=%q: want a duration of at least 20s", v)
		}
		duration = d
	}
	const (
		killEvery   = 30 * time.Second
		weavyTO     = 3 * time.Second
		confTO      = 5 * time.Second // the page check's own bound
		grace       = confTO + 2*time.Second
		workers     = 4
		accounts    = 24
		pages       = 8
		startSites  = 4
		maxSites    = 9
		quietAtEnd  = 25 * time.Second // no fault, kill, install or uninstall starts this close to the end
		driverLimit = 60 * time.Second // a client-side bound, so the drivers stop by themselves
		pace        = 15 * time.Millisecond
		chatLease   = 12 * time.Hour
	)

	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	conf := forgetest.NewConfluenceWith(t, confluencesim.Options{AnyContent: true})
	rds := redistest.Start(t)
	raw := make([]byte, 32)
	rand.Read(raw)
	storeKey := base64.StdEncoding.EncodeToString(raw)

	sec := newSecretSet(storeKey, internalToken, weavysim.APIKey)
	env := tokenEnv(t, jwks, wv)
	env["STORE_URL"] = rds.URL()
	env["STORE_KEY"] = storeKey
	env["LOG_LEVEL"] = "info"
	env["WEAVY_TIMEOUT"] = weavyTO.String()
	env["CHAT_RECHECK"] = "0" // every page open asks Confluence
	env["CHAT_LEASE"] = chatLease.String()
	bin := serverBinary(t)

	// The replicas: fixed loopback ports, so a restarted one takes its
	// predecessor's place behind the "load balancer" (the drivers).
	logs := newLogScan(storeKey, internalToken, weavysim.APIKey)
	var linesMu sync.Mutex
	var allLines []string
	onLine := func(l string) {
		logs.line(l)
		linesMu.Lock()
		allLines = append(allLines, l)
		linesMu.Unlock()
	}
	type replica struct {
		addr string
		srv  *binServer
	}
	reps := make([]*replica, 2)
	for i := range reps {
		reps[i] = &replica{addr: freeLoopbackAddr(t)}
	}
	start := func(r *replica) {
		e := maps.Clone(env)
		e["LISTEN_ADDR"] = r.addr
		r.srv = startBinary(t, bin, e, onLine)
		r.srv.waitReady(t)
	}
	for _, r := range reps {
		start(r)
	}

	client := &http.Client{Timeout: driverLimit, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()

	// The sites: each its own installation and cloudId. A site is live from
	// its install's answer to its uninstall; its traffic holds mu for reading
	// and its uninstall for writing, so no call is in flight as it goes
	// (Forge sends none after an uninstall).
	type site struct {
		n           int
		inst, cloud string
		mu          sync.RWMutex
		gone        bool
		ready       bool // its install was answered 200: Forge calls it from then on (guarded by sitesMu)

		tokMu     sync.Mutex
		seq       int
		acked     string    // the newest app token a delivery of which was answered
		ackedExp  time.Time //
		ambiguous map[string]time.Time
	}
	tokenBase := time.Now().Add(3 * time.Hour)
	var (
		sitesMu sync.Mutex
		sites   []*site
	)
	newSite := func() *site {
		sitesMu.Lock()
		defer sitesMu.Unlock()
		n := len(sites)
		s := &site{n: n, inst: installation(fmt.Sprintf("c4a05000-0000-4000-8000-%012d", n)),
			cloud: fmt.Sprintf("c4a05c1d-0000-4000-8000-%012d", n), ambiguous: map[string]time.Time{}}
		sites = append(sites, s)
		return s
	}
	live := func() []*site {
		sitesMu.Lock()
		defer sitesMu.Unlock()
		return slices.DeleteFunc(slices.Clone(sites), func(s *site) bool { return s.gone || !s.ready })
	}
	// nextAppToken is a newer app token for s, which Confluence accepts.
	// A second apart, so that a site's thousand deliveries stay under the
	// 4 h the server caps a claimed expiry at (forge.maxLifetime): at a
	// minute apart they passed it after 60, every later token was capped to
	// its arrival + 4 h, and two deliveries answered out of order left the
	// older token held, "not the newest delivered".
	nextAppToken := func(s *site) (string, time.Time) {
		s.tokMu.Lock()
		s.seq++
		exp := tokenBase.Add(time.Duration(s.seq) * time.Second)
		s.tokMu.Unlock()
		tok := conf.IssueAppToken(t, exp)
		sec.add(tok)
		return tok, exp
	}
	ackedToken := func(s *site) string {
		s.tokMu.Lock()
		defer s.tokMu.Unlock()
		return s.acked
	}
	// delivered records what became of a delivery of an app token.
	delivered := func(s *site, tok string, exp time.Time, r reply, err error) {
		s.tokMu.Lock()
		defer s.tokMu.Unlock()
		switch {
		case err != nil && r.Status == 0: // no answer: the server may or may not hold it
			s.ambiguous[tok] = exp
		case r.ErrCode == "keys_unavailable" || r.ErrCode == "store_unavailable" || r.ErrCode == "invalid_invocation_token":
		case exp.After(s.ackedExp):
			s.acked, s.ackedExp = tok, exp
		}
	}

	accountOf := func(u int) string { return fmt.Sprintf("712020:chaos-%04d", u) }
	userTokens := make([]string, accounts)
	for u := range accounts {
		conf.AddUser(accountOf(u), fmt.Sprintf("Chaos User %d", u), fmt.Sprintf("c%d@example.com", u), "/wiki/aa-avatar/"+accountOf(u))
		userTokens[u] = conf.IssueUserToken(t, accountOf(u), time.Now().Add(4*time.Hour))
		sec.add(userTokens[u])
	}
	// FITs are reused for up to 10 s (Forge's live 25 s): signing is the
	// driver's cost, not the server's.
	type fitKey struct {
		site    *site
		account string
		page    int // -1: none (the site-wide chat); 0: no extension change
	}
	type cachedFIT struct {
		fit string
		at  time.Time
	}
	var fitMu sync.Mutex
	fits := map[fitKey]cachedFIT{}
	fitFor := func(k fitKey) string {
		fitMu.Lock()
		c, ok := fits[k]
		fitMu.Unlock()
		if ok && time.Since(c.at) < 10*time.Second {
			return c.fit
		}
		opts := []forgetest.FITOption{forgetest.WithPrincipal(k.account), forgetest.WithInstallation(k.site.inst, k.site.cloud),
			forgetest.WithAPIBaseURL(conf.APIBaseURL(k.site.cloud))}
		switch {
		case k.page > 0:
			opts = append(opts, onPage(fmt.Sprint(1000+k.page)))
		case k.page < 0:
			opts = append(opts, extension(nil))
		}
		c = cachedFIT{forgetest.MintFIT(t, key, opts...), time.Now()}
		sec.add(c.fit)
		fitMu.Lock()
		fits[k] = c
		fitMu.Unlock()
		return c.fit
	}

	// What happened: every answer by kind and status, every 5xx with its
	// times, every connection error with its times.
	type event struct {
		kind, code  string
		status, rep int
		from, to    time.Time
	}
	var (
		evMu      sync.Mutex
		outcomes  = map[string]int{}
		fivexx    []event
		connErrs  []event
		unexpect  = map[string]int{}
		timeouts  atomic.Int64
		requests  atomic.Int64
		installed atomic.Int64
	)
	call := func(rep int, kind, method, path, fit, body string, want func(reply) bool, hdr ...string) (reply, error) {
		req, _ := http.NewRequest(method, "http://"+reps[rep].addr+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if fit != "" {
			req.Header.Set("Authorization", "Bearer "+fit)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i+1] != "" {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		from := time.Now()
		r, err := sendReq(client, req)
		ev := event{kind: kind, code: r.ErrCode, status: r.Status, rep: rep, from: from, to: time.Now()}
		requests.Add(1)
		evMu.Lock()
		defer evMu.Unlock()
		switch {
		case err != nil && r.Status == 0:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				timeouts.Add(1)
			}
			outcomes[kind+" (no answer)"]++
			connErrs = append(connErrs, ev)
		case r.Status >= 500:
			outcomes[fmt.Sprintf("%s %d %s", kind, r.Status, r.ErrCode)]++
			fivexx = append(fivexx, ev)
		default:
			k := fmt.Sprintf("%s %d %s", kind, r.Status, r.ErrCode)
			outcomes[k]++
			if err != nil || !want(r) {
				unexpect[k]++
			}
		}
		return r, err
	}
	internalGet := func(rep int, path string) (reply, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+reps[rep].addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+internalToken)
		return sendReq(client, req)
	}
	is := func(status int) func(reply) bool { return func(r reply) bool { return r.Status == status } }
	isToken := func(r reply) bool {
		if r.Status == 200 && strings.HasPrefix(r.str("access_token"), "wyu_") {
			sec.add(r.str("access_token"))
			return true
		}
		return false
	}
	isChat := func(r reply) bool { id, _ := r.JSON["app_id"].(float64); return r.Status == 200 && id > 0 }

	// install sends the site's install event (with its first app token)
	// until a replica answers 200; the site is then live.
	install := func(s *site) error {
		for attempt := range 20 {
			tok, exp := nextAppToken(s)
			body := `{"eventType":"avi:forge:installed:app","app":{"id":"` + forgetest.AppID + `","version":"1.0.0"}}`
			r, err := call(attempt%2, "install", "POST", "/triggers/lifecycle", fitFor(fitKey{s, "", 0}), body, is(200), "x-forge-oauth-system", tok)
			delivered(s, tok, exp, r, err)
			if err == nil && r.Status == 200 {
				installed.Add(1)
				sitesMu.Lock()
				s.ready = true // not before: an app-token call would rightly get 404 unknown_installation
				sitesMu.Unlock()
				return nil
			}
			time.Sleep(500 * time.Millisecond)
		}
		return fmt.Errorf("site %d: no install answered 200", s.n)
	}
	var uninstalled []*site
	var purgeMu sync.Mutex
	purgeSeen := map[string]int{} // installation → the most failed attempts its purge was seen with
	uninstall := func(s *site) error {
		s.mu.Lock() // waits for the site's calls in flight
		sitesMu.Lock()
		s.gone = true
		sitesMu.Unlock()
		s.mu.Unlock()
		for attempt := range 20 {
			r, err := call(attempt%2, "uninstall", "POST", "/triggers/uninstall", fitFor(fitKey{s, "", 0}), `{}`, is(200))
			if err == nil && r.Status == 200 {
				return nil
			}
			time.Sleep(500 * time.Millisecond)
		}
		return fmt.Errorf("site %d: no uninstall answered 200", s.n)
	}

	// one is one request of a random kind at a random replica.
	one := func(rng *mrand.Rand) {
		ls := live()
		if len(ls) == 0 {
			return
		}
		s := ls[rng.IntN(len(ls))]
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.gone {
			return
		}
		rep := rng.IntN(len(reps))
		u := rng.IntN(accounts)
		acc := accountOf(u)
		switch p := rng.IntN(100); {
		case p < 35:
			call(rep, "token", "POST", "/resolvers/token", fitFor(fitKey{s, acc, 0}), `{}`, isToken,
				"x-forge-oauth-system", ackedToken(s))
		case p < 75:
			page := 1 + rng.IntN(pages)
			call(rep, "chat page", "POST", "/resolvers/chat", fitFor(fitKey{s, acc, page}), `{}`, isChat,
				"x-forge-oauth-user", userTokens[u], "x-forge-oauth-system", ackedToken(s))
		case p < 82:
			call(rep, "chat site", "POST", "/resolvers/chat", fitFor(fitKey{s, acc, -1}), `{}`, isChat,
				"x-forge-oauth-user", userTokens[u], "x-forge-oauth-system", ackedToken(s))
		case p < 91:
			tok, exp := nextAppToken(s)
			r, err := call(rep, "scheduled", "POST", "/triggers/scheduled", fitFor(fitKey{s, "", 0}), `{}`, is(202), "x-forge-oauth-system", tok)
			delivered(s, tok, exp, r, err)
		case p < 95:
			tok, exp := nextAppToken(s)
			body := `{"eventType":"avi:forge:upgraded:app","upgraderAccountId":"` + acc + `"}`
			r, err := call(rep, "lifecycle", "POST", "/triggers/lifecycle", fitFor(fitKey{s, "", 0}), body, is(200), "x-forge-oauth-system", tok)
			delivered(s, tok, exp, r, err)
		case p < 98:
			call(rep, "internal app-token", "GET", "/internal/app-token?installationId="+url.QueryEscape(s.inst), "", "",
				is(200), "Authorization", "Bearer "+internalToken)
		default:
			r, _ := call(rep, "internal purges", "GET", "/internal/purges", "", "", is(200), "Authorization", "Bearer "+internalToken)
			list, _ := r.JSON["purges"].([]any)
			for _, p := range list {
				p, _ := p.(map[string]any)
				inst, _ := p["installation_id"].(string)
				n, _ := p["attempts"].(float64)
				purgeMu.Lock()
				purgeSeen[inst] = max(purgeSeen[inst], int(n))
				purgeMu.Unlock()
			}
		}
	}

	for range startSites {
		if err := install(newSite()); err != nil {
			t.Fatal(err)
		}
	}

	// Faults: one window at a time, each recorded from when it was set to
	// when it was cleared (Confluence's queued failures drained).
	type window struct {
		what       string
		start, end time.Time
	}
	var faults, kills []window
	faultKinds := []struct {
		what  string
		set   func()
		clear func()
	}{
		{"weavy 500", func() { wv.SetMode(weavysim.Fail500) }, func() { wv.SetMode(weavysim.OK) }},
		{"weavy html 502", func() { wv.SetMode(weavysim.HTML502) }, func() { wv.SetMode(weavysim.OK) }},
		{"weavy hang", func() { wv.SetMode(weavysim.Hang) }, func() { wv.SetMode(weavysim.OK) }},
		{"weavy reset", func() { wv.SetMode(weavysim.Reset) }, func() { wv.SetMode(weavysim.OK) }},
		{"weavy admin 500", func() { wv.FailAdmin.Store(true) }, func() { wv.FailAdmin.Store(false) }},
		{"confluence 500 x5", func() { conf.FailNext(5, 500, "") }, func() { drainConfluence(t, conf, userTokens[0]) }},
		{"confluence 429 x3", func() { conf.FailNext(3, 429, "1") }, func() { drainConfluence(t, conf, userTokens[0]) }},
		{"confluence hang x3", func() { conf.HangNext(3) }, func() { drainConfluence(t, conf, userTokens[0]) }},
	}

	var (
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	began := time.Now()
	seed := uint64(began.UnixNano())
	t.Logf("chaos: seed %d, %v of traffic", seed, duration)
	for w := range workers {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), seed))
			for !stop.Load() {
				one(rng)
				// Paced, so that two cores running the replicas, Redis,
				// the fakes and this process under -race keep headroom:
				// a timeout from an overloaded machine is not the chaos.
				time.Sleep(pace)
			}
		})
	}
	var bg sync.WaitGroup // uninstalls and installs in flight
	var bgErrs []error
	var bgMu sync.Mutex
	rng := mrand.New(mrand.NewPCG(99, seed))
	end := began.Add(duration)
	nextKill := began.Add(killEvery)
	nextFault := began.Add(time.Duration(2+rng.IntN(5)) * time.Second)
	nextInstall := began.Add(15 * time.Second)
	nextUninstall := began.Add(20 * time.Second)
	var lastUninstall time.Time
	var (
		cur     = -1 // the fault in force, if any
		curFrom time.Time
		curTill time.Time
		victim  int
	)
	for now := time.Now(); now.Before(end); now = time.Now() {
		quiet := now.After(end.Add(-quietAtEnd))
		if cur >= 0 && now.After(curTill) {
			faultKinds[cur].clear()
			faults = append(faults, window{faultKinds[cur].what, curFrom, time.Now()})
			cur = -1
			nextFault = time.Now().Add(time.Duration(1+rng.IntN(6)) * time.Second)
		}
		if cur < 0 && !quiet && now.After(nextFault) {
			cur = rng.IntN(len(faultKinds))
			curFrom = time.Now()
			faultKinds[cur].set()
			curTill = curFrom.Add(time.Duration(2000+rng.IntN(4000)) * time.Millisecond)
			// Most uninstalls come as Weavy fails, so that their purges
			// fail, back off, meet kills and resume.
			if strings.HasPrefix(faultKinds[cur].what, "weavy") && now.After(lastUninstall.Add(15*time.Second)) {
				nextUninstall = now
			}
		}
		if !quiet && now.After(nextKill) {
			r := reps[victim]
			from := time.Now()
			if err := r.srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			testwait.Recv(t, "the killed replica to exit", r.srv.exited)
			client.CloseIdleConnections()
			start(r)
			client.CloseIdleConnections()
			kills = append(kills, window{fmt.Sprintf("replica %d", victim), from, time.Now()})
			victim = (victim + 1) % len(reps)
			nextKill = from.Add(killEvery)
		}
		if !quiet && now.After(nextInstall) {
			if len(sites) < maxSites {
				s := newSite()
				bg.Go(func() {
					if err := install(s); err != nil {
						bgMu.Lock()
						bgErrs = append(bgErrs, err)
						bgMu.Unlock()
					}
				})
			}
			nextInstall = now.Add(time.Duration(15+rng.IntN(10)) * time.Second)
		}
		if !quiet && now.After(nextUninstall) {
			if ls := live(); len(ls) > 2 {
				lastUninstall = now
				s := ls[rng.IntN(len(ls))]
				uninstalled = append(uninstalled, s)
				bg.Go(func() {
					if err := uninstall(s); err != nil {
						bgMu.Lock()
						bgErrs = append(bgErrs, err)
						bgMu.Unlock()
					}
				})
			}
			nextUninstall = now.Add(time.Duration(20+rng.IntN(15)) * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cur >= 0 {
		faultKinds[cur].clear()
		faults = append(faults, window{faultKinds[cur].what, curFrom, time.Now()})
	}
	stop.Store(true)
	wg.Wait()
	bg.Wait()
	trafficEnd := time.Now()
	for _, err := range bgErrs {
		t.Error(err)
	}
	wv.SetMode(weavysim.OK)
	wv.FailAdmin.Store(false)
	drainConfluence(t, conf, userTokens[0])

	// Settle: every purge done (each replica's view), then nothing in flight.
	testwait.For(t, "the uninstall purges to finish", func() bool {
		for i := range reps {
			r, err := internalGet(i, "/internal/purges")
			if err != nil || r.Status != 200 {
				return false
			}
			if l, _ := r.JSON["purges"].([]any); len(l) > 0 {
				return false
			}
		}
		return true
	})
	settled := time.Since(trafficEnd)

	// The figures.
	var total int
	kinds := slices.Sorted(maps.Keys(outcomes))
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "\n  %6d  %s", outcomes[k], k)
		total += outcomes[k]
	}
	t.Logf("chaos: %v of traffic at 2 replicas over Redis, %d workers, %d requests (%.0f/s), %d Weavy mints, purges settled %v after traffic stopped; answers:%s",
		trafficEnd.Sub(began).Round(time.Second), workers, total, float64(total)/trafficEnd.Sub(began).Seconds(), wv.Mints(), settled.Round(100*time.Millisecond), b.String())
	var fb strings.Builder
	var faultTime time.Duration
	for _, w := range faults {
		fmt.Fprintf(&fb, "\n  +%6.1fs %5.1fs  %s", w.start.Sub(began).Seconds(), w.end.Sub(w.start).Seconds(), w.what)
		faultTime += w.end.Sub(w.start)
	}
	t.Logf("chaos: %d fault windows, %v in all (%.0f%% of the run):%s", len(faults), faultTime.Round(time.Second),
		100*faultTime.Seconds()/trafficEnd.Sub(began).Seconds(), fb.String())
	var kb strings.Builder
	for _, k := range kills {
		fmt.Fprintf(&kb, "\n  +%6.1fs  %s SIGKILLed, listening and ready again after %v", k.start.Sub(began).Seconds(), k.what, k.end.Sub(k.start).Round(time.Millisecond))
	}
	t.Logf("chaos: %d kills:%s", len(kills), kb.String())
	retried, most := 0, 0
	for _, n := range purgeSeen {
		if n > 0 {
			retried++
		}
		most = max(most, n)
	}
	t.Logf("chaos: %d sites installed, %d uninstalled (%d purges seen pending in /internal/purges, %d of them after a failed attempt, at most %d failed attempts), %d live",
		installed.Load(), len(uninstalled), len(purgeSeen), retried, most, len(live()))

	// Invariant: no 5xx outside the fault windows (a grace after each for
	// the calls a window's hang held).
	overlaps := func(e event, ws []window, g time.Duration) bool {
		for _, w := range ws {
			if e.from.Before(w.end.Add(g)) && e.to.After(w.start) {
				return true
			}
		}
		return false
	}
	var inFault, duringKill, outside []event
	for _, e := range fivexx {
		switch {
		case overlaps(e, faults, grace):
			inFault = append(inFault, e)
		case overlaps(e, kills, 0):
			duringKill = append(duringKill, e)
		default:
			outside = append(outside, e)
		}
	}
	var late int
	var latest time.Duration
	for _, e := range inFault {
		if !overlaps(e, faults, 0) {
			late++
			nearest := grace
			for _, w := range faults {
				if d := e.from.Sub(w.end); d > 0 {
					nearest = min(nearest, d)
				}
			}
			latest = max(latest, nearest)
		}
	}
	t.Logf("invariant 5xx: %d in all; %d within a fault window (+%v grace; %d of them sent after their window closed, the latest %v after), %d during a kill outside any fault window, %d outside both",
		len(fivexx), len(inFault), grace, late, latest.Round(time.Millisecond), len(duringKill), len(outside))
	for _, e := range append(duringKill, outside...) {
		t.Errorf("  5xx outside a fault window: %s %d %s at replica %d, +%.2fs..+%.2fs", e.kind, e.status, e.code, e.rep,
			e.from.Sub(began).Seconds(), e.to.Sub(began).Seconds())
	}
	var connOutside []event
	for _, e := range connErrs {
		if !overlaps(e, kills, 2*time.Second) {
			connOutside = append(connOutside, e)
		}
	}
	t.Logf("invariant no answer: %d connection errors, all but %d during a kill of the replica asked; %d client timeouts (%v)",
		len(connErrs), len(connOutside), timeouts.Load(), driverLimit)
	for _, e := range connOutside {
		t.Errorf("  no answer outside a kill: %s at replica %d, +%.2fs..+%.2fs", e.kind, e.rep, e.from.Sub(began).Seconds(), e.to.Sub(began).Seconds())
	}
	if timeouts.Load() > 0 {
		t.Errorf("%d calls had no answer within %v", timeouts.Load(), driverLimit)
	}
	if len(unexpect) > 0 {
		t.Errorf("unexpected answers (not 5xx): %v", unexpect)
	}

	// The store as the replicas see it.
	kv, err := open.Store(context.Background(), open.Options{URL: rds.URL(), Key: raw})
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	ctx := t.Context()
	var keys []string
	leases := map[[2]string]chaosLease{} // (app uid, user) → the best lease
	if err := kv.Scan(ctx, "", func(k string, v []byte) error {
		keys = append(keys, k)
		if strings.HasPrefix(k, "chat/lease/") {
			l, ok := decodeChaosLease(v)
			if !ok {
				return fmt.Errorf("lease %q does not decode", k)
			}
			l.inst, _ = url.PathUnescape(strings.SplitN(strings.TrimPrefix(k, "chat/lease/"), "/", 2)[0])
			lk := [2]string{l.appUID, l.user}
			if old, ok := leases[lk]; !ok || old.state == leaseRevoking {
				leases[lk] = l
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Invariant: no member of any chat without a live lease.
	instCloud := map[string]string{}
	for _, s := range sites {
		instCloud[s.inst] = s.cloud
	}
	apps := wv.AppViews()
	var members, bare int
	states := map[string]int{}
	for _, a := range apps {
		for uid := range a.Members {
			members++
			l, ok := leases[[2]string{a.UID, uid}]
			switch {
			case !ok:
				bare++
				t.Errorf("  member %s of %s has no lease", uid, a.UID)
			case l.state == leaseRevoking || !time.Now().Before(l.renewed.Add(chatLease)):
				bare++
				t.Errorf("  member %s of %s has a lease no longer live: state %d, renewed %v", uid, a.UID, l.state, l.renewed)
			case instCloud[l.inst] == "" || !strings.Contains(a.UID, "-"+instCloud[l.inst]+"-"):
				bare++
				t.Errorf("  member %s of %s is leased by %s, of another site", uid, a.UID, l.inst)
			default:
				states[map[byte]string{1: "pending", 2: "active"}[l.state]]++
			}
		}
	}
	t.Logf("invariant leases: %d apps, %d members checked against %d lease records (%v), %d without a live lease",
		len(apps), members, len(leases), states, bare)

	// Invariant: nothing left of an uninstalled site.
	dirMembers := wv.DirectoryMembers()
	var leftovers []string
	allowed := map[string]int{}
	for _, s := range uninstalled {
		dir := "cf-" + s.cloud
		for _, a := range apps {
			if strings.Contains(a.UID, "-"+s.cloud+"-") && len(a.Members) > 0 {
				leftovers = append(leftovers, fmt.Sprintf("app %s has %d members", a.UID, len(a.Members)))
			}
		}
		if wv.Directory(dir) {
			leftovers = append(leftovers, "directory "+dir+" exists")
		}
		for uid, dirs := range dirMembers {
			if slices.Contains(dirs, dir) {
				leftovers = append(leftovers, uid+" is in "+dir)
			}
		}
		uuid := strings.TrimPrefix(s.inst, "ari:cloud:ecosystem::installation/")
		for _, k := range keys {
			if !strings.Contains(k, uuid) && !strings.Contains(k, s.cloud) {
				continue
			}
			if p := strings.SplitN(k, "/", 3); (p[0] == "scheduler" && p[1] == "uninstalled") || p[0] == "budget" {
				allowed[p[0]+"/"+p[1]]++ // the 30-day tombstone; the points budget's hourly and pause records
				continue
			}
			leftovers = append(leftovers, "store key "+k)
		}
		if r, err := internalGet(0, "/internal/app-token?installationId="+url.QueryEscape(s.inst)); err != nil || r.Status != 404 {
			leftovers = append(leftovers, fmt.Sprintf("/internal/app-token answers %d", r.Status))
		}
	}
	t.Logf("invariant uninstalled: %d sites checked (Weavy apps, directories, %d users' directory lists, %d store keys, /internal/app-token): %d leftovers; kept by design: %v",
		len(uninstalled), len(dirMembers), len(keys), len(leftovers), allowed)
	for _, l := range leftovers {
		t.Errorf("  left of an uninstalled site: %s", l)
	}

	// Invariant: every installed site's app token is the newest delivered.
	var newest, viaAmbiguous int
	for _, s := range live() {
		for i := range reps {
			r, err := internalGet(i, "/internal/app-token?installationId="+url.QueryEscape(s.inst))
			got := r.str("access_token")
			s.tokMu.Lock()
			amb, isAmb := s.ambiguous[got]
			want, wantExp := s.acked, s.ackedExp
			s.tokMu.Unlock()
			switch {
			case err != nil || r.Status != 200:
				t.Errorf("  site %d: /internal/app-token at replica %d: %d %s %v", s.n, i, r.Status, r.ErrCode, err)
			case got == want:
				newest++
			case isAmb && amb.After(wantExp):
				viaAmbiguous++ // a newer one whose delivery got no answer (a kill), yet was captured
			default:
				t.Errorf("  site %d: replica %d hands out an app token that is not the newest delivered", s.n, i)
			}
		}
	}
	t.Logf("invariant app tokens: %d answers (live sites × replicas) are the newest delivered, %d a newer one whose delivery a kill left unanswered",
		newest, viaAmbiguous)

	// Invariant: no secret in any log line. Stop the replicas first, so
	// every line is in.
	for _, r := range reps {
		_ = r.srv.cmd.Process.Signal(syscall.SIGTERM)
		testwait.Recv(t, "a replica to stop", r.srv.exited)
	}
	lines, bad, leaks := logs.result()
	linesMu.Lock()
	exact := sec.scan(allLines)
	linesMu.Unlock()
	t.Logf("invariant secrets: %d log lines from %d processes, %d not JSON; %d secrets looked for (every FIT, app, user and Weavy token, STORE_KEY, API key, internal token) and every JWT or wyu_/wys_ shape: %d lines leak",
		lines, len(reps)+len(kills), bad, sec.len(), len(leaks)+len(exact))
	for _, l := range append(leaks, exact...) {
		t.Errorf("  secret in the log: %s", l)
	}
	if bad > 0 {
		t.Errorf("%d log lines are not JSON", bad)
	}
}

// drainConfluence consumes whatever failures are still queued at the fake
// Confluence (FailNext, HangNext): a call as a user that answers 200 found
// the queue empty.
func drainConfluence(t *testing.T, conf *forgetest.Confluence, userToken string) {
	t.Helper()
	c := &http.Client{Timeout: 300 * time.Millisecond}
	testwait.For(t, "Confluence's queued failures to drain", func() bool {
		req, _ := http.NewRequest(http.MethodGet, conf.APIBaseURL(forgetest.CloudID)+"/wiki/api/v2/pages/1", nil)
		req.Header.Set("Authorization", "Bearer "+userToken)
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// chaosLease is a chat lease record as chat/records.go encodes it:
// state | renewed (8 bytes, big-endian unix ns) | appID (8) | len(appUID) (1) | appUID | user.
type chaosLease struct {
	inst    string
	state   byte
	renewed time.Time
	appUID  string
	user    string
}

const leaseRevoking = 3

func decodeChaosLease(b []byte) (chaosLease, bool) {
	if len(b) < 19 || b[0] < 1 || b[0] > 3 {
		return chaosLease{}, false
	}
	n := int(b[17])
	if len(b) < 18+n+1 {
		return chaosLease{}, false
	}
	return chaosLease{state: b[0], renewed: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:]))),
		appUID: string(b[18 : 18+n]), user: string(b[18+n:])}, true
}

// secretSet is every secret a run used, looked for as whole tokens in the
// log lines at the end.
type secretSet struct {
	mu  sync.Mutex
	set map[string]bool
}

func newSecretSet(fixed ...string) *secretSet {
	s := &secretSet{set: map[string]bool{}}
	for _, f := range fixed {
		s.add(f)
	}
	return s
}

func (s *secretSet) add(v string) {
	if v == "" {
		return
	}
	s.mu.Lock()
	s.set[v] = true
	s.mu.Unlock()
}

func (s *secretSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.set)
}

// tokenRun is what a token (a JWT, a base64 key, wyu_…) is made of.
var tokenRun = regexp.MustCompile(`[A-Za-z0-9_.~+/=:-]{16,}`)

func (s *secretSet) scan(lines []string) (leaks []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range lines {
		for _, run := range tokenRun.FindAllString(l, -1) {
			if s.set[run] || s.set[strings.Trim(run, ".:=")] {
				leaks = append(leaks, fmt.Sprintf("log line %d (%d bytes) holds a secret the run used", i, len(l)))
				break
			}
		}
		if len(leaks) >= 10 {
			break
		}
	}
	return leaks
}

// freeLoopbackAddr is a loopback address with a port free now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
