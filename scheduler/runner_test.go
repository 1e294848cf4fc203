package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/storetest"
)

// bare is a Service with no Confluence, Weavy or tokens: the runner alone.
func bare(t *testing.T, o testOptions) *Service {
	t.Helper()
	clock := storetest.NewClock(start)
	kv := memory.New(clock.Now)
	t.Cleanup(func() { _ = kv.Close() }) // after the service's Close below
	o.KV = kv
	o.Now = clock.Now
	s := o.build()
	t.Cleanup(s.Close)
	return s
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	testwait.Recv(t, what, ch)
}

func TestRunnerOneJobPerInstallationAtATime(t *testing.T) {
	s := bare(t, testOptions{QueueOptions: QueueOptions{Concurrency: 4}})
	var mu sync.Mutex
	active := map[string]int{}
	maxActive := map[string]int{}
	aStarted, bStarted := make(chan struct{}), make(chan struct{})
	var once [2]sync.Once
	for i := range 20 {
		inst := []string{instA, instB}[i%2]
		s.run.enqueue(task{inst: inst, job: "j", key: fmt.Sprint(i), run: func(ctx context.Context) error {
			mu.Lock()
			active[inst]++
			maxActive[inst] = max(maxActive[inst], active[inst])
			mu.Unlock()
			// The first task of each installation waits for the other's: two
			// installations do run side by side.
			if i == 0 {
				once[0].Do(func() { close(aStarted) })
				waitFor(t, bStarted, "B to run beside A")
			}
			if i == 1 {
				once[1].Do(func() { close(bStarted) })
				waitFor(t, aStarted, "A to run beside B")
			}
			mu.Lock()
			active[inst]--
			mu.Unlock()
			return nil
		}})
	}
	s.run.waitIdle()
	if maxActive[instA] != 1 || maxActive[instB] != 1 {
		t.Fatalf("most tasks at once per installation = %v, want 1", maxActive)
	}
}

func TestRunnerQueueFullDrops(t *testing.T) {
	e := newEnv(t, func(o *testOptions) { o.Concurrency = 1; o.QueueSize = 2 })
	release, started := make(chan struct{}), make(chan struct{})
	e.svc.run.enqueue(task{inst: instA, job: "block", key: "block", run: func(context.Context) error {
		close(started)
		<-release
		return nil
	}})
	waitFor(t, started, "the blocking task")
	for i := range 5 {
		e.svc.UserMinted(instB, fmt.Sprintf("557058:u%d", i)) // never blocks
	}
	if got := e.counter(t, "scheduler_queue_dropped_total", nil); got != 3 {
		t.Fatalf("dropped = %v, want 3", got)
	}
	// Asking again for a task already waiting is not a drop.
	e.svc.UserMinted(instB, "557058:u0")
	if got := e.counter(t, "scheduler_queue_dropped_total", nil); got != 3 {
		t.Fatalf("dropped = %v after a repeat, want 3", got)
	}
	close(release)
	e.svc.run.waitIdle()
}

func TestRunnerFailuresLoggedAndCounted(t *testing.T) {
	boom := errors.New("boom")
	var c countJob
	e := newEnv(t, func(o *testOptions) {
		o.JobTimeout = 20 * time.Millisecond
		o.Jobs = []Job{
			{Name: "fails", Run: func(context.Context, string) error { return boom }},
			{Name: "panics", Run: func(context.Context, string) error { panic("bad job") }},
			{Name: "slow", Run: func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() }},
			c.job(), // runs after the others all the same
		}
	})
	e.scheduled(t, instA, cloudA)
	if c.n(instA) != 1 {
		t.Fatal("a failing job stopped the next")
	}
	for job, result := range map[string]string{"fails": "error", "panics": "error", "slow": "timeout", "count": "ok", "housekeeping": "ok"} {
		if got := e.counter(t, "scheduler_job_runs_total", map[string]string{"job": job, "result": result}); got != 1 {
			t.Errorf("%s %s runs = %v, want 1", job, result, got)
		}
	}
	failed := e.logs.FilterMessage("job failed").All()
	if len(failed) != 3 {
		t.Fatalf("%d failures logged, want 3", len(failed))
	}
	for _, entry := range failed {
		if f := entry.ContextMap(); f["installation_id"] != instA || f["job"] == "" || f["code"] == "" {
			t.Errorf("failure log fields = %v", f)
		}
	}
}

