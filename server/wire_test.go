package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// The composition root gives the broker the scheduler's queue as its mint
// observer: a user's first token, asked of the real server, queues a profile
// sync that copies the user's Confluence profile into Weavy. Were the broker
// built with no observer, or one not yet running, no profile would arrive.
func TestWireFirstMintQueuesProfileSync(t *testing.T) {
	const (
		inst    = "aaaaaaaa-0000-4000-8000-00000000000a"
		cloud   = "c10dc10d-0000-4000-8000-00000000000a"
		account = "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	)
	key := forgetest.NewKey(t, "k1")
	conf := forgetest.NewConfluence(t)
	conf.SetSiteURL("https://acme.atlassian.net")
	conf.AddUser(account, "Ada Lovelace", "", "/wiki/aa-avatar/ada.png")
	srv, wv := newServer(t, key)

	fit := forgetest.MintFIT(t, key, forgetest.WithPrincipal(account),
		forgetest.WithInstallation(inst, cloud), forgetest.WithAPIBaseURL(conf.APIBaseURL(cloud)))
	req := httptest.NewRequest(http.MethodPost, "/resolvers/token", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+fit)
	req.Header.Set("x-forge-oauth-system", conf.IssueAppToken(t, time.Now().Add(3*time.Hour)))
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, req)
	if w.Code != http.StatusOK || wv.Mints() != 1 {
		t.Fatalf("token: %d %s after %d mints", w.Code, w.Body, wv.Mints())
	}

	var profile map[string]any
	testwait.For(t, "the profile sync of the first mint", func() bool {
		p, ok := wv.Profile(account)
		profile = p
		return ok
	})
	if profile["name"] != "Ada Lovelace" || profile["picture"] != "https://acme.atlassian.net/wiki/aa-avatar/ada.png" {
		t.Fatalf("Weavy profile after the first mint: %v", profile)
	}
}
