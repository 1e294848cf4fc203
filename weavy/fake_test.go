package weavy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/forge-remote/forge-remote/store"
)

const testKey = "wys_testkey"

// clock is an injected clock that only moves when told to.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeWeavy is an httptest Weavy that checks every request as strictly as the
// real one documents, and counts the tokens it mints.
type fakeWeavy struct {
	*httptest.Server
	mints     atomic.Int64 // tokens handed out
	requests  atomic.Int64 // token requests, failed ones included
	expiresIn atomic.Int64 // seconds; 0 means echo the request's
	fail      atomic.Bool  // answer 500 problems
	block     chan struct{}
	started   chan struct{} // if set, receives one value per token request before block

	mu       sync.Mutex
	lastPath string // escaped path of the last request
	lastBody string
	profiles map[string]map[string]any
}

var tokenPath = regexp.MustCompile(`^/api/users/([^/]+)/tokens$`)
var userPath = regexp.MustCompile(`^/api/users/([^/]+)$`)

// newFakeWeavy starts a fake; configure, if given, sees the server before it starts.
func newFakeWeavy(t testing.TB, configure ...func(*http.Server)) *fakeWeavy {
	t.Helper()
	f := &fakeWeavy{profiles: make(map[string]map[string]any)}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	for _, c := range configure {
		c(f.Config)
	}
	f.Start()
	t.Cleanup(f.Close)
	return f
}

func problem(w http.ResponseWriter, status int, title string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"type": "https://tools.ietf.org/html/rfc9110", "title": title, "status": status,
	})
}

func (f *fakeWeavy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.lastPath, f.lastBody = r.URL.EscapedPath(), string(body)
	f.mu.Unlock()

	if r.Header.Get("Authorization") != "Bearer "+testKey {
		problem(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		problem(w, http.StatusUnsupportedMediaType, "Unsupported Media Type")
		return
	}
	switch {
	case r.Method == http.MethodPost && tokenPath.MatchString(r.URL.EscapedPath()):
		f.issue(w, r, body)
	case r.Method == http.MethodPut && userPath.MatchString(r.URL.EscapedPath()):
		f.upsert(w, r, body)
	default:
		problem(w, http.StatusNotFound, "Not Found")
	}
}

func (f *fakeWeavy) issue(w http.ResponseWriter, r *http.Request, body []byte) {
	f.requests.Add(1)
	var req struct {
		ExpiresIn int `json:"expires_in"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		problem(w, http.StatusBadRequest, "One or more validation errors occurred.")
		return
	}
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-r.Context().Done():
			return
		}
	}
	if f.fail.Load() {
		problem(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	exp := int64(req.ExpiresIn)
	if e := f.expiresIn.Load(); e > 0 {
		exp = e
	}
	n := f.mints.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("wyu_%d", n), "expires_in": exp})
}

func (f *fakeWeavy) upsert(w http.ResponseWriter, r *http.Request, body []byte) {
	var p map[string]any
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&p); err != nil {
		problem(w, http.StatusBadRequest, "Bad Request")
		return
	}
	for k := range p {
		switch k {
		case "name", "email", "picture", "directory":
		default:
			problem(w, http.StatusBadRequest, "Unknown property "+k)
			return
		}
	}
	f.mu.Lock()
	f.profiles[r.URL.EscapedPath()] = p
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"id":1}`)
}

func (f *fakeWeavy) last() (path, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastPath, f.lastBody
}

func (f *fakeWeavy) client(t testing.TB, o ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(f.URL, testKey, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// memKV is a tiny store.KV honouring TTLs on an injected clock, with failures
// to inject.
type memKV struct {
	now func() time.Time

	mu      sync.Mutex
	m       map[string]kvRecord
	getErr  error
	putErr  error
	gets    int
	puts    int
	deletes int
}

type kvRecord struct {
	v   []byte
	exp time.Time
}

var _ store.KV = (*memKV)(nil)

func newMemKV(now func() time.Time) *memKV {
	return &memKV{now: now, m: make(map[string]kvRecord)}
}

func (s *memKV) live(key string) ([]byte, bool) {
	r, ok := s.m[key]
	if !ok || (!r.exp.IsZero() && !s.now().Before(r.exp)) {
		return nil, false
	}
	return r.v, true
}

func (s *memKV) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	if s.getErr != nil {
		return nil, s.getErr
	}
	v, ok := s.live(key)
	if !ok {
		return nil, store.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (s *memKV) Put(_ context.Context, key string, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	if s.putErr != nil {
		return s.putErr
	}
	r := kvRecord{v: append([]byte(nil), value...)}
	if ttl > 0 {
		r.exp = s.now().Add(ttl)
	}
	s.m[key] = r
	return nil
}

func (s *memKV) Update(_ context.Context, key string, fn store.UpdateFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.live(key)
	v, ttl, err := fn(old, ok)
	switch {
	case errors.Is(err, store.Keep):
		return nil
	case errors.Is(err, store.Remove):
		delete(s.m, key)
		return nil
	case err != nil:
		return err
	}
	r := kvRecord{v: v}
	if ttl > 0 {
		r.exp = s.now().Add(ttl)
	}
	s.m[key] = r
	return nil
}

func (s *memKV) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deletes++
	delete(s.m, key)
	return nil
}

func (s *memKV) Scan(_ context.Context, prefix string, fn func(string, []byte) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.m {
		if v, ok := s.live(k); ok && strings.HasPrefix(k, prefix) {
			if err := fn(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *memKV) Ping(context.Context) error { return nil }
func (s *memKV) Close() error               { return nil }

func (s *memKV) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ks []string
	for k := range s.m {
		ks = append(ks, k)
	}
	return ks
}

func (s *memKV) set(getErr, putErr error) {
	s.mu.Lock()
	s.getErr, s.putErr = getErr, putErr
	s.mu.Unlock()
}

// metricValue reads a counter (or a histogram's sample count) from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}
