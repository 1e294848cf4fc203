package connect_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/store/memory"
)

const appKey = "com.example.weavy-chat"

// clock is a manual clock: the forge client's waits advance it, so retries
// and hold-offs are judged without the wall clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type captureEnv struct {
	clk    *clock
	conf   *forgetest.Confluence
	store  *connect.Store
	tokens *forge.AppTokens
	cap    *connect.Capturer
	logs   *observer.ObservedLogs
}

func newCaptureEnv(t *testing.T) *captureEnv {
	t.Helper()
	clk := &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	conf := forgetest.NewConfluence(t)
	conf.SetNow(clk.Now)
	kv := memory.New(clk.Now)
	t.Cleanup(func() { _ = kv.Close() }) // stops its reaper
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	tokens := forge.NewAppTokens(kv, forge.AppTokensOptions{Now: clk.Now, Logger: log})
	products := forge.NewClient(tokens, forge.ClientOptions{
		Now: clk.Now, Logger: log,
		Sleep: func(ctx context.Context, d time.Duration) error { clk.Advance(d); return ctx.Err() },
	})
	st := connect.NewStore(kv)
	return &captureEnv{clk: clk, conf: conf, store: st, tokens: tokens, logs: logs,
		cap: connect.NewCapturer(connect.CapturerOptions{Store: st, Products: products, Tokens: tokens, AppKey: appKey, Now: clk.Now, Logger: log})}
}

// install captures an app token for inst on cloud, as a Forge trigger brings one.
func (e *captureEnv) install(t *testing.T, inst, cloud string) {
	t.Helper()
	inv := &forge.Invocation{App: forge.App{InstallationID: inst, APIBaseURL: e.conf.APIBaseURL(cloud),
		Installation: &forge.Installation{Contexts: []forge.InstallationContext{{CloudID: cloud}}}}}
	if err := e.tokens.Capture(context.Background(), inv, e.conf.IssueAppToken(t, e.clk.Now().Add(4*time.Hour))); err != nil {
		t.Fatal(err)
	}
}

func (e *captureEnv) propertyCalls() int {
	n := 0
	for _, r := range e.conf.Requests() {
		if strings.Contains(r, "/properties/"+connect.PropertyKey) {
			n++
		}
	}
	return n
}

// A fresh install's 403s are retried and then held off for an hour without
// spoiling the app token; the next attempt after the hour captures the key,
// and a known key is never asked for again.
func TestCapturerAfterInstall(t *testing.T) {
	e := newCaptureEnv(t)
	ctx := context.Background()
	const inst, cloud = "ari:cloud:ecosystem::installation/aaaa", "cloud-a"
	e.install(t, inst, cloud)
	e.conf.SetConnectClientKey(cloud, appKey, "jira-client-key-a")
	e.conf.DenyConnectPropertyUntil(cloud, e.clk.Now().Add(20*time.Minute), http.StatusForbidden)

	if err := e.cap.Run(ctx, inst); err != nil {
		t.Fatalf("a 403 right after install is expected, not an error: %v", err)
	}
	first := e.propertyCalls()
	if first != 4 { // one call and the client's 3 retries within the grace period
		t.Fatalf("%d property calls on the first run, want 4", first)
	}
	if _, err := e.tokens.Usable(ctx, inst); err != nil {
		t.Fatalf("the 403s spoiled the app token: %v", err)
	}
	if _, ok, _ := e.store.ByInstallation(ctx, inst); ok {
		t.Fatal("a mapping recorded from a refusal")
	}

	// Within the hour: nothing is asked, however often the triggers come.
	for range 3 {
		e.clk.Advance(15 * time.Minute)
		if err := e.cap.Run(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.propertyCalls(); n != first {
		t.Fatalf("%d property calls within the hour after a failure, want none", n-first)
	}

	e.clk.Advance(16 * time.Minute) // past the hour
	if err := e.cap.Run(ctx, inst); err != nil {
		t.Fatal(err)
	}
	m, ok, err := e.store.ByInstallation(ctx, inst)
	if err != nil || !ok {
		t.Fatalf("no mapping after the property answered: %v", err)
	}
	if m.ClientKey != "jira-client-key-a" || m.CloudID != cloud || m.Source != connect.SourceAppProperty || !m.CapturedAt.Equal(e.clk.Now()) {
		t.Fatalf("mapping %+v", m)
	}
	byKey, ok, err := e.store.ByClientKey(ctx, "jira-client-key-a")
	if err != nil || !ok || byKey != m {
		t.Fatalf("by clientKey %+v, by installation %+v", byKey, m)
	}

	calls := e.propertyCalls()
	e.clk.Advance(2 * time.Hour)
	e.install(t, inst, cloud) // a fresh token: the run would be able to call
	if err := e.cap.Run(ctx, inst); err != nil || e.propertyCalls() != calls {
		t.Fatalf("a known clientKey was asked for again (err %v)", err)
	}
}

// A site without the Connect app answers 404: held off for an hour, no
// error. Another app key's property is 404 too. No token: no call at all.
func TestCapturerAbsentAndNoToken(t *testing.T) {
	e := newCaptureEnv(t)
	ctx := context.Background()
	e.install(t, "inst-b", "cloud-b")
	e.conf.SetConnectClientKey("cloud-b", "com.other.app", "other-apps-client-key")
	if err := e.cap.Run(ctx, "inst-b"); err != nil {
		t.Fatal(err)
	}
	if e.propertyCalls() != 1 {
		t.Fatalf("%d calls, want 1 (a 404 is not retried)", e.propertyCalls())
	}
	if _, ok, _ := e.store.ByInstallation(ctx, "inst-b"); ok {
		t.Fatal("another app's clientKey was recorded")
	}
	e.clk.Advance(59 * time.Minute)
	_ = e.cap.Run(ctx, "inst-b")
	if e.propertyCalls() != 1 {
		t.Fatal("asked again within the hour after a 404")
	}

	err := e.cap.Run(ctx, "inst-never-seen")
	if err == nil || e.propertyCalls() != 1 {
		t.Fatalf("without an app token: err %v, %d calls", err, e.propertyCalls())
	}
}

func TestCapturerValueShapes(t *testing.T) {
	for _, tc := range []struct {
		name, clientKey string
		want            string
		ok              bool
	}{
		{"string", "abc-123", "abc-123", true},
		{"escaped JSON object", `{"clientKey":"abc-456"}`, "abc-456", true},
		{"empty", "", "", false},
		{"control characters", "abc\x00def", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCaptureEnv(t)
			ctx := context.Background()
			e.install(t, "inst", "cloud")
			e.conf.SetConnectClientKey("cloud", appKey, tc.clientKey)
			_ = e.cap.Run(ctx, "inst")
			m, ok, _ := e.store.ByInstallation(ctx, "inst")
			if ok != tc.ok || m.ClientKey != tc.want {
				t.Fatalf("mapping %+v (ok %v), want %q", m, ok, tc.want)
			}
		})
	}
}
