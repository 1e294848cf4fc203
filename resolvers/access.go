package resolvers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/internal/logctx"
)

// ErrUserTokenMissing: a page or space chat was opened by a call that
// carries no app user token (x-forge-oauth-user), so nobody can ask
// Confluence whether the user may view it. Forge sends the token only when
// the endpoint module enables it: the app's manifest is wrong.
var ErrUserTokenMissing = errors.New("resolvers: the call carries no app user token (x-forge-oauth-user): " +
	"the manifest's endpoint module must set auth.appUserToken.enabled: true, with the read:app-user-token scope")

// ConfluenceError is a page check Confluence gave no verdict on: it
// throttled (Status 429, RetryAfter as it asked, 0 if it did not say), failed
// (5xx, 401, anything but 200, 403 and 404) or did not answer (Status 0).
// Nobody joins on it.
type ConfluenceError struct {
	Status     int
	RetryAfter time.Duration
	Err        error
}

func (e *ConfluenceError) Error() string {
	return "resolvers: Confluence gave no verdict on the page check: " + e.Err.Error()
}

func (e *ConfluenceError) Unwrap() error { return e.Err }

// Busy reports whether Confluence throttled the check (HTTP 429).
func (e *ConfluenceError) Busy() bool { return e.Status == http.StatusTooManyRequests }

// AccessOptions configures an Access.
type AccessOptions struct {
	// Timeout bounds one check; 0 (or a negative value) means
	// DefaultCheckTimeout.
	Timeout time.Duration
	Logger  *zap.Logger // nil: no logs
}

// DefaultCheckTimeout bounds one page check: a person waits for it.
const DefaultCheckTimeout = 5 * time.Second

// maxWarned bounds the installations remembered as told about a missing
// user token (a warning each, once).
const maxWarned = 10_000

// Access asks Confluence, as the signed-in user, whether they can view a
// chat's page, blog post or space. It is safe for concurrent use.
type Access struct {
	c       *forge.Client
	timeout time.Duration
	log     *zap.Logger

	mu     sync.Mutex
	warned map[string]struct{}
}

// NewAccess returns an Access calling Confluence through c.
func NewAccess(c *forge.Client, o AccessOptions) *Access {
	a := &Access{c: c, timeout: o.Timeout, log: o.Logger, warned: make(map[string]struct{})}
	if a.timeout <= 0 {
		a.timeout = DefaultCheckTimeout
	}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	return a
}

// Check returns the check of t for chat.Request: one call to Confluence's
// REST v2 on the site's apiBaseURL with the user's token, answering 200 for
// what the user can view and 404 (or 403) for what they cannot or what does
// not exist (v2 does not tell them apart):
//
//	page (contentType page, or any but blogpost)  GET /wiki/api/v2/pages/{id}
//	blog post (contentType blogpost)               GET /wiki/api/v2/blogposts/{id}
//	space by key                                   GET /wiki/api/v2/spaces?keys={key} (only spaces the user can view)
//	space by id                                    GET /wiki/api/v2/spaces/{id}
//
// Each costs one request and one object of Atlassian's points.
func (a *Access) Check(apiBaseURL, token string, t chat.Target, contentType string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, a.timeout)
		defer cancel()
		u := a.c.AsUser(apiBaseURL, token).For(budget.PageCheck)
		switch t.Kind {
		case chat.KindPage:
			path := "/wiki/api/v2/pages/" + t.ID
			if contentType == contentBlogPost {
				path = "/wiki/api/v2/blogposts/" + t.ID
			}
			return verdict(u.GetJSON(ctx, path, nil))
		case chat.KindSpaceID:
			return verdict(u.GetJSON(ctx, "/wiki/api/v2/spaces/"+t.ID, nil))
		case chat.KindSpace:
			var page struct {
				Results []struct {
					Key string `json:"key"`
				} `json:"results"`
			}
			ok, err := verdict(u.GetJSON(ctx, "/wiki/api/v2/spaces?keys="+url.QueryEscape(t.ID), &page))
			if !ok || err != nil {
				return ok, err
			}
			for _, s := range page.Results {
				if s.Key == t.ID {
					return true, nil
				}
			}
			return false, nil
		}
		return false, fmt.Errorf("resolvers: no page check for chat kind %q", t.Kind)
	}
}

// verdict reads Confluence's answer: 2xx can view, 403 or 404 cannot,
// anything else no verdict. A call the points budget refused (a pause after
// a quota 429, or the hour spent) is Confluence throttling, answered at once
// without calling: 503 confluence_busy with the pause's Retry-After.
func verdict(err error) (bool, error) {
	if err == nil {
		return true, nil
	}
	var paused *budget.PausedError
	if errors.As(err, &paused) {
		return false, &ConfluenceError{Status: http.StatusTooManyRequests, RetryAfter: paused.RetryAfter, Err: err}
	}
	var pe *forge.ProductError
	if errors.As(err, &pe) {
		switch pe.Status {
		case http.StatusNotFound, http.StatusForbidden:
			return false, nil
		}
		return false, &ConfluenceError{Status: pe.Status, RetryAfter: pe.RetryAfter, Err: err}
	}
	return false, &ConfluenceError{Err: err}
}

// warnNoUserToken logs, once per installation (per process), that its calls
// carry no user token.
func (a *Access) warnNoUserToken(ctx context.Context, inv *forge.Invocation) {
	inst := inv.InstallationID()
	a.mu.Lock()
	_, told := a.warned[inst]
	if !told && len(a.warned) < maxWarned {
		a.warned[inst] = struct{}{}
	}
	a.mu.Unlock()
	if told {
		return
	}
	logctx.Logger(ctx, a.log).Warn("chat refused: the call carries no app user token; set auth.appUserToken.enabled: true on the endpoint module the Custom UI's resolver uses, and add the read:app-user-token scope",
		zap.String("installation_id", inst), zap.String("module", inv.App.Module.Key))
}
