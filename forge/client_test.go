package forge_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/storetest"
)

const (
	clientInst  = "ari:cloud:ecosystem::installation/client-test"
	clientCloud = "c0ffee00-1111-4222-8333-444455556666"
)

// clientEnv is a Client over a memory store and a Confluence fake sharing one clock.
type clientEnv struct {
	clock  *storetest.Clock
	kv     store.KV
	tokens *forge.AppTokens
	conf   *forgetest.Confluence
	client *forge.Client
	logs   *observer.ObservedLogs

	mu     sync.Mutex
	sleeps []time.Duration
}

func newClientEnv(t *testing.T, o forge.ClientOptions) *clientEnv {
	t.Helper()
	e := &clientEnv{clock: storetest.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))}
	core, logs := observer.New(zap.DebugLevel)
	e.logs = logs
	log := zap.New(core)
	e.kv = newMemory(t, e.clock.Now)
	e.tokens = forge.NewAppTokens(e.kv, forge.AppTokensOptions{Now: e.clock.Now, Logger: log})
	e.conf = forgetest.NewConfluence(t)
	e.conf.SetNow(e.clock.Now)
	e.conf.AddUser("557058:aa", "Ada Lovelace", "ada@example.com", "/wiki/aa-avatar/557058:aa")
	o.Now = e.clock.Now
	o.Logger = log
	// Waiting is recorded, never done: the test's clock is moved instead.
	o.Sleep = func(ctx context.Context, d time.Duration) error {
		e.mu.Lock()
		e.sleeps = append(e.sleeps, d)
		e.mu.Unlock()
		e.clock.Advance(d)
		return ctx.Err()
	}
	e.client = forge.NewClient(e.tokens, o)
	return e
}

func (e *clientEnv) capture(t *testing.T, token, apiBase string) {
	t.Helper()
	inv := &forge.Invocation{App: forge.App{InstallationID: clientInst, APIBaseURL: apiBase}}
	if err := e.tokens.Capture(t.Context(), inv, token); err != nil {
		t.Fatal(err)
	}
}

func (e *clientEnv) slept() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Duration(nil), e.sleeps...)
}

type user struct {
	AccountID   string `json:"accountId"`
	DisplayName string `json:"displayName"`
}

const userPath = "/wiki/rest/api/user?accountId=557058%3Aaa"

func TestClientGetJSON(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Hour)), e.conf.APIBaseURL(clientCloud))

	var u user
	if err := e.client.AsApp(clientInst).GetJSON(t.Context(), userPath, &u); err != nil {
		t.Fatal(err)
	}
	if u.DisplayName != "Ada Lovelace" || u.AccountID != "557058:aa" {
		t.Fatalf("user = %+v", u)
	}
	want := "GET /ex/confluence/" + clientCloud + userPath
	if got := e.conf.Requests(); len(got) != 1 || got[0] != want {
		t.Fatalf("requests = %q, want [%q]", got, want)
	}
	if e.conf.ExpiredCalls() != 0 {
		t.Fatalf("expired calls = %d", e.conf.ExpiredCalls())
	}
}

// A token held with a cleartext apiBaseUrl off loopback (captured before
// Verify refused such FITs) is never sent: not there, not anywhere.
func TestClientRefusesCleartextAPIBaseURL(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Hour)), "http://evil.example/ex/confluence/"+clientCloud)
	err := e.client.AsApp(clientInst).GetJSON(t.Context(), userPath, nil)
	if err == nil || !strings.Contains(err.Error(), "no usable apiBaseUrl") {
		t.Fatalf("cleartext apiBaseUrl: %v", err)
	}
	if e.conf.Calls() != 0 {
		t.Fatalf("Confluence got %d calls", e.conf.Calls())
	}
}

