package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/weavy"
)

// countJob counts its runs per installation.
type countJob struct {
	mu   sync.Mutex
	runs map[string]int
}

func (c *countJob) job() Job {
	return Job{Name: "count", Run: func(_ context.Context, inst string) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.runs == nil {
			c.runs = map[string]int{}
		}
		c.runs[inst]++
		return nil
	}}
}

func (c *countJob) n(inst string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[inst]
}

func TestScheduledAnswersWhileSlowJobRuns(t *testing.T) {
	release := make(chan struct{})
	started := make(chan string, 4)
	slow := Job{Name: "slow", Run: func(ctx context.Context, inst string) error {
		started <- inst
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}}
	e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{slow}; o.Concurrency = 1 })
	defer close(release)

	if err := e.svc.Scheduled(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	testwait.Recv(t, "the slow job to start", started)
	// The only worker is busy until the test ends: a Scheduled that waited
	// for it would never return.
	for _, inst := range []string{instB, instA} {
		e.clock.Advance(time.Hour)
		if err := e.svc.Scheduled(t.Context(), e.inv(inst, cloudA)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestScheduledDuplicateDeliveryRunsJobsOnce(t *testing.T) {
	var c countJob
	e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{c.job()} })
	e.scheduled(t, instA, cloudA)
	e.scheduled(t, instA, cloudA)
	e.clock.Advance(10 * time.Minute)
	e.scheduled(t, instA, cloudA)
	if got := c.n(instA); got != 1 {
		t.Fatalf("runs after 3 deliveries of one slot = %d, want 1", got)
	}

	// A replica sharing the store sees the same slot as taken.
	replica := testOptions{QueueOptions: QueueOptions{KV: e.kv, AppTokens: e.tokens, Now: e.clock.Now, Registerer: e.reg}, Jobs: []Job{c.job()}}.build()
	defer replica.Close()
	if err := replica.Scheduled(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	replica.run.waitIdle()
	if got := c.n(instA); got != 1 {
		t.Fatalf("runs after a duplicate on another replica = %d, want 1", got)
	}

	// The next hourly slot runs, as does another installation's.
	e.clock.Advance(50 * time.Minute)
	e.scheduled(t, instA, cloudA)
	e.scheduled(t, instB, cloudB)
	if c.n(instA) != 2 || c.n(instB) != 1 {
		t.Fatalf("runs = %v", c.runs)
	}

	// Racing deliveries of one slot to two replicas: one wins.
	e.clock.Advance(time.Hour)
	var wg sync.WaitGroup
	for i := range 20 {
		svc := e.svc
		if i%2 == 1 {
			svc = replica
		}
		wg.Go(func() {
			if err := svc.Scheduled(context.Background(), e.inv(instA, cloudA)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	e.svc.run.waitIdle()
	replica.run.waitIdle()
	if got := c.n(instA); got != 3 {
		t.Fatalf("runs after 20 racing deliveries = %d, want 3", got)
	}
	if got := e.counter(t, "scheduler_duplicate_triggers_total", nil); got != 2+1+19 {
		t.Errorf("duplicates counted = %v, want 22", got)
	}

	list, err := e.svc.Installations(t.Context())
	if err != nil || len(list) != 2 || !list[0].LastScheduledAt.Equal(e.clock.Now()) {
		t.Fatalf("installations = %+v, %v", list, err)
	}
}

func TestScheduledWithoutInstallation(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.svc.Scheduled(t.Context(), &forge.Invocation{}); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("err = %v", err)
	}
}

func installedEvent(inst string) string {
	return fmt.Sprintf(`{"eventType":"avi:forge:installed:app","id":%q,"installerAccountId":"557058:installer",`+
		`"app":{"id":"ari:cloud:ecosystem::app/x","version":"2.14.0"},"environment":{"id":"env-9"},`+
		`"context":{"cloudId":%q}}`, inst, cloudA)
}

const retryContext = `{"retryCount":1,"retryReason":"FUNCTION_TIMEOUT","retryData":{"n":1}}`

// shapes are the bodies a lifecycle event may come in.
func shapes(event string) map[string]string {
	withRetry := strings.TrimSuffix(event, "}") + `,"retryContext":` + retryContext + `}`
	return map[string]string{
		"top-level":            event,
		"payload":              `{"payload":` + event + `,"context":{"cloudId":"x"}}`,
		"top-level with retry": withRetry,
		"payload with retry":   `{"payload":` + event + `,"retryContext":` + retryContext + `}`,
		"retry inside payload": `{"payload":` + withRetry + `}`,
	}
}

func TestLifecycleInstalledRecordedOnce(t *testing.T) {
	check := func(t *testing.T, e *env, c *countJob) {
		t.Helper()
		if got := c.n(instA); got != 1 {
			t.Fatalf("initial syncs = %d, want 1", got)
		}
		list, err := e.svc.Installations(t.Context())
		if err != nil || len(list) != 1 {
			t.Fatalf("installations = %+v, %v", list, err)
		}
		want := Installation{
			InstallationID: instA, CloudID: cloudA, APIBaseURL: e.conf.APIBaseURL(cloudA),
			AppVersion: "2.14.0", EnvironmentType: "PRODUCTION", EnvironmentID: "env-9",
			InstallerAccountID: "557058:installer", FirstSeen: start, LastSeen: e.clock.Now().Add(-time.Minute), // the last retry
		}
		if list[0] != want {
			t.Fatalf("installation =\n%+v\nwant\n%+v", list[0], want)
		}
	}
	for name, body := range shapes(installedEvent(instA)) {
		t.Run(name, func(t *testing.T) {
			var c countJob
			e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{c.job()} })
			for range 3 { // Forge's retries
				if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); err != nil {
					t.Fatal(err)
				}
				e.svc.run.waitIdle()
				e.clock.Advance(time.Minute)
			}
			check(t, e, &c)
		})
	}
	t.Run("all shapes", func(t *testing.T) {
		var c countJob
		e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{c.job()} })
		for _, body := range shapes(installedEvent(instA)) {
			if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); err != nil {
				t.Fatal(err)
			}
			e.svc.run.waitIdle()
			e.clock.Advance(time.Minute)
		}
		check(t, e, &c)
	})
}

