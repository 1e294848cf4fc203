package forge

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/forge-remote/forge-remote/internal/jsonread"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/internal/safeurl"
)

// ErrKeysUnavailable is returned by Verify while no key set was ever loaded:
// the token cannot be judged yet (503, not 401).
var ErrKeysUnavailable = errors.New("forge: signing keys not loaded yet")

const (
	signingAlg    = "RS256"         // the only algorithm Forge signs FITs with
	defaultLeeway = 5 * time.Second // clock skew allowed on exp, nbf, iat
	maxTokenBytes = 64 << 10        // FITs with big contexts are a few KiB
)

// VerifyError is a rejected FIT (401). Reason is a short snake_case label,
// also used as a metric label; the message never contains the token.
type VerifyError struct {
	Reason string
	Err    error
}

func (e *VerifyError) Error() string {
	if e.Err == nil {
		return "forge: invocation token rejected: " + e.Reason
	}
	return "forge: invocation token rejected: " + e.Reason + ": " + e.Err.Error()
}

func (e *VerifyError) Unwrap() error { return e.Err }

// VerifierConfig configures NewVerifier; zero values take the defaults noted.
type VerifierConfig struct {
	AppID              string                // already-normalised ARI (NormalizeAppID); the only accepted aud
	JWKSURL            string                // where Forge publishes its keys: https, or http on loopback
	HTTPClient         *http.Client          // nil: a client with a 10 s timeout
	Logger             *zap.Logger           // nil: zap.NewNop()
	Registerer         prometheus.Registerer // nil: no metrics
	Now                func() time.Time      // nil: time.Now; the clock claims are checked against
	Leeway             time.Duration         // clock skew allowed on exp, nbf, iat; 0: 5 s
	RefreshInterval    time.Duration         // periodic refetch of the key set; 0: 15 min
	MinRefetchInterval time.Duration         // at most one unknown-kid refetch per interval; 0: 30 s
	RetryInterval      time.Duration         // retry while no key set was ever loaded; 0: 2 s
}

// Verifier verifies Forge Invocation Tokens against the keys published at
// VerifierConfig.JWKSURL. Verify is safe for concurrent use and, unless a
// token names an unknown key, does no I/O and takes no lock.
type Verifier struct {
	appID        string
	jwksURL      string
	client       *http.Client
	ownTransport *http.Transport // nil when the client is the caller's
	log          *zap.Logger
	metrics      *verifierMetrics   // nil: none
	validator    *jwt.Validator     // the claim checks, golang-jwt's
	intern       *jsonread.Interner // shares the strings FITs repeat; fed only claims whose signature holds

	keys atomic.Pointer[keySet] // nil until the first successful load

	flight  singleflight.Group // one fetch at a time, shared by all who need it
	limiter *rate.Limiter      // paces unknown-kid refetches

	refreshEvery time.Duration
	retryEvery   time.Duration

	ctx    context.Context // ends with Close: stops the refresh loop and fetches
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool          // no fetch may start once set
	lastErr   error         // of the latest fetch; nil after a success
	wait      time.Duration // from the latest fetch to the refresh loop's next one
	nextFetch time.Time     // when the refresh loop fetches next, as the latest fetch set it
	now       func() time.Time
}

