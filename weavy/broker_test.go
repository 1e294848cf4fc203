package weavy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/internal/testwait"
	"github.com/forge-remote/forge-remote/store"
)

const (
	inst1 = "ari:cloud:ecosystem::installation/1c2d"
	inst2 = "ari:cloud:ecosystem::installation/1c2d/x" // inst1 + "/…": store keys must still not collide
	alice = "712020:9b1c2d3e-aaaa"
	bob   = "5b10ac8d82e05b22cc7d4ef5"
)

type brokerEnv struct {
	b      *Broker
	f      *fakeWeavy
	c      *Client
	clk    *clock
	kv     *memKV
	reg    *prometheus.Registry
	logs   *observer.ObservedLogs
	opts   BrokerOptions
	onMint mintLog
}

// mintLog is a MintObserver that records what it is told.
type mintLog struct {
	mu    sync.Mutex
	users []string // installation + " " + uid, in order
}

func (m *mintLog) UserMinted(inst, uid string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.users = append(m.users, inst+" "+uid)
}

// Load is how many mints were reported.
func (m *mintLog) Load() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.users)
}

func (m *mintLog) reported() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.users)
}

func newBrokerEnv(t *testing.T, o BrokerOptions) *brokerEnv {
	t.Helper()
	e := &brokerEnv{clk: newClock(), f: newFakeWeavy(t), reg: prometheus.NewRegistry()}
	// No test here is about Weavy's timeout (client_test's are): long, so
	// that the fake answering on a busy machine never runs into it.
	e.c = e.f.client(t, ClientOptions{Now: e.clk.Now, Timeout: time.Hour})
	e.kv = newMemKV(e.clk.Now)
	core, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	o.Now, o.Registerer, o.Logger = e.clk.Now, e.reg, zap.New(core)
	o.Observer = &e.onMint
	e.opts = o
	e.b = NewBroker(e.c, e.kv, o)
	return e
}

// held reports whether the Broker holds a token for uid of inst in memory.
func (e *brokerEnv) held(inst, uid string) bool {
	_, ok := e.b.cache.load(userKey{inst, uid})
	return ok
}

func (e *brokerEnv) token(t *testing.T, inst, uid string, refresh bool) Token {
	t.Helper()
	tok, err := e.b.Token(t.Context(), inst, uid, refresh)
	if err != nil {
		t.Fatalf("Token(%s, %s, refresh=%v): %v", inst, uid, refresh, err)
	}
	return tok
}

func (e *brokerEnv) mints() int64 { return e.f.mints.Load() }

// noSecretsLogged fails if any log entry carries an access token or the key.
func (e *brokerEnv) noSecretsLogged(t *testing.T) {
	t.Helper()
	for _, entry := range e.logs.All() {
		s := entry.Message + fmt.Sprint(entry.ContextMap())
		if strings.Contains(s, "wyu_") || strings.Contains(s, testKey) {
			t.Errorf("secret logged: %s", s)
		}
	}
}

func TestBrokerMintsOnceThenReuses(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	first := e.token(t, inst1, alice, false)
	second := e.token(t, inst1, alice, false)
	if first.AccessToken != second.AccessToken || e.mints() != 1 {
		t.Fatalf("tokens %q %q after %d mints, want one mint reused", first.AccessToken, second.AccessToken, e.mints())
	}
	if want := e.clk.Now().Add(time.Hour); !first.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v (default TTL)", first.ExpiresAt, want)
	}
	if _, body := e.f.last(); body != `{"expires_in":3600}` {
		t.Errorf("request body = %s", body)
	}
	if keys := e.kv.keys(); len(keys) != 1 || keys[0] != "weavy/u/~ari:cloud:ecosystem::installation%2F1c2d/2g1wkofwQvQYJ0VvQ3QNrQ" {
		t.Errorf("store keys = %q", keys)
	}
	for name, want := range map[string]float64{"weavy_token_mints_total": 1, "weavy_token_cache_hits_total": 1} {
		if v := metricValue(t, e.reg, name, nil); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if e.onMint.Load() != 1 {
		t.Errorf("UserMinted called %d times", e.onMint.Load())
	}
	e.noSecretsLogged(t)
}

