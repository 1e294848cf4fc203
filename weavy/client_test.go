package weavy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/internal/secret/secrettest"
)

var _ Minter = (*Client)(nil)

func TestNewClient(t *testing.T) {
	tests := []struct {
		name, url, key string
		wantErr        bool
	}{
		{"https", "https://acme.weavy.io", testKey, false},
		{"http with path and slash", "http://localhost:5000/weavy/", testKey, false},
		{"relative", "acme.weavy.io", testKey, true},
		{"ftp", "ftp://acme.weavy.io", testKey, true},
		{"no host", "https://", testKey, true},
		{"query", "https://acme.weavy.io?x=1", testKey, true},
		{"empty query", "https://acme.weavy.io?", testKey, true},
		{"fragment", "https://acme.weavy.io#x", testKey, true},
		{"userinfo", "https://u:p@acme.weavy.io", testKey, true},
		{"garbage", "://\x7f", testKey, true},
		{"empty key", "https://acme.weavy.io", "", true},
		{"key with newline", "https://acme.weavy.io", "wys_a\nb", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.url, tt.key, ClientOptions{})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Fatalf("error %q contains the API key", err)
			}
		})
	}
}

// A zero timeout is the default; a negative one is a mistake, not "none".
func TestNewClientTimeout(t *testing.T) {
	c, err := NewClient("https://acme.weavy.io", testKey, ClientOptions{})
	if err != nil || c.timeout != defaultTimeout {
		t.Fatalf("zero timeout: %v, %v", c, err)
	}
	if c, err := NewClient("https://acme.weavy.io", testKey, ClientOptions{Timeout: -time.Second}); err == nil {
		t.Fatalf("negative timeout accepted: %v", c)
	}
}

func TestIssueTokenRequest(t *testing.T) {
	clk := newClock()
	f := newFakeWeavy(t)
	f.expiresIn.Store(1800)
	c := f.client(t, ClientOptions{Now: clk.Now})

	tests := []struct {
		uid, wantPath string
	}{
		{"5b10ac8d82e05b22cc7d4ef5", "/api/users/5b10ac8d82e05b22cc7d4ef5/tokens"},
		{"712020:9b1c-4f", "/api/users/712020%3A9b1c-4f/tokens"},
		{"a/b+c@d", "/api/users/a%2Fb%2Bc%40d/tokens"},
		{"u-123", "/api/users/u-123/tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.uid, func(t *testing.T) {
			tok, err := c.IssueToken(t.Context(), tt.uid, 3600*time.Second+900*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			path, body := f.last()
			if path != tt.wantPath {
				t.Errorf("path = %q, want %q", path, tt.wantPath)
			}
			if body != `{"expires_in":3600}` {
				t.Errorf("body = %q", body)
			}
			if !strings.HasPrefix(tok.AccessToken, "wyu_") {
				t.Errorf("token = %q", tok.AccessToken)
			}
			if want := clk.Now().Add(1800 * time.Second); !tok.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt = %v, want %v (sent + expires_in)", tok.ExpiresAt, want)
			}
		})
	}
}

func TestIssueTokenRejectsBadInput(t *testing.T) {
	f := newFakeWeavy(t)
	c := f.client(t, ClientOptions{})
	for _, uid := range []string{"", "12345", "a b", strings.Repeat("x", 257), ".", ".."} {
		if _, err := c.IssueToken(t.Context(), uid, time.Hour); !errors.Is(err, ErrInvalidUID) {
			t.Errorf("uid %q: err = %v, want ErrInvalidUID", uid, err)
		}
	}
	if _, err := c.IssueToken(t.Context(), "abc", 500*time.Millisecond); err == nil {
		t.Error("ttl under 1s: no error")
	}
	if n := f.requests.Load(); n != 0 {
		t.Errorf("%d requests sent for invalid input", n)
	}
}

