// Package weavysim is a simulated Weavy environment: dev mode runs it when
// WEAVY_URL is not set, and the tests and benchmarks use it as their Weavy.
// It checks requests against Weavy's documented schema, enforces Weavy's
// access rules for apps, members and directories, and counts what it is sent.
package weavysim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APIKey is the key the fake accepts unless another is given.
const APIKey = "wys_testkey_0123456789abcdef"

// Mode is how the fake answers token requests.
type Mode int

// Modes for fault injection.
const (
	OK         Mode = iota
	Fail500         // problem details, 500
	HTML502         // an HTML error page from a proxy
	Hang            // never answers until the client gives up
	Reset           // closes the connection without an answer
	Limited429      // 429 with Retry-After
)

// Server is a fake Weavy environment.
type Server struct {
	*httptest.Server
	apiKey string

	mode     atomic.Int64
	mints    atomic.Int64
	upserts  atomic.Int64
	n        atomic.Int64
	hangDone chan struct{}
	// ExpiresIn is what the fake says a token lives, in seconds (0 → the
	// requested expires_in).
	ExpiresIn atomic.Int64
	// SameToken makes every mint for a uid return that uid's previous token
	// (Weavy never does this; the broker must cope).
	SameToken atomic.Bool
	// FailAdmin makes every call with the API key (apps, members,
	// directories, users, tokens) answer 500 until it is set back to false:
	// a Weavy outage as the server's background work sees it. The call is
	// still counted.
	FailAdmin atomic.Bool

	mu       sync.Mutex
	profiles map[string]map[string]any
	lastTok  map[string]string
	tokenUID map[string]string
	requests []string
	admin    int // requests made with the API key

	world // apps, members, directories, messages (apps.go)
}

// New starts a fake Weavy accepting apiKey ("" → APIKey). It is closed with
// Close (httptest) — callers using testing should defer it.
func New(apiKey string) *Server {
	if apiKey == "" {
		apiKey = APIKey
	}
	s := &Server{
		apiKey:   apiKey,
		hangDone: make(chan struct{}),
		profiles: make(map[string]map[string]any),
		lastTok:  make(map[string]string),
		tokenUID: make(map[string]string),
		world:    newWorld(),
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Close releases hanging handlers and stops the server.
func (s *Server) Close() {
	select {
	case <-s.hangDone:
	default:
		close(s.hangDone)
	}
	s.Server.CloseClientConnections()
	s.Server.Close()
}

// SetMode changes how token requests are answered.
func (s *Server) SetMode(m Mode) { s.mode.Store(int64(m)) }

// Mints is how many tokens were issued.
func (s *Server) Mints() int { return int(s.mints.Load()) }

// Upserts is how many profile upserts were accepted.
func (s *Server) Upserts() int { return int(s.upserts.Load()) }

// Profile returns the profile last upserted for uid.
func (s *Server) Profile(uid string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.profiles[uid]
	return p, ok
}

// UIDOf returns the uid a token was minted for.
func (s *Server) UIDOf(token string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenUID[token]
}

// Requests lists "METHOD path" of every request received.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.requests))
	for i, r := range s.requests {
		out[i] = strings.TrimPrefix(r, "admin ")
	}
	return out
}

func problem(w http.ResponseWriter, status int, title string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "https://tools.ietf.org/html/rfc9110#section-15", "title": title, "status": status,
	})
}

// AdminCalls is how many requests came with the API key (the server's
// calls; a user token's are not counted).
func (s *Server) AdminCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.admin
}

