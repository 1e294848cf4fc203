package forgetest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Confluence is a fake of Confluence Cloud's product API as reached through
// api.atlassian.com: APIBaseURL(cloudID) is what an installation's apiBaseUrl
// would be. It accepts only app tokens it issued, and only before their exp by
// its clock, and counts every call. It is closed when the test ends.
type Confluence struct {
	srv     *httptest.Server
	calls   atomic.Int64
	expired atomic.Int64

	mu       sync.Mutex
	now      func() time.Time
	tokens   map[string]time.Time // issued token → exp
	users    map[string]confluenceUser
	siteURL  string
	failures []confluenceFailure
	requests []string
}

type confluenceUser struct {
	accountID, displayName, email, avatarPath string
}

type confluenceFailure struct {
	status     int
	retryAfter string
}

// NewConfluence starts a fake Confluence with no users, reading time from time.Now.
func NewConfluence(t testing.TB) *Confluence {
	t.Helper()
	c := &Confluence{
		now:    time.Now,
		tokens: make(map[string]time.Time),
		users:  make(map[string]confluenceUser),
	}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

// URL is the fake's root, standing for https://api.atlassian.com.
func (c *Confluence) URL() string { return c.srv.URL }

// APIBaseURL is the apiBaseUrl of the site cloudID on this fake.
func (c *Confluence) APIBaseURL(cloudID string) string {
	return c.srv.URL + "/ex/confluence/" + cloudID
}

// SetNow sets the clock token expiry is judged by.
func (c *Confluence) SetNow(now func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
}

// SetSiteURL makes answers carry _links.base = siteURL + "/wiki", as the real
// API does; by default the fake leaves _links out.
func (c *Confluence) SetSiteURL(siteURL string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.siteURL = strings.TrimRight(siteURL, "/")
}

// IssueAppToken mints an app system token (see MintAppToken) that the fake
// accepts until exp.
func (c *Confluence) IssueAppToken(t testing.TB, exp time.Time) string {
	t.Helper()
	tok := MintAppToken(t, exp)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens[tok] = exp
	return tok
}

// AddUser adds (or replaces) a user; email "" is a user whose profile
// visibility hides it. avatarPath is the site-relative profilePicture.path,
// e.g. "/wiki/aa-avatar/<accountId>".
func (c *Confluence) AddUser(accountID, displayName, email, avatarPath string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users[accountID] = confluenceUser{accountID, displayName, email, avatarPath}
}

// FailNext makes the next n authenticated calls answer status (with a
// Retry-After header when retryAfter is not "").
func (c *Confluence) FailNext(n, status int, retryAfter string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range n {
		c.failures = append(c.failures, confluenceFailure{status, retryAfter})
	}
}

// Calls counts every request received.
func (c *Confluence) Calls() int { return int(c.calls.Load()) }

// ExpiredCalls counts the requests made with an expired, unknown or missing token.
func (c *Confluence) ExpiredCalls() int { return int(c.expired.Load()) }

// Requests lists "METHOD path?query" of every request, the cloud-id prefix included.
func (c *Confluence) Requests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requests...)
}

func confluenceError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "message": msg})
}

func (c *Confluence) serve(w http.ResponseWriter, r *http.Request) {
	c.calls.Add(1)
	c.mu.Lock()
	c.requests = append(c.requests, r.Method+" "+r.URL.RequestURI())
	now := c.now()
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	exp, issued := c.tokens[tok]
	var fail *confluenceFailure
	valid := strings.EqualFold(scheme, "Bearer") && issued && now.Before(exp)
	if valid && len(c.failures) > 0 {
		fail = &c.failures[0]
		c.failures = c.failures[1:]
	}
	siteURL := c.siteURL
	c.mu.Unlock()

	if !valid {
		c.expired.Add(1)
		// What api.atlassian.com answers for a bad or expired bearer token.
		confluenceError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if fail != nil {
		if fail.retryAfter != "" {
			w.Header().Set("Retry-After", fail.retryAfter)
		}
		confluenceError(w, fail.status, http.StatusText(fail.status))
		return
	}

	rest, ok := strings.CutPrefix(r.URL.Path, "/ex/confluence/")
	cloudID, apiPath, _ := strings.Cut(rest, "/")
	if !ok || cloudID == "" {
		confluenceError(w, http.StatusNotFound, "Not Found")
		return
	}
	switch {
	case r.Method == http.MethodGet && apiPath == "wiki/rest/api/user":
		c.user(w, r, siteURL)
	default:
		confluenceError(w, http.StatusNotFound, "No API at "+r.Method+" /"+apiPath)
	}
}

// user answers GET /wiki/rest/api/user?accountId=… in the shape of Confluence's v1 API.
func (c *Confluence) user(w http.ResponseWriter, r *http.Request, siteURL string) {
	id := r.URL.Query().Get("accountId")
	if id == "" {
		confluenceError(w, http.StatusBadRequest, "accountId is required")
		return
	}
	c.mu.Lock()
	u, ok := c.users[id]
	c.mu.Unlock()
	if !ok {
		confluenceError(w, http.StatusNotFound, "No user found with accountId "+id)
		return
	}
	answer := map[string]any{
		"type":        "known",
		"accountId":   u.accountID,
		"accountType": "atlassian",
		"displayName": u.displayName,
		"publicName":  u.displayName,
		"profilePicture": map[string]any{
			"path": u.avatarPath, "width": 48, "height": 48, "isDefault": false,
		},
	}
	if u.email != "" {
		answer["email"] = u.email
	}
	if siteURL != "" {
		answer["_links"] = map[string]any{"base": siteURL + "/wiki", "context": "/wiki"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}
