package connect

import (
	"cmp"
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Lifecycle events of Connect's signed install callbacks.
const (
	EventInstalled   = "installed"
	EventUninstalled = "uninstalled"
)

// VerifyError is a refused Connect callback; Reason is a snake_case word
// safe to show the caller.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	if e.Err == nil {
		return "connect: signed install refused: " + e.Reason
	}
	return "connect: signed install refused: " + e.Reason + ": " + e.Err.Error()
}

func (e *VerifyError) Unwrap() error { return e.Err }

func refuse(reason string, err error) error { return &VerifyError{Reason: reason, Err: err} }

// Lifecycle is a verified Connect lifecycle callback body. Fields the server
// does not use are not decoded, so they never cause a refusal; the
// sharedSecret is one of them: the server signs nothing with it, so it is
// neither kept nor held in memory.
type Lifecycle struct {
	Key            string `json:"key"`
	ClientKey      string `json:"clientKey"`
	BaseURL        string `json:"baseUrl"`
	DisplayURL     string `json:"displayUrl"`
	ProductType    string `json:"productType"`
	EventType      string `json:"eventType"`
	InstallationID string `json:"installationId"`
}

// KeyGetter returns an install key by site host and kid; *KeySource is one.
type KeyGetter interface {
	Key(ctx context.Context, host, kid string) (*rsa.PublicKey, error)
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	AppKey  string // CONNECT_APP_KEY: a body naming another app is refused
	BaseURL string // CONNECT_BASE_URL: the token's `aud`; its path is the qsh base
	Keys    KeyGetter
	Now     func() time.Time
	Leeway  time.Duration // on exp and iat; 0 means 30 s, a negative one is refused
}

// Verifier checks Connect's signed install callbacks as Atlassian's
// signed-install contract says: RS256 only, a kid whose PEM key comes from a
// fixed install key server, aud = the app's baseUrl, exp, the qsh of the
// request, and iss = the body's clientKey, for a body naming an Atlassian site.
type Verifier struct {
	appKey   string
	audience []string
	basePath string
	keys     KeyGetter
	now      func() time.Time
	leeway   time.Duration
}

// NewVerifier returns a Verifier.
func NewVerifier(c VerifierConfig) (*Verifier, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("connect: base URL %q is not an absolute URL", c.BaseURL)
	}
	if c.Keys == nil {
		return nil, errors.New("connect: no install key source")
	}
	if c.Leeway < 0 {
		return nil, fmt.Errorf("connect: negative leeway %s", c.Leeway)
	}
	base := strings.TrimRight(c.BaseURL, "/")
	v := &Verifier{
		appKey: c.AppKey,
		// ACE ignores a trailing slash on either side; so do we.
		audience: []string{base, base + "/"},
		basePath: strings.TrimRight(u.EscapedPath(), "/"),
		keys:     c.Keys,
		now:      c.Now,
		leeway:   cmp.Or(c.Leeway, 30*time.Second),
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Request is what Verify needs of an HTTP request.
type Request struct {
	Method        string
	EscapedPath   string
	RawQuery      string
	Authorization string
	Body          []byte
}

type installClaims struct {
	jwt.RegisteredClaims
	QSH string `json:"qsh"`
}

// Verify checks a signed callback for event (EventInstalled or
// EventUninstalled) and returns its body. Every refusal is a *VerifyError.
// When the install key cannot be had (the key server failed or could not be
// reached, fetches are rate limited, ctx ended during the fetch) the install
// is not judged: the error wraps ErrKeysUnavailable and is no *VerifyError.
func (v *Verifier) Verify(ctx context.Context, r Request, event string) (*Lifecycle, error) {
	var lc Lifecycle
	if err := json.Unmarshal(r.Body, &lc); err != nil {
		return nil, refuse("malformed_body", errors.New("the body is not a JSON object"))
	}
	if lc.ClientKey == "" || lc.BaseURL == "" {
		return nil, refuse("malformed_body", errors.New("clientKey and baseUrl are required"))
	}
	// Checked before anything is fetched: the key server is chosen by this host.
	host, err := SiteHost(lc.BaseURL)
	if err != nil {
		return nil, refuse("not_atlassian_site", err)
	}

	scheme, raw, ok := strings.Cut(strings.TrimSpace(r.Authorization), " ")
	if !ok || !strings.EqualFold(scheme, "JWT") || strings.TrimSpace(raw) == "" {
		return nil, refuse("missing_token", errors.New("no Authorization: JWT header"))
	}
	var claims installClaims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithAudience(v.audience...),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
	)
	tok, err := parser.ParseWithClaims(strings.TrimSpace(raw), &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, refuse("missing_kid", nil)
		}
		key, err := v.keys.Key(ctx, host, kid)
		if err != nil {
			return nil, err
		}
		return key, nil
	})
	if err != nil {
		return nil, classifyJWT(tok, err)
	}
	want := QueryStringHash(r.Method, r.EscapedPath, r.RawQuery, v.basePath)
	if subtle.ConstantTimeCompare([]byte(claims.QSH), []byte(want)) != 1 {
		return nil, refuse("bad_qsh", errors.New("qsh does not match the request"))
	}
	if claims.Issuer != lc.ClientKey {
		return nil, refuse("issuer_mismatch", errors.New("iss is not the body's clientKey"))
	}
	if lc.Key != "" && lc.Key != v.appKey {
		return nil, refuse("wrong_app", errors.New("the body names another app key"))
	}
	if lc.EventType != "" && lc.EventType != event {
		return nil, refuse("wrong_event", fmt.Errorf("a %q event sent to the %s callback", lc.EventType, event))
	}
	return &lc, nil
}

// classifyJWT names why golang-jwt refused a token.
func classifyJWT(tok *jwt.Token, err error) error {
	var ve *VerifyError
	switch {
	case errors.As(err, &ve):
		return ve
	case errors.Is(err, ErrKeysUnavailable):
		return err
	case errors.Is(err, ErrKeyFetchLimited), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	case tok != nil && tok.Header != nil && tok.Header["alg"] != jwt.SigningMethodRS256.Alg():
		return refuse("bad_algorithm", errors.New("only RS256 is accepted"))
	case errors.Is(err, ErrUnknownKid), errors.Is(err, ErrNotAtlassianHost):
		return refuse("unknown_kid", err)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse("malformed_token", err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refuse("bad_signature", err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse("bad_audience", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse("expired", err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refuse("missing_claim", err)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		return refuse("not_yet_valid", err)
	default:
		return refuse("invalid_token", err)
	}
}
