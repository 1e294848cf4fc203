package scheduler

import (
	"context"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store/memory"
	"github.com/forge-remote/forge-remote/store/storetest"
	"github.com/forge-remote/forge-remote/weavy"
)

func TestMain(m *testing.M) { testwait.VerifyTestMain(m) }

// The implementations the server wires in.
var (
	_ ProfileUpserter = (*weavy.Client)(nil)
	_ Purger          = (*weavy.Broker)(nil)
)

const (
	instA  = "ari:cloud:ecosystem::installation/inst-1"
	instB  = "ari:cloud:ecosystem::installation/inst-10" // instA is a prefix of it
	cloudA = "a436116f-02ce-4520-8fbb-7301462a1674"
	cloudB = "b7e5c1d4-2f3a-4e6b-9c8d-7a6f5e4d3c2b"
)

var start = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// env is a Service over a memory store, a fake Confluence and a fake Weavy,
// all on one manual clock: no test waits for time to pass.
type env struct {
	clock  *storetest.Clock
	kv     *memory.Store
	tokens *forge.AppTokens
	conf   *forgetest.Confluence
	weavy  *weavysim.Server
	wc     *weavy.Client
	reg    *prometheus.Registry
	logs   *observer.ObservedLogs
	svc    *Service
	timers *fakeTimers // the first-sync windows: they end when a test says
}

// fakeTimers stands for time.AfterFunc: a timer fires when the test calls
// fire, never by itself.
type fakeTimers struct {
	mu      sync.Mutex
	pending []*fakeTimer
}

type fakeTimer struct {
	f    func()
	done bool // stopped or fired
}

func (ft *fakeTimers) after(_ time.Duration, f func()) func() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{f: f}
	ft.pending = append(ft.pending, t)
	return func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		was := !t.done
		t.done = true
		return was
	}
}

// fire runs the timers pending now (not those they start) and reports how
// many ran.
func (ft *fakeTimers) fire() int {
	ft.mu.Lock()
	due := ft.pending
	ft.pending = nil
	var run []func()
	for _, t := range due {
		if !t.done {
			t.done = true
			run = append(run, t.f)
		}
	}
	ft.mu.Unlock()
	for _, f := range run {
		f()
	}
	return len(run)
}

// testOptions are the options of a Queue and of the Service on it, for
// tests that build both at once.
type testOptions struct {
	QueueOptions
	Purger Purger
	// PurgerOn, if set, makes the Purger once the Queue exists, as the
	// server does: a Broker telling the Queue of its mints.
	PurgerOn func(*Queue) Purger
	Jobs     []Job
	After    func(time.Duration) <-chan time.Time
}

func (o testOptions) build() *Service {
	q := NewQueue(o.QueueOptions)
	if o.PurgerOn != nil {
		o.Purger = o.PurgerOn(q)
	}
	return New(Options{Queue: q, Purger: o.Purger, Jobs: o.Jobs, After: o.After})
}

func newEnv(t *testing.T, edit func(*testOptions)) *env {
	t.Helper()
	e := &env{clock: storetest.NewClock(start), reg: prometheus.NewRegistry()}
	core, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	log := zap.New(core)
	e.kv = memory.New(e.clock.Now)
	t.Cleanup(func() { _ = e.kv.Close() }) // registered first: runs after the service's Close
	e.tokens = forge.NewAppTokens(e.kv, forge.AppTokensOptions{Now: e.clock.Now, Logger: log})
	e.conf = forgetest.NewConfluence(t)
	e.conf.SetNow(e.clock.Now)
	e.weavy = weavysim.New("")
	t.Cleanup(e.weavy.Close)
	wc, err := weavy.NewClient(e.weavy.URL, weavysim.APIKey, weavy.ClientOptions{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.wc = wc
	products := forge.NewClient(e.tokens, forge.ClientOptions{
		Now: e.clock.Now, Logger: log,
		Sleep: func(ctx context.Context, d time.Duration) error { e.clock.Advance(d); return ctx.Err() },
	})
	o := testOptions{QueueOptions: QueueOptions{
		KV: e.kv, AppTokens: e.tokens, Products: products, Weavy: wc,
		Now: e.clock.Now, Logger: log, Registerer: e.reg,
	}}
	if edit != nil {
		edit(&o)
	}
	e.svc = o.build()
	e.timers = &fakeTimers{}
	e.svc.first.after = e.timers.after // before any mint: no window is open yet
	t.Cleanup(e.svc.Close)
	return e
}

// inv is the verified invocation of a trigger for inst (no principal, no context).
func (e *env) inv(inst, cloud string) *forge.Invocation {
	base := e.conf.APIBaseURL(cloud)
	return &forge.Invocation{App: forge.App{
		InstallationID: inst,
		APIBaseURL:     base,
		AppVersion:     "2.14.0",
		Environment:    forge.Environment{Type: "PRODUCTION", ID: "env-1"},
		Installation:   &forge.Installation{Contexts: []forge.InstallationContext{{CloudID: cloud}}},
	}}
}

// deliverToken captures a token the fake Confluence accepts until exp, as
// the server does for each inbound call carrying x-forge-oauth-system.
func (e *env) deliverToken(t *testing.T, inst, cloud string, exp time.Time) string {
	t.Helper()
	tok := e.conf.IssueAppToken(t, exp)
	if err := e.tokens.Capture(t.Context(), e.inv(inst, cloud), tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

// scheduled delivers a scheduled trigger and waits for the jobs it queued.
func (e *env) scheduled(t *testing.T, inst, cloud string) {
	t.Helper()
	if err := e.svc.Scheduled(t.Context(), e.inv(inst, cloud)); err != nil {
		t.Fatal(err)
	}
	e.svc.settle()
}

// settle waits until no job waits or runs, and the purge loop waits with no
// attempt running (the purges a job stored included).
func (s *Service) settle() {
	s.run.waitIdle()
	s.purges.waitIdle()
}

func (e *env) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	if err := e.kv.Scan(t.Context(), "", func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// logsWith returns the entries carrying field key = value.
func (e *env) logsWith(key, value string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, entry := range e.logs.All() {
		if v, ok := entry.ContextMap()[key]; ok && v == value {
			out = append(out, entry)
		}
	}
	return out
}

// counter reads a counter of the env's registry (0 when absent).
func (e *env) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// belongsTo reports whether a store key is about installation inst: it names
// the id whole, raw (forge's keys) or path-escaped (every other).
func belongsTo(key, inst string) bool {
	// weavy.Broker's keys hold an installation ARI's bare UUID.
	ids := []string{inst, url.PathEscape(inst)}
	if u, ok := strings.CutPrefix(inst, "ari:cloud:ecosystem::installation/"); ok && len(u) == 36 {
		ids = append(ids, u)
	}
	for _, id := range ids {
		if strings.HasSuffix(key, id) || strings.Contains(key, id+"/") {
			return true
		}
	}
	return false
}
