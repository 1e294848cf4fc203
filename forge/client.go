package forge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/internal/ctxtime"
	"github.com/forge-remote/forge-remote/internal/httpx"
	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/forge-remote/forge-remote/internal/safeurl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// ClientOptions configures a Client. The zero value is usable; a negative
// number or duration counts as zero.
type ClientOptions struct {
	// HTTPClient is used as given; nil means a client that never follows a
	// redirect (the token must go to apiBaseUrl and nowhere else).
	HTTPClient *http.Client
	// Timeout bounds each attempt, from connect to the end of the body; 0 means 10 s.
	Timeout time.Duration
	// MaxBody bounds what is read of an answer; 0 means 1 MiB.
	MaxBody int64
	Now     func() time.Time // nil: time.Now
	Logger  *zap.Logger      // nil: no logs
	// Registerer receives forge_product_requests_total{method,status}; nil: no metrics.
	Registerer prometheus.Registerer
	// Sleep waits between attempts; nil waits on a timer. It must return
	// ctx.Err() when ctx ends first.
	Sleep func(ctx context.Context, d time.Duration) error
	// Retries is how many times one call may be repeated (429 or 5xx on an
	// idempotent method, 401/403 within Grace of the install); 0 means 3.
	Retries int
	// Grace is how long after an install 401/403 are taken for grants still
	// propagating (retried, the token kept) rather than refusals; 0 means 15 min.
	Grace time.Duration
	// MaxRetryAfter: a 429 asking to wait longer is returned at once; 0 means 30 s.
	MaxRetryAfter time.Duration
	// Budget, when set, admits each attempt (Take: a refusal is a
	// *budget.PausedError, and nothing is sent) and is told of each answer
	// (Done: points, Atlassian's headers, 429 pauses); nil: no budget.
	Budget *budget.Budget
}

const (
	defaultClientTimeout = 10 * time.Second
	defaultMaxBody       = 1 << 20
	defaultRetries       = 3
	defaultGrace         = 15 * time.Minute
	defaultMaxRetryAfter = 30 * time.Second
	backoffBase          = 2 * time.Second
	backoffMax           = 30 * time.Second
)

// ProductError is a non-2xx answer of a product API. Body is the start of the
// answer with any token redacted.
type ProductError struct {
	Status     int
	Method     string
	Path       string
	Body       string
	RetryAfter time.Duration // a 429's Retry-After, when it asked too long a wait
}

func (e *ProductError) Error() string {
	s := "forge: product API " + e.Method + " " + e.Path + ": HTTP " + strconv.Itoa(e.Status)
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// AppTokenSource gives the Client an installation's app system token, as an
// oauth2.TokenSource gives an HTTP client its token; *AppTokens is one.
type AppTokenSource interface {
	// Usable returns the installation's token when it has enough life left
	// and is not marked unusable: else a *StaleError (errors.Is
	// ErrAppTokenStale) or ErrUnknownInstallation.
	Usable(ctx context.Context, installationID string) (AppToken, error)
	// MarkUnusable records that Atlassian refused token (HTTP 401), so that
	// Usable stops handing it out until a newer one arrives.
	MarkUnusable(ctx context.Context, installationID, token string) error
}

var _ AppTokenSource = (*AppTokens)(nil)

// Client calls Atlassian product APIs (apiBaseUrl + path) with an
// installation's app system token. It is safe for concurrent use.
type Client struct {
	tokens        AppTokenSource
	hc            *http.Client
	timeout       time.Duration
	maxBody       int64
	now           func() time.Time
	log           *zap.Logger
	sleep         func(context.Context, time.Duration) error
	retries       int
	grace         time.Duration
	maxRetryAfter time.Duration
	budget        *budget.Budget
	requests      *prometheus.CounterVec
}

// NewClient returns a Client taking tokens from tokens. It panics if
// o.Registerer rejects its metrics (a name clash: a programming error).
func NewClient(tokens AppTokenSource, o ClientOptions) *Client {
	c := &Client{
		tokens:        tokens,
		hc:            o.HTTPClient,
		timeout:       cmp.Or(max(o.Timeout, 0), defaultClientTimeout),
		maxBody:       cmp.Or(max(o.MaxBody, 0), defaultMaxBody),
		now:           o.Now,
		log:           o.Logger,
		sleep:         o.Sleep,
		retries:       cmp.Or(max(o.Retries, 0), defaultRetries),
		grace:         cmp.Or(max(o.Grace, 0), defaultGrace),
		maxRetryAfter: cmp.Or(max(o.MaxRetryAfter, 0), defaultMaxRetryAfter),
		budget:        o.Budget,
	}
	if c.hc == nil {
		c.hc = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	if c.sleep == nil {
		c.sleep = ctxtime.Sleep
	}
	c.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "forge_product_requests_total",
		Help: "Attempts to call a product API by method and HTTP status (or stale, transport, refused by the points budget).",
	}, []string{"method", "status"})
	if o.Registerer != nil {
		var err error
		if c.requests, err = metrics.Register(o.Registerer, c.requests); err != nil {
			panic(err)
		}
	}
	return c
}

