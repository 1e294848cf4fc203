package weavysim

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// serveUser answers a request made with a user's wyu_ token, as Weavy's
// access rules allow it; this is where tests play the attacker.
func (s *Server) serveUser(w http.ResponseWriter, r *http.Request, caller string) {
	seg, ok := segments(r.URL.EscapedPath())
	if !ok || len(seg) == 0 {
		problem(w, http.StatusNotFound, "Not Found")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case seg[0] == "users" && len(seg) == 1 && r.Method == http.MethodGet:
		all := slices.Collect(maps.Keys(s.lastTok))
		for uid := range s.profiles {
			if !slices.Contains(all, uid) {
				all = append(all, uid)
			}
		}
		q := r.URL.Query().Get("q")
		var data []map[string]any
		for _, uid := range s.visibleUsers(caller, all) {
			if q == "" || strings.Contains(uid, q) {
				data = append(data, map[string]any{"uid": uid})
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": data, "count": len(data)})
	case seg[0] == "apps" && len(seg) == 1 && r.Method == http.MethodGet:
		var data []map[string]any
		for _, id := range slices.Sorted(maps.Keys(s.apps)) {
			if acc := s.access(s.apps[id], caller); canRead(acc) {
				data = append(data, s.apps[id].out(acc))
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": data, "count": len(data)})
	case seg[0] == "apps" && len(seg) == 2 && r.Method == http.MethodPut:
		s.userUpsertApp(w, r, caller, seg[1])
	case seg[0] == "apps" && len(seg) == 2 && r.Method == http.MethodGet:
		a := s.lookup(seg[1])
		switch {
		case a == nil:
			problem(w, http.StatusNotFound, "Not Found")
		case !canRead(s.access(a, caller)):
			problem(w, http.StatusForbidden, "Forbidden")
		default:
			writeJSON(w, http.StatusOK, a.out(s.access(a, caller)))
		}
	case seg[0] == "apps" && len(seg) == 3 && seg[2] == "messages":
		s.messages(w, r, caller, s.lookup(seg[1]))
	default:
		// Users, tokens, directories and members are the API key's business.
		problem(w, http.StatusForbidden, "Forbidden")
	}
}

// userUpsertApp is what the UIKit does for a text uid: an app the caller may
// read is returned and the caller becomes a member (component-created apps
// add their users); an unknown uid creates an OPEN app, access write, the
// caller its first member — today's Weavy. A closed app refuses a
// non-member; a user can change neither access nor directory.
func (s *Server) userUpsertApp(w http.ResponseWriter, r *http.Request, caller, uid string) {
	b, ok := decodeApp(w, r)
	if !ok {
		return
	}
	a, status := s.lookup(uid), http.StatusOK
	switch {
	case a == nil && (allDigits(uid) || strings.ContainsAny(uid, " \t\n")):
		problem(w, http.StatusNotFound, "Not Found")
		return
	case a == nil:
		a, status = s.create(uid, b.Type, b.Name, "write", ""), http.StatusCreated
	case !canRead(s.access(a, caller)):
		problem(w, http.StatusForbidden, "Forbidden")
		return
	}
	if _, member := a.Members[caller]; !member {
		a.Members[caller] = "write"
	}
	writeJSON(w, status, a.out(s.access(a, caller)))
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request, caller string, a *app) {
	if a == nil {
		problem(w, http.StatusNotFound, "Not Found")
		return
	}
	acc := s.access(a, caller)
	switch r.Method {
	case http.MethodGet:
		if !canRead(acc) {
			problem(w, http.StatusForbidden, "Forbidden")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": a.Messages, "count": len(a.Messages)})
	case http.MethodPost:
		if !canWrite(acc) {
			problem(w, http.StatusForbidden, "Forbidden")
			return
		}
		var b struct {
			Text string `json:"text"`
		}
		if json.NewDecoder(r.Body).Decode(&b) != nil || b.Text == "" {
			problem(w, http.StatusBadRequest, "Invalid message")
			return
		}
		s.nextID++
		m := message{ID: s.nextID, Author: caller, Text: b.Text}
		a.Messages = append(a.Messages, m)
		writeJSON(w, http.StatusCreated, m)
	default:
		problem(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
}