func TestClientNoFreshTokenSendsNothing(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	app := e.client.AsApp(clientInst)
	if err := app.GetJSON(t.Context(), userPath, nil); !errors.Is(err, forge.ErrUnknownInstallation) {
		t.Fatalf("unknown installation: %v", err)
	}
	// Three minutes of life left: under the 5 minutes AppTokens demands.
	e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Minute)), e.conf.APIBaseURL(clientCloud))
	err := app.GetJSON(t.Context(), userPath, nil)
	var stale *forge.StaleError
	if !errors.As(err, &stale) || !errors.Is(err, forge.ErrAppTokenStale) || stale.InstallationID != clientInst {
		t.Fatalf("nearly expired: %v", err)
	}
	if e.conf.Calls() != 0 {
		t.Fatalf("Confluence got %d calls without a fresh token", e.conf.Calls())
	}
}

func TestClient401MarksTokenUnusable(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	ctx := t.Context()
	base := e.conf.APIBaseURL(clientCloud)
	// A token Confluence never issued, e.g. revoked on its side: 401.
	bad := forgetest.MintAppToken(t, e.clock.Now().Add(3*time.Hour))
	e.capture(t, bad, base)
	app := e.client.AsApp(clientInst)

	var perr *forge.ProductError
	if err := app.GetJSON(ctx, userPath, nil); !errors.As(err, &perr) || perr.Status != http.StatusUnauthorized {
		t.Fatalf("first call: %v", err)
	}
	if len(e.slept()) != 0 {
		t.Fatalf("a 401 outside the install grace was retried: %v", e.slept())
	}
	if _, err := e.tokens.Get(ctx, clientInst); !errors.Is(err, forge.ErrAppTokenStale) {
		t.Fatalf("Get after a 401 = %v, want stale", err)
	}
	if err := app.GetJSON(ctx, userPath, nil); !errors.Is(err, forge.ErrAppTokenStale) {
		t.Fatalf("second call: %v", err)
	}
	// Forge delivers the same token again, here and to a replica that never
	// saw it (sharing the store): neither may use it.
	e.capture(t, bad, base)
	replica := forge.NewAppTokens(e.kv, forge.AppTokensOptions{Now: e.clock.Now})
	inv := &forge.Invocation{App: forge.App{InstallationID: clientInst, APIBaseURL: base}}
	if err := replica.Capture(ctx, inv, bad); err != nil {
		t.Fatal(err)
	}
	if err := forge.NewClient(replica, forge.ClientOptions{Now: e.clock.Now}).AsApp(clientInst).GetJSON(ctx, userPath, nil); !errors.Is(err, forge.ErrAppTokenStale) {
		t.Fatalf("replica call with the refused token: %v", err)
	}
	if e.conf.Calls() != 1 {
		t.Fatalf("Confluence got %d calls, want 1", e.conf.Calls())
	}
	// A newer token works again.
	e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Hour+time.Minute)), base)
	if err := app.GetJSON(ctx, userPath, nil); err != nil {
		t.Fatalf("after a newer token: %v", err)
	}
	if err := e.tokens.PurgeInstallation(ctx, clientInst); err != nil {
		t.Fatal(err)
	}
	_ = e.kv.Scan(ctx, "", func(k string, _ []byte) error {
		t.Errorf("left after PurgeInstallation: %s", k)
		return nil
	})
}

