package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store/redistest"
)

// fleet is replicas of the real server sharing one Redis, behind one JWKS
// and one Weavy fake, as behind a load balancer.
type fleet struct {
	redis    *redistest.Server
	key      *forgetest.Key
	wv       *weavysim.Server
	env      map[string]string
	replicas []*testServer
}

func startFleet(t *testing.T, n int) *fleet {
	t.Helper()
	f := &fleet{redis: redistest.Start(t), key: forgetest.NewKey(t, "k1"), wv: weavysim.New("")}
	t.Cleanup(f.wv.Close)
	jwks := forgetest.NewJWKSServer(t, f.key)
	raw := make([]byte, 32)
	rand.Read(raw)
	f.env = tokenEnv(t, jwks, f.wv)
	f.env["STORE_URL"] = f.redis.URL()
	f.env["STORE_KEY"] = base64.StdEncoding.EncodeToString(raw)
	f.env["LOG_LEVEL"] = "info"
	for range n {
		f.add(t)
	}
	return f
}

// add starts one more replica.
func (f *fleet) add(t *testing.T) *testServer {
	t.Helper()
	ts := startServer(t, f.env)
	ts.waitReady(t)
	f.replicas = append(f.replicas, ts)
	return ts
}

// fit signs a FIT for account ("" for a trigger's) in installation inst.
func (f *fleet) fit(t *testing.T, inst, account string) string {
	return forgetest.MintFIT(t, f.key, forgetest.WithPrincipal(account), forgetest.WithInstallation(inst, forgetest.CloudID))
}

// token asks replica r for account's Weavy token in inst.
func (f *fleet) token(t *testing.T, r *testServer, inst, account string) reply {
	t.Helper()
	return r.post(t, "/resolvers/token", f.fit(t, inst, account), nil, `{}`)
}

func installation(name string) string { return "ari:cloud:ecosystem::installation/" + name }