// NewVerifier checks cfg, tries a first load of the key set (bounded by ctx
// and about 3 s) and starts refreshing it in the background. It fails only on
// a bad cfg: while the JWKS endpoint fails, loading is retried every
// RetryInterval, Ready says why and Verify returns ErrKeysUnavailable.
// ctx bounds that first load only; the background work lasts until Close.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if id, err := NormalizeAppID(cfg.AppID); err != nil || id != cfg.AppID {
		return nil, fmt.Errorf("forge: VerifierConfig.AppID %q is not a normalised app ARI", cfg.AppID)
	}
	if u, err := url.Parse(cfg.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !safeurl.OK(cfg.JWKSURL) {
		return nil, fmt.Errorf("forge: VerifierConfig.JWKSURL %q is not an https URL (http only on loopback)", cfg.JWKSURL)
	}
	for name, d := range map[string]time.Duration{
		"Leeway": cfg.Leeway, "RefreshInterval": cfg.RefreshInterval,
		"MinRefetchInterval": cfg.MinRefetchInterval, "RetryInterval": cfg.RetryInterval,
	} {
		if d < 0 {
			return nil, fmt.Errorf("forge: VerifierConfig.%s is negative", name)
		}
	}
	client, ownTransport := cfg.HTTPClient, (*http.Transport)(nil)
	if client == nil {
		// A transport of our own, so Close can drop its idle connections
		// without touching anyone else's.
		ownTransport = &http.Transport{Proxy: http.ProxyFromEnvironment}
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			ownTransport = t.Clone()
		}
		client = &http.Client{Timeout: defaultHTTPTimeout, Transport: ownTransport}
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	var metrics *verifierMetrics
	if cfg.Registerer != nil {
		var err error
		if metrics, err = newVerifierMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}

	v := &Verifier{
		appID:   cfg.AppID,
		jwksURL: cfg.JWKSURL,
		// The jwx defaults add redirect hardening (no https -> http).
		client:       jwk.WrapHTTPClientDefaults(client),
		ownTransport: ownTransport,
		log:          log,
		metrics:      metrics,
		validator: jwt.NewValidator(
			jwt.WithIssuer(FITIssuer),
			jwt.WithAudience(cfg.AppID),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(cmp.Or(cfg.Leeway, defaultLeeway)),
			jwt.WithTimeFunc(now),
		),
		intern:       jsonread.NewInterner(),
		limiter:      rate.NewLimiter(rate.Every(cmp.Or(cfg.MinRefetchInterval, defaultMinRefetchInterval)), 1),
		refreshEvery: cmp.Or(cfg.RefreshInterval, defaultRefreshInterval),
		retryEvery:   cmp.Or(cfg.RetryInterval, defaultRetryInterval),
		now:          now,
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())

	first, cancel := context.WithTimeout(ctx, firstLoadTimeout)
	_ = v.load(first) // a failure is recorded for Ready and retried below
	cancel()

	v.wg.Go(v.refreshLoop)
	return v, nil
}

// Verify checks a raw FIT (without "Bearer ") and returns its claims. A
// rejected token gives a *VerifyError; ErrKeysUnavailable means no key set was
// ever loaded; a ctx error means the caller gave up during a key refetch.
func (v *Verifier) Verify(ctx context.Context, token string) (*Invocation, error) {
	inv, err := v.verify(ctx, token)
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			v.rejected(ctx, ve)
		}
		return nil, err
	}
	return inv, nil
}

// rejected counts and logs a rejected FIT.
func (v *Verifier) rejected(ctx context.Context, ve *VerifyError) {
	v.metrics.rejected(ve.Reason)
	if ce := v.log.Check(zap.DebugLevel, "invocation token rejected"); ce != nil {
		ce.Write(append(logctx.Fields(ctx), zap.String("reason", ve.Reason))...)
	}
}