func TestClientInstallGrace(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			e := newClientEnv(t, forge.ClientOptions{Retries: 3})
			e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Hour)), e.conf.APIBaseURL(clientCloud))
			installed := e.clock.Now().Add(-time.Minute)

			// Grants propagate: two refusals, then it works.
			e.conf.FailNext(2, status, "")
			if err := e.client.AsApp(clientInst).InstalledAt(installed).GetJSON(t.Context(), userPath, nil); err != nil {
				t.Fatalf("within grace: %v", err)
			}
			if got := e.slept(); len(got) != 2 || got[0] != 2*time.Second || got[1] != 4*time.Second {
				t.Fatalf("backoff = %v, want [2s 4s]", got)
			}

			// Never propagating: bounded, and the token is kept.
			e.conf.FailNext(10, status, "")
			var perr *forge.ProductError
			err := e.client.AsApp(clientInst).InstalledAt(installed).GetJSON(t.Context(), userPath, nil)
			if !errors.As(err, &perr) || perr.Status != status {
				t.Fatalf("refused throughout: %v", err)
			}
			if n := len(e.slept()); n != 2+3 {
				t.Fatalf("%d waits, want 5", n)
			}
			if _, err := e.tokens.Get(t.Context(), clientInst); err != nil {
				t.Fatalf("a refusal within the grace marked the token: %v", err)
			}
		})
	}
}

func TestClientRetryAfter(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Hour)), e.conf.APIBaseURL(clientCloud))
	app := e.client.AsApp(clientInst)

	e.conf.FailNext(2, http.StatusTooManyRequests, "7")
	var u user
	if err := app.GetJSON(t.Context(), userPath, &u); err != nil || u.DisplayName == "" {
		t.Fatalf("after two 429: %+v, %v", u, err)
	}
	if got := e.slept(); len(got) != 2 || got[0] != 7*time.Second || got[1] != 7*time.Second {
		t.Fatalf("waits = %v, want [7s 7s]", got)
	}
	if e.conf.Calls() != 3 {
		t.Fatalf("calls = %d, want 3", e.conf.Calls())
	}

	// An HTTP date works too.
	e.conf.FailNext(1, http.StatusTooManyRequests, e.clock.Now().Add(11*time.Second).Format(http.TimeFormat))
	if err := app.GetJSON(t.Context(), userPath, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.slept(); got[len(got)-1] != 11*time.Second {
		t.Fatalf("wait for an HTTP date = %v", got[len(got)-1])
	}

	// A wait beyond the bound is not taken.
	e.conf.FailNext(1, http.StatusTooManyRequests, "600")
	var perr *forge.ProductError
	err := app.GetJSON(t.Context(), userPath, nil)
	if !errors.As(err, &perr) || perr.Status != http.StatusTooManyRequests || perr.RetryAfter != 10*time.Minute {
		t.Fatalf("long Retry-After: %v", err)
	}
	if n := len(e.slept()); n != 3 {
		t.Fatalf("%d waits, want 3", n)
	}

	// Retries are bounded.
	e.conf.FailNext(10, http.StatusTooManyRequests, "1")
	if err := app.GetJSON(t.Context(), userPath, nil); !errors.As(err, &perr) || perr.Status != 429 {
		t.Fatalf("endless 429: %v", err)
	}
	if n := len(e.slept()); n != 3+3 {
		t.Fatalf("%d waits, want 6", n)
	}
}

func TestClientServerErrors(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{Retries: 2})
	e.capture(t, e.conf.IssueAppToken(t, e.clock.Now().Add(3*time.Hour)), e.conf.APIBaseURL(clientCloud))
	app := e.client.AsApp(clientInst)

	e.conf.FailNext(1, http.StatusServiceUnavailable, "")
	if err := app.GetJSON(t.Context(), userPath, nil); err != nil {
		t.Fatalf("GET after one 503: %v", err)
	}
	// Not idempotent: no second attempt.
	e.conf.FailNext(1, http.StatusServiceUnavailable, "")
	var perr *forge.ProductError
	if err := app.Do(t.Context(), http.MethodPost, "/wiki/rest/api/content", map[string]string{"a": "b"}, nil); !errors.As(err, &perr) || perr.Status != 503 {
		t.Fatalf("POST after 503: %v", err)
	}
	// Other statuses are returned as they are, with the start of the body.
	err := app.GetJSON(t.Context(), "/wiki/rest/api/user?accountId=nobody", nil)
	if !errors.As(err, &perr) || perr.Status != 404 || !strings.Contains(perr.Body, "nobody") ||
		perr.Path != "/wiki/rest/api/user?accountId=nobody" {
		t.Fatalf("404: %#v", err)
	}
	if got := e.slept(); len(got) != 1 {
		t.Fatalf("waits = %v", got)
	}
}

