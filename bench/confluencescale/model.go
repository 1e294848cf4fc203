// Package confluencescale runs forge-remote against a model of Confluence
// Cloud that enforces Atlassian's 2026 points model, over a simulated day
// (testing/synctest), at the scale of issue "One Confluence budget for
// every site": see scale_test.go and bench/RESULTS-scale.md.
//
// The model (this file) is what docs/CONFLUENCE-LIMITS.md describes, for the
// calls the server makes:
//   - one pool of Quota points per UTC hour for the whole app (Tier 1),
//     reset at the top of each hour; a request costs 1, plus 1 per page or
//     space, plus 2 per user returned (a 404 costs the request only, a 429
//     nothing);
//   - every answer carries RateLimit-Policy ("global-app-quota";q;w=3600);
//     past 80% of the pool RateLimit ("global-app-quota";r;t) and
//     X-RateLimit-NearLimit: true;
//   - once the pool is spent, every call gets 429 with Retry-After (seconds
//     to the top of the hour) and RateLimit-Reason:
//     confluence-quota-global-based, until the hour turns (the hard wall);
//   - a per-second burst limit: a token bucket of Burst requests a second
//     for the app; beyond it 429 with Retry-After: 1 and RateLimit-Reason:
//     confluence-burst-based.
//
// It serves GET /ex/confluence/{cloudId}/wiki/api/v2/pages/{id} (every page
// exists, every user may view it) and GET …/wiki/rest/api/user/bulk (every
// accountId asked for is a user); anything else is 404. Tokens are not
// checked: the server's own tests do that against devmode/confluencesim.
package confluencescale

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Model is the Confluence model; an http.Handler safe for concurrent use.
type Model struct {
	Quota int64   // points per UTC hour, for the app
	Burst float64 // requests per second, for the app (0: none)
	Now   func() time.Time

	mu     sync.Mutex
	hours  map[time.Time]*Hour
	tokens float64
	last   time.Time
}

// Hour is what the model counted in one UTC hour.
type Hour struct {
	Points       int64            // charged
	ByKind       map[string]int64 // points: page_check, profile_sync, other
	Requests     int64            // answered, 429s included
	Refused      map[string]int64 // 429s by RateLimit-Reason
	PageChecks   int64            // page checks answered 200
	UsersRead    int64            // users returned by bulk reads
	BulkReads    int64
	MaxBulkUsers int
}

// Reasons of the model's 429s.
const (
	ReasonQuota = "confluence-quota-global-based"
	ReasonBurst = "confluence-burst-based"
	policy      = `"global-app-quota"`
)

// NewModel returns a model with a pool of quota points an hour and a burst
// limit of burst requests a second.
func NewModel(quota int64, burst float64, now func() time.Time) *Model {
	return &Model{Quota: quota, Burst: burst, Now: now, hours: map[time.Time]*Hour{}}
}

func (m *Model) hour(h time.Time) *Hour {
	x := m.hours[h]
	if x == nil {
		x = &Hour{ByKind: map[string]int64{}, Refused: map[string]int64{}}
		m.hours[h] = x
	}
	return x
}

// Hours returns a copy of the counts, by the hour's start.
func (m *Model) Hours() map[time.Time]Hour {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[time.Time]Hour, len(m.hours))
	for k, v := range m.hours {
		c := *v
		c.ByKind, c.Refused = map[string]int64{}, map[string]int64{}
		for a, b := range v.ByKind {
			c.ByKind[a] = b
		}
		for a, b := range v.Refused {
			c.Refused[a] = b
		}
		out[k] = c
	}
	return out
}