// The observer hears of a user's first token, naming the installation and
// the user, and of no later one: not a cached token, not a refresh, not a
// token another Broker over the same store minted.
func TestBrokerReportsFirstMintToObserver(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	e.token(t, inst1, alice, false)
	e.token(t, inst1, alice, false) // from memory
	e.token(t, inst1, alice, true)  // a refresh mints, but alice had a token
	e.token(t, inst2, alice, false) // the same user under another installation is another user
	e.token(t, inst1, bob, true)    // a refresh for a user with none is a first mint
	want := []string{inst1 + " " + alice, inst2 + " " + alice, inst1 + " " + bob}
	if got := e.onMint.reported(); !slices.Equal(got, want) {
		t.Fatalf("observer told %q, want %q", got, want)
	}
	restarted := NewBroker(e.c, e.kv, e.opts)
	if _, err := restarted.Token(t.Context(), inst1, alice, false); err != nil {
		t.Fatal(err)
	}
	if e.mints() != 4 || e.onMint.Load() != 3 {
		t.Fatalf("%d mints and %d reported after a restart, want 4 and 3", e.mints(), e.onMint.Load())
	}
}

func TestBrokerConcurrentColdCalls(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	const n = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	tokens := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			tok, err := e.b.Token(context.Background(), inst1, alice, false)
			tokens[i], errs[i] = tok.AccessToken, err
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || tokens[i] != tokens[0] {
			t.Fatalf("call %d: %q, %v; want %q", i, tokens[i], errs[i], tokens[0])
		}
	}
	if e.mints() != 1 {
		t.Fatalf("%d mints, want 1", e.mints())
	}
}

func TestBrokerRefresh(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	held := e.token(t, inst1, alice, false)
	fresh := e.token(t, inst1, alice, true)
	if fresh.AccessToken == held.AccessToken {
		t.Fatal("refresh returned the held token")
	}
	if got := e.token(t, inst1, alice, false); got.AccessToken != fresh.AccessToken {
		t.Fatalf("after refresh, cached %q, want %q", got.AccessToken, fresh.AccessToken)
	}
	if e.mints() != 2 || e.onMint.Load() != 1 {
		t.Fatalf("%d mints, %d UserMinted calls; want 2 and 1", e.mints(), e.onMint.Load())
	}

	// Within the window a refresh gets the token the last refresh minted.
	e.clk.Advance(9 * time.Second)
	if got := e.token(t, inst1, alice, true); got.AccessToken != fresh.AccessToken || e.mints() != 2 {
		t.Fatalf("refresh within window: %q after %d mints", got.AccessToken, e.mints())
	}
	e.clk.Advance(time.Second)
	if got := e.token(t, inst1, alice, true); got.AccessToken == fresh.AccessToken || e.mints() != 3 {
		t.Fatalf("refresh after window: %q after %d mints", got.AccessToken, e.mints())
	}
	if v := metricValue(t, e.reg, "weavy_token_refreshes_total", nil); v != 3 {
		t.Errorf("weavy_token_refreshes_total = %v", v)
	}
}

func TestBrokerRefreshColdUser(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	tok := e.token(t, inst1, alice, true)
	if got := e.token(t, inst1, alice, false); got.AccessToken != tok.AccessToken || e.mints() != 1 {
		t.Fatalf("cached %q after %d mints", got.AccessToken, e.mints())
	}
	if e.onMint.Load() != 1 {
		t.Errorf("UserMinted called %d times", e.onMint.Load())
	}
}

