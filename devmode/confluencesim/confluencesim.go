// Package confluencesim simulates Confluence Cloud's product API as reached
// through api.atlassian.com, for dev mode and, through forgetest, for tests.
//
// # Who a call is made as
//
// Every authenticated call is made either as the app (a bearer token given to
// Accept or accepted by Options.Tokens: Forge's x-forge-oauth-system) or as a
// user (a token from IssueUserToken or accepted by Options.UserTokens: Forge's
// x-forge-oauth-user). A missing, unknown or expired token gets 401 and is
// counted by ExpiredCalls. ContentChecks lists, for every authenticated call
// to a content or space API, who it was made as.
//
// # Content, spaces and who may view them
//
// One content world serves every site: the cloudId in the path
// (/ex/confluence/{cloudId}/…) is recorded in each Check but does not select
// other content. Spaces (AddSpace) and content (AddContent: a page or a blog
// post in a space) are viewable by every licensed user of the site and by the
// app until restricted: RestrictSpace(key, viewers...) stands for the space
// permission, Restrict(contentID, viewers...) for a content restriction, and
// a page's viewers are those its space and its restriction both allow. The app
// user is in no viewer list unless AsApp is named in it (Atlassian's ECO-822:
// a restricted page is closed to the app user too). A guest (SetGuest) gets
// 403 for every content or space call made with a user token (ECO-1450). With
// Options.AnyContent every numeric id is a page and a blog post in space
// AnySpaceKey, and every space key or id a space.
//
// The user endpoints answered, as the app or a user: GET /wiki/rest/api/user?accountId=…
// (one user, 404 when unknown) and GET /wiki/rest/api/user/bulk?accountId=A&accountId=B…
// (Confluence's v1 bulk lookup: at most UserBulkMax users, those of the first
// UserBulkMax ids; unknown ids left out of the results; 400 without an id).
// Both leave out the email of a user whose profile visibility hides it;
// BulkUserCalls counts the bulk calls answered.
//
// The v2 endpoints answered: GET /wiki/api/v2/pages/{id} and
// /wiki/api/v2/blogposts/{id} (200 with the content; 404 in v2's error shape
// when it does not exist, is of the other type or the caller may not view it:
// v2 does not tell restricted from missing; 400 for an id that is not an
// int64), GET /wiki/api/v2/spaces?keys=A,B (also ids=1,2: only the spaces the
// caller may view, maybe none) and GET /wiki/api/v2/spaces/{id} (200 or 404).
//
// # Control endpoint (dev mode)
//
// Another process (dev mode's CLI) can restrict content or a space on a
// running simulator, without a token (the simulator listens on loopback
// only), with a JSON body (Content-Type: application/json):
//
//	POST {URL}/_sim/restrict    {"contentId":"98305","viewers":["<accountId>",…]}
//	POST {URL}/_sim/restrict    {"spaceKey":"DEV","viewers":["<accountId>",…]}
//	POST {URL}/_sim/unrestrict  {"contentId":"98305"}   or {"spaceKey":"DEV"}
//
// Empty or missing viewers restrict to nobody (not even the app). The answer
// is 204, or 400, 405 or 415 with a plain-text reason. Control requests are not
// API calls: Calls, Requests and ExpiredCalls leave them out.
package confluencesim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"maps"
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

// UserTokenCheck tells whether token is a user token, whose, and when it
// expires.
type UserTokenCheck func(token string) (accountID string, exp time.Time, ok bool)

// UserBulkMax is the most users GET /wiki/rest/api/user/bulk returns:
// "Currently this API returns a maximum of 100 results. If more than 100
// account ids are passed in, then the first 100 will be returned."
// (developer.atlassian.com/cloud/confluence/rest/v1/api-group-users/).
const UserBulkMax = 100

// AsApp is Check.As for a call made with an app token, and the viewer that
// lets the app user see restricted content or a restricted space.
const AsApp = "app"

// User is a Confluence user as the simulator answers it. Email "" is a user
// whose profile visibility hides it; AvatarPath is the site-relative
// profilePicture.path, e.g. "/wiki/aa-avatar/<accountId>".
type User struct {
	AccountID, DisplayName, Email, AvatarPath string
}