func TestIssueTokenErrors(t *testing.T) {
	tests := []struct {
		name        string
		handler     http.HandlerFunc
		wantStatus  int // 0: not an *APIError
		wantTitle   string
		wantBadResp bool
		notInError  string
	}{
		{
			name: "500 problem",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/problem+json; charset=utf-8")
				w.WriteHeader(500)
				io.WriteString(w, `{"type":"about:blank","title":"Database is down","status":500,"detail":"try later"}`)
			},
			wantStatus: 500, wantTitle: "Database is down",
		},
		{
			name: "HTML 502 page",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(502)
				io.WriteString(w, "<html><body>"+strings.Repeat("Bad gateway. ", 1000)+"</body></html>")
			},
			wantStatus: 502, wantTitle: "Bad Gateway",
		},
		{
			name: "JSON content type, broken body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(503)
				io.WriteString(w, `{"title":`)
			},
			wantStatus: 503, wantTitle: "Service Unavailable",
		},
		{
			name: "server echoing the request headers",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(400)
				fmt.Fprintf(w, `{"title":"bad auth %s","detail":"%s"}`, r.Header.Get("Authorization"), r.Header.Get("Authorization"))
			},
			wantStatus: 400, wantTitle: "bad auth Bearer [redacted]", notInError: testKey,
		},
		{
			name: "API key handed out instead of a user token",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"access_token":"wys_leakedkey","expires_in":3600}`)
			},
			wantBadResp: true, notInError: "wys_leakedkey",
		},
		{
			name: "bare prefix",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"access_token":"wyu_","expires_in":3600}`)
			},
			wantBadResp: true,
		},
		{
			name: "200 HTML",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<html>login</html>")
			},
			wantBadResp: true,
		},
		{
			name: "negative expires_in",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"access_token":"wyu_x","expires_in":-5}`)
			},
			wantBadResp: true,
		},
		{
			name: "redirect not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://elsewhere.example/", http.StatusFound)
			},
			wantStatus: 302, wantTitle: "Found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			c, err := NewClient(srv.URL, testKey, ClientOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.IssueToken(t.Context(), "5b10ac8d82e05b22cc7d4ef5", time.Hour)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), testKey) || strings.Contains(fmt.Sprintf("%#v", err), testKey) {
				t.Fatalf("error contains the API key: %v", err)
			}
			if tt.notInError != "" && strings.Contains(fmt.Sprintf("%v %#v", err, err), tt.notInError) {
				t.Fatalf("error contains %q: %v", tt.notInError, err)
			}
			if got := errors.Is(err, ErrBadResponse); got != tt.wantBadResp {
				t.Fatalf("errors.Is(ErrBadResponse) = %v: %v", got, err)
			}
			apiErr, ok := errors.AsType[*APIError](err)
			if tt.wantStatus == 0 {
				if ok {
					t.Fatalf("unexpected *APIError %v", err)
				}
				return
			}
			if !ok {
				t.Fatalf("err = %T %v, want *APIError", err, err)
			}
			if apiErr.Status != tt.wantStatus || apiErr.Title != tt.wantTitle {
				t.Errorf("APIError = %d %q, want %d %q", apiErr.Status, apiErr.Title, tt.wantStatus, tt.wantTitle)
			}
			if len(apiErr.Body) > 512 {
				t.Errorf("Body is %d bytes", len(apiErr.Body))
			}
		})
	}
}

func TestIssueTokenUnauthorized(t *testing.T) {
	f := newFakeWeavy(t)
	c, err := NewClient(f.URL, "wys_wrongkey", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.IssueToken(t.Context(), "abc", time.Hour)
	apiErr, ok := errors.AsType[*APIError](err)
	if !ok || apiErr.Status != http.StatusUnauthorized || apiErr.Title != "Unauthorized" {
		t.Fatalf("err = %v, want a 401 *APIError", err)
	}
	if strings.Contains(err.Error(), "wys_wrongkey") {
		t.Fatalf("error contains the API key: %v", err)
	}
}

func TestIssueTokenTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	reg := prometheus.NewRegistry()
	c, err := NewClient(srv.URL, testKey, ClientOptions{Timeout: 150 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}

	// The fake answers only when the test ends: ErrTimeout at all is the
	// client's timeout at work.
	_, err = c.IssueToken(t.Context(), "abc", time.Hour)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if v := metricValue(t, reg, "weavy_errors_total", map[string]string{"op": "issue_token", "status": "timeout"}); v != 1 {
		t.Errorf("weavy_errors_total{timeout} = %v", v)
	}

	// The caller's own deadline is not the client's timeout.
	c.timeout = time.Hour
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = c.IssueToken(ctx, "abc", time.Hour)
	if errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller deadline: err = %v, want context.DeadlineExceeded and not ErrTimeout", err)
	}
}

func TestClientReusesConnections(t *testing.T) {
	var conns atomic.Int64
	f := newFakeWeavy(t, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
	})
	f.fail.Store(true) // error answers must be drained too
	c := f.client(t, ClientOptions{})
	for range 20 {
		c.IssueToken(t.Context(), "abc", time.Hour)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 20 sequential calls, want 1", n)
	}
}

func TestUpsertUser(t *testing.T) {
	f := newFakeWeavy(t)
	reg := prometheus.NewRegistry()
	c := f.client(t, ClientOptions{Registerer: reg})
	err := c.UpsertUser(t.Context(), "712020:abc", Profile{Name: "Ada Lovelace", Picture: "https://example.com/a.png"})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	p := f.profiles["/api/users/712020%3Aabc"]
	f.mu.Unlock()
	if len(p) != 2 || p["name"] != "Ada Lovelace" || p["picture"] != "https://example.com/a.png" {
		t.Fatalf("profile = %v", p)
	}
	if v := metricValue(t, reg, "weavy_request_duration_seconds", map[string]string{"op": "upsert_user"}); v != 1 {
		t.Errorf("duration samples = %v", v)
	}
}

func TestTokenNeverPrinted(t *testing.T) {
	tok := Token{AccessToken: "wyu_supersecret", ExpiresAt: time.Unix(1e9, 0)}
	core, logs := observer.New(zapcore.DebugLevel)
	zap.New(core).Info("minted", zap.Any("token", tok), zap.Object("t2", tok), zap.Stringer("t3", tok))
	printed := fmt.Sprintf("%v %+v %#v %s %q %x", tok, tok, tok, tok, tok, tok) + fmt.Sprint(tok, []Token{tok})
	for _, v := range []any{tok, []Token{tok}, map[string]Token{"t": tok}} {
		printed += secrettest.Print(t, v)
	}
	for _, e := range logs.All() {
		printed += fmt.Sprint(e.ContextMap())
	}
	secrettest.Hidden(t, printed, tok.AccessToken, "supersecret")
	secrettest.Shown(t, printed, tok.Fingerprint())
	if got := tok.ExpiresIn(time.Unix(1e9-90, 5e8)); got != 89*time.Second {
		t.Errorf("ExpiresIn = %v", got)
	}
}

// An APIError carries the answer's Retry-After (read by httpx.RetryAfter,
// which has the table of forms), at most a day.
func TestAPIErrorRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 19, 42, 47, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"-3", 0},
		{"86400000", maxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tc.header != "" {
				w.Header().Set("Retry-After", tc.header)
			}
			w.WriteHeader(http.StatusTooManyRequests)
		}))
		c, err := NewClient(srv.URL, testKey, ClientOptions{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.IssueToken(t.Context(), "5b10ac8d82e05b22cc7d4ef5", time.Hour)
		srv.Close()
		apiErr, ok := errors.AsType[*APIError](err)
		if !ok || apiErr.RetryAfter != tc.want {
			t.Errorf("Retry-After %q: %v, want an *APIError with RetryAfter %v", tc.header, err, tc.want)
		}
	}
}

// A Client holds the API key; printing it shows where it calls, not the key.
func TestClientNeverPrintsKey(t *testing.T) {
	c, err := NewClient("https://acme.weavy.io", testKey, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	printed := fmt.Sprintf("%v %+v %#v %s %q %x", c, c, c, c, c, c)
	if strings.Contains(printed, "testkey") || strings.Contains(printed, fmt.Sprintf("%x", "testkey")) {
		t.Fatalf("printing the client shows the key: %s", printed)
	}
	if !strings.Contains(printed, "https://acme.weavy.io") {
		t.Fatalf("printing the client does not say which: %s", printed)
	}
}