func TestBrokerConcurrentRefreshes(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	held := e.token(t, inst1, alice, false)
	before := e.mints()

	const n = 50
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	tokens := make([]string, n)
	for i := range n {
		wg.Go(func() {
			<-start
			tok, err := e.b.Token(context.Background(), inst1, alice, true)
			tokens[i], errs[i] = tok.AccessToken, err
		})
	}
	close(start)
	wg.Wait()
	if m := e.mints() - before; m > 2 || m < 1 {
		t.Fatalf("%d mints for %d simultaneous refreshes", m, n)
	}
	for i := range n {
		if _, limited := errors.AsType[*RateLimitedError](errs[i]); limited {
			continue
		}
		if errs[i] != nil || !strings.HasPrefix(tokens[i], "wyu_") || tokens[i] == held.AccessToken {
			t.Fatalf("refresh %d: %q, %v", i, tokens[i], errs[i])
		}
	}
}

// The default limit, 6 refresh mints per user per minute, spaces them 10 s
// apart: a refresh sooner (once the 5 s window no longer shares the last
// one) is refused with the time left, and a refused refresh costs nothing.
func TestBrokerRefreshRateLimit(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{RefreshWindow: 5 * time.Second})
	seen := map[string]bool{e.token(t, inst1, alice, false).AccessToken: true}
	first := e.token(t, inst1, alice, true)
	seen[first.AccessToken] = true

	e.clk.Advance(6 * time.Second) // beyond the window, within the limit's 10 s
	_, err := e.b.Token(t.Context(), inst1, alice, true)
	rl, ok := errors.AsType[*RateLimitedError](err)
	if !ok {
		t.Fatalf("refresh at 6 s: err = %v, want *RateLimitedError", err)
	}
	if rl.RetryAfter != 4*time.Second {
		t.Errorf("RetryAfter = %v, want 4s (until 10 s after the first refresh)", rl.RetryAfter)
	}
	if v := metricValue(t, e.reg, "weavy_token_refresh_limited_total", nil); v != 1 {
		t.Errorf("weavy_token_refresh_limited_total = %v", v)
	}
	// Other users are not limited; normal calls are served the last refresh's token.
	e.token(t, inst1, bob, true)
	if got := e.token(t, inst1, alice, false); got.AccessToken != first.AccessToken {
		t.Fatalf("normal call after a refused refresh: %q, want %q", got.AccessToken, first.AccessToken)
	}

	e.clk.Advance(rl.RetryAfter)
	if tok := e.token(t, inst1, alice, true); seen[tok.AccessToken] {
		t.Fatal("refresh after RetryAfter returned an old token")
	}
}

// Whatever the pace of a client's refreshes, no minute holds more than the
// limit's mints.
func TestBrokerRefreshLimitPerMinute(t *testing.T) {
	for _, every := range []time.Duration{time.Second, 3 * time.Second, 7 * time.Second} {
		t.Run(every.String(), func(t *testing.T) {
			e := newBrokerEnv(t, BrokerOptions{RefreshWindow: time.Millisecond})
			start := e.clk.Now()
			var mints []time.Duration // since start
			for at := time.Duration(0); at < 3*time.Minute; at += every {
				e.clk.Advance(start.Add(at).Sub(e.clk.Now()))
				before := e.mints()
				_, err := e.b.Token(t.Context(), inst1, alice, true)
				if _, limited := errors.AsType[*RateLimitedError](err); err != nil && !limited {
					t.Fatal(err)
				}
				if e.mints() > before {
					mints = append(mints, at)
				}
			}
			for i := range mints {
				if i+6 < len(mints) && mints[i+6]-mints[i] < time.Minute {
					t.Fatalf("7 mints within a minute: %v", mints[i:i+7])
				}
			}
			// Refused refreshes cost nothing: every refresh at least 10 s
			// after the last mint mints.
			spacing := (10*time.Second + every - 1) / every * every
			if want := int(3 * time.Minute / spacing); len(mints) < want {
				t.Errorf("%d mints in 3 minutes at one refresh per %v, want at least %d", len(mints), every, want)
			}
		})
	}
}

func TestRateLimitRetryAfterAtLeastOneSecond(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{RefreshLimit: 1, RefreshPer: 500 * time.Millisecond, RefreshWindow: time.Millisecond})
	e.token(t, inst1, alice, true)
	e.clk.Advance(100 * time.Millisecond)
	_, err := e.b.Token(t.Context(), inst1, alice, true)
	if rl, ok := errors.AsType[*RateLimitedError](err); !ok || rl.RetryAfter != time.Second {
		t.Fatalf("err = %v, want RetryAfter 1s", err)
	}
}