// AdminRequests lists "METHOD path" of the requests made with the API key
// from the n-th on.
func (s *Server) AdminRequests(from int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.requests {
		if rest, ok := strings.CutPrefix(r, "admin "); ok {
			if from--; from < 0 {
				out = append(out, rest)
			}
		}
	}
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	authz := r.Header.Get("Authorization")
	isAdmin := authz == "Bearer "+s.apiKey
	s.mu.Lock()
	line := r.Method + " " + r.URL.EscapedPath()
	if isAdmin {
		s.admin++
		line = "admin " + line
	}
	s.requests = append(s.requests, line)
	caller := s.tokenUID[strings.TrimPrefix(authz, "Bearer ")]
	s.mu.Unlock()
	if !isAdmin && (caller == "" || !strings.HasPrefix(authz, "Bearer wyu_")) {
		problem(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if isAdmin && s.FailAdmin.Load() {
		problem(w, http.StatusInternalServerError, "Internal Server Error")
		return
	}
	path := r.URL.EscapedPath()
	if !isAdmin {
		s.serveUser(w, r, caller)
		return
	}
	if s.serveAdmin(w, r) {
		return
	}
	rest, ok := strings.CutPrefix(path, "/api/users/")
	if !ok {
		problem(w, http.StatusNotFound, "Not Found")
		return
	}
	seg, tail, _ := strings.Cut(rest, "/")
	uid, err := url.PathUnescape(seg)
	if err != nil || uid == "" || strings.ContainsAny(uid, " \t\n") || len(uid) > 256 || allDigits(uid) {
		problem(w, http.StatusBadRequest, "Invalid uid")
		return
	}
	switch {
	case tail == "tokens" && r.Method == http.MethodPost:
		s.issue(w, r, uid)
	case tail == "" && r.Method == http.MethodPut:
		s.upsert(w, r, uid)
	case tail == "tokens" && r.Method == http.MethodDelete:
		// Revoking logs the user out everywhere: the server must never do it.
		problem(w, http.StatusTeapot, "DELETE tokens must never be called by forge-remote")
	default:
		problem(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (s *Server) issue(w http.ResponseWriter, r *http.Request, uid string) {
	if s.fault(w, r) {
		return
	}
	s.issueOK(w, r, uid)
}

// fault answers r as the current Mode says, if it is a fault mode.
func (s *Server) fault(w http.ResponseWriter, r *http.Request) bool {
	switch Mode(s.mode.Load()) {
	case Fail500:
		problem(w, http.StatusInternalServerError, "Internal Server Error")
		return true
	case HTML502:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
		return true
	case Hang:
		select {
		case <-r.Context().Done():
		case <-s.hangDone:
		}
		return true
	case Reset:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
			}
		}
		return true
	case Limited429:
		w.Header().Set("Retry-After", "7")
		problem(w, http.StatusTooManyRequests, "Too Many Requests")
		return true
	}
	return false
}

func (s *Server) issueOK(w http.ResponseWriter, r *http.Request, uid string) {
	// The documented schema: an optional object with only expires_in.
	var body struct {
		ExpiresIn *int64 `json:"expires_in"`
	}
	raw := new(bytes.Buffer)
	_, _ = raw.ReadFrom(http.MaxBytesReader(w, r.Body, 4096))
	if raw.Len() > 0 {
		dec := json.NewDecoder(raw)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			problem(w, http.StatusBadRequest, "Invalid body: "+err.Error())
			return
		}
	}
	expiresIn := int64(3600)
	if body.ExpiresIn != nil {
		if *body.ExpiresIn <= 0 {
			problem(w, http.StatusBadRequest, "expires_in must be positive")
			return
		}
		expiresIn = *body.ExpiresIn
	}
	if v := s.ExpiresIn.Load(); v > 0 {
		expiresIn = v
	}
	s.mu.Lock()
	tok, had := s.lastTok[uid]
	if !had || !s.SameToken.Load() {
		tok = fmt.Sprintf("wyu_%d_%d", time.Now().UnixNano(), s.n.Add(1))
	}
	s.lastTok[uid] = tok
	s.tokenUID[tok] = uid
	s.mu.Unlock()
	s.mints.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": expiresIn})
}

// documented are the user properties Weavy's PUT /api/users/{uid} accepts.
var documented = map[string]bool{
	"name": true, "given_name": true, "middle_name": true, "family_name": true, "nickname": true,
	"email": true, "phone_number": true, "comment": true, "picture": true, "directory": true,
	"directories": true, "metadata": true, "tags": true, "is_suspended": true, "is_bot": true,
}

func (s *Server) upsert(w http.ResponseWriter, r *http.Request, uid string) {
	var p map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&p); err != nil {
		problem(w, http.StatusBadRequest, "Invalid body")
		return
	}
	for k := range p {
		if !documented[k] {
			problem(w, http.StatusBadRequest, "Unknown property "+k)
			return
		}
	}
	s.mu.Lock()
	if dirs, ok, bad := directoriesOf(p); bad || !s.knownDirs(dirs) {
		s.mu.Unlock()
		problem(w, http.StatusBadRequest, "Invalid or unknown directory")
		return
	} else if ok {
		s.userDirs[uid] = dirs
	}
	// An upsert sets the properties it sends and leaves the others as they
	// were (the client leaves empty fields out on that promise): a chat's
	// directory assignment must not wipe the name a profile sync wrote.
	old, existed := s.profiles[uid]
	merged := make(map[string]any, len(old)+len(p))
	maps.Copy(merged, old)
	maps.Copy(merged, p)
	s.profiles[uid] = merged
	p = merged
	s.mu.Unlock()
	s.upserts.Add(1)
	w.Header().Set("Content-Type", "application/json")
	status := http.StatusCreated
	if existed {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"uid": uid, "name": p["name"]})
}

// directoriesOf reads a user upsert's directories (v32) or directory
// (older): ok when one was given, bad when malformed.
func directoriesOf(p map[string]any) (dirs []string, ok, bad bool) {
	if v, has := p["directories"]; has {
		list, isList := v.([]any)
		if !isList {
			return nil, false, true
		}
		for _, d := range list {
			name, isStr := d.(string)
			if !isStr || name == "" {
				return nil, false, true
			}
			dirs = append(dirs, name)
		}
		return dirs, true, false
	}
	if v, has := p["directory"]; has {
		name, isStr := v.(string)
		if !isStr {
			return nil, false, true
		}
		if name == "" {
			return []string{}, true, false
		}
		return []string{name}, true, false
	}
	return nil, false, false
}

func (s *Server) knownDirs(dirs []string) bool {
	for _, d := range dirs {
		if !s.dirs[d] {
			return false
		}
	}
	return true
}