// metric sums every series of a counter on the replica's /metrics.
func metric(t *testing.T, r *testServer, name string) float64 {
	t.Helper()
	_, m := r.get(t, "/metrics", "")
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(string(m.Body)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

func (f *fleet) metric(t *testing.T, name string) float64 {
	var sum float64
	for _, r := range f.replicas {
		sum += metric(t, r, name)
	}
	return sum
}

// Three replicas sharing a Redis behave as one server: one mint per user, one
// run of jobs per trigger, purges seen everywhere, no secret in Redis, and a
// Redis outage answered with 503 while memory keeps serving.
func TestReplicas(t *testing.T) {
	f := startFleet(t, 3)
	a, b, c := f.replicas[0], f.replicas[1], f.replicas[2]
	inst := forgetest.InstallationID
	var secrets []string // every token handed out, to look for in Redis

	t.Run("a token minted through A is served by B", func(t *testing.T) {
		first := f.token(t, a, inst, "acc-ada")
		second := f.token(t, b, inst, "acc-ada")
		if first.Status != http.StatusOK || second.str("access_token") != first.str("access_token") || f.wv.Mints() != 1 {
			t.Fatalf("A: %d %s; B: %s; %d mints", first.Status, first.Body, second.Body, f.wv.Mints())
		}
		secrets = append(secrets, first.str("access_token"))
	})

	t.Run("an app token captured by A is handed out by B", func(t *testing.T) {
		for _, exp := range []time.Duration{3 * time.Hour, 4 * time.Hour} { // then a newer one
			appTok := forgetest.MintAppToken(t, time.Now().Add(exp))
			secrets = append(secrets, appTok)
			if r := a.post(t, "/triggers/scheduled", f.fit(t, inst, ""), map[string]string{"x-forge-oauth-system": appTok}, `{}`); r.Status != http.StatusAccepted {
				t.Fatalf("scheduled on A: %d %s", r.Status, r.Body)
			}
			if r := b.internal(t, "/internal/app-token?installationId="+inst); r.Status != http.StatusOK || r.str("access_token") != appTok {
				t.Fatalf("B's app token after A captured one for %v: %d %.60s", exp, r.Status, r.Body)
			}
		}
	})

	t.Run("90 concurrent cold requests over 3 replicas mint once", func(t *testing.T) {
		const n = 90
		fits := make([]string, n)
		for i := range fits {
			fits[i] = f.fit(t, inst, "acc-crowd")
		}
		before := f.wv.Mints()
		answers := make([]reply, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { answers[i] = f.replicas[i%3].post(t, "/resolvers/token", fits[i], nil, `{}`) })
		}
		wg.Wait()
		for i, r := range answers {
			if r.Status != http.StatusOK || r.str("access_token") != answers[0].str("access_token") {
				t.Fatalf("call %d: %d %s; want the same token as call 0 (%s)", i, r.Status, r.Body, answers[0].Body)
			}
		}
		if m := f.wv.Mints() - before; m != 1 {
			t.Fatalf("%d mints, want 1", m)
		}
		secrets = append(secrets, answers[0].str("access_token"))
	})

	t.Run("a trigger delivered to two replicas runs its jobs once", func(t *testing.T) {
		installed := `{"eventType":"avi:forge:installed:app","app":{"id":"` + forgetest.AppID + `","version":"2.14.0"}}`
		for _, tc := range []struct{ path, inst, body string }{
			{"/triggers/scheduled", installation("dup-scheduled"), `{}`},
			{"/triggers/lifecycle", installation("dup-lifecycle"), installed},
		} {
			// Jobs queued by the subtests before (a mint's profile sync) may
			// still run on a busy machine: count from when none is left.
			idle := func() bool { return f.metric(t, "scheduler_jobs_pending") == 0 }
			testwait.For(t, "the earlier jobs to end", idle)
			runs := f.metric(t, "scheduler_job_runs_total")
			dups := f.metric(t, "scheduler_duplicate_triggers_total")
			fit := f.fit(t, tc.inst, "")
			var wg sync.WaitGroup
			for _, r := range []*testServer{a, b} {
				wg.Go(func() {
					if got := r.post(t, tc.path, fit, nil, tc.body); got.Status >= 300 {
						t.Errorf("%s: %d %s", tc.path, got.Status, got.Body)
					}
				})
			}
			wg.Wait()
			// One delivery queues profile sync, housekeeping and the chat
			// lease prune.
			const jobs = 3
			// Both deliveries were answered, so whatever they queued is queued:
			// once nothing is pending, every run they caused is counted.
			testwait.For(t, tc.path+"'s jobs to run", func() bool {
				return f.metric(t, "scheduler_job_runs_total")-runs >= jobs && idle()
			})
			if got := f.metric(t, "scheduler_job_runs_total") - runs; got != jobs {
				t.Errorf("%s delivered twice: %v job runs, want %d", tc.path, got, jobs)
			}
			if tc.path == "/triggers/scheduled" {
				if got := f.metric(t, "scheduler_duplicate_triggers_total") - dups; got != 1 {
					t.Errorf("%v duplicates counted, want 1", got)
				}
			}
		}
	})

	t.Run("an uninstall on A is seen by B and C", func(t *testing.T) {
		gone := installation("to-uninstall")
		appTok := forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))
		a.post(t, "/triggers/lifecycle", f.fit(t, gone, ""), map[string]string{"x-forge-oauth-system": appTok}, `{"eventType":"avi:confluence:created:page"}`)
		old := f.token(t, b, gone, "acc-gone").str("access_token")
		for _, r := range []*testServer{b, c} { // both hold it in memory
			if got := f.token(t, r, gone, "acc-gone").str("access_token"); got != old {
				t.Fatalf("token before the uninstall: %q, want %q", got, old)
			}
			if r.internal(t, "/internal/app-token?installationId="+gone).Status != http.StatusOK {
				t.Fatal("app token not handed out before the uninstall")
			}
		}
		secrets = append(secrets, old, appTok)

		mints := f.wv.Mints()
		start := time.Now()
		if r := a.post(t, "/triggers/uninstall", f.fit(t, gone, ""), nil, `{}`); r.Status != http.StatusOK {
			t.Fatalf("uninstall: %d %s", r.Status, r.Body)
		}
		for _, r := range []*testServer{b, c} {
			// Seen through pub/sub: without it, the token held in memory
			// would be served for the hour it lives, past this wait.
			ok := testwait.Poll(t, func() bool {
				tok := f.token(t, r, gone, "acc-gone").str("access_token")
				return tok != "" && tok != old
			})
			if !ok {
				t.Fatalf("%s still serves the purged installation's token %v after the uninstall", r.URL, time.Since(start))
			}
			if st := r.internal(t, "/internal/app-token?installationId="+gone).Status; st != http.StatusNotFound {
				t.Fatalf("app-token after the uninstall: %d, want 404", st)
			}
		}
		t.Logf("uninstall seen by B and C after %v", time.Since(start))
		if f.wv.Mints() != mints+1 {
			t.Errorf("%d mints after the uninstall, want 1 (B's, then C from the store)", f.wv.Mints()-mints)
		}
	})

	t.Run("no token in any Redis key or value", func(t *testing.T) {
		rc := f.redis.Client()
		var keys []string
		it := rc.Scan(t.Context(), 0, "*", 0).Iterator() // what redis-cli --scan does
		for it.Next(t.Context()) {
			keys = append(keys, it.Val())
		}
		if err := it.Err(); err != nil || len(keys) < 5 {
			t.Fatalf("scan: %q, %v", keys, err)
		}
		for _, k := range keys {
			v, err := rc.Get(t.Context(), k).Result()
			if goredis.HasErrorPrefix(err, "WRONGTYPE") { // the key index: its members are key names
				var members []string
				members, err = rc.ZRange(t.Context(), k, 0, -1).Result()
				v = strings.Join(members, "\n")
			}
			if err != nil {
				t.Fatalf("GET %q: %v", k, err)
			}
			for _, s := range append([]string{"wyu_", "eyJ"}, secrets...) {
				if strings.Contains(k, s) || strings.Contains(v, s) {
					t.Fatalf("key %q or its value holds a token (%.8s…)", k, s)
				}
			}
		}
	})

	t.Run("Redis paused: 503 for what needs it, memory still serves", func(t *testing.T) {
		f.redis.Pause()
		paused := true
		defer func() {
			if paused {
				f.redis.Resume()
			}
		}()
		// A paused Redis never answers: an answer at all shows the store's
		// own timeout ended the wait (go test's -timeout bounds it here).
		start := time.Now()
		cold := f.token(t, b, inst, "acc-cold")
		if cold.Status != http.StatusServiceUnavailable || cold.ErrCode != "store_unavailable" {
			t.Fatalf("cold user while Redis is paused: %d %s after %v", cold.Status, cold.Body, time.Since(start))
		}
		coldTook := time.Since(start)
		start = time.Now()
		st, ready := b.get(t, "/readyz", "")
		if st != http.StatusServiceUnavailable || ready.ErrCode != "not_ready" {
			t.Fatalf("/readyz while Redis is paused: %d %s after %v", st, ready.Body, time.Since(start))
		}
		readyTook := time.Since(start)
		start = time.Now()
		if warm := f.token(t, b, inst, "acc-ada"); warm.Status != http.StatusOK {
			t.Fatalf("cached user while Redis is paused: %d %s after %v", warm.Status, warm.Body, time.Since(start))
		}
		t.Logf("while paused: cold token 503 after %v, /readyz 503 after %v, cached token 200 after %v",
			coldTook, readyTook, time.Since(start))

		f.redis.Resume()
		paused = false
		testwait.For(t, "serving again after Redis resumed", func() bool {
			st, _ := b.get(t, "/readyz", "")
			return st == http.StatusOK && f.token(t, b, inst, "acc-cold").Status == http.StatusOK
		})
	})

	// Pub/sub is at most once: a replica whose subscription broke may have
	// missed a purge, so it drops what it holds in memory once resubscribed.
	t.Run("a broken subscription drops the memory cache", func(t *testing.T) {
		held := f.token(t, c, inst, "acc-ada").str("access_token")
		f.redis.Restart() // empty: only a replica serving from memory still has the token
		testwait.For(t, "C to stop serving from memory after Redis restarted", func() bool {
			r := f.token(t, c, inst, "acc-ada")
			return r.Status == http.StatusOK && r.str("access_token") != held
		})
	})
}

// A replica on Redis (subscription, mint locks, purges) leaves no goroutine
// behind once stopped.
func TestReplicaStopsItsGoroutines(t *testing.T) {
	f := startFleet(t, 0)
	ignore := goleak.IgnoreCurrent() // Redis' and the fakes'
	r := f.add(t)
	gone := installation("leak")
	if got := f.token(t, r, gone, "acc-ada"); got.Status != http.StatusOK {
		t.Fatalf("token: %d %s", got.Status, got.Body)
	}
	if got := r.post(t, "/triggers/uninstall", f.fit(t, gone, ""), nil, `{}`); got.Status != http.StatusOK {
		t.Fatalf("uninstall: %d %s", got.Status, got.Body)
	}
	r.Stop(t)
	// Idle keep-alive connections are not this test's concern: the test's
	// own, and the Weavy client's (which has no Close), ended from the fake's side.
	http.DefaultClient.CloseIdleConnections()
	f.wv.CloseClientConnections()
	testwait.NoLeaks(t, ignore)
}
