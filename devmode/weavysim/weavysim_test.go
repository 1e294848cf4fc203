package weavysim

import (
	"net/http"
	"strings"
	"testing"
)

func put(t *testing.T, s *Server, uid, body string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, s.URL+"/api/users/"+uid, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Weavy's PUT /api/users/{uid} sets the properties it is sent and leaves the
// others alone, as the weavy client relies on: a later upsert of the user's
// directories (the chat's) keeps the name an earlier one (the profile sync's)
// wrote, whichever of the two runs first.
func TestUpsertKeepsPropertiesNotSent(t *testing.T) {
	s := New("")
	defer s.Close()
	if got := put(t, s, "ada", `{"name":"Ada Lovelace","email":"ada@example.com"}`); got != http.StatusCreated {
		t.Fatalf("first upsert: %d, want 201", got)
	}
	if got := put(t, s, "ada", `{"picture":"https://example.com/a.png"}`); got != http.StatusOK {
		t.Fatalf("second upsert: %d, want 200", got)
	}
	p, ok := s.Profile("ada")
	if !ok || p["name"] != "Ada Lovelace" || p["email"] != "ada@example.com" || p["picture"] != "https://example.com/a.png" {
		t.Fatalf("profile after two upserts: %v", p)
	}
	if got := put(t, s, "ada", `{"name":"Ada King"}`); got != http.StatusOK {
		t.Fatalf("rename: %d", got)
	}
	if p, _ := s.Profile("ada"); p["name"] != "Ada King" || p["picture"] != "https://example.com/a.png" {
		t.Fatalf("profile after the rename: %v", p)
	}
	// A refused upsert changes nothing.
	if got := put(t, s, "ada", `{"name":"X","shoe_size":44}`); got != http.StatusBadRequest {
		t.Fatalf("unknown property: %d, want 400", got)
	}
	if p, _ := s.Profile("ada"); p["name"] != "Ada King" {
		t.Fatalf("a refused upsert changed the profile: %v", p)
	}
}

// FailAdmin fails every API-key call with 500 until it is cleared; the
// world is left as it was.
func TestFailAdmin(t *testing.T) {
	s := New("")
	defer s.Close()
	s.FailAdmin.Store(true)
	if got := put(t, s, "ada", `{"name":"Ada"}`); got != http.StatusInternalServerError {
		t.Fatalf("upsert while failing: %d, want 500", got)
	}
	if _, ok := s.Profile("ada"); ok {
		t.Fatal("a failed upsert was kept")
	}
	s.FailAdmin.Store(false)
	if got := put(t, s, "ada", `{"name":"Ada"}`); got != http.StatusCreated {
		t.Fatalf("upsert after recovery: %d, want 201", got)
	}
}