func (m *Model) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := m.Now()
	top := now.UTC().Truncate(time.Hour)
	toReset := int64(math.Ceil(top.Add(time.Hour).Sub(now).Seconds()))
	kind, cost, body := m.route(r)

	m.mu.Lock()
	h := m.hour(top)
	h.Requests++
	// The burst bucket: refilled by the time passed, Burst at most.
	if m.Burst > 0 {
		if m.last.IsZero() {
			m.tokens = m.Burst
		} else {
			m.tokens = min(m.Burst, m.tokens+now.Sub(m.last).Seconds()*m.Burst)
		}
		m.last = now
	}
	hdr := w.Header()
	hdr.Set("RateLimit-Policy", policy+";q="+strconv.FormatInt(m.Quota, 10)+";w=3600")
	switch {
	case h.Points >= m.Quota:
		h.Refused[ReasonQuota]++
		m.mu.Unlock()
		hdr.Set("RateLimit", policy+";r=0;t="+strconv.FormatInt(toReset, 10))
		hdr.Set("Retry-After", strconv.FormatInt(toReset, 10))
		hdr.Set("RateLimit-Reason", ReasonQuota)
		hdr.Set("X-RateLimit-NearLimit", "true")
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"statusCode": 429, "message": "Rate limit exceeded"})
		return
	case m.Burst > 0 && m.tokens < 1:
		h.Refused[ReasonBurst]++
		m.mu.Unlock()
		hdr.Set("Retry-After", "1")
		hdr.Set("RateLimit-Reason", ReasonBurst)
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"statusCode": 429, "message": "Rate limit exceeded"})
		return
	}
	if m.Burst > 0 {
		m.tokens--
	}
	h.Points += cost
	h.ByKind[kind] += cost
	if kind == "page_check" {
		h.PageChecks++
	}
	if users, ok := body.(bulkAnswer); ok {
		h.BulkReads++
		h.UsersRead += int64(len(users.Results))
		h.MaxBulkUsers = max(h.MaxBulkUsers, len(users.Results))
	}
	left := m.Quota - h.Points
	m.mu.Unlock()
	if left*5 < m.Quota { // past 80% of the pool: r, and NearLimit
		hdr.Set("X-RateLimit-NearLimit", "true")
		hdr.Set("RateLimit", policy+";r="+strconv.FormatInt(max(left, 0), 10)+";t="+strconv.FormatInt(toReset, 10))
	}
	if body == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"statusCode": 404, "message": "not found"})
		return
	}
	writeJSON(w, http.StatusOK, body)
}

type bulkAnswer struct {
	Results []map[string]any `json:"results"`
	Limit   int              `json:"limit"`
	Size    int              `json:"size"`
	Links   map[string]any   `json:"_links"`
}

// route answers r: its kind for the counts, its cost in points, and the body
// (nil: 404).
func (m *Model) route(r *http.Request) (kind string, cost int64, body any) {
	p := r.URL.Path
	i := strings.Index(p, "/wiki/")
	if r.Method != http.MethodGet || !strings.HasPrefix(p, "/ex/confluence/") || i < 0 {
		return "other", 1, nil
	}
	cloud := strings.TrimPrefix(p[:i], "/ex/confluence/")
	site := "https://" + cloud + ".atlassian.net/wiki"
	switch rest := p[i:]; {
	case strings.HasPrefix(rest, "/wiki/api/v2/pages/"):
		id := strings.TrimPrefix(rest, "/wiki/api/v2/pages/")
		return "page_check", 2, map[string]any{"id": id, "status": "current", "title": "Page " + id, "spaceId": "65537"}
	case rest == "/wiki/rest/api/user/bulk":
		ids := r.URL.Query()["accountId"]
		ids = ids[:min(len(ids), 100)]
		a := bulkAnswer{Results: make([]map[string]any, 0, len(ids)), Limit: 100, Size: len(ids),
			Links: map[string]any{"base": site}}
		for _, id := range ids {
			a.Results = append(a.Results, map[string]any{
				"type": "known", "accountId": id, "accountType": "atlassian",
				"displayName": "User " + id, "publicName": "User " + id,
				"profilePicture": map[string]any{"path": "/wiki/aa-avatar/" + id, "width": 48, "height": 48},
				"_links":         map[string]any{"base": site},
			})
		}
		return "profile_sync", 1 + 2*int64(len(a.Results)), a
	}
	return "other", 1, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("confluencescale: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Transport is an http.RoundTripper that hands every request to an
// http.Handler in the caller's goroutine: no sockets, so it works inside a
// synctest bubble.
type Transport struct{ Handler http.Handler }

func (t Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	if r.Body != nil {
		defer r.Body.Close()
	}
	rec := httptest.NewRecorder()
	t.Handler.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// Client is an *http.Client over Transport{h}, following no redirect.
func Client(h http.Handler) *http.Client {
	return &http.Client{Transport: Transport{h},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