// Options configures New. The zero value accepts only tokens given to
// Accept or IssueUserToken and knows no users, spaces or content.
type Options struct {
	// Tokens accepts app tokens besides those given to Accept, e.g. app
	// tokens signed with dev mode's key by another process.
	Tokens TokenCheck
	// UserTokens accepts user tokens besides those IssueUserToken made, e.g.
	// user tokens made by another process; it is asked after Tokens.
	UserTokens UserTokenCheck
	// AnyUser makes every accountId a known user with a made-up name, so dev
	// mode works with whatever accountId the developer picks.
	AnyUser bool
	// AnyContent makes every numeric id a page (at /pages/{id}) and a blog
	// post (at /blogposts/{id}) in space AnySpaceKey, and every space key and
	// numeric space id a space, all viewable by everyone until restricted;
	// content and spaces added explicitly keep their own type and space.
	AnyContent bool
	// Now is the clock token expiry is judged by; nil: time.Now.
	Now func() time.Time
}

// Check is one authenticated call to a content or space API.
type Check struct {
	Method  string
	CloudID string // the site, from /ex/confluence/{cloudId}/…
	Path    string // the API path after the site, e.g. "/wiki/api/v2/pages/98305"
	Query   string // the raw query, e.g. "keys=DEV"
	As      string // the user token's accountId, or AsApp
}

// Server answers like api.atlassian.com/ex/confluence/{cloudId}/…: it accepts
// only tokens it issued or its Options accept, only before their exp, and
// counts every call.
type Server struct {
	srv        *httptest.Server
	calls      atomic.Int64
	expired    atomic.Int64
	hanging    atomic.Int64
	bulkUsers  atomic.Int64
	check      TokenCheck
	userCheck  UserTokenCheck
	anyUser    bool
	anyContent bool
	closing    chan struct{} // closed by Close: hanging handlers return
	closeOnce  sync.Once

	mu         sync.Mutex
	now        func() time.Time
	tokens     map[string]time.Time // accepted app token → exp
	userTokens map[string]userToken
	users      map[string]User
	guests     map[string]bool
	siteURL    string
	effects    []effect
	headers    http.Header // on every authenticated answer
	requests   []string
	checks     []Check
	world
	// The reserved Connect clientKey property, per site (cloudId).
	connectKeys map[string]connectKey
}

type userToken struct {
	accountID string
	exp       time.Time
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

// effect is what one of the next authenticated calls gets instead of its
// answer: a failure status with headers, or a hang.
type effect struct {
	hang   bool
	status int
	header http.Header
}

// New starts a simulator on ln (nil: a free loopback port). Close stops it.
func New(ln net.Listener, opts Options) *Server {
	s := &Server{
		check:      opts.Tokens,
		userCheck:  opts.UserTokens,
		anyUser:    opts.AnyUser,
		anyContent: opts.AnyContent,
		closing:    make(chan struct{}),
		now:        opts.Now,
		tokens:     make(map[string]time.Time),
		userTokens: make(map[string]userToken),
		users:      make(map[string]User),
		guests:     make(map[string]bool),
		world:      newWorld(),

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

// Close stops the simulator, first releasing the calls HangNext holds (their
// connections are cut without an answer). A second Close does nothing more.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.srv.Close()
}

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
// API does; by default the simulator leaves _links.base out.
func (s *Server) SetSiteURL(siteURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.siteURL = strings.TrimRight(siteURL, "/")
}

// Accept makes the simulator accept token as an app token until exp.
func (s *Server) Accept(token string, exp time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = exp
}

// IssueUserToken makes a random opaque user token for accountID, as Forge's
// x-forge-oauth-user carries, that the simulator accepts until exp; calls
// made with it are made as accountID.
func (s *Server) IssueUserToken(accountID string, exp time.Time) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	tok := "simuser." + base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.userTokens[tok] = userToken{accountID, exp}
	return tok
}

// AddUser adds (or replaces) a user.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.AccountID] = u
}

