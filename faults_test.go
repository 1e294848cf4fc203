package main

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
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/store/redistest"
	"github.com/forge-remote/forge-remote/weavy/weavytest"
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
			wv := weavytest.New("")
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

			// Known keys keep working while the refetch fails or hangs.
			for range 5 {
				begin := time.Now()
				r := ts.post(t, "/resolvers/token", fitKnown(), nil, `{}`)
				if r.Status != http.StatusOK || r.str("access_token") != held.str("access_token") {
					t.Fatalf("known key during the fault: %d %s", r.Status, r.Body)
				}
				if d := time.Since(begin); d > 5*time.Second {
					t.Fatalf("known key waited %v on the refetch", d)
				}
			}
			select {
			case <-firstDone:
			case <-time.After(20 * time.Second):
				t.Fatal("unknown-kid calls not answered within 20 s")
			}
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

// Weavy failing: a cold user gets the exact status and code, a 429's
// Retry-After is passed on (bounded to 1–60 s, 5 s when absent), a cached user
// keeps its token, and the cold user is served once Weavy is back.
func TestFaultWeavy(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavytest.New("")
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
	tooMany := func(retryAfter string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"title":"Too Many Requests","status":429}`))
		}
	}
	cases := []struct {
		name       string
		mode       weavytest.Mode
		answer     http.HandlerFunc // answers in Weavy's place when set
		status     int
		code       string
		retryAfter [2]int // accepted range of Retry-After seconds; zero: none
	}{
		{"connection reset", weavytest.Reset, nil, http.StatusBadGateway, "weavy_unavailable", [2]int{}},
		{"hanging", weavytest.Hang, nil, http.StatusGatewayTimeout, "weavy_timeout", [2]int{}},
		{"HTML 502 page", weavytest.HTML502, nil, http.StatusBadGateway, "weavy_unavailable", [2]int{}},
		{"problem 500", weavytest.Fail500, nil, http.StatusBadGateway, "weavy_unavailable", [2]int{}},
		{"429 Retry-After 7", weavytest.Limited429, nil, http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{7, 7}},
		{"429 Retry-After a day", weavytest.OK, tooMany("86400"), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{60, 60}},
		{"429 Retry-After a date", weavytest.OK, tooMany(time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{25, 31}},
		{"429 Retry-After garbage", weavytest.OK, tooMany("soon"), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{5, 5}},
		{"429 without Retry-After", weavytest.OK, tooMany(""), http.StatusServiceUnavailable, "weavy_rate_limited", [2]int{5, 5}},
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

			wv.SetMode(weavytest.OK)
			front.setAnswer(nil)
			var after reply
			if !eventually(5*time.Second, func() bool { after = token(cold); return after.Status == http.StatusOK }) {
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
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run() still waiting on the locked database after 10 s")
	}
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
	wv := weavytest.New("")
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
		for _, c := range []struct{ path, account string }{{"/resolvers/token", "acc-cold-paused"}, {"/triggers/scheduled", ""}} {
			start := time.Now()
			r := ts.post(t, c.path, fit(c.account), appTok(), `{}`)
			if r.Status != http.StatusServiceUnavailable || r.ErrCode != "store_unavailable" {
				t.Errorf("%s while Redis is paused: %d %s", c.path, r.Status, r.Body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s took %v to fail", c.path, d)
			}
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
		time.Sleep(500 * time.Millisecond)
		rs.Kill()
		time.Sleep(2 * time.Second)
		rs.Restart()
		recovered := eventually(10*time.Second, func() bool {
			return ts.post(t, "/resolvers/token", fit(fmt.Sprintf("acc-after-%d", time.Now().UnixNano())), nil, `{}`).Status == http.StatusOK
		})
		time.Sleep(300 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		t.Logf("answers during the kill and restart: %v", outcomes)
		if !recovered {
			t.Fatal("cold users not served within 10 s of Redis' restart")
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

// SIGTERM while mints are in flight: they finish with 200, the process exits
// 0, and the bolt file reopens cleanly with every token in it.
func TestFaultSIGTERM(t *testing.T) {
	t.Parallel()
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavytest.New("")
	t.Cleanup(wv.Close)
	front := newWeavyFront(t, wv)
	env := tokenEnv(t, jwks, wv)
	env["WEAVY_URL"] = front.URL
	env["WEAVY_TIMEOUT"] = "5s"
	env["LOG_LEVEL"] = "info"
	srv := startBinary(t, serverBinary(t), env, nil)
	srv.waitReady(t)
	fit := func(account string) string { return forgetest.MintFIT(t, key, forgetest.WithPrincipal(account)) }

	tokens := map[string]string{}
	warm := srv.post(t, "/resolvers/token", fit("acc-warm"), `{}`)
	if warm.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", warm.Status, warm.Body)
	}
	tokens["acc-warm"] = warm.str("access_token")

	// Five cold users whose mints take 1 s each at Weavy.
	front.delay.Store(int64(time.Second))
	const inflight = 5
	fits := make([]string, inflight)
	for i := range fits {
		fits[i] = fit(fmt.Sprintf("acc-inflight-%d", i))
	}
	replies := make([]reply, inflight)
	var wg sync.WaitGroup
	for i := range fits {
		wg.Go(func() { replies[i] = postTo(srv.URL, "/resolvers/token", fits[i], `{}`) })
	}
	if !eventually(5*time.Second, func() bool { return front.waiting.Load() == inflight }) {
		t.Fatalf("%d mints reached Weavy, want %d", front.waiting.Load(), inflight)
	}
	sigAt := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range replies {
		if r.Status != http.StatusOK || !strings.HasPrefix(r.str("access_token"), "wyu_") {
			t.Fatalf("in-flight call %d after SIGTERM: %d %s", i, r.Status, r.Body)
		}
		tokens[fmt.Sprintf("acc-inflight-%d", i)] = r.str("access_token")
	}
	select {
	case <-srv.exited:
	case <-time.After(25 * time.Second):
		t.Fatal("no exit within 25 s of SIGTERM")
	}
	if srv.err != nil {
		t.Fatalf("exit after SIGTERM: %v\nstderr:\n%s", srv.err, srv.stderr)
	}
	t.Logf("exit 0, %v after SIGTERM, %d in-flight calls answered 200", time.Since(sigAt).Round(time.Millisecond), inflight)
	if logs := srv.Logs.String(); !strings.Contains(logs, `"msg":"stopped"`) || srv.stderr.String() != "" {
		t.Fatalf("no clean stop in the log, or stderr output:\n%s\nstderr:\n%s", logs, srv.stderr)
	}

	// The file opens without waiting for a lock and passes bbolt's consistency check.
	path := strings.TrimPrefix(env["STORE_URL"], "bolt://")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("reopening the bolt file: %v", err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("bolt consistency check: %v", err)
	}

	// Every token is there: a new server serves them all without a mint.
	front.delay.Store(0)
	mints := wv.Mints()
	ts := startServer(t, env)
	ts.waitReady(t)
	for account, tok := range tokens {
		if r := ts.post(t, "/resolvers/token", fit(account), nil, `{}`); r.str("access_token") != tok {
			t.Fatalf("%s after the restart: %d %s", account, r.Status, r.Body)
		}
	}
	if wv.Mints() != mints {
		t.Fatalf("%d tokens re-minted after the restart", wv.Mints()-mints)
	}
}

// weavyFront stands before the Weavy fake: it can delay token mints or answer
// in Weavy's place, and forwards everything else.
type weavyFront struct {
	*httptest.Server
	delay   atomic.Int64 // nanoseconds a mint is held before it is forwarded
	waiting atomic.Int64 // mints being held now

	mu     sync.Mutex
	answer http.HandlerFunc
}

func newWeavyFront(t *testing.T, wv *weavytest.Server) *weavyFront {
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
		if d := time.Duration(f.delay.Load()); d > 0 && strings.HasSuffix(r.URL.Path, "/tokens") {
			f.waiting.Add(1)
			time.Sleep(d)
			f.waiting.Add(-1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
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
