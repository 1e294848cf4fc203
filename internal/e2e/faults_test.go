package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store/redistest"
)

// Faults of the server's neighbours: Forge's JWKS, Weavy, the bolt file, Redis,
// and SIGTERM under load. Each asserts what the client sees, to the status and
// error code, and that what was held before the fault is still there after.

// Forge's JWKS failing after the keys were loaded (500, garbage, an empty set,
// hanging): tokens signed with a known key keep verifying, a burst of unknown
// kids costs one refetch, and the keys held are kept.
func TestFaultJWKS(t *testing.T) {
	t.Parallel()
	known := forgetest.NewKey(t, "k1")
	rotated := forgetest.NewKey(t, "k-rotated") // never published
	faults := []struct {
		name  string
		apply func(*forgetest.JWKSServer)
	}{
		{"500", func(j *forgetest.JWKSServer) { j.SetDown(true) }},
		{"garbage JSON", func(j *forgetest.JWKSServer) {
			j.SetHandler(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"keys":[{"kty":"RSA","kid":"k-rotated","n":`))
			})
		}},
		{"empty key set", func(j *forgetest.JWKSServer) {
			j.SetHandler(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"keys":[]}`))
			})
		}},
		{"hanging", func(j *forgetest.JWKSServer) { j.SetHandler(j.Hang) }},
	}
	for _, fault := range faults {
		t.Run(fault.name, func(t *testing.T) {
			t.Parallel()
			jwks := forgetest.NewJWKSServer(t, known)
			wv := weavysim.New("")
			t.Cleanup(wv.Close)
			ts := startServer(t, tokenEnv(t, jwks, wv))
			// Connections the client dialed but never used would hold the
			// server's graceful shutdown for 5 s (net/http treats them as new).
			t.Cleanup(http.DefaultClient.CloseIdleConnections)
			ts.waitReady(t)
			fitKnown := func() string { return forgetest.MintFIT(t, known, forgetest.WithPrincipal("acc-known")) }
			held := ts.post(t, "/resolvers/token", fitKnown(), nil, `{}`)
			if held.Status != http.StatusOK {
				t.Fatalf("before the fault: %d %s", held.Status, held.Body)
			}
			fetches := jwks.Fetches()
			fault.apply(jwks)

			rotatedFITs := func(n int) []string {
				fits := make([]string, n)
				for i := range fits {
					fits[i] = forgetest.MintFIT(t, rotated, forgetest.WithPrincipal(fmt.Sprintf("acc-rotated-%d", i)))
				}
				return fits
			}
			burst := func(fits []string) []reply {
				out := make([]reply, len(fits))
				var wg sync.WaitGroup
				for i := range fits {
					wg.Go(func() { out[i] = postTo(ts.URL, "/resolvers/token", fits[i], `{}`) })
				}
				wg.Wait()
				return out
			}
			var first []reply
			firstFITs, secondFITs := rotatedFITs(40), rotatedFITs(20)
			firstDone := make(chan struct{})
			start := time.Now()
			go func() { first = burst(firstFITs); close(firstDone) }()

			// Known keys keep working while the refetch fails or hangs
			// (that they do not wait on it: forge's TestSlowEndpoint).
			for range 5 {
				r := ts.post(t, "/resolvers/token", fitKnown(), nil, `{}`)
				if r.Status != http.StatusOK || r.str("access_token") != held.str("access_token") {
					t.Fatalf("known key during the fault: %d %s", r.Status, r.Body)
				}
			}
			testwait.Recv(t, "the unknown-kid calls' answers", firstDone)
			t.Logf("40 unknown-kid calls answered in %v", time.Since(start).Round(time.Millisecond))
			second := burst(secondFITs) // within the rate-limit interval: no fetch at all
			for i, r := range append(first, second...) {
				if r.Status != http.StatusUnauthorized || r.ErrCode != "invalid_invocation_token" || !strings.Contains(string(r.Body), "unknown_kid") {
					t.Fatalf("unknown kid #%d: %d %s", i, r.Status, r.Body)
				}
			}
			if n := jwks.Fetches() - fetches; n < 1 || n > 2 {
				t.Fatalf("60 unknown-kid calls made %d JWKS fetches, want 1–2", n)
			}

			// The keys held are intact: known FITs verify, readiness holds, nothing re-minted.
			if r := ts.post(t, "/resolvers/token", fitKnown(), nil, `{}`); r.Status != http.StatusOK || r.str("access_token") != held.str("access_token") {
				t.Fatalf("known key after the fault: %d %s", r.Status, r.Body)
			}
			if st, r := ts.get(t, "/readyz", ""); st != http.StatusOK {
				t.Fatalf("readyz after the fault: %d %s", st, r.Body)
			}
			if wv.Mints() != 1 {
				t.Fatalf("%d mints, want 1", wv.Mints())
			}

		})
	}
}

