package forge_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/secret/secrettest"
)

// AsUser calls as the user whose token it holds: Confluence sees the user,
// not the app, and a user token never touches the app token store.
func TestClientAsUser(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	e.conf.AddPage(t, "98305", "ENG", "65537")
	e.conf.Restrict("98305", "557058:aa")
	ada := e.conf.IssueUserToken(t, "557058:aa", e.clock.Now().Add(time.Hour))
	bob := e.conf.IssueUserToken(t, "557058:bb", e.clock.Now().Add(time.Hour))
	base := e.conf.APIBaseURL(clientCloud)

	var page struct {
		ID string `json:"id"`
	}
	if err := e.client.AsUser(base, ada).GetJSON(t.Context(), "/wiki/api/v2/pages/98305", &page); err != nil || page.ID != "98305" {
		t.Fatalf("ada: %v %+v", err, page)
	}
	var pe *forge.ProductError
	if err := e.client.AsUser(base, bob).GetJSON(t.Context(), "/wiki/api/v2/pages/98305", nil); !errors.As(err, &pe) || pe.Status != http.StatusNotFound {
		t.Fatalf("bob: %v", err)
	}
	checks := e.conf.ContentChecks()
	if len(checks) != 2 || checks[0].As != "557058:aa" || checks[1].As != "557058:bb" {
		t.Fatalf("checks %+v", checks)
	}
	if _, err := e.tokens.Usable(t.Context(), clientInst); !errors.Is(err, forge.ErrUnknownInstallation) {
		t.Fatalf("a user call touched the app token store: %v", err)
	}
	if err := e.client.AsUser(base, ada).GetJSON(t.Context(), "//evil.example/x", nil); err == nil {
		t.Fatal("a path naming another host was sent")
	}
	if err := e.client.AsUser("http://evil.example/ex/confluence/x", ada).GetJSON(t.Context(), "/wiki/api/v2/pages/1", nil); err == nil {
		t.Fatal("a user token went over cleartext off loopback")
	}
}

// A person waits for AsUser: a 429 or 5xx is returned at once, never
// retried, the 429's Retry-After read; the token shows in no error or
// formatted value.
func TestClientAsUserNoRetry(t *testing.T) {
	e := newClientEnv(t, forge.ClientOptions{})
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "17")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusBadGateway)
		}
		_, _ = io.WriteString(w, `{"message":"bad header: `+r.Header.Get("Authorization")+`"}`)
	}))
	defer srv.Close()
	tok := "user-token-0123456789abcdef0123456789"
	u := e.client.AsUser(srv.URL, tok)
	var pe *forge.ProductError
	err := u.GetJSON(t.Context(), "/busy", nil)
	if !errors.As(err, &pe) || pe.Status != http.StatusTooManyRequests || pe.RetryAfter != 17*time.Second || hits.Load() != 1 {
		t.Fatalf("429: %v (%d hits)", err, hits.Load())
	}
	err2 := u.GetJSON(t.Context(), "/fail", nil)
	if !errors.As(err2, &pe) || pe.Status != http.StatusBadGateway || hits.Load() != 2 || len(e.slept()) != 0 {
		t.Fatalf("502: %v (%d hits, slept %v)", err2, hits.Load(), e.slept())
	}
	for _, s := range []string{err.Error(), err2.Error(), fmt.Sprintf("%v %+v %#v %s", u, u, u, u)} {
		if strings.Contains(s, tok) {
			t.Errorf("the user token shows: %s", s)
		}
	}
	secrettest.Hidden(t, secrettest.Print(t, u), tok)
}

// Middleware passes the user token of a verified call on in the context;
// a call without one has none; the context value prints no token.
func TestMiddlewareUserToken(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	v := newVerifier(t, forgetest.NewJWKSServer(t, key))
	mw := forge.Middleware(v)
	for _, want := range []string{"user-token-0123456789abcdef", ""} {
		var got string
		var ok bool
		var printed string
		next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, ok = forge.UserTokenFrom(r.Context())
			printed = fmt.Sprint(r.Context())
		})
		req := httptest.NewRequest(http.MethodPost, "/resolvers/chat", nil)
		req.Header.Set("Authorization", "Bearer "+forgetest.MintFIT(t, key))
		if want != "" {
			req.Header.Set("x-forge-oauth-user", want)
		}
		mw(next).ServeHTTP(httptest.NewRecorder(), req)
		if got != want || ok != (want != "") {
			t.Errorf("header %q: UserTokenFrom = %q, %v", want, got, ok)
		}
		if want != "" {
			secrettest.Hidden(t, printed, want)
		}
	}
	// A refused FIT reaches nothing, its user token included.
	reached := false
	req := httptest.NewRequest(http.MethodPost, "/resolvers/chat", nil)
	req.Header.Set("Authorization", "Bearer garbage")
	req.Header.Set("x-forge-oauth-user", "user-token-0123456789abcdef")
	mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true })).ServeHTTP(httptest.NewRecorder(), req)
	if reached {
		t.Fatal("a refused FIT reached next")
	}
}