// A zero option means its default; a negative one is refused by name
// rather than taken for the default.
func TestNewBrokerRejectsNegativeOptions(t *testing.T) {
	for name, o := range map[string]BrokerOptions{
		"TTL":           {TTL: -time.Second},
		"Margin":        {Margin: -1},
		"RefreshWindow": {RefreshWindow: -time.Second},
		"RefreshLimit":  {RefreshLimit: -1},
		"RefreshPer":    {RefreshPer: -time.Minute},
		"LockTTL":       {LockTTL: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				err, _ := recover().(error)
				if want := "weavy: BrokerOptions." + name + " is negative"; err == nil || err.Error() != want {
					t.Fatalf("NewBroker panicked with %v, want %q", err, want)
				}
			}()
			NewBroker(nil, newMemKV(time.Now), o)
		})
	}
}

func TestBrokerShortLivedToken(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	e.f.expiresIn.Store(3) // Weavy grants 3 s whatever was asked
	first := e.token(t, inst1, alice, false)
	e.clk.Advance(time.Second) // margin is min(5m, 3s/2): still served
	if got := e.token(t, inst1, alice, false); got.AccessToken != first.AccessToken || e.mints() != 1 {
		t.Fatalf("at 1s: %q after %d mints", got.AccessToken, e.mints())
	}
	e.clk.Advance(2500 * time.Millisecond)
	if got := e.token(t, inst1, alice, false); got.AccessToken == first.AccessToken || e.mints() != 2 {
		t.Fatalf("at 3.5s: %q after %d mints, want a new token", got.AccessToken, e.mints())
	}
}

// A refresh whose mint failed made no token: the client's retry is not
// refused for it, while a refresh that minted still holds its slot.
func TestBrokerFailedRefreshGivesItsSlotBack(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{RefreshWindow: time.Millisecond})
	held := e.token(t, inst1, alice, false)
	e.f.fail.Store(true)
	for i := range 3 { // each failure gives its slot back
		if _, err := e.b.Token(t.Context(), inst1, alice, true); err == nil {
			t.Fatal("refresh with Weavy failing: no error")
		} else if _, limited := errors.AsType[*RateLimitedError](err); limited {
			t.Fatalf("retry %d after a failed refresh refused: %v", i, err)
		}
	}
	e.f.fail.Store(false)
	e.clk.Advance(time.Second)
	got := e.token(t, inst1, alice, true)
	if got.AccessToken == held.AccessToken {
		t.Fatal("refresh once Weavy is back returned the held token")
	}
	// That refresh minted: the next one within 10 s is refused.
	e.clk.Advance(time.Second)
	if _, err := e.b.Token(t.Context(), inst1, alice, true); err == nil {
		t.Fatal("second refresh 1 s after a minted one: no error")
	} else if _, limited := errors.AsType[*RateLimitedError](err); !limited {
		t.Fatalf("second refresh 1 s after a minted one: %v, want *RateLimitedError", err)
	}
}