// fixed is a Retry-After that is always v.
func fixed(v string) func() string { return func() string { return v } }

// Weavy failing (hanging: TestTokenWeavyTimeout): a cold user gets the exact status and code, a 429's
// Retry-After is passed on (bounded to 1–60 s, 5 s when absent), a cached user
// keeps its token, and the cold user is served once Weavy is back.
func TestFaultWeavy(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	front := newWeavyFront(t, wv)
	env := tokenEnv(t, jwks, wv)
	env["WEAVY_URL"] = front.URL
	ts := startServer(t, env)
	ts.waitReady(t)
	token := func(account string) reply {
		t.Helper()
		return ts.post(t, "/resolvers/token", forgetest.MintFIT(t, key, forgetest.WithPrincipal(account)), nil, `{}`)
	}
	warm := token("acc-warm")
	if warm.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", warm.Status, warm.Body)
	}
	tooMany := func(retryAfter func() string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if v := retryAfter(); v != "" {
				w.Header().Set("Retry-After", v)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"title":"Too Many Requests","status":429}`))
		}
	}
	cases := []struct {
		name       string
		mode       weavysim.Mode
		answer     http.HandlerFunc // answers in Weavy's place when set
		status     int
		code       string
		retryAfter [2]int // accepted range of Retry-After seconds; zero: none
	}{
		{"connection reset", weavysim.Reset, nil, http.StatusBadGateway, "weavy_unavailable", [2]int{}},
		{"HTML 502 page", weavysim.HTML502, nil, http.StatusBadGateway, "weavy_unavailable", [2]int{}},
		{"problem 500", weavysim.Fail500, nil, http.StatusBadGateway, "weavy_unavailable", [2]int{}},
		{"429 Retry-After 7", weavysim.Limited429, nil, http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{7, 7}},
		{"429 Retry-After a day", weavysim.OK, tooMany(fixed("86400")), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{60, 60}},
		// A date read when Weavy answers, far enough ahead that no slowness
		// brings it under the 60 s bound (TestParseRetryAfter does the sums).
		{"429 Retry-After a date", weavysim.OK, tooMany(func() string { return time.Now().Add(10 * time.Minute).UTC().Format(http.TimeFormat) }), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{60, 60}},
		{"429 Retry-After garbage", weavysim.OK, tooMany(fixed("soon")), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{5, 5}},
		{"429 without Retry-After", weavysim.OK, tooMany(fixed("")), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{5, 5}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mints := wv.Mints()
			wv.SetMode(tc.mode)
			front.setAnswer(tc.answer)
			cold := fmt.Sprintf("acc-cold-%d", i)
			r := token(cold)
			if r.Status != tc.status || r.ErrCode != tc.code {
				t.Fatalf("cold user: %d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
			ra := r.Header.Get("Retry-After")
			if tc.retryAfter == [2]int{} {
				if ra != "" {
					t.Errorf("Retry-After %q on a %d", ra, r.Status)
				}
			} else if n, err := strconv.Atoi(ra); err != nil || n < tc.retryAfter[0] || n > tc.retryAfter[1] {
				t.Errorf("Retry-After %q, want %d–%d s", ra, tc.retryAfter[0], tc.retryAfter[1])
			}
			if w := token("acc-warm"); w.Status != http.StatusOK || w.str("access_token") != warm.str("access_token") {
				t.Fatalf("cached user during the fault: %d %s", w.Status, w.Body)
			}
			if wv.Mints() != mints {
				t.Fatalf("a token was minted during the fault")
			}

			wv.SetMode(weavysim.OK)
			front.setAnswer(nil)
			var after reply
			if !testwait.Poll(t, func() bool { after = token(cold); return after.Status == http.StatusOK }) {
				t.Fatalf("cold user once Weavy is back: %d %s", after.Status, after.Body)
			}
		})
	}
	if w := token("acc-warm"); w.str("access_token") != warm.str("access_token") {
		t.Fatalf("the cached user's token changed")
	}
}

// A bolt database held by another process stops the start within seconds with
// an error naming the file, and leaves the data and its key file untouched.
func TestFaultBoltLocked(t *testing.T) {
	f := newTokenFixture(t)
	held := f.token(t, "acc-held", `{}`, nil)
	if held.Status != http.StatusOK {
		t.Fatalf("before: %d %s", held.Status, held.Body)
	}
	f.ts.Stop(t)
	path := strings.TrimPrefix(f.env["STORE_URL"], "bolt://")
	keyFile, err := os.ReadFile(path + ".key")
	if err != nil {
		t.Fatal(err)
	}

	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"forge-remote"}, func(k string) string { return f.env[k] }, &stdout, &stderr)
	}()
	err = testwait.Recv(t, "run() to give up on the locked database", done)
	db.Close()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("run() = %v, want an error naming %s as locked", err, path)
	}
	t.Logf("run() = %v", err)
	if after, _ := os.ReadFile(path + ".key"); !bytes.Equal(after, keyFile) {
		t.Fatal("the failed start changed the key file")
	}

	f.ts = startServer(t, f.env)
	f.ts.waitReady(t)
	if r := f.token(t, "acc-held", `{}`, nil); r.str("access_token") != held.str("access_token") || f.wv.Mints() != 1 {
		t.Fatalf("after the lock is gone: %d %s, %d mints", r.Status, r.Body, f.wv.Mints())
	}
}

// Redis paused, then killed and restarted, under load: every error is 503
// JSON store_unavailable (never a 500), the server recovers without a
// restart, and a token stored before the outage is still served after it
// without a mint. redistest runs with --save "": a KILL loses Redis' data, so
// "nothing lost" is checked across a pause (SIGSTOP/SIGCONT) and recovery
// across the kill and restart.
func TestFaultRedis(t *testing.T) {
	rs := redistest.Start(t)
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	env := tokenEnv(t, jwks, wv)
	raw := make([]byte, 32)
	rand.Read(raw)
	env["STORE_URL"] = rs.URL()
	env["STORE_KEY"] = base64.StdEncoding.EncodeToString(raw)
	env["LOG_LEVEL"] = "info"
	ts := startServer(t, env)
	ts.waitReady(t)
	fit := func(account string) string { return forgetest.MintFIT(t, key, forgetest.WithPrincipal(account)) }
	var appTokExp atomic.Int64
	appTokExp.Store(time.Now().Add(3 * time.Hour).Unix())
	appTok := func() map[string]string { // always later than the one held: a store write
		return map[string]string{"x-forge-oauth-system": forgetest.MintAppToken(t, time.Unix(appTokExp.Add(1), 0))}
	}
	held := ts.post(t, "/resolvers/token", fit("acc-held"), nil, `{}`)
	if held.Status != http.StatusOK {
		t.Fatalf("before: %d %s", held.Status, held.Body)
	}

	t.Run("pause: nothing lost", func(t *testing.T) {
		rs.Pause()
		resumed := false
		defer func() {
			if !resumed {
				rs.Resume()
			}
		}()
		if r := ts.post(t, "/resolvers/token", fit("acc-held"), nil, `{}`); r.Status != http.StatusOK || r.str("access_token") != held.str("access_token") {
			t.Errorf("cached user while Redis is paused: %d %s", r.Status, r.Body)
		}
		// A paused Redis never answers: any answer shows the store's own
		// timeout ended the wait.
		for _, c := range []struct{ path, account string }{{"/resolvers/token", "acc-cold-paused"}, {"/triggers/scheduled", ""}} {
			start := time.Now()
			r := ts.post(t, c.path, fit(c.account), appTok(), `{}`)
			if r.Status != http.StatusServiceUnavailable || r.ErrCode != "store_unavailable" {
				t.Errorf("%s while Redis is paused: %d %s", c.path, r.Status, r.Body)
			}
			t.Logf("%s failed after %v", c.path, time.Since(start).Round(time.Millisecond))
		}
		if st, r := ts.get(t, "/readyz", ""); st != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "store") {
			t.Errorf("readyz while Redis is paused: %d %s", st, r.Body)
		}
		rs.Resume()
		resumed = true
		ts.waitReady(t)
		if r := ts.post(t, "/resolvers/token", fit("acc-cold-paused"), nil, `{}`); r.Status != http.StatusOK {
			t.Fatalf("cold user after the pause: %d %s", r.Status, r.Body)
		}
		// A fresh replica (nothing in memory) reads the held token from Redis.
		other := startServer(t, env)
		other.waitReady(t)
		mints := wv.Mints()
		if r := other.post(t, "/resolvers/token", fit("acc-held"), nil, `{}`); r.str("access_token") != held.str("access_token") || wv.Mints() != mints {
			t.Fatalf("the token stored before the pause: %d %s (%d new mints)", r.Status, r.Body, wv.Mints()-mints)
		}
		other.Stop(t)
	})

	t.Run("kill and restart under load", func(t *testing.T) {
		// Load: cached and cold users and scheduled triggers, from 6 clients.
		fits := make([]string, 300)
		for i := range fits {
			switch i % 3 {
			case 0:
				fits[i] = fit("acc-held")
			case 1:
				fits[i] = fit(fmt.Sprintf("acc-load-%d", i))
			default:
				fits[i] = fit("")
			}
		}
		appToks := make([]string, 100)
		for i := range appToks {
			appToks[i] = appTok()["x-forge-oauth-system"]
		}
		var (
			mu       sync.Mutex
			outcomes = map[string]int{}
			stop     atomic.Bool
			wg       sync.WaitGroup
			n        atomic.Int64
		)
		for range 6 {
			wg.Go(func() {
				for !stop.Load() {
					i := int(n.Add(1))
					path, tok := "/resolvers/token", ""
					if i%3 == 2 {
						path, tok = "/triggers/scheduled", appToks[(i/3)%len(appToks)]
					}
					r := postTo(ts.URL, path, fits[i%len(fits)], `{}`, "x-forge-oauth-system", tok)
					mu.Lock()
					outcomes[fmt.Sprintf("%d %s", r.Status, r.ErrCode)]++
					mu.Unlock()
				}
			})
		}
		// Each phase lasts until the clients have seen it, however slow the
		// machine: served, then refused while Redis is gone, then served again.
		seen := func(outcome string, n int) func() bool {
			return func() bool { mu.Lock(); defer mu.Unlock(); return outcomes[outcome] >= n }
		}
		testwait.For(t, "answers before the kill", seen("200 ", 10))
		rs.Kill()
		testwait.For(t, "a call to see the outage", seen("503 store_unavailable", 1))
		rs.Restart()
		mu.Lock()
		servedBefore := outcomes["200 "]
		mu.Unlock()
		recovered := testwait.Poll(t, func() bool {
			return ts.post(t, "/resolvers/token", fit(fmt.Sprintf("acc-after-%d", time.Now().UnixNano())), nil, `{}`).Status == http.StatusOK
		})
		testwait.For(t, "the clients to be served after the restart", seen("200 ", servedBefore+10))
		stop.Store(true)
		wg.Wait()
		t.Logf("answers during the kill and restart: %v", outcomes)
		if !recovered {
			t.Fatal("cold users not served after Redis' restart")
		}
		for o := range outcomes {
			switch o {
			case "200 ", "202 ", "503 store_unavailable":
			default:
				t.Errorf("answer %q during the outage; want 200, 202 or 503 store_unavailable", o)
			}
		}
		if outcomes["503 store_unavailable"] == 0 {
			t.Error("no call saw the outage")
		}
		ts.waitReady(t)
		if r := ts.post(t, "/triggers/scheduled", fit(""), appTok(), `{}`); r.Status != http.StatusAccepted {
			t.Fatalf("scheduled trigger after the restart: %d %s", r.Status, r.Body)
		}
		if r := ts.post(t, "/resolvers/token", fit("acc-held"), nil, `{}`); r.Status != http.StatusOK {
			t.Fatalf("held user after the restart: %d %s", r.Status, r.Body)
		}
	})
}

// weavyFront stands before the Weavy fake: it can hold token mints until
// the test lets them go, or answer in Weavy's place, and forwards everything
// else.
type weavyFront struct {
	*httptest.Server
	gate    atomic.Pointer[chan struct{}] // when set, mints wait for it to close
	waiting atomic.Int64                  // mints being held now

	mu     sync.Mutex
	answer http.HandlerFunc
}

func newWeavyFront(t *testing.T, wv *weavysim.Server) *weavyFront {
	u, err := url.Parse(wv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a fault's broken connection is expected
	f := &weavyFront{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		answer := f.answer
		f.mu.Unlock()
		if answer != nil {
			answer(w, r)
			return
		}
		if gate := f.gate.Load(); gate != nil && strings.HasSuffix(r.URL.Path, "/tokens") {
			f.waiting.Add(1)
			<-*gate
			f.waiting.Add(-1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	t.Cleanup(f.release) // before Close, which waits for the held handlers
	return f
}

// hold makes the next mints wait until release.
func (f *weavyFront) hold() {
	gate := make(chan struct{})
	f.gate.Store(&gate)
}

// release lets the held mints through, and those after them.
func (f *weavyFront) release() {
	if gate := f.gate.Swap(nil); gate != nil {
		close(*gate)
	}
}

func (f *weavyFront) setAnswer(h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = h
}

// postTo posts a Forge call from any goroutine: a transport failure or an
// answer that is not JSON comes back as Status 0 and the error in ErrCode.
func postTo(baseURL, path, fit, body string, extra ...string) reply {
	req, err := http.NewRequest(http.MethodPost, baseURL+path, strings.NewReader(body))
	if err != nil {
		return reply{ErrCode: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+fit)
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] != "" {
			req.Header.Set(extra[i], extra[i+1])
		}
	}
	r, err := sendReq(http.DefaultClient, req)
	if err != nil {
		return reply{Status: r.Status, ErrCode: "transport/not JSON: " + err.Error()}
	}
	return r
}