func TestClientRequestShape(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{MaxBody: 64})
	type seen struct{ method, path, auth, accept, ctype, body string }
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = seen{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("Accept"),
			r.Header.Get("Content-Type"), string(b)}
		if r.URL.Path == "/ex/confluence/c/big" {
			_, _ = w.Write([]byte(`{"x":"` + strings.Repeat("a", 100) + `"}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"42"}`))
	}))
	defer srv.Close()
	tok := forgetest.MintAppToken(t, e.clock.Now().Add(3*time.Hour))
	e.capture(t, tok, srv.URL+"/ex/confluence/c/")
	app := e.client.AsApp(clientInst)

	var out struct{ ID string }
	if err := app.Do(t.Context(), http.MethodPost, "/wiki/rest/api/content?x=1", map[string]int{"n": 1}, &out); err != nil {
		t.Fatal(err)
	}
	want := seen{"POST", "/ex/confluence/c/wiki/rest/api/content?x=1", "Bearer " + tok, "application/json", "application/json", `{"n":1}`}
	if got != want || out.ID != "42" {
		t.Fatalf("request = %+v, out %+v", got, out)
	}
	if err := app.Do(t.Context(), http.MethodPut, "/raw", json.RawMessage(`{"raw":true}`), nil); err != nil || got.body != `{"raw":true}` {
		t.Fatalf("raw body: %q, %v", got.body, err)
	}
	if err := app.GetJSON(t.Context(), "/big", &out); err == nil || !strings.Contains(err.Error(), "larger than 64 bytes") {
		t.Fatalf("oversized answer: %v", err)
	}
	for _, p := range []string{"//evil.example/x", "https://evil.example/x", "wiki/rest"} {
		got = seen{}
		if err := app.GetJSON(t.Context(), p, nil); err == nil || got.method != "" {
			t.Errorf("path %q: %v, sent %+v", p, err, got)
		}
	}
}

// The token must appear in no error and no log line, even when Atlassian
// echoes it back, and on transport failures.
func TestClientNeverShowsToken(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{Retries: 1})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo401":
			w.WriteHeader(http.StatusUnauthorized)
		case "/echo429":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
		_, _ = io.WriteString(w, `{"message":"bad header: `+r.Header.Get("Authorization")+`"}`)
	}))
	defer srv.Close()
	tok := forgetest.MintAppToken(t, e.clock.Now().Add(3*time.Hour))
	e.capture(t, tok, srv.URL)
	app := e.client.AsApp(clientInst)

	var errs []error
	for _, p := range []string{"/echo400", "/echo429", "/echo401"} {
		errs = append(errs, app.GetJSON(t.Context(), p, nil))
	}
	srv.Close()
	e.capture(t, forgetest.MintAppToken(t, e.clock.Now().Add(4*time.Hour)), srv.URL)
	errs = append(errs, app.GetJSON(t.Context(), "/down", nil)) // connection refused

	for i, err := range errs {
		if err == nil {
			t.Fatalf("call %d succeeded", i)
		}
		if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), tok[len(tok)-20:]) {
			t.Errorf("error %d shows the token: %v", i, err)
		}
	}
	if !strings.Contains(errs[0].Error(), "[redacted]") {
		t.Errorf("echoed token not redacted: %v", errs[0])
	}
	if e.logs.Len() == 0 {
		t.Fatal("no log lines to check")
	}
	for _, entry := range e.logs.All() {
		line := entry.Message
		for k, v := range entry.ContextMap() {
			line += " " + k + "=" + toString(v)
		}
		if strings.Contains(line, tok[len(tok)-20:]) {
			t.Errorf("log line shows the token: %s", line)
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
