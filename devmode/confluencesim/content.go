package confluencesim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Content types, as v2 and a FIT's extension.content.type name them.
const (
	Page     = "page"
	BlogPost = "blogpost"
)

// AnySpaceKey is the space of the content Options.AnyContent makes up.
const AnySpaceKey = "DEV"

type space struct {
	key, id, name string
}

type content struct {
	id, typ, title, spaceKey string
}

// world is the content and the spaces, and who may view them. A viewer set
// that is nil is no restriction; an empty one lets nobody in.
type world struct {
	spacesByKey  map[string]*space
	spacesByID   map[string]*space
	content      map[string]*content
	restrictions map[string]map[string]bool // content id → viewers
	spacePerms   map[string]map[string]bool // space key → viewers
}

func newWorld() world {
	return world{
		spacesByKey:  make(map[string]*space),
		spacesByID:   make(map[string]*space),
		content:      make(map[string]*content),
		restrictions: make(map[string]map[string]bool),
		spacePerms:   make(map[string]map[string]bool),
	}
}

// parseID reads a v2 id: a decimal int64 (no sign), in its canonical form.
func parseID(id string) (string, bool) {
	if id == "" || strings.TrimLeft(id, "0123456789") != "" {
		return "", false
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatInt(n, 10), true
}

func mustID(what, id string) string {
	c, ok := parseID(id)
	if !ok {
		panic(fmt.Sprintf("confluencesim: %s %q is not a decimal int64", what, id))
	}
	return c
}

// AddSpace adds (or renames the id of) the space key with the numeric id,
// viewable by every licensed user and the app until RestrictSpace. It
// panics when id is not a decimal int64 or another space has it.
func (s *Server) AddSpace(key, id string) {
	id = mustID("space id", id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.spacesByID[id]; ok && other.key != key {
		panic(fmt.Sprintf("confluencesim: space id %s is %s's", id, other.key))
	}
	if old, ok := s.spacesByKey[key]; ok {
		delete(s.spacesByID, old.id)
	}
	sp := &space{key: key, id: id, name: "Space " + key}
	s.spacesByKey[key], s.spacesByID[id] = sp, sp
}

// AddContent adds (or replaces) content id of type typ (Page or BlogPost) in
// the space spaceKey, which must have been added. It panics on a bad id,
// type or space.
func (s *Server) AddContent(id, typ, spaceKey string) {
	id = mustID("content id", id)
	if typ != Page && typ != BlogPost {
		panic(fmt.Sprintf("confluencesim: content type %q is neither %q nor %q", typ, Page, BlogPost))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.spacesByKey[spaceKey]; !ok {
		panic(fmt.Sprintf("confluencesim: content %s in space %s, which was not added", id, spaceKey))
	}
	s.content[id] = &content{id: id, typ: typ, title: title(typ, id), spaceKey: spaceKey}
}

func title(typ, id string) string {
	if typ == BlogPost {
		return "Blog post " + id
	}
	return "Page " + id
}

// Restrict restricts content contentID (added or not yet) to viewers: from
// now on only they, of those its space lets in, may view it; no viewers is
// nobody. Name AsApp among them to let the app user in. It panics when
// contentID is not a decimal int64.
func (s *Server) Restrict(contentID string, viewers ...string) {
	contentID = mustID("content id", contentID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restrictions[contentID] = viewerSet(viewers)
}

// Unrestrict lifts contentID's restriction: its space's viewers may view it.
func (s *Server) Unrestrict(contentID string) {
	contentID = mustID("content id", contentID)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.restrictions, contentID)
}

// RestrictSpace gives only viewers the space key's view permission (no
// viewers: nobody), and so its content too. Name AsApp to let the app user in.
func (s *Server) RestrictSpace(key string, viewers ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spacePerms[key] = viewerSet(viewers)
}

// UnrestrictSpace gives every licensed user and the app the space key's view
// permission again.
func (s *Server) UnrestrictSpace(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.spacePerms, key)
}

func viewerSet(viewers []string) map[string]bool {
	set := make(map[string]bool, len(viewers))
	for _, v := range viewers {
		set[v] = true
	}
	return set
}

// lets says whether the viewer set lets as in (nil: everyone).
func lets(set map[string]bool, as string) bool { return set == nil || set[as] }

// spaceByKeyLocked finds the space key, making it up with Options.AnyContent.
func (s *Server) spaceByKeyLocked(key string) *space {
	if sp, ok := s.spacesByKey[key]; ok || !s.anyContent || key == "" {
		return sp
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	n := 1_000_000 + h.Sum64()%1_000_000_000
	for s.spacesByID[strconv.FormatUint(n, 10)] != nil {
		n++
	}
	sp := &space{key: key, id: strconv.FormatUint(n, 10), name: "Space " + key}
	s.spacesByKey[key], s.spacesByID[sp.id] = sp, sp
	return sp
}

// spaceByIDLocked finds the space with the (canonical) id, making it up with
// Options.AnyContent.
func (s *Server) spaceByIDLocked(id string) *space {
	if sp, ok := s.spacesByID[id]; ok || !s.anyContent {
		return sp
	}
	key := "S" + id
	for s.spacesByKey[key] != nil {
		key += "X"
	}
	sp := &space{key: key, id: id, name: "Space " + key}
	s.spacesByKey[key], s.spacesByID[id] = sp, sp
	return sp
}

// contentLocked finds content id as type typ would be asked for, making it
// up with Options.AnyContent.
func (s *Server) contentLocked(id, typ string) *content {
	if c, ok := s.content[id]; ok || !s.anyContent {
		return c
	}
	return &content{id: id, typ: typ, title: title(typ, id), spaceKey: AnySpaceKey}
}

// isContentAPI says whether apiPath (after the site) is a content or space
// API, whose calls ContentChecks lists.
func isContentAPI(apiPath string) bool {
	for _, p := range []string{"wiki/api/v2/pages", "wiki/api/v2/blogposts", "wiki/api/v2/spaces", "wiki/rest/api/content", "wiki/rest/api/space"} {
		if apiPath == p || strings.HasPrefix(apiPath, p+"/") {
			return true
		}
	}
	return false
}

// v2Error answers in the v2 API's error shape.
func v2Error(w http.ResponseWriter, status int, code, title string) {
	writeJSON(w, status, map[string]any{"errors": []any{map[string]any{
		"status": status, "code": code, "title": title, "detail": nil,
	}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter) { v2Error(w, http.StatusNotFound, "NOT_FOUND", "Not Found") }

func badID(w http.ResponseWriter, id, typ string) {
	v2Error(w, http.StatusBadRequest, "INVALID_REQUEST_PARAMETER",
		fmt.Sprintf("Provided value {%s} for 'id' is not the correct type. Expected type is %s", id, typ))
}

// v2 answers GET /wiki/api/v2/{rest} as as.
func (s *Server) v2(w http.ResponseWriter, r *http.Request, rest, as, siteURL string) {
	kind, id, hasID := strings.Cut(rest, "/")
	if kind != "pages" && kind != "blogposts" && kind != "spaces" || strings.Contains(id, "/") || hasID && id == "" {
		apiError(w, http.StatusNotFound, "No API at "+r.Method+" /wiki/api/v2/"+rest)
		return
	}
	if kind != "spaces" && !hasID {
		apiError(w, http.StatusNotFound, "No API at "+r.Method+" /wiki/api/v2/"+rest)
		return
	}
	s.mu.Lock()
	guest := as != AsApp && s.guests[as]
	s.mu.Unlock()
	if guest {
		v2Error(w, http.StatusForbidden, "FORBIDDEN", "Current user not permitted to use Confluence")
		return
	}
	switch {
	case kind == "spaces" && !hasID:
		s.spaces(w, r, as, siteURL)
	case kind == "spaces":
		s.spaceByID(w, id, as, siteURL)
	case kind == "pages":
		s.contentByID(w, id, Page, as, siteURL)
	default:
		s.contentByID(w, id, BlogPost, as, siteURL)
	}
}

func (s *Server) contentByID(w http.ResponseWriter, rawID, typ, as, siteURL string) {
	id, ok := parseID(rawID)
	if !ok {
		badID(w, rawID, "ContentId")
		return
	}
	s.mu.Lock()
	c := s.contentLocked(id, typ)
	var sp *space
	if c != nil {
		sp = s.spaceByKeyLocked(c.spaceKey)
	}
	visible := c != nil && c.typ == typ && sp != nil && lets(s.spacePerms[sp.key], as) && lets(s.restrictions[id], as)
	s.mu.Unlock()
	if !visible {
		notFound(w)
		return
	}
	webui := "/spaces/" + sp.key + "/pages/" + id
	if typ == BlogPost {
		webui = "/spaces/" + sp.key + "/blog/" + id
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":        id,
		"status":    "current",
		"title":     c.title,
		"spaceId":   sp.id,
		"authorId":  "557058:sim-author",
		"createdAt": "2025-01-01T00:00:00.000Z",
		"version":   map[string]any{"number": 1, "message": "", "minorEdit": false, "authorId": "557058:sim-author", "createdAt": "2025-01-01T00:00:00.000Z"},
		"_links":    links(siteURL, webui),
	})
}

func links(siteURL, webui string) map[string]any {
	l := map[string]any{"webui": webui}
	if siteURL != "" {
		l["base"] = siteURL + "/wiki"
	}
	return l
}

func spaceJSON(sp *space, siteURL string) map[string]any {
	return map[string]any{
		"id": sp.id, "key": sp.key, "name": sp.name, "type": "global", "status": "current",
		"authorId": "557058:sim-author", "createdAt": "2025-01-01T00:00:00.000Z", "homepageId": nil,
		"_links": links(siteURL, "/spaces/"+sp.key),
	}
}

func (s *Server) spaceByID(w http.ResponseWriter, rawID, as, siteURL string) {
	id, ok := parseID(rawID)
	if !ok {
		badID(w, rawID, "SpaceId")
		return
	}
	s.mu.Lock()
	sp := s.spaceByIDLocked(id)
	visible := sp != nil && lets(s.spacePerms[sp.key], as)
	s.mu.Unlock()
	if !visible {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, spaceJSON(sp, siteURL))
}

// list reads a v2 array parameter: repeated, comma-separated, or both; one
// with no value is not given.
func list(r *http.Request, name string) (vals []string, given bool) {
	raw, given := r.URL.Query()[name]
	for _, v := range raw {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				vals = append(vals, p)
			}
		}
	}
	return vals, given && len(vals) > 0
}

// spaces answers GET /wiki/api/v2/spaces[?keys=…][&ids=…]: the spaces as may
// view, of those asked for (each filter given narrows), by id.
func (s *Server) spaces(w http.ResponseWriter, r *http.Request, as, siteURL string) {
	keys, byKey := list(r, "keys")
	rawIDs, byID := list(r, "ids")
	ids := make([]string, 0, len(rawIDs))
	for _, raw := range rawIDs {
		id, ok := parseID(raw)
		if !ok {
			badID(w, raw, "SpaceId")
			return
		}
		ids = append(ids, id)
	}
	s.mu.Lock()
	var found []*space
	switch {
	case byKey:
		for _, k := range keys {
			if sp := s.spaceByKeyLocked(k); sp != nil {
				found = append(found, sp)
			}
		}
	case byID:
		for _, id := range ids {
			if sp := s.spaceByIDLocked(id); sp != nil {
				found = append(found, sp)
			}
		}
	default:
		for _, sp := range s.spacesByKey {
			found = append(found, sp)
		}
	}
	results := []any{}
	slices.SortFunc(found, func(a, b *space) int {
		x, _ := strconv.ParseInt(a.id, 10, 64)
		y, _ := strconv.ParseInt(b.id, 10, 64)
		return cmp.Compare(x, y)
	})
	found = slices.Compact(found)
	for _, sp := range found {
		if byID && !slices.Contains(ids, sp.id) || !lets(s.spacePerms[sp.key], as) {
			continue
		}
		results = append(results, spaceJSON(sp, siteURL))
	}
	s.mu.Unlock()
	l := map[string]any{}
	if siteURL != "" {
		l["base"] = siteURL + "/wiki"
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results, "_links": l})
}