// SetGuest makes accountID a guest (an unlicensed user): every content or
// space call made with one of its user tokens answers 403, whatever the
// restrictions say (Atlassian's ECO-1450). Its app-token calls are unchanged.
func (s *Server) SetGuest(accountID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guests[accountID] = true
}

// FailNext makes the next n authenticated calls answer status (with a
// Retry-After header when retryAfter is not "").
func (s *Server) FailNext(n, status int, retryAfter string) {
	var h http.Header
	if retryAfter != "" {
		h = http.Header{"Retry-After": {retryAfter}}
	}
	s.FailNextWithHeaders(n, status, h)
}

// FailNextWithHeaders makes the next n authenticated calls answer status
// with the headers h, e.g. Atlassian's rate-limit headers on a 429.
func (s *Server) FailNextWithHeaders(n, status int, h http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.effects = append(s.effects, effect{status: status, header: h.Clone()})
	}
}

// HangNext makes the next n authenticated calls hang without an answer until
// the client gives up (the request's context ends) or Close. FailNext,
// FailNextWithHeaders and HangNext queue up in the order they were called.
func (s *Server) HangNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.effects = append(s.effects, effect{hang: true})
	}
}

// Hanging counts the calls hanging now (see HangNext).
func (s *Server) Hanging() int { return int(s.hanging.Load()) }

// SetHeaders makes every authenticated answer from now on carry the headers
// h (nil: none), e.g. X-RateLimit-NearLimit on answers that succeed; the
// headers of a FailNextWithHeaders answer are added over them.
func (s *Server) SetHeaders(h http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.headers = h.Clone()
}

// Calls counts every API request received.
func (s *Server) Calls() int { return int(s.calls.Load()) }

// BulkUserCalls counts the calls to GET /wiki/rest/api/user/bulk answered
// 200 (one per batch of users read).
func (s *Server) BulkUserCalls() int { return int(s.bulkUsers.Load()) }

// ExpiredCalls counts the requests made with an expired, unknown or missing token.
func (s *Server) ExpiredCalls() int { return int(s.expired.Load()) }

// Requests lists "METHOD path?query" of every API request, the cloud-id prefix included.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// ContentChecks lists every authenticated call to a content or space API
// (Confluence's /wiki/api/v2/{pages,blogposts,spaces}… and
// /wiki/rest/api/{content,space}…, answered or not), in order, with who it
// was made as.
func (s *Server) ContentChecks() []Check {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Check(nil), s.checks...)
}

func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "message": msg})
}

// identify says who token is: an app token (AsApp), a user's token (its
// accountId), or none (ok false); and until when it is good.
func (s *Server) identify(tok string) (as string, exp time.Time, ok bool) {
	if tok == "" {
		return "", time.Time{}, false
	}
	s.mu.Lock()
	exp, ok = s.tokens[tok]
	ut, user := s.userTokens[tok]
	s.mu.Unlock()
	switch {
	case ok:
		return AsApp, exp, true
	case user:
		return ut.accountID, ut.exp, true
	}
	if s.check != nil {
		if exp, ok := s.check(tok); ok {
			return AsApp, exp, true
		}
	}
	if s.userCheck != nil {
		if id, exp, ok := s.userCheck(tok); ok && id != "" && id != AsApp {
			return id, exp, true
		}
	}
	return "", time.Time{}, false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.control(w, r)
		return
	}
	s.calls.Add(1)
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
	now := s.now()
	s.mu.Unlock()
	as, exp, known := s.identify(tok)
	if !strings.EqualFold(scheme, "Bearer") || !known || !now.Before(exp) {
		s.expired.Add(1)
		// What api.atlassian.com answers for a bad or expired bearer token.
		apiError(w, http.StatusUnauthorized, "Unauthorized")
		return
	}

	rest, ok := strings.CutPrefix(r.URL.Path, "/ex/confluence/")
	cloudID, apiPath, _ := strings.Cut(rest, "/")
	ok = ok && cloudID != ""
	var eff *effect
	s.mu.Lock()
	if ok && isContentAPI(apiPath) {
		s.checks = append(s.checks, Check{Method: r.Method, CloudID: cloudID, Path: "/" + apiPath, Query: r.URL.RawQuery, As: as})
	}
	if len(s.effects) > 0 {
		eff = &s.effects[0]
		s.effects = s.effects[1:]
	}
	siteURL := s.siteURL
	maps.Copy(w.Header(), s.headers)
	s.mu.Unlock()

	if eff != nil && eff.hang {
		s.hang(r.Context())
		return
	}
	if eff != nil {
		for k, v := range eff.header {
			w.Header()[k] = append([]string(nil), v...)
		}
		apiError(w, eff.status, http.StatusText(eff.status))
		return
	}

	if !ok {
		apiError(w, http.StatusNotFound, "Not Found")
		return
	}
	switch {
	case r.Method == http.MethodGet && apiPath == "wiki/rest/api/user":
		s.user(w, r, siteURL)
	case r.Method == http.MethodGet && apiPath == "wiki/rest/api/user/bulk":
		s.usersBulk(w, r, siteURL)
	case r.Method == http.MethodGet && strings.HasPrefix(apiPath, "wiki/rest/atlassian-connect/1/addons/"):
		s.appProperty(w, r, cloudID, strings.TrimPrefix(apiPath, "wiki/rest/atlassian-connect/1/addons/"))
	case r.Method == http.MethodGet && strings.HasPrefix(apiPath, "wiki/api/v2/"):
		s.v2(w, r, strings.TrimPrefix(apiPath, "wiki/api/v2/"), as, siteURL)
	default:
		apiError(w, http.StatusNotFound, "No API at "+r.Method+" /"+apiPath)
	}
}