// verify checks a FIT (a JWS in compact form) reading nothing it has not
// authenticated but the header: the three segments decode, the header names
// RS256 and a key we hold, the signature verifies, and only then are the
// claims decoded and checked (golang-jwt's Validator: iss, aud, exp required,
// nbf, iat, all with the leeway). This is golang-jwt's ParseWithClaims without
// its costs: it decoded the header into a map and the claims by reflection
// before any check, a quarter of the CPU of a whole request.
func (v *Verifier) verify(ctx context.Context, token string) (*Invocation, error) {
	if len(token) > maxTokenBytes {
		return nil, malformed(errors.New("token too large"))
	}
	h, rest, ok1 := strings.Cut(token, ".")
	c, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(s, '.') >= 0 {
		return nil, malformed(errors.New("token contains an invalid number of segments"))
	}

	scratch := getScratch(2 * len(token))
	defer putScratch(scratch)
	tok := append((*scratch)[:0], token...) // cap: room for the decoded segments too
	signed := tok[:len(h)+1+len(c)]         // the signing input
	hdrJSON, buf, err := appendDecoded(tok, tok[:len(h)])
	if err != nil {
		return nil, malformed(fmt.Errorf("could not base64 decode header: %w", err))
	}
	claimsJSON, buf, err := appendDecoded(buf, tok[len(h)+1:len(signed)])
	if err != nil {
		return nil, malformed(fmt.Errorf("could not base64 decode claims: %w", err))
	}
	sig, _, err := appendDecoded(buf, tok[len(signed)+1:])
	if err != nil {
		return nil, malformed(fmt.Errorf("could not base64 decode signature: %w", err))
	}
	var hdr joseHeader
	if err := decodeHeader(hdrJSON, &hdr); err != nil {
		return nil, malformed(fmt.Errorf("could not JSON decode header: %w", err))
	}

	if hdr.alg != signingAlg {
		return nil, &VerifyError{Reason: "bad_alg", Err: fmt.Errorf("%w: the header's alg is not %s", jwt.ErrTokenUnverifiable, signingAlg)}
	}
	key, err := v.key(ctx, hdr)
	if err != nil {
		return nil, err // already ours: a *VerifyError, ErrKeysUnavailable or the caller's ctx error
	}
	sum := sha256.Sum256(signed)
	if err := key.verify(&sum, sig); err != nil {
		return nil, &VerifyError{Reason: "bad_signature", Err: fmt.Errorf("%w: %w", jwt.ErrTokenSignatureInvalid, err)}
	}

	inv := new(Invocation)
	if err := decodeClaims(claimsJSON, inv, v.intern); err != nil {
		return nil, malformed(fmt.Errorf("could not JSON decode claims: %w", err))
	}
	if err := v.validator.Validate(inv); err != nil {
		return nil, v.claimsError(inv, err)
	}
	if inv.App.InstallationID == "" {
		return nil, &VerifyError{Reason: "missing_claims", Err: errors.New("app.installationId is empty")}
	}
	// The app token this FIT may carry is later sent to apiBaseUrl (Client,
	// and /internal/app-token hands it out with it): never over cleartext
	// but to this machine. Checked here, once, where every FIT passes.
	if inv.App.APIBaseURL != "" && !safeurl.OK(inv.App.APIBaseURL) {
		return nil, &VerifyError{Reason: "insecure_api_base_url", Err: ErrInsecureAPIBaseURL}
	}
	return inv, nil
}

// ErrInsecureAPIBaseURL is the cause of a FIT refused (reason
// insecure_api_base_url) because its app.apiBaseUrl is not https, or http on
// loopback.
var ErrInsecureAPIBaseURL = errors.New("app.apiBaseUrl is not https (http only on loopback)")

func malformed(err error) error {
	return &VerifyError{Reason: "malformed", Err: fmt.Errorf("%w: %w", jwt.ErrTokenMalformed, err)}
}

// appendDecoded base64url-decodes seg (unpadded, as golang-jwt's parser
// takes it) after the end of buf: it returns the decoded bytes and buf grown
// by them.
func appendDecoded(buf, seg []byte) (out, grown []byte, err error) {
	at := len(buf)
	buf = slices.Grow(buf, base64.RawURLEncoding.DecodedLen(len(seg)))
	n, err := base64.RawURLEncoding.Decode(buf[at:cap(buf)], seg)
	if err != nil {
		return nil, buf, err
	}
	return buf[at : at+n], buf[:at+n], nil
}

// Scratch buffers for verify: the token and its decoded segments.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func getScratch(n int) *[]byte {
	b := scratchPool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	return b
}

func putScratch(b *[]byte) {
	if cap(*b) > 64<<10 { // a rare big token: not worth keeping
		return
	}
	scratchPool.Put(b)
}

// claimsError names what golang-jwt's Validator refused. The signature is
// good here; the claims themselves say which check failed, since golang-jwt
// joins every failure and says "required claim missing" without which.
func (v *Verifier) claimsError(inv *Invocation, err error) error {
	reason := "invalid"
	switch {
	case inv.Issuer != FITIssuer:
		reason = "bad_issuer"
	case !slices.Contains(inv.Audience, v.appID):
		reason = "bad_audience"
	case inv.ExpiresAt == nil:
		reason = "missing_exp"
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		reason = "not_yet_valid"
	}
	return &VerifyError{Reason: reason, Err: fmt.Errorf("%w: %w", jwt.ErrTokenInvalidClaims, err)}
}