func TestBrokerWeavyDown(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	held := e.token(t, inst1, alice, false)
	e.f.fail.Store(true)

	if got := e.token(t, inst1, alice, false); got.AccessToken != held.AccessToken {
		t.Fatalf("cached user: %q", got.AccessToken)
	}
	_, err := e.b.Token(t.Context(), inst1, bob, false)
	if apiErr, ok := errors.AsType[*APIError](err); !ok || apiErr.Status != 500 {
		t.Fatalf("cold user: err = %v, want a 500 *APIError", err)
	}

	// A refresh that fails returns the error but evicts nothing.
	if _, err := e.b.Token(t.Context(), inst1, alice, true); err == nil {
		t.Fatal("failed refresh: no error")
	}
	if got := e.token(t, inst1, alice, false); got.AccessToken != held.AccessToken {
		t.Fatalf("after failed refresh: %q", got.AccessToken)
	}

	// In its margin, the held token is served while re-minting fails,
	// without asking Weavy again on every call.
	e.clk.Advance(56 * time.Minute)
	requests := e.f.requests.Load()
	for range 3 {
		if got := e.token(t, inst1, alice, false); got.AccessToken != held.AccessToken {
			t.Fatalf("in margin: %q", got.AccessToken)
		}
	}
	if n := e.f.requests.Load() - requests; n != 1 {
		t.Fatalf("%d mint attempts for 3 calls in the margin, want 1", n)
	}
	// Too close to expiry to hand out: the error.
	e.clk.Advance(3*time.Minute + 31*time.Second)
	if _, err := e.b.Token(t.Context(), inst1, alice, false); err == nil {
		t.Fatal("30s before expiry with Weavy down: no error")
	}

	e.f.fail.Store(false)
	if got := e.token(t, inst1, alice, false); got.AccessToken == held.AccessToken {
		t.Fatal("Weavy back: held token still served")
	}
	e.noSecretsLogged(t)
}

// minterFunc adapts a function to Minter.
type minterFunc func(ctx context.Context, uid string, ttl time.Duration) (Token, error)

func (f minterFunc) IssueToken(ctx context.Context, uid string, ttl time.Duration) (Token, error) {
	return f(ctx, uid, ttl)
}

func TestBrokerRefreshGetsSameToken(t *testing.T) {
	tests := []struct {
		name      string
		sameTimes int // how many refresh mints answer with the held token
		wantErr   bool
		wantCalls int
	}{
		{"once, then new", 1, false, 3},
		{"twice", 2, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			var calls atomic.Int64
			minter := minterFunc(func(_ context.Context, _ string, ttl time.Duration) (Token, error) {
				n := calls.Add(1)
				tok := "wyu_held"
				if n > int64(1+tt.sameTimes) {
					tok = fmt.Sprintf("wyu_%d", n)
				}
				return Token{AccessToken: tok, ExpiresAt: clk.Now().Add(ttl)}, nil
			})
			b := NewBroker(minter, newMemKV(clk.Now), BrokerOptions{Now: clk.Now})
			b.Token(t.Context(), inst1, alice, false)
			tok, err := b.Token(t.Context(), inst1, alice, true)
			if tt.wantErr {
				if !errors.Is(err, ErrBadResponse) {
					t.Fatalf("err = %v, want ErrBadResponse", err)
				}
			} else if err != nil || tok.AccessToken == "wyu_held" {
				t.Fatalf("refresh = %q, %v", tok.AccessToken, err)
			}
			if n := calls.Load(); n != int64(tt.wantCalls) {
				t.Fatalf("%d IssueToken calls, want %d", n, tt.wantCalls)
			}
			if tt.wantErr {
				if got, err := b.Token(t.Context(), inst1, alice, false); err != nil || got.AccessToken != "wyu_held" {
					t.Fatalf("after failed refresh: %q, %v", got.AccessToken, err)
				}
			}
		})
	}
}

func TestBrokerRejectsNonUserTokens(t *testing.T) {
	clk := newClock()
	minter := minterFunc(func(context.Context, string, time.Duration) (Token, error) {
		return Token{AccessToken: "wys_apikey", ExpiresAt: clk.Now().Add(time.Hour)}, nil
	})
	b := NewBroker(minter, newMemKV(clk.Now), BrokerOptions{Now: clk.Now})
	if _, err := b.Token(t.Context(), inst1, alice, false); !errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want ErrBadResponse", err)
	}
}