func TestLifecycleUpgraded(t *testing.T) {
	var c countJob
	e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{c.job()} })
	deliver := func(body string) {
		t.Helper()
		if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); err != nil {
			t.Fatal(err)
		}
		e.svc.run.waitIdle()
	}
	deliver(installedEvent(instA))
	e.clock.Advance(24 * time.Hour)
	upgraded := `{"eventType":"avi:forge:upgraded:app","id":"` + instA + `","upgraderAccountId":"557058:upgrader",` +
		`"app":{"id":"ari:cloud:ecosystem::app/x","version":"3.0.0"},"environment":{"id":"env-9"},"permissions":[]}`
	for _, body := range shapes(upgraded) {
		deliver(body)
	}
	if got := c.n(instA); got != 2 {
		t.Fatalf("syncs = %d, want 2 (install, upgrade)", got)
	}
	list, _ := e.svc.Installations(t.Context())
	got := list[0]
	if got.AppVersion != "3.0.0" || got.UpgraderAccountID != "557058:upgrader" ||
		got.InstallerAccountID != "557058:installer" || !got.FirstSeen.Equal(start) || !got.LastSeen.Equal(e.clock.Now()) {
		t.Fatalf("after upgrade: %+v", got)
	}
}

func TestLifecycleOtherEventsAcknowledged(t *testing.T) {
	var c countJob
	e := newEnv(t, func(o *testOptions) { o.Jobs = []Job{c.job()} })
	for _, body := range []string{
		`{"eventType":"avi:confluence:created:page","page":{"id":"1"}}`,
		`{"payload":{"eventType":"avi:forge:something:new"}}`,
		`{}`,
	} {
		if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	e.svc.run.waitIdle()
	if c.n(instA) != 0 || len(e.keys(t)) != 0 {
		t.Fatalf("an unknown event did something: runs %d, keys %q", c.n(instA), e.keys(t))
	}
	if len(e.logsWith("event_type", "avi:confluence:created:page")) != 1 {
		t.Errorf("unknown event not logged")
	}
}

func TestLifecycleMalformed(t *testing.T) {
	e := newEnv(t, nil)
	for _, body := range []string{``, `   `, `{"eventType":`, `[]`, `null`, `"x"`,
		`{"eventType":42}`, `{"payload":{"eventType":"avi:forge:installed:app","app":"x"}}`} {
		if err := e.svc.Lifecycle(t.Context(), e.inv(instA, cloudA), []byte(body)); !errors.Is(err, ErrBadEvent) {
			t.Errorf("%q: err = %v, want ErrBadEvent", body, err)
		}
	}
	// An installed event without an installation in its FIT.
	if err := e.svc.Lifecycle(t.Context(), &forge.Invocation{}, []byte(installedEvent(instA))); !errors.Is(err, ErrBadEvent) {
		t.Errorf("no installation: %v", err)
	}
}

func TestUninstallPurgesOnlyThatInstallation(t *testing.T) {
	var broker *weavy.Broker
	e := newEnv(t, func(o *testOptions) {
		o.PurgerOn = func(q *Queue) Purger {
			broker = weavy.NewBroker(minter(o), o.KV, weavy.BrokerOptions{Now: o.Now, Observer: q})
			return broker
		}
	})
	ctx := t.Context()
	for _, s := range []struct{ inst, cloud string }{{instA, cloudA}, {instB, cloudB}} {
		if err := e.svc.Lifecycle(ctx, e.inv(s.inst, s.cloud), []byte(installedEvent(s.inst))); err != nil {
			t.Fatal(err)
		}
		refused := e.deliverToken(t, s.inst, s.cloud, start.Add(2*time.Hour))
		if err := e.tokens.MarkUnusable(ctx, s.inst, refused); err != nil {
			t.Fatal(err)
		}
		e.deliverToken(t, s.inst, s.cloud, start.Add(3*time.Hour))
		e.scheduled(t, s.inst, s.cloud)
		for _, acc := range []string{"557058:u1", "557058:u2"} {
			e.conf.AddUser(acc, "User "+acc, "", "/wiki/aa-avatar/"+acc)
			if _, err := broker.Token(ctx, s.inst, acc, false); err != nil {
				t.Fatal(err)
			}
		}
		e.svc.run.waitIdle()
	}
	before := e.keys(t)
	var aKeys, bKeys []string
	for _, k := range before {
		switch {
		case belongsTo(k, instA):
			aKeys = append(aKeys, k)
		case belongsTo(k, instB):
			bKeys = append(bKeys, k)
		}
	}
	for _, prefix := range []string{"forge/apptoken/", "forge/apptoken-rejected/", "scheduler/installation/",
		"scheduler/user/", "scheduler/event/", weavy.StorePrefix} {
		if !slices.ContainsFunc(aKeys, func(k string) bool { return strings.HasPrefix(k, prefix) }) {
			t.Fatalf("setup: installation A has no %s record; keys: %q", prefix, before)
		}
	}

	if err := e.svc.Uninstall(ctx, e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	e.svc.settle() // the purge runs in the background
	after := e.keys(t)
	// All of A is gone but its uninstall tombstone (which holds no data).
	want := slices.DeleteFunc(slices.Clone(before), func(k string) bool { return slices.Contains(aKeys, k) })
	want = append(want, "scheduler/uninstalled/"+url.PathEscape(instA))
	slices.Sort(want)
	if !slices.Equal(after, want) {
		t.Fatalf("keys after uninstall:\n%q\nwant:\n%q", after, want)
	}
	for _, k := range bKeys {
		if !slices.Contains(after, k) {
			t.Errorf("B lost %s", k)
		}
	}
	list, _ := e.svc.Installations(ctx)
	if len(list) != 1 || list[0].InstallationID != instB {
		t.Fatalf("installations after uninstall = %+v", list)
	}
	// Uninstall again (Forge may retry): harmless.
	if err := e.svc.Uninstall(ctx, e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
}

func minter(o *testOptions) weavy.Minter { return o.Weavy.(*weavy.Client) }

func TestInstallations(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	inst := func(n string) string { return "ari:cloud:ecosystem::installation/" + n }
	var tokens []string
	deliver := func(id string, exp time.Time) {
		tokens = append(tokens, e.deliverToken(t, inst(id), cloudA, exp))
	}
	// At start.
	deliver("b-silent", start.Add(2*time.Hour))
	e.scheduled(t, inst("b-silent"), cloudA)
	if err := e.svc.Lifecycle(ctx, e.inv(inst("c-never"), cloudA), []byte(installedEvent(inst("c-never")))); err != nil {
		t.Fatal(err)
	}
	deliver("f-token-old", start.Add(4*time.Hour))
	// Two hours later.
	e.clock.Advance(2 * time.Hour)
	deliver("a-ok", start.Add(5*time.Hour))
	e.scheduled(t, inst("a-ok"), cloudA)
	// Half an hour before now.
	e.clock.Advance(30 * time.Minute)
	if err := e.svc.Lifecycle(ctx, e.inv(inst("d-new"), cloudA), []byte(installedEvent(inst("d-new")))); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(20 * time.Minute)
	deliver("e-token-new", start.Add(6*time.Hour))
	e.clock.Advance(10 * time.Minute) // now: start + 3 h

	list, err := e.svc.Installations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		id           string
		stale, fresh bool
	}
	var got []view
	for _, in := range list {
		got = append(got, view{strings.TrimPrefix(in.InstallationID, inst("")), in.Stale, in.AppTokenFresh})
	}
	want := []view{
		{"a-ok", false, true},
		{"b-silent", true, false}, // last trigger 3 h ago, token expired
		{"c-never", true, false},  // installed 3 h ago, never triggered, no token
		{"d-new", false, false},   // installed 30 min ago
		{"e-token-new", false, true},
		{"f-token-old", true, true}, // only a token, captured 3 h ago
	}
	if !slices.Equal(got, want) {
		t.Fatalf("installations:\n%+v\nwant\n%+v", got, want)
	}
	if !list[0].AppTokenExpiresAt.Equal(start.Add(5*time.Hour)) || !list[0].LastScheduledAt.Equal(start.Add(2*time.Hour)) {
		t.Errorf("a-ok = %+v", list[0])
	}

	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if strings.Contains(string(b), tok[len(tok)-20:]) {
			t.Fatal("the operator view shows a token")
		}
	}
	for _, field := range []string{`"installation_id"`, `"app_token_expires_at"`, `"app_token_fresh"`,
		`"last_scheduled_at"`, `"stale"`, `"first_seen"`, `"last_seen"`, `"api_base_url"`, `"app_version"`} {
		if !strings.Contains(string(b), field) {
			t.Errorf("JSON lacks %s: %s", field, b)
		}
	}
}

// Forge may deliver one installation's triggers to every replica at once;
// the per-installation dedupe must not let goroutines pile up either.
func TestScheduledConcurrentInstallations(t *testing.T) {
	var runs atomic.Int64
	e := newEnv(t, func(o *testOptions) {
		o.Jobs = []Job{{Name: "n", Run: func(context.Context, string) error { runs.Add(1); return nil }}}
	})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			id := fmt.Sprintf("ari:cloud:ecosystem::installation/%d", i%10)
			if err := e.svc.Scheduled(context.Background(), e.inv(id, cloudA)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	e.svc.run.waitIdle()
	if runs.Load() != 10 {
		t.Fatalf("runs = %d, want 10", runs.Load())
	}
}
