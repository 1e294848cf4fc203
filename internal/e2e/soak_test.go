//go:build slow

package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// TestSoak drives the built binary with mixed traffic for SOAK_DURATION
// (default 20s): token calls for 200 users over 4 sites, invalid FITs,
// refreshes within the limits, scheduled triggers carrying app tokens,
// install events and operator reads. Heap, goroutines and open files must not
// grow, every answer must be the expected one, and the debug-level log must
// hold no secret. For a long run:
//
//	SOAK_DURATION=10m go test -count=1 -run '^TestSoak$' -timeout 30m -v .
func TestSoak(t *testing.T) {
	t.Parallel()
	duration := 20 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("SOAK_DURATION=%q: want a duration of at least 5s", v)
		}
		duration = d
	}

	key := forgetest.NewKey(t, "k1")
	stranger := forgetest.NewKey(t, "k-stranger") // never published
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	conf := forgetest.NewConfluence(t)
	conf.SetSiteURL("https://soak.atlassian.net")
	raw := make([]byte, 32)
	rand.Read(raw)
	storeKey := base64.StdEncoding.EncodeToString(raw)
	env := tokenEnv(t, jwks, wv)
	env["STORE_KEY"] = storeKey
	env["LOG_LEVEL"] = "debug" // the most the log can say

	logs := newLogScan(weavysim.APIKey, storeKey, internalToken)
	srv := startBinary(t, serverBinary(t), env, logs.line)
	srv.waitReady(t)

	// 200 users over 4 installations, each a Confluence user for profile sync.
	type site struct{ inst, cloud string }
	sites := make([]site, 4)
	for i := range sites {
		sites[i] = site{fmt.Sprintf("50a50a50-0000-4000-8000-%012d", i), fmt.Sprintf("c10dc10d-0000-4000-8000-%012d", i)}
	}
	const users = 200
	account := func(u int) string { return fmt.Sprintf("712020:soak-%04d", u) }
	for u := range users {
		conf.AddUser(account(u), fmt.Sprintf("Soak User %d", u), fmt.Sprintf("u%d@example.com", u), "/wiki/aa-avatar/"+account(u))
	}
	mint := func(s site, principal string, opts ...forgetest.FITOption) string {
		return forgetest.MintFIT(t, key, append([]forgetest.FITOption{forgetest.WithPrincipal(principal),
			forgetest.WithInstallation(s.inst, s.cloud), forgetest.WithAPIBaseURL(conf.APIBaseURL(s.cloud))}, opts...)...)
	}
	// App tokens per site, later and later: a trigger sometimes brings a newer one.
	appToks := make([][]string, len(sites))
	for i := range sites {
		for j := range 50 {
			appToks[i] = append(appToks[i], conf.IssueAppToken(t, time.Now().Add(3*time.Hour+time.Duration(j)*time.Minute)))
		}
	}

	// FITs are reused for up to 10 s (Forge's live 25 s): signing is the
	// client's bottleneck, not the server's.
	type cached struct {
		fit string
		at  time.Time
	}
	var fitMu sync.Mutex
	fits := map[string]cached{}
	fitFor := func(s site, principal string) string {
		k := s.inst + "/" + principal
		fitMu.Lock()
		c, ok := fits[k]
		fitMu.Unlock()
		if ok && time.Since(c.at) < 10*time.Second {
			return c.fit
		}
		c = cached{mint(s, principal), time.Now()}
		fitMu.Lock()
		fits[k] = c
		fitMu.Unlock()
		return c.fit
	}
	otherApp := "ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000000"
	invalid := []func() (string, string){ // name, FIT ("" = no header)
		func() (string, string) { return "tampered", flipSignature(mint(sites[0], account(1))) },
		func() (string, string) {
			return "other app", mint(sites[0], account(1), forgetest.WithAudience(otherApp))
		},
		func() (string, string) {
			return "expired", mint(sites[0], account(1), forgetest.WithTimes(time.Now().Add(-2*time.Minute), time.Now().Add(-time.Minute)))
		},
		func() (string, string) {
			return "unknown kid", forgetest.MintFIT(t, stranger, forgetest.WithInstallation(sites[0].inst, sites[0].cloud))
		},
		func() (string, string) { return "garbage", "not.a.jwt" },
		func() (string, string) { return "missing", "" },
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}} // go test's -timeout bounds a call
	defer client.CloseIdleConnections()
	call := func(method, path, fit, body string, hdr ...string) reply {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if fit != "" {
			req.Header.Set("Authorization", "Bearer "+fit)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		r, err := sendReq(client, req)
		if err != nil {
			return reply{Status: r.Status, ErrCode: "not JSON or no answer"}
		}
		return r
	}

	var (
		outMu      sync.Mutex
		outcomes   = map[string]int{} // "kind status code" → count
		unexpected = map[string]int{}
		refreshMu  sync.Mutex
		refreshed  = map[int]time.Time{}
		triggers   atomic.Int64
	)
	record := func(kind string, r reply, ok bool) {
		k := fmt.Sprintf("%s %d %s", kind, r.Status, r.ErrCode)
		outMu.Lock()
		outcomes[k]++
		if !ok {
			unexpected[k]++
		}
		outMu.Unlock()
	}
	// one does one request of a random kind and checks its answer.
	one := func(rng *mrand.Rand) {
		u := rng.IntN(users)
		s := sites[u%len(sites)]
		switch p := rng.IntN(100); {
		case p < 66: // the hot path
			r := call("POST", "/resolvers/token", fitFor(s, account(u)), `{}`)
			record("token", r, r.Status == 200 && strings.HasPrefix(r.str("access_token"), "wyu_"))
		case p < 68: // the envelope form
			r := call("POST", "/resolvers", fitFor(s, account(u)), `{"call":{"functionKey":"token","payload":{}},"context":{}}`)
			record("envelope", r, r.Status == 200 && strings.HasPrefix(r.str("access_token"), "wyu_"))
		case p < 80:
			name, fit := invalid[rng.IntN(len(invalid))]()
			r := call("POST", "/resolvers/token", fit, `{}`)
			record("invalid FIT ("+name+")", r, r.Status == 401 && r.ErrCode == "invalid_invocation_token")
		case p < 84: // a refresh, at most one per user per 12 s (the limit is one per 10 s)
			refreshMu.Lock()
			due := time.Since(refreshed[u]) > 12*time.Second
			if due {
				refreshed[u] = time.Now()
			}
			refreshMu.Unlock()
			if !due {
				return
			}
			r := call("POST", "/resolvers/token", fitFor(s, account(u)), `{"refresh":true}`)
			record("refresh", r, r.Status == 200 && strings.HasPrefix(r.str("access_token"), "wyu_"))
		case p < 94:
			i := u % len(sites)
			n := int(triggers.Add(1))
			tok := appToks[i][min(n/200, len(appToks[i])-1)]
			r := call("POST", "/triggers/scheduled", fitFor(sites[i], ""), `{}`, "x-forge-oauth-system", tok)
			record("scheduled", r, r.Status == 202)
		case p < 97:
			r := call("POST", "/triggers/lifecycle", fitFor(s, ""), `{"eventType":"avi:forge:upgraded:app","id":"ev-`+fmt.Sprint(rng.IntN(1000))+`","upgraderAccountId":"`+account(u)+`"}`)
			record("lifecycle", r, r.Status == 200)
		case p < 99:
			r := call("GET", "/internal/app-token?installationId=ari:cloud:ecosystem::installation/"+s.inst, "", "", "Authorization", "Bearer "+internalToken)
			record("internal app-token", r, r.Status == 200 && r.str("access_token") != "")
		default:
			r := call("GET", "/internal/installations", "", "", "Authorization", "Bearer "+internalToken)
			record("internal installations", r, r.Status == 200)
		}
	}

	// Every site installed and triggered once before the clock starts.
	for i, s := range sites {
		if r := call("POST", "/triggers/scheduled", fitFor(s, ""), `{}`, "x-forge-oauth-system", appToks[i][0]); r.Status != 202 {
			t.Fatalf("first trigger: %d %s", r.Status, r.Body)
		}
	}

	const workers = 8
	var (
		gate    sync.RWMutex // held for writing while the readings are taken
		stop    atomic.Bool
		wg      sync.WaitGroup
		started = time.Now()
	)
	for w := range workers {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(started.UnixNano())))
			for !stop.Load() {
				gate.RLock()
				one(rng)
				gate.RUnlock()
			}
		})
	}
	quiet := func() serverReadings { // traffic paused, in-flight calls done
		time.Sleep(500 * time.Millisecond)
		return srv.metrics(t)
	}

	warmUp := min(5*time.Second, duration/4)
	time.Sleep(warmUp)
	gate.Lock()
	first := quiet()
	gate.Unlock()
	t.Logf("soak start (after %v warm-up): %s", warmUp, first.summary())
	time.Sleep(duration)
	stop.Store(true)
	wg.Wait()
	last := quiet()
	t.Logf("soak end (after %v more):     %s", duration, last.summary())

	// The answers.
	var total int
	kinds := make([]string, 0, len(outcomes))
	for k, n := range outcomes {
		kinds = append(kinds, k)
		total += n
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "\n  %6d  %s", outcomes[k], k)
	}
	t.Logf("%d requests in %v (%.0f/s), %d Weavy mints, %d JWKS fetches:%s", total, time.Since(started).Round(time.Second),
		float64(total)/time.Since(started).Seconds(), wv.Mints(), jwks.Fetches(), b.String())
	if len(unexpected) > 0 {
		t.Errorf("unexpected answers: %v", unexpected)
	}

	// Nothing grew: generous bounds, end ≤ 1.5 × start + a little.
	grew := func(name string, start, end, slack float64) {
		if end > 1.5*start+slack {
			t.Errorf("%s grew from %.0f to %.0f", name, start, end)
		}
	}
	grew("goroutines", first.goroutines, last.goroutines, 10)
	grew("open fds", first.fds, last.fds, 10)
	// The live heap after the last collection, not the heap in use: heap in
	// use is a sawtooth up to the GC's goal and a reading lands anywhere on it.
	grew("live heap after the last GC", first.heapLive, last.heapLive, 8<<20)
	grew("heap goal", first.heapGoal, last.heapGoal, 8<<20)

	// A clean stop, then the log: all JSON, no secret.
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.exited:
	case <-testwait.After(t):
		t.Fatal("no exit after SIGTERM")
	}
	if srv.err != nil || srv.stderr.String() != "" {
		t.Fatalf("exit: %v; stderr:\n%s", srv.err, srv.stderr)
	}
	lines, bad, leaks := logs.result()
	t.Logf("log: %d lines, %d not JSON, %d with a secret", lines, bad, len(leaks))
	if lines < total {
		t.Errorf("only %d log lines for %d requests at debug level", lines, total)
	}
	if bad > 0 {
		t.Errorf("%d log lines are not JSON", bad)
	}
	for _, l := range leaks {
		t.Errorf("secret in the log: %s", l)
	}
}

