package weavysim

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// AppView is a copy of one app's state, for assertions.
type AppView struct {
	ID        int64
	UID       string
	Access    string
	Directory string
	Members   map[string]string // uid → access
	Messages  int
}

// App returns the app with this uid.
func (s *Server) App(uid string) (AppView, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.byUID[uid]
	if !ok {
		return AppView{}, false
	}
	a := s.apps[id]
	return AppView{ID: a.ID, UID: a.UID, Access: a.Access, Directory: a.Directory,
		Members: maps.Clone(a.Members), Messages: len(a.Messages)}, true
}

// AppViews returns every app, in id order, for assertions over all of them.
func (s *Server) AppViews() []AppView {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]AppView, 0, len(s.apps))
	for _, id := range slices.Sorted(maps.Keys(s.apps)) {
		a := s.apps[id]
		out = append(out, AppView{ID: a.ID, UID: a.UID, Access: a.Access, Directory: a.Directory,
			Members: maps.Clone(a.Members), Messages: len(a.Messages)})
	}
	return out
}

// DirectoryMembers maps each user in a directory to its directories.
func (s *Server) DirectoryMembers() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]string, len(s.userDirs))
	for uid, dirs := range s.userDirs {
		if len(dirs) > 0 {
			out[uid] = slices.Clone(dirs)
		}
	}
	return out
}

// Apps is the number of apps.
func (s *Server) Apps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.apps)
}

// UserDirectories lists the directories user uid is in.
func (s *Server) UserDirectories(uid string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.userDirs[uid])
}

// Directory reports whether the directory name exists.
func (s *Server) Directory(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dirs[name]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// segments splits an escaped path after /api/ into unescaped segments.
func segments(path string) ([]string, bool) {
	rest, ok := strings.CutPrefix(path, "/api/")
	if !ok {
		return nil, false
	}
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, false
		}
		parts[i] = u
	}
	return parts, true
}

