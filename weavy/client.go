// Package weavy mints Weavy user access tokens (wyu_…) with the server-side API key,
// caches them per Atlassian user (Broker) and keeps Weavy user profiles in sync.
package weavy

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/forge-remote/forge-remote/internal/httpx"
	"github.com/forge-remote/forge-remote/internal/metrics"
	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zapcore"
)

var (
	// ErrTimeout is wrapped when the client's own per-call timeout fires. A
	// cancellation or deadline of the caller's context is returned as the
	// context's error instead.
	ErrTimeout = errors.New("weavy: request timed out")
	// ErrBadResponse is wrapped when Weavy answers 2xx with something unusable:
	// not JSON, no wyu_ access token, a nonsensical lifetime.
	ErrBadResponse = errors.New("weavy: unexpected response")
	// ErrUnreachable is wrapped when no answer came: connection refused or
	// reset, DNS, TLS.
	ErrUnreachable = errors.New("weavy: unreachable")
	// ErrInvalidUID is wrapped when a uid breaks Weavy's rules (see UID).
	ErrInvalidUID = errors.New("weavy: invalid uid")
)

const (
	defaultTimeout = 10 * time.Second
	// maxBody bounds what is read of any answer; Weavy's are a few hundred bytes.
	maxBody     = 64 << 10
	tokenPrefix = "wyu_"
)

// ClientOptions configures a Client. The zero value is usable.
type ClientOptions struct {
	// HTTPClient is used as given; nil means a client with its own pooled
	// transport that does not follow redirects.
	HTTPClient *http.Client
	// Timeout bounds each call (connect to body read); 0 means 10 s, a
	// negative one is refused.
	Timeout time.Duration
	// Registerer receives weavy_request_duration_seconds{op} and
	// weavy_errors_total{op,status}; nil disables metrics.
	Registerer prometheus.Registerer
	// Now is the clock used for token expiry; nil means time.Now.
	Now func() time.Time
}

// Client calls Weavy's server API with the environment's API key. It is safe
// for concurrent use.
type Client struct {
	base    string // scheme://host[/prefix], no trailing slash
	auth    string // "Bearer " + API key; never logged, never in an error
	apiKey  string // only to redact it from anything Weavy echoes back
	hc      *http.Client
	timeout time.Duration
	now     func() time.Time

	duration *prometheus.HistogramVec
	errs     *prometheus.CounterVec
}

// NewClient returns a Client for the Weavy environment at baseURL (e.g.
// https://acme.weavy.io) authenticating with apiKey (wys_…).
func NewClient(baseURL, apiKey string, o ClientOptions) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("weavy: invalid base URL %q", baseURL)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("weavy: base URL %q: scheme must be http or https", baseURL)
	case u.Host == "":
		return nil, fmt.Errorf("weavy: base URL %q: missing host", baseURL)
	case u.User != nil:
		// Not echoed: userinfo may hold a password.
		return nil, errors.New("weavy: base URL must not contain credentials")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("weavy: base URL %q: must not have a query or fragment", baseURL)
	}
	if apiKey == "" {
		return nil, errors.New("weavy: API key is empty")
	}
	if hasSpaceOrControl(apiKey) {
		return nil, errors.New("weavy: API key contains whitespace or control characters")
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("weavy: negative timeout %s", o.Timeout)
	}

	c := &Client{
		base:    strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"),
		auth:    "Bearer " + apiKey,
		apiKey:  apiKey,
		hc:      o.HTTPClient,
		timeout: cmp.Or(o.Timeout, defaultTimeout),
		now:     o.Now,
	}
	if c.hc == nil {
		c.hc = &http.Client{
			Transport: newTransport(),
			// A redirect would turn the POST into a GET, or carry the key elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.now == nil {
		c.now = time.Now
	}

	c.duration, err = metrics.Register(o.Registerer, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "weavy_request_duration_seconds",
		Help:    "Duration of calls to Weavy's API by operation.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"op"}))
	if err != nil {
		return nil, fmt.Errorf("weavy: registering metrics: %w", err)
	}
	c.errs, err = metrics.Register(o.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weavy_errors_total",
		Help: "Failed calls to Weavy's API by operation and HTTP status (or timeout, canceled, transport, bad_response).",
	}, []string{"op", "status"}))
	if err != nil {
		return nil, fmt.Errorf("weavy: registering metrics: %w", err)
	}
	return c, nil
}