// AsApp returns a client acting as the app on installationID.
func (c *Client) AsApp(installationID string) *AppClient {
	return &AppClient{c: c, inst: installationID}
}

// AppClient calls product APIs as the app on one installation.
type AppClient struct {
	c           *Client
	inst        string
	installedAt time.Time
	kind        budget.Kind
}

// For returns a copy of a whose calls the budget counts as kind (the
// default is budget.Other, background work).
func (a *AppClient) For(kind budget.Kind) *AppClient {
	cp := *a
	cp.kind = kind
	return &cp
}

// InstalledAt returns a copy of a that knows when the installation was first
// seen: within the Client's Grace of t, a 401 or 403 is retried with backoff
// and does not mark the token unusable (the app's grants propagate slowly).
func (a *AppClient) InstalledAt(t time.Time) *AppClient {
	cp := *a
	cp.installedAt = t
	return &cp
}

// GetJSON is Do with GET and no body.
func (a *AppClient) GetJSON(ctx context.Context, path string, out any) error {
	return a.Do(ctx, http.MethodGet, path, nil, out)
}

// Do sends method path (relative to the installation's apiBaseUrl, with its
// query) with body as JSON ([]byte and json.RawMessage are sent as they are;
// nil sends none) and decodes a 2xx answer into out (nil discards it).
//
// The token is read from the AppTokenSource just before each attempt: when none with
// enough life is held, Do returns the *StaleError (or ErrUnknownInstallation)
// without sending anything; so does a refusal of the Client's budget (a
// *budget.PausedError: a pause after a quota 429, the hour spent, or for a
// background kind the reserve reached). A non-2xx answer is a *ProductError;
// a 401 outside the install grace period marks the token unusable.
func (a *AppClient) Do(ctx context.Context, method, path string, body, out any) error {
	c := a.c
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") {
		// Anything else could point the token at another host.
		return fmt.Errorf("forge: product API path %q must start with a single '/'", path)
	}
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	case json.RawMessage:
		payload = b
	default:
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("forge: product API %s %s: encoding body: %w", method, path, err)
		}
	}

	for attempt := 0; ; attempt++ {
		tok, err := c.tokens.Usable(ctx, a.inst)
		if err != nil {
			if errors.Is(err, ErrAppTokenStale) || errors.Is(err, ErrUnknownInstallation) {
				c.requests.WithLabelValues(method, "stale").Inc()
			}
			return err
		}
		ticket, err := c.take(ctx, a.kind, tok.APIBaseURL, method, path)
		if err != nil {
			return err
		}
		status, header, data, err := c.send(ctx, method, tok.APIBaseURL, tok.Token, path, payload)
		c.done(ctx, ticket, method, path, status, header, data)
		if err != nil {
			c.requests.WithLabelValues(method, "transport").Inc()
			return err
		}
		c.requests.WithLabelValues(method, strconv.Itoa(status)).Inc()
		if status >= 200 && status < 300 {
			if out == nil || len(bytes.TrimSpace(data)) == 0 {
				return nil
			}
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("forge: product API %s %s: HTTP %d with a body that is not the JSON expected: %w",
					method, path, status, err)
			}
			return nil
		}

		perr := &ProductError{Status: status, Method: method, Path: path, Body: httpx.ErrorText(string(data), tok.Token)}
		wait, retry := a.retryable(status, header, attempt, method)
		if status == http.StatusTooManyRequests && wait > c.maxRetryAfter {
			perr.RetryAfter = wait
			retry = false
		}
		if !retry {
			if status == http.StatusUnauthorized && !a.propagating() {
				if err := c.tokens.MarkUnusable(ctx, a.inst, tok.Token); err != nil {
					c.log.Warn("marking app token unusable failed",
						zap.String("installation_id", a.inst), zap.Error(err))
				}
			}
			return perr
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return perr // the caller cannot wait that long
		}
		c.log.Info("product API call retried",
			zap.String("installation_id", a.inst), zap.String("method", method), zap.String("path", path),
			zap.Int("status", status), zap.Int("attempt", attempt+1), zap.Duration("wait", wait))
		if err := c.sleep(ctx, wait); err != nil {
			return fmt.Errorf("%w (waiting to retry: %w)", perr, err)
		}
	}
}

// retryable says whether an answer is worth another attempt, and after how long.
func (a *AppClient) retryable(status int, header http.Header, attempt int, method string) (time.Duration, bool) {
	if attempt >= a.c.retries {
		return 0, false
	}
	backoff := backoffMax
	if attempt < 8 { // beyond, the shift would overflow; the cap applies long before
		backoff = min(backoffBase<<attempt, backoffMax)
	}
	switch {
	case status == http.StatusTooManyRequests:
		// Atlassian: retry only idempotent requests; without Retry-After,
		// back off with jitter so that callers do not come back in step.
		if d, ok := httpx.RetryAfter(header.Get("Retry-After"), a.c.now()); ok {
			return d, idempotent(method)
		}
		return jitter(backoff), idempotent(method)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return backoff, a.propagating()
	case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		return backoff, idempotent(method)
	}
	return 0, false
}

