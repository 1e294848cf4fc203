package confluencesim

import (
	"encoding/json"
	"mime"
	"net/http"
)

// controlRequest is the body of POST /_sim/restrict and /_sim/unrestrict:
// a content id or a space key, and for restrict the viewers.
type controlRequest struct {
	ContentID string   `json:"contentId"`
	SpaceKey  string   `json:"spaceKey"`
	Viewers   []string `json:"viewers"`
}

// control answers the control endpoint (see the package comment).
func (s *Server) control(w http.ResponseWriter, r *http.Request) {
	restrict := r.URL.Path == "/_sim/restrict"
	if !restrict && r.URL.Path != "/_sim/unrestrict" {
		http.Error(w, "no control endpoint at "+r.URL.Path, http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	// JSON only: a browser page cannot send it cross-origin without a
	// preflight the simulator never answers.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	var req controlRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	if (req.ContentID == "") == (req.SpaceKey == "") {
		http.Error(w, "give exactly one of contentId and spaceKey", http.StatusBadRequest)
		return
	}
	if !restrict && req.Viewers != nil {
		http.Error(w, "unrestrict takes no viewers", http.StatusBadRequest)
		return
	}
	if req.ContentID != "" {
		if _, ok := parseID(req.ContentID); !ok {
			http.Error(w, "contentId must be a decimal int64", http.StatusBadRequest)
			return
		}
	}
	switch {
	case restrict && req.ContentID != "":
		s.Restrict(req.ContentID, req.Viewers...)
	case restrict:
		s.RestrictSpace(req.SpaceKey, req.Viewers...)
	case req.ContentID != "":
		s.Unrestrict(req.ContentID)
	default:
		s.UnrestrictSpace(req.SpaceKey)
	}
	w.WriteHeader(http.StatusNoContent)
}