// String names the Weavy environment only: fmt would print the API key held
// in the Client's unexported fields, which no Format of theirs can hide.
func (c *Client) String() string { return "weavy.Client{" + c.base + "}" }

// Format prints String for every verb (%v %+v %#v %s %q %x …).
func (c *Client) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   64, // one Weavy host takes all the traffic
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Token is a Weavy user access token and the moment Weavy stops accepting it.
// Printing it (fmt, zap) shows a fingerprint, never the token; AccessToken is
// to be written only into the answer to the user it was minted for.
type Token struct {
	AccessToken string
	ExpiresAt   time.Time
}

// ExpiresIn is the lifetime left at now, in whole seconds rounded down
// (the expires_in of an OAuth-style answer), never negative.
func (t Token) ExpiresIn(now time.Time) time.Duration {
	d := t.ExpiresAt.Sub(now).Truncate(time.Second)
	return max(d, 0)
}

// Fingerprint identifies the token in logs: secret.Fingerprint of it.
func (t Token) Fingerprint() string { return secret.Fingerprint(t.AccessToken) }

// String shows the fingerprint and expiry only.
func (t Token) String() string {
	return "weavy.Token{" + t.Fingerprint() + " expires " + t.ExpiresAt.UTC().Format(time.RFC3339) + "}"
}

// GoString is String, so that %#v does not print the token either.
func (t Token) GoString() string { return t.String() }

// Format makes every fmt verb (%v, %+v, %#v, %q …) print String().
func (t Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

// MarshalJSON makes encoding/json (and zap.Reflect) write String.
func (t Token) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// MarshalLogObject makes zap.Object / zap.Any log the fingerprint and expiry only.
func (t Token) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("fingerprint", t.Fingerprint())
	enc.AddTime("expires_at", t.ExpiresAt)
	return nil
}

// Profile is what UpsertUser sends: only properties Weavy documents for
// PUT /api/users/{uid}. Empty fields are left out (and so left unchanged).
type Profile struct {
	Name      string `json:"name,omitempty"`
	Email     string `json:"email,omitempty"`
	Picture   string `json:"picture,omitempty"`
	Directory string `json:"directory,omitempty"`
	// Directories is Weavy ≥ 32's list of every directory the user is in
	// (it replaces the whole list); nil leaves it unchanged.
	Directories []string `json:"directories,omitempty"`
}