// serveAdmin answers the API key's calls to apps, members and directories;
// false means the path is not one of them.
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) bool {
	seg, ok := segments(r.URL.EscapedPath())
	if !ok || len(seg) == 0 || (seg[0] != "apps" && seg[0] != "directories") {
		return false
	}
	if s.fault(w, r) {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case seg[0] == "directories" && len(seg) == 1 && r.Method == http.MethodPost:
		var body struct {
			Name string `json:"name"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil || body.Name == "" || strings.ContainsAny(body.Name, " \t\n") || allDigits(body.Name) {
			problem(w, http.StatusBadRequest, "Invalid directory name")
			return true
		}
		if s.dirs[body.Name] {
			problem(w, http.StatusConflict, "Directory exists")
			return true
		}
		s.dirs[body.Name] = true
		writeJSON(w, http.StatusCreated, map[string]any{"name": body.Name})
	case seg[0] == "directories" && len(seg) == 2 && r.Method == http.MethodDelete:
		if !s.dirs[seg[1]] {
			problem(w, http.StatusNotFound, "Not Found")
			return true
		}
		delete(s.dirs, seg[1])
		for uid, dirs := range s.userDirs {
			s.userDirs[uid] = slices.DeleteFunc(dirs, func(d string) bool { return d == seg[1] })
		}
		w.WriteHeader(http.StatusNoContent)
	case seg[0] == "apps" && len(seg) == 1 && r.Method == http.MethodGet:
		s.listApps(w, r)
	case seg[0] == "apps" && len(seg) == 2 && r.Method == http.MethodPut:
		s.adminUpsertApp(w, r, seg[1])
	case seg[0] == "apps" && len(seg) == 2 && r.Method == http.MethodGet:
		if a := s.lookup(seg[1]); a != nil {
			writeJSON(w, http.StatusOK, a.out("write"))
		} else {
			problem(w, http.StatusNotFound, "Not Found")
		}
	case seg[0] == "apps" && len(seg) >= 3 && seg[2] == "members":
		s.adminMembers(w, r, seg)
	default:
		problem(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
	return true
}

// lookup finds an app by numeric id or uid.
func (s *Server) lookup(ref string) *app {
	if allDigits(ref) && ref != "" {
		id, _ := strconv.ParseInt(ref, 10, 64)
		return s.apps[id]
	}
	return s.apps[s.byUID[ref]]
}

func (s *Server) create(uid, typ, name, access, dir string) *app {
	s.nextID++
	a := &app{ID: s.nextID, UID: uid, Type: typ, Name: name, Access: access, Directory: dir, Members: map[string]string{}}
	s.apps[a.ID] = a
	s.byUID[uid] = a.ID
	return a
}

// appBody is AppUpsert; unknown properties are refused as Weavy does.
type appBody struct {
	Type      string  `json:"type"`
	Name      string  `json:"name"`
	Access    *string `json:"access"`
	Directory *string `json:"directory"`
}

func decodeApp(w http.ResponseWriter, r *http.Request) (appBody, bool) {
	var b appBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || b.Type == "" {
		problem(w, http.StatusBadRequest, "Invalid app")
		return b, false
	}
	if b.Access != nil && *b.Access != "none" && *b.Access != "read" && *b.Access != "write" {
		problem(w, http.StatusBadRequest, "Invalid access")
		return b, false
	}
	return b, true
}

func (s *Server) adminUpsertApp(w http.ResponseWriter, r *http.Request, uid string) {
	if uid == "" || allDigits(uid) || strings.ContainsAny(uid, " \t\n") || len(uid) > 256 {
		problem(w, http.StatusBadRequest, "Invalid uid")
		return
	}
	b, ok := decodeApp(w, r)
	if !ok {
		return
	}
	if b.Directory != nil && *b.Directory != "" && !s.dirs[*b.Directory] {
		problem(w, http.StatusBadRequest, "Directory not found")
		return
	}
	a, status := s.lookup(uid), http.StatusOK
	if a == nil {
		a, status = s.create(uid, b.Type, b.Name, "none", ""), http.StatusCreated // the API's default access
	}
	if b.Name != "" {
		a.Name = b.Name
	}
	if b.Access != nil {
		a.Access = *b.Access
	}
	if b.Directory != nil {
		a.Directory = *b.Directory
	}
	writeJSON(w, status, a.out("write"))
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	skip, _ := strconv.Atoi(q.Get("skip"))
	take, err := strconv.Atoi(q.Get("take"))
	if err != nil || take <= 0 {
		take = 25
	}
	ids := slices.Sorted(maps.Keys(s.apps))
	var match []map[string]any
	for _, id := range ids {
		a := s.apps[id]
		if term := q.Get("q"); term == "" || strings.Contains(a.UID, term) || strings.Contains(a.Name, term) {
			match = append(match, a.out("write"))
		}
	}
	count := len(match)
	match = match[min(skip, count):min(skip+take, count)]
	writeJSON(w, http.StatusOK, map[string]any{"data": match, "start": skip, "end": skip + len(match), "count": count})
}

func (s *Server) adminMembers(w http.ResponseWriter, r *http.Request, seg []string) {
	a := s.lookup(seg[1])
	if a == nil {
		problem(w, http.StatusNotFound, "Not Found")
		return
	}
	switch {
	case len(seg) == 3 && r.Method == http.MethodGet:
		q := r.URL.Query()
		skip, _ := strconv.Atoi(q.Get("skip"))
		take, err := strconv.Atoi(q.Get("take"))
		if err != nil || take <= 0 {
			take = 25
		}
		uids := slices.Sorted(maps.Keys(a.Members))
		var data []map[string]any
		for _, u := range uids[min(skip, len(uids)):min(skip+take, len(uids))] {
			data = append(data, map[string]any{"uid": u, "access": a.Members[u]})
		}
		writeJSON(w, http.StatusOK, map[string]any{"data": data, "count": len(uids)})
	case len(seg) == 4 && r.Method == http.MethodPut:
		var b struct {
			Access string `json:"access"`
		}
		if json.NewDecoder(r.Body).Decode(&b) != nil {
			problem(w, http.StatusBadRequest, "Invalid body")
			return
		}
		if b.Access == "" {
			b.Access = "write"
		}
		a.Members[seg[3]] = b.Access
		w.WriteHeader(http.StatusNoContent)
	case len(seg) == 4 && r.Method == http.MethodDelete:
		if _, ok := a.Members[seg[3]]; !ok {
			problem(w, http.StatusNotFound, "Not Found")
			return
		}
		delete(a.Members, seg[3])
		w.WriteHeader(http.StatusNoContent)
	default:
		problem(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
}