func TestBrokerRestartServesStoredToken(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	held := e.token(t, inst1, alice, false)
	e.clk.Advance(10 * time.Minute)

	restarted := NewBroker(e.c, e.kv, e.opts)
	got, err := restarted.Token(t.Context(), inst1, alice, false)
	if err != nil || got.AccessToken != held.AccessToken || !got.ExpiresAt.Equal(held.ExpiresAt) {
		t.Fatalf("after restart: %v, %v; want %v", got, err, held)
	}
	if e.mints() != 1 || e.onMint.Load() != 1 {
		t.Fatalf("%d mints, %d UserMinted after restart; want 1 and 1", e.mints(), e.onMint.Load())
	}
	// The stored token's own margin still applies.
	e.clk.Advance(46 * time.Minute)
	if got := e.token(t, inst1, alice, false); got.AccessToken == held.AccessToken {
		t.Fatal("stored token served inside its margin")
	}
}

func TestBrokerStoreFailures(t *testing.T) {
	t.Run("get fails on a cold user", func(t *testing.T) {
		e := newBrokerEnv(t, BrokerOptions{})
		e.kv.set(fmt.Errorf("redis: %w", store.ErrUnavailable), nil)
		_, err := e.b.Token(t.Context(), inst1, alice, false)
		if !errors.Is(err, store.ErrUnavailable) || !strings.HasPrefix(err.Error(), "weavy: ") {
			t.Fatalf("err = %v, want a weavy: error wrapping store.ErrUnavailable", err)
		}
		if e.mints() != 0 {
			t.Fatalf("%d mints", e.mints())
		}
	})
	t.Run("get fails, memory still serves", func(t *testing.T) {
		e := newBrokerEnv(t, BrokerOptions{})
		held := e.token(t, inst1, alice, false)
		e.kv.set(store.ErrUnavailable, nil)
		if got := e.token(t, inst1, alice, false); got.AccessToken != held.AccessToken {
			t.Fatal("memory hit not served")
		}
	})
	t.Run("sealed record is minted over", func(t *testing.T) {
		e := newBrokerEnv(t, BrokerOptions{})
		e.kv.set(store.ErrSealed, nil)
		e.token(t, inst1, alice, false)
		if e.mints() != 1 {
			t.Fatalf("%d mints", e.mints())
		}
	})
	t.Run("put fails", func(t *testing.T) {
		e := newBrokerEnv(t, BrokerOptions{})
		e.kv.set(nil, fmt.Errorf("bolt: %w", store.ErrUnavailable))
		first := e.token(t, inst1, alice, false)
		second := e.token(t, inst1, alice, false)
		if first.AccessToken != second.AccessToken || e.mints() != 1 {
			t.Fatalf("not kept in memory: %d mints", e.mints())
		}
		if e.logs.FilterMessage("weavy: storing token failed, kept in memory only").Len() != 1 {
			t.Errorf("warning not logged: %v", e.logs.All())
		}
		e.noSecretsLogged(t)
	})
}

func TestBrokerPurgeInstallation(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	a1 := e.token(t, inst1, alice, false)
	e.token(t, inst1, bob, false)
	a2 := e.token(t, inst2, alice, false)
	if e.mints() != 3 {
		t.Fatalf("%d mints", e.mints())
	}
	if err := e.b.PurgeInstallation(t.Context(), inst1); err != nil {
		t.Fatal(err)
	}
	for _, k := range e.kv.keys() {
		if !strings.HasPrefix(k, "weavy/u/~"+strings.ReplaceAll(inst2, "/", "%2F")+"/") {
			t.Errorf("store key %q left after purge", k)
		}
	}
	if len(e.kv.keys()) != 1 {
		t.Errorf("store keys = %q, want inst2's only", e.kv.keys())
	}
	if got := e.token(t, inst2, alice, false); got.AccessToken != a2.AccessToken || e.mints() != 3 {
		t.Fatal("other installation's token was purged")
	}
	if got := e.token(t, inst1, alice, false); got.AccessToken == a1.AccessToken || e.mints() != 4 {
		t.Fatal("purged installation's token still served")
	}
}

