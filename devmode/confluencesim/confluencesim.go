// Package confluencesim simulates Confluence Cloud's product API as reached
// through api.atlassian.com, for dev mode and, through forgetest, for tests.
package confluencesim

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TokenCheck tells whether the simulator issued token and when it expires.
type TokenCheck func(token string) (exp time.Time, ok bool)

// User is a Confluence user as the simulator answers it. Email "" is a user
// whose profile visibility hides it; AvatarPath is the site-relative
// profilePicture.path, e.g. "/wiki/aa-avatar/<accountId>".
type User struct {
	AccountID, DisplayName, Email, AvatarPath string
}

// Options configures New. The zero value accepts only tokens given to
// Accept and knows no users.
type Options struct {
	// Tokens accepts bearer tokens besides those given to Accept, e.g. app
	// tokens signed with dev mode's key by another process.
	Tokens TokenCheck
	// AnyUser makes every accountId a known user with a made-up name, so dev
	// mode works with whatever accountId the developer picks.
	AnyUser bool
	// Now is the clock token expiry is judged by; nil: time.Now.
	Now func() time.Time
}

// Server answers like api.atlassian.com/ex/confluence/{cloudId}/…: it accepts
// only app tokens it issued, only before their exp, and counts every call.
type Server struct {
	srv     *httptest.Server
	calls   atomic.Int64
	expired atomic.Int64
	check   TokenCheck
	anyUser bool

	mu       sync.Mutex
	now      func() time.Time
	tokens   map[string]time.Time // accepted token → exp
	users    map[string]User
	siteURL  string
	failures []failure
	requests []string
	// The reserved Connect clientKey property, per site (cloudId).
	connectKeys map[string]connectKey
}

// connectKey is a site's Connect installation as the app properties API sees it.
type connectKey struct {
	appKey, clientKey string
	deniedUntil       time.Time // before it, the property answers deniedStatus
	deniedStatus      int
}

// ConnectClientKeyProperty is the reserved app property that holds a
// tenant's Connect clientKey.
const ConnectClientKeyProperty = "connect_client_key_019cdff3-8bfb-71fe-9628-875b700aebb8"

type failure struct {
	status     int
	retryAfter string
}

// New starts a simulator on ln (nil: a free loopback port). Close stops it.
func New(ln net.Listener, opts Options) *Server {
	s := &Server{
		check:   opts.Tokens,
		anyUser: opts.AnyUser,
		now:     opts.Now,
		tokens:  make(map[string]time.Time),
		users:   make(map[string]User),

		connectKeys: make(map[string]connectKey),
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	if ln != nil {
		s.srv.Listener.Close()
		s.srv.Listener = ln
	}
	s.srv.Start()
	return s
}

// Close stops the simulator.
func (s *Server) Close() { s.srv.Close() }

// URL is the simulator's root, standing for https://api.atlassian.com.
func (s *Server) URL() string { return s.srv.URL }

// APIBaseURL is the apiBaseUrl of the site cloudID on this simulator.
func (s *Server) APIBaseURL(cloudID string) string {
	return s.srv.URL + "/ex/confluence/" + cloudID
}

// SetNow sets the clock token expiry is judged by.
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetSiteURL makes answers carry _links.base = siteURL + "/wiki", as the real
// API does; by default the simulator leaves _links out.
func (s *Server) SetSiteURL(siteURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.siteURL = strings.TrimRight(siteURL, "/")
}

// Accept makes the simulator accept token until exp.
func (s *Server) Accept(token string, exp time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = exp
}

// AddUser adds (or replaces) a user.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.AccountID] = u
}

// FailNext makes the next n authenticated calls answer status (with a
// Retry-After header when retryAfter is not "").
func (s *Server) FailNext(n, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, failure{status, retryAfter})
	}
}

// Calls counts every request received.
func (s *Server) Calls() int { return int(s.calls.Load()) }

// ExpiredCalls counts the requests made with an expired, unknown or missing token.
func (s *Server) ExpiredCalls() int { return int(s.expired.Load()) }