// propagating reports whether the installation is new enough for its grants
// to be still on their way.
func (a *AppClient) propagating() bool {
	return !a.installedAt.IsZero() && a.c.now().Sub(a.installedAt) < a.c.grace
}

// jitter spreads d over [0.7, 1.3) of itself, as Atlassian's pseudocode does.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.7 + 0.6*rand.Float64()))
}

// take asks the budget, when there is one, to admit an attempt.
func (c *Client) take(ctx context.Context, kind budget.Kind, apiBaseURL, method, path string) (*budget.Ticket, error) {
	if c.budget == nil {
		return nil, nil
	}
	t, err := c.budget.Take(ctx, cmp.Or(kind, budget.Other), apiBaseURL, method, path)
	if err != nil {
		c.requests.WithLabelValues(method, "refused").Inc()
		return nil, err
	}
	return t, nil
}

// done tells the budget, when there is one, of an attempt's answer (status
// 0: none came).
func (c *Client) done(ctx context.Context, t *budget.Ticket, method, path string, status int, header http.Header, data []byte) {
	if c.budget != nil {
		c.budget.Done(ctx, t, method, path, status, header, data)
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// send makes one attempt with token against apiBaseURL and returns the
// answer's status, header and body.
func (c *Client) send(ctx context.Context, method, apiBaseURL, token, path string, payload []byte) (int, http.Header, []byte, error) {
	base, err := url.Parse(apiBaseURL)
	// A token captured before Verify refused cleartext apiBaseUrls may
	// still name one: tokens go over https only (http to loopback).
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || !safeurl.OK(apiBaseURL) {
		return 0, nil, nil, errors.New("forge: the installation has no usable apiBaseUrl (https, or http on loopback only)")
	}
	target := strings.TrimRight(apiBaseURL, "/") + path

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("forge: product API %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error names the URL, never the header carrying the token.
		return 0, nil, nil, fmt.Errorf("forge: product API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("forge: product API %s %s: reading answer: %w", method, path, err)
	}
	if int64(len(data)) > c.maxBody {
		return 0, nil, nil, fmt.Errorf("forge: product API %s %s: answer larger than %d bytes", method, path, c.maxBody)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// AsUser returns a client acting as the signed-in user whose app user token
// (UserTokenHeader) is token, on the site whose apiBaseUrl (from the verified
// FIT) is apiBaseURL.
func (c *Client) AsUser(apiBaseURL, token string) *UserClient {
	return &UserClient{c: c, base: apiBaseURL, token: token}
}

// For returns a copy of u whose calls the budget counts as kind (the
// default is budget.Other; the page check is budget.PageCheck).
func (u *UserClient) For(kind budget.Kind) *UserClient {
	cp := *u
	cp.kind = kind
	return &cp
}

// UserClient calls product APIs as one user, for one request of theirs. It is
// not retried: a person waits for the answer, and a 429's Retry-After is
// theirs to honour (ProductError.RetryAfter).
type UserClient struct {
	c     *Client
	base  string
	token string
	kind  budget.Kind
}

// GetJSON sends GET path (relative to apiBaseUrl, with its query) once and
// decodes a 2xx answer into out (nil discards it). A non-2xx answer is a
// *ProductError, a 429's with RetryAfter set from its Retry-After header (0:
// none given). A 401 marks nothing: the user token is Forge's to renew. A
// refusal of the Client's budget is a *budget.PausedError, nothing sent.
func (u *UserClient) GetJSON(ctx context.Context, path string, out any) error {
	c := u.c
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") {
		return fmt.Errorf("forge: product API path %q must start with a single '/'", path)
	}
	ticket, err := c.take(ctx, u.kind, u.base, http.MethodGet, path)
	if err != nil {
		return err // the budget refused: nothing was sent
	}
	status, header, data, err := c.send(ctx, http.MethodGet, u.base, u.token, path, nil)
	c.done(ctx, ticket, http.MethodGet, path, status, header, data)
	if err != nil {
		c.requests.WithLabelValues(http.MethodGet, "transport").Inc()
		return err
	}
	c.requests.WithLabelValues(http.MethodGet, strconv.Itoa(status)).Inc()
	if status >= 200 && status < 300 {
		if out == nil || len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("forge: product API GET %s: HTTP %d with a body that is not the JSON expected: %w", path, status, err)
		}
		return nil
	}
	perr := &ProductError{Status: status, Method: http.MethodGet, Path: path, Body: httpx.ErrorText(string(data), u.token)}
	if status == http.StatusTooManyRequests {
		if d, ok := httpx.RetryAfter(header.Get("Retry-After"), c.now()); ok {
			perr.RetryAfter = d
		}
	}
	return perr
}

// Format prints the client without its token.
func (u *UserClient) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "forge.UserClient{%s}", u.base)
}
