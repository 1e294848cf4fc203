package forge_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
)

// staticSource is an AppTokenSource of the caller's own: one token, and the
// tokens it was told are unusable.
type staticSource struct {
	tok forge.AppToken

	mu       sync.Mutex
	unusable []string
}

func (s *staticSource) Usable(_ context.Context, inst string) (forge.AppToken, error) {
	if inst != s.tok.InstallationID {
		return forge.AppToken{}, forge.ErrUnknownInstallation
	}
	return s.tok, nil
}

func (s *staticSource) MarkUnusable(_ context.Context, inst, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unusable = append(s.unusable, inst+" "+token)
	return nil
}

// TestClientOverAnyTokenSource: the Client takes its tokens from any
// AppTokenSource, and tells it of a token Atlassian refuses.
func TestClientOverAnyTokenSource(t *testing.T) {
	var gotAuth string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		if r.URL.Path == "/refused" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer api.Close()
	src := &staticSource{tok: forge.AppToken{InstallationID: "inst-1", APIBaseURL: api.URL, Token: "app-token", Exp: time.Now().Add(time.Hour)}}
	c := forge.NewClient(src, forge.ClientOptions{})

	var out struct{ OK bool }
	if err := c.AsApp("inst-1").Do(t.Context(), http.MethodGet, "/ok", nil, &out); err != nil || !out.OK {
		t.Fatalf("Do = %v, %+v", err, out)
	}
	if gotAuth != "Bearer app-token" {
		t.Errorf("Authorization %q", gotAuth)
	}
	if err := c.AsApp("inst-1").Do(t.Context(), http.MethodGet, "/refused", nil, nil); err == nil {
		t.Fatal("a 401 is not an error")
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.unusable) != 1 || src.unusable[0] != "inst-1 app-token" {
		t.Errorf("marked unusable: %q", src.unusable)
	}
}