func TestBrokerWaiterCancelled(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	e.f.block = make(chan struct{})
	e.f.started = make(chan struct{}, 1)

	// The first caller starts the mint, then gives up.
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() {
		_, err := e.b.Token(ctx, inst1, alice, false)
		first <- err
	}()
	<-e.f.started

	second := make(chan Token, 1)
	go func() {
		tok, err := e.b.Token(context.Background(), inst1, alice, false)
		if err != nil {
			t.Error(err)
		}
		second <- tok
	}()

	cancel()
	select {
	case err := <-first:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter: err = %v", err)
		}
	case <-testwait.After(t):
		t.Fatal("cancelled waiter did not return")
	}

	close(e.f.block) // the mint, detached from the first caller, completes
	select {
	case tok := <-second:
		if tok.AccessToken != "wyu_1" {
			t.Fatalf("second caller got %q", tok.AccessToken)
		}
	case <-testwait.After(t):
		t.Fatal("second caller never got its token")
	}
	if e.mints() != 1 {
		t.Fatalf("%d mints", e.mints())
	}
}

func TestBrokerRejectsBadKeys(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	for _, k := range [][2]string{{"", alice}, {inst1, ""}, {inst1, "a b"}, {"in st", alice}, {inst1, "123"}} {
		if _, err := e.b.Token(t.Context(), k[0], k[1], false); err == nil {
			t.Errorf("Token(%q, %q): no error", k[0], k[1])
		}
	}
	if e.mints() != 0 {
		t.Fatalf("%d mints", e.mints())
	}
}

func TestBrokerSweepsExpiredEntries(t *testing.T) {
	e := newBrokerEnv(t, BrokerOptions{})
	e.token(t, inst1, alice, false)
	e.clk.Advance(2 * time.Hour)
	e.token(t, inst1, bob, false) // a miss runs the sweep
	if e.held(inst1, alice) {
		t.Fatal("expired entry kept in memory")
	}
}

func BenchmarkBrokerHit(b *testing.B) {
	br, n := countingBroker()
	ctx := context.Background()
	uids := make([]string, 1000)
	for i := range uids {
		uids[i] = fmt.Sprintf("5b10ac8d82e05b22cc7d%04d", i)
		if _, err := br.Token(ctx, inst1, uids[i], false); err != nil {
			b.Fatal(err)
		}
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)) * 7919
		for pb.Next() {
			if _, err := br.Token(ctx, inst1, uids[i%len(uids)], false); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	if n.Load() != int64(len(uids)) {
		b.Fatalf("%d mints during the benchmark", n.Load()-int64(len(uids)))
	}
}

// BenchmarkBrokerHitSerial: warm calls from one goroutine, for 10,000 users
// of 1,000 installations with ids of real length (an installation ARI, an
// accountId): the cost of a hit itself, without contention.
func BenchmarkBrokerHitSerial(b *testing.B) {
	br, n := countingBroker()
	ctx := context.Background()
	ids := benchUsers(10000)
	for _, k := range ids {
		if _, err := br.Token(ctx, k.inst, k.uid, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// A stride through the users, so that consecutive calls do not find
		// their entry in the CPU cache the way one user's repeated calls would.
		k := ids[i%len(ids)]
		if _, err := br.Token(ctx, k.inst, k.uid, false); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
	if n.Load() != int64(len(ids)) {
		b.Fatalf("%d mints during the benchmark", n.Load()-int64(len(ids)))
	}
}

// countingBroker is a Broker over a memory store whose minter counts its
// mints in n.
func countingBroker() (br *Broker, n *atomic.Int64) {
	n = new(atomic.Int64)
	minter := minterFunc(func(_ context.Context, _ string, ttl time.Duration) (Token, error) {
		return Token{AccessToken: fmt.Sprintf("wyu_%d", n.Add(1)), ExpiresAt: time.Now().Add(ttl)}, nil
	})
	return NewBroker(minter, newMemKV(time.Now), BrokerOptions{}), n
}

// benchUsers returns n users with ids of real length, ten per installation.
func benchUsers(n int) []userKey {
	ids := make([]userKey, n)
	for i := range ids {
		ids[i] = userKey{fmt.Sprintf("ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-%012d", i/10),
			fmt.Sprintf("712020:5b10ac8d-82e0-4b22-8c7d-%012d", i)}
	}
	return ids
}