// hang holds a call until its client gives up or the simulator closes, then
// cuts the connection without an answer.
func (s *Server) hang(ctx context.Context) {
	s.hanging.Add(1)
	defer s.hanging.Add(-1)
	select {
	case <-ctx.Done():
	case <-s.closing:
	}
	panic(http.ErrAbortHandler)
}

// user answers GET /wiki/rest/api/user?accountId=… in the shape of Confluence's v1 API.
func (s *Server) user(w http.ResponseWriter, r *http.Request, siteURL string) {
	id := r.URL.Query().Get("accountId")
	if id == "" {
		apiError(w, http.StatusBadRequest, "accountId is required")
		return
	}
	u, ok := s.lookupUser(id)
	if !ok {
		apiError(w, http.StatusNotFound, "No user found with accountId "+id)
		return
	}
	answer := userJSON(u)
	if siteURL != "" {
		answer["_links"] = map[string]any{"base": siteURL + "/wiki", "context": "/wiki"}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// usersBulk answers GET /wiki/rest/api/user/bulk?accountId=A&accountId=B…
// in the shape of Confluence's v1 API (BulkUserLookupArray): the known users
// among the first UserBulkMax ids, in the order asked, each once; an unknown
// id is left out, not an error.
func (s *Server) usersBulk(w http.ResponseWriter, r *http.Request, siteURL string) {
	ids := r.URL.Query()["accountId"]
	if len(ids) == 0 {
		apiError(w, http.StatusBadRequest, "accountId is required")
		return
	}
	ids = ids[:min(len(ids), UserBulkMax)]
	results := []map[string]any{}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		if u, ok := s.lookupUser(id); ok {
			results = append(results, userJSON(u))
		}
	}
	answer := map[string]any{"results": results, "start": 0, "limit": UserBulkMax, "size": len(results)}
	if siteURL != "" {
		answer["_links"] = map[string]any{"base": siteURL + "/wiki", "context": "/wiki"}
	}
	s.bulkUsers.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// lookupUser finds a user added, or any accountId with Options.AnyUser.
func (s *Server) lookupUser(id string) (User, bool) {
	s.mu.Lock()
	u, ok := s.users[id]
	s.mu.Unlock()
	if !ok && s.anyUser {
		u, ok = User{AccountID: id, DisplayName: "Dev User " + id, AvatarPath: "/wiki/aa-avatar/" + id}, true
	}
	return u, ok
}

// userJSON is a user as Confluence's v1 API answers it; the email only when
// the user's profile visibility shows it.
func userJSON(u User) map[string]any {
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
	return answer
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