// APIError is a non-2xx answer from Weavy. JSON bodies are read as RFC 7807
// problem details; for anything else (a proxy's HTML page) Title is the
// status text and Body the start of the page.
type APIError struct {
	Status int
	Title  string
	Detail string
	Type   string
	Body   string // ≤ 512 bytes, only for non-JSON bodies
	// RetryAfter is the answer's Retry-After (delay-seconds or an HTTP-date,
	// capped at a day); 0 when absent or unreadable.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := "weavy: HTTP " + strconv.Itoa(e.Status)
	if e.Title != "" {
		s += ": " + e.Title
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

const (
	opIssueToken = "issue_token"
	opUpsertUser = "upsert_user"
)

// IssueToken mints a new access token for the Weavy user uid (creating the user
// if missing) that Weavy accepts for ttl, rounded down to whole seconds. It
// never revokes the user's other tokens.
func (c *Client) IssueToken(ctx context.Context, uid string, ttl time.Duration) (Token, error) {
	if err := checkUID(uid); err != nil {
		return Token{}, err
	}
	secs := int64(ttl / time.Second)
	if secs < 1 {
		return Token{}, fmt.Errorf("weavy: token lifetime %s is under 1s", ttl)
	}
	// Exactly {"expires_in":N}: Weavy rejects any other property.
	body := strconv.AppendInt([]byte(`{"expires_in":`), secs, 10)
	body = append(body, '}')

	var sent time.Time
	status, data, err := c.do(ctx, opIssueToken, http.MethodPost, "/api/users/"+escapeSegment(uid)+"/tokens", body, &sent)
	if err != nil {
		return Token{}, err
	}
	var answer struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		c.countError(opIssueToken, "bad_response")
		return Token{}, fmt.Errorf("%w: HTTP %d with a body that is not a token answer", ErrBadResponse, status)
	}
	// The token is never quoted in an error: if it is an API key (wys_), it must
	// go nowhere.
	if !validAccessToken(answer.AccessToken) {
		c.countError(opIssueToken, "bad_response")
		return Token{}, fmt.Errorf("%w: access_token is not a wyu_ user token", ErrBadResponse)
	}
	switch {
	case answer.ExpiresIn == 0: // not sent: Weavy granted what was asked
		answer.ExpiresIn = secs
	case answer.ExpiresIn < 0:
		c.countError(opIssueToken, "bad_response")
		return Token{}, fmt.Errorf("%w: negative expires_in %d", ErrBadResponse, answer.ExpiresIn)
	}
	return Token{
		AccessToken: answer.AccessToken,
		// From the moment the request left: Weavy's clock started no earlier.
		ExpiresAt: sent.Add(time.Duration(answer.ExpiresIn) * time.Second),
	}, nil
}

// UpsertUser creates or updates the Weavy user uid with p.
func (c *Client) UpsertUser(ctx context.Context, uid string, p Profile) error {
	if err := checkUID(uid); err != nil {
		return err
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("weavy: encoding profile: %w", err)
	}
	_, _, err = c.do(ctx, opUpsertUser, http.MethodPut, "/api/users/"+escapeSegment(uid), body, nil)
	return err
}

// do sends one request and returns the status and body of a 2xx answer; any
// other answer is an *APIError. sent, if non-nil, receives the clock's time
// just before the request is sent.
func (c *Client) do(ctx context.Context, op, method, path string, body []byte, sent *time.Time) (int, []byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, ErrTimeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("weavy: %s: building request: %w", op, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")

	start := time.Now()
	if sent != nil {
		*sent = c.now()
	}
	resp, err := c.hc.Do(req)
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
		// Drain what is left (bounded) so the connection goes back to the pool.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
	}
	c.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, nil, c.transportError(ctx, op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		c.countError(op, strconv.Itoa(resp.StatusCode))
		return resp.StatusCode, nil, c.apiError(resp, data)
	}
	return resp.StatusCode, data, nil
}

func (c *Client) transportError(ctx context.Context, op string, err error) error {
	if errors.Is(context.Cause(ctx), ErrTimeout) {
		c.countError(op, "timeout")
		return fmt.Errorf("%w (%s, after %s)", ErrTimeout, op, c.timeout)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The caller gave up: its own cancellation or deadline.
		c.countError(op, "canceled")
		return fmt.Errorf("weavy: %s: %w", op, ctxErr)
	}
	c.countError(op, "transport")
	// A *url.Error names the URL (never the key, which travels in a header).
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, op, err)
}

func (c *Client) countError(op, status string) {
	c.errs.WithLabelValues(op, status).Inc()
}

func (c *Client) apiError(resp *http.Response, data []byte) *APIError {
	wait, _ := httpx.RetryAfter(resp.Header.Get("Retry-After"), c.now()) // 0 when absent
	e := &APIError{Status: resp.StatusCode, RetryAfter: min(wait, maxRetryAfter)}
	var problem struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Detail string `json:"detail"`
	}
	if isJSON(resp.Header.Get("Content-Type")) && json.Unmarshal(data, &problem) == nil {
		e.Type = httpx.ErrorText(problem.Type, c.apiKey)
		e.Title = httpx.ErrorText(problem.Title, c.apiKey)
		e.Detail = httpx.ErrorText(problem.Detail, c.apiKey)
	} else {
		e.Body = httpx.ErrorText(string(data), c.apiKey)
	}
	if e.Title == "" {
		e.Title = http.StatusText(resp.StatusCode)
	}
	return e
}

// maxRetryAfter caps what an APIError carries from a Retry-After header.
const maxRetryAfter = 24 * time.Hour

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func validAccessToken(s string) bool {
	return len(s) > len(tokenPrefix) && strings.HasPrefix(s, tokenPrefix) &&
		utf8.ValidString(s) && !hasSpaceOrControl(s)
}

// escapeSegment percent-encodes everything but RFC 3986's unreserved
// characters, so a uid like 712020:9b1c… or one with / stays one path segment
// whatever the server's router makes of ':' or '+'.
func escapeSegment(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
			ch == '-' || ch == '.' || ch == '_' || ch == '~' {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[ch>>4])
		b.WriteByte(hexDigits[ch&15])
	}
	return b.String()
}