// logScan checks every log line as it is written: JSON, and no secret. A
// soak's log is not kept.
type logScan struct {
	secrets []string
	jwt     *regexp.Regexp

	mu    sync.Mutex
	lines int
	bad   int
	leaks []string
}

func newLogScan(secrets ...string) *logScan {
	return &logScan{
		// Every FIT and app token is a JWT; wyu_/wys_ are Weavy's token and key
		// prefixes.
		secrets: append(secrets, "wyu_", "wys_"),
		jwt:     regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`),
	}
}

func (s *logScan) line(l string) {
	var leak string
	for i, secret := range s.secrets {
		if strings.Contains(l, secret) {
			leak = fmt.Sprintf("secret #%d in a line of %d bytes", i, len(l))
			break
		}
	}
	if leak == "" && s.jwt.MatchString(l) {
		leak = fmt.Sprintf("a JWT in a line of %d bytes", len(l))
	}
	valid := json.Valid([]byte(l))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines++
	if !valid {
		s.bad++
	}
	if leak != "" && len(s.leaks) < 10 {
		s.leaks = append(s.leaks, leak)
	}
}

func (s *logScan) result() (lines, bad int, leaks []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines, s.bad, append([]string(nil), s.leaks...)
}

// flipSignature changes one character in the middle of a JWT's signature.
func flipSignature(jwt string) string {
	i := strings.LastIndexByte(jwt, '.') + 10
	c := byte('A')
	if jwt[i] == 'A' {
		c = 'B'
	}
	return jwt[:i] + string(c) + jwt[i+1:]
}