// Requests lists "METHOD path?query" of every request, the cloud-id prefix included.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "message": msg})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
	now := s.now()
	exp, issued := s.tokens[tok]
	s.mu.Unlock()
	if !issued && s.check != nil && tok != "" {
		exp, issued = s.check(tok)
	}
	valid := strings.EqualFold(scheme, "Bearer") && issued && now.Before(exp)
	var fail *failure
	s.mu.Lock()
	if valid && len(s.failures) > 0 {
		fail = &s.failures[0]
		s.failures = s.failures[1:]
	}
	siteURL := s.siteURL
	s.mu.Unlock()

	if !valid {
		s.expired.Add(1)
		// What api.atlassian.com answers for a bad or expired bearer token.
		apiError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if fail != nil {
		if fail.retryAfter != "" {
			w.Header().Set("Retry-After", fail.retryAfter)
		}
		apiError(w, fail.status, http.StatusText(fail.status))
		return
	}

	rest, ok := strings.CutPrefix(r.URL.Path, "/ex/confluence/")
	cloudID, apiPath, _ := strings.Cut(rest, "/")
	if !ok || cloudID == "" {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	switch {
	case r.Method == http.MethodGet && apiPath == "wiki/rest/api/user":
		s.user(w, r, siteURL)
	case r.Method == http.MethodGet && strings.HasPrefix(apiPath, "wiki/rest/atlassian-connect/1/addons/"):
		s.appProperty(w, r, cloudID, strings.TrimPrefix(apiPath, "wiki/rest/atlassian-connect/1/addons/"))
	default:
		apiError(w, http.StatusNotFound, "No API at "+r.Method+" /"+apiPath)
	}
}

// user answers GET /wiki/rest/api/user?accountId=… in the shape of Confluence's v1 API.
func (s *Server) user(w http.ResponseWriter, r *http.Request, siteURL string) {
	id := r.URL.Query().Get("accountId")
	if id == "" {
		apiError(w, http.StatusBadRequest, "accountId is required")
		return
	}
	s.mu.Lock()
	u, ok := s.users[id]
	s.mu.Unlock()
	if !ok && s.anyUser {
		u, ok = User{AccountID: id, DisplayName: "Dev User " + id, AvatarPath: "/wiki/aa-avatar/" + id}, true
	}
	if !ok {
		apiError(w, http.StatusNotFound, "No user found with accountId "+id)
		return
	}
	answer := map[string]any{
		"type":        "known",
		"accountId":   u.AccountID,
		"accountType": "atlassian",
		"displayName": u.DisplayName,
		"publicName":  u.DisplayName,
		"profilePicture": map[string]any{
			"path": u.AvatarPath, "width": 48, "height": 48, "isDefault": false,
		},
	}
	if u.Email != "" {
		answer["email"] = u.Email
	}
	if siteURL != "" {
		answer["_links"] = map[string]any{"base": siteURL + "/wiki", "context": "/wiki"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// SetConnectClientKey makes the site cloudID answer clientKey for the
// reserved property of the Connect app appKey; any other app key (or a site
// never set) gets 404, as Confluence answers for another app's data.
func (s *Server) SetConnectClientKey(cloudID, appKey, clientKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.connectKeys[cloudID]
	k.appKey, k.clientKey = appKey, clientKey
	s.connectKeys[cloudID] = k
}

// DenyConnectPropertyUntil makes the site's property answer status (401 or
// 403, what a fresh install's app token gets while its grants propagate)
// until until by the simulator's clock.
func (s *Server) DenyConnectPropertyUntil(cloudID string, until time.Time, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.connectKeys[cloudID]
	k.deniedUntil, k.deniedStatus = until, status
	s.connectKeys[cloudID] = k
}

// appProperty answers GET /wiki/rest/atlassian-connect/1/addons/{appKey}/properties/{key}
// for the reserved clientKey property only (other properties: 404), in the
// shape of Confluence's app properties API.
func (s *Server) appProperty(w http.ResponseWriter, r *http.Request, cloudID, rest string) {
	appKey, prop, ok := strings.Cut(rest, "/properties/")
	if !ok || appKey == "" || strings.Contains(prop, "/") {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	k, known := s.connectKeys[cloudID]
	now := s.now()
	s.mu.Unlock()
	if known && now.Before(k.deniedUntil) {
		apiError(w, k.deniedStatus, http.StatusText(k.deniedStatus))
		return
	}
	if !known || k.clientKey == "" || k.appKey != appKey || prop != ConnectClientKeyProperty {
		// Another app's data, or a property that does not exist: 404 alike.
		apiError(w, http.StatusNotFound, "Property with key not found")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"key":   prop,
		"value": k.clientKey,
		"self":  s.srv.URL + r.URL.Path,
	})
}