func TestUninstallCancelsRunningJob(t *testing.T) {
	started, done := make(chan struct{}), make(chan error, 1)
	e := newEnv(t, func(o *testOptions) {
		o.Jobs = []Job{{Name: "long", Run: func(ctx context.Context, _ string) error {
			close(started)
			<-ctx.Done()
			done <- ctx.Err()
			return ctx.Err()
		}}}
	})
	if err := e.svc.Scheduled(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, started, "the long job")
	if err := e.svc.Uninstall(t.Context(), e.inv(instA, cloudA)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("job ended with %v", err)
	}
	e.svc.run.waitIdle()
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	started := make(chan struct{})
	var once sync.Once
	clock := storetest.NewClock(start)
	kv := memory.New(clock.Now) // closed before the leak check
	s := testOptions{
		QueueOptions: QueueOptions{KV: kv, Now: clock.Now, Concurrency: 3, JobTimeout: 50 * time.Millisecond},
		Jobs: []Job{{Name: "until-timeout", Run: func(ctx context.Context, _ string) error {
			once.Do(func() { close(started) })
			<-ctx.Done() // ends only by its timeout
			return ctx.Err()
		}}},
	}.build()
	for i := range 10 {
		if err := s.Scheduled(t.Context(), trigger(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, started, "a job")
	s.Close() // a Close that hung would meet go test's -timeout
	s.Close() // twice is harmless
	// Closed: triggers are still recorded, nothing more runs.
	if err := s.Scheduled(t.Context(), trigger("late")); err != nil {
		t.Fatal(err)
	}
	s.UserMinted(instA, "557058:late")
	_ = kv.Close() // the store's reaper is not the scheduler's
	testwait.NoLeaks(t, ignore)
}

// trigger is a scheduled trigger's invocation for installation n.
func trigger(n string) *forge.Invocation {
	return &forge.Invocation{App: forge.App{InstallationID: "ari:cloud:ecosystem::installation/" + n}}
}

func TestHousekeepingForgetsSilentInstallations(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	inst := func(n string) string { return "ari:cloud:ecosystem::installation/h-" + n }
	for _, n := range []string{"gone", "ui-only", "alive"} {
		e.deliverToken(t, inst(n), cloudA, start.Add(3*time.Hour))
		e.scheduled(t, inst(n), cloudA)
		e.minted(t, inst(n), "557058:"+n)
	}
	e.clock.Advance(31 * 24 * time.Hour)
	// "ui-only" had no trigger for a month but a UI call brought a token today.
	e.deliverToken(t, inst("ui-only"), cloudA, e.clock.Now().Add(3*time.Hour))
	e.deliverToken(t, inst("alive"), cloudA, e.clock.Now().Add(3*time.Hour))
	e.scheduled(t, inst("alive"), cloudA) // queues the housekeeping

	var ids []string
	list, err := e.svc.Installations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		ids = append(ids, in.InstallationID)
	}
	if len(ids) != 2 || ids[0] != inst("alive") || ids[1] != inst("ui-only") {
		t.Fatalf("installations after housekeeping = %q", ids)
	}
	for _, k := range e.keys(t) {
		if belongsTo(k, inst("gone")) {
			t.Errorf("left of the silent installation: %s", k)
		}
	}
	// At most once an hour, whichever installation triggers it.
	e.clock.Advance(30 * time.Minute)
	e.scheduled(t, inst("ui-only"), cloudA)
	if n := len(e.logs.FilterMessage("housekeeping done").All()); n != 2 {
		t.Errorf("housekeeping swept %d times, want 2 (at the start, a month later)", n)
	}
}

// Close cancels running jobs instead of waiting out their timeout (30 s by
// default).
func TestCloseCancelsRunningJobs(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	started, ended := make(chan struct{}), make(chan error, 1)
	clock := storetest.NewClock(start)
	kv := memory.New(clock.Now) // closed before the leak check
	s := testOptions{
		QueueOptions: QueueOptions{KV: kv, Now: clock.Now}, // the default JobTimeout
		Jobs: []Job{{Name: "until-done", Run: func(ctx context.Context, _ string) error {
			close(started)
			<-ctx.Done()
			ended <- ctx.Err()
			return ctx.Err()
		}}},
	}.build()
	if err := s.Scheduled(t.Context(), trigger("closing")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, started, "the job")
	s.Close()
	// Canceled, not DeadlineExceeded: Close ended the job rather than
	// waiting for its timeout.
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("job ended with %v, want context.Canceled", err)
	}
	_ = kv.Close() // the store's reaper is not the scheduler's
	testwait.NoLeaks(t, ignore)
}
