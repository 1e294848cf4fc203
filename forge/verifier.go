package forge

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/forge-remote/forge-remote/internal/jsonread"
	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/internal/metrics"
)

// ErrKeysUnavailable is returned by Verify while no key set was ever loaded:
// the token cannot be judged yet (503, not 401).
var ErrKeysUnavailable = errors.New("forge: signing keys not loaded yet")

var (
	errClosed         = errors.New("verifier closed")
	errRefetchLimited = errors.New("key set refetched too recently")
	errNoUsableKey    = errors.New("no usable RSA signing key in the set")
)

const (
	signingAlg = "RS256" // the only algorithm Forge signs FITs with

	defaultHTTPTimeout        = 10 * time.Second
	defaultLeeway             = 5 * time.Second
	defaultRefreshInterval    = 15 * time.Minute
	defaultMinRefetchInterval = 30 * time.Second
	defaultRetryInterval      = 2 * time.Second

	firstLoadTimeout = 3 * time.Second  // NewVerifier waits no longer than this
	fetchTimeout     = 10 * time.Second // bounds a fetch even if the client has no timeout
	maxJWKSBytes     = 1 << 20          // Forge's set is a few KiB
	maxTokenBytes    = 64 << 10         // FITs with big contexts are a few KiB
	minRSABits       = 2048
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
	JWKSURL            string                // where Forge publishes its keys
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

// publicKey is a verification key and the `alg` its JWK names ("" = none).
type publicKey struct {
	key *rsa.PublicKey
	alg string
}

// keySet maps kid to key; it is never modified once published.
type keySet map[string]publicKey

// NewVerifier checks cfg, tries a first load of the key set (bounded by ctx
// and about 3 s) and starts refreshing it in the background. It fails only on
// a bad cfg: while the JWKS endpoint fails, loading is retried every
// RetryInterval, Ready says why and Verify returns ErrKeysUnavailable.
// ctx bounds that first load only; the background work lasts until Close.
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if id, err := NormalizeAppID(cfg.AppID); err != nil || id != cfg.AppID {
		return nil, fmt.Errorf("forge: VerifierConfig.AppID %q is not a normalised app ARI", cfg.AppID)
	}
	if u, err := url.Parse(cfg.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("forge: VerifierConfig.JWKSURL %q is not an http(s) URL", cfg.JWKSURL)
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
			jwt.WithIssuer(Issuer),
			jwt.WithAudience(cfg.AppID),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(orDefault(cfg.Leeway, defaultLeeway)),
			jwt.WithTimeFunc(now),
		),
		intern:       jsonread.NewInterner(),
		limiter:      rate.NewLimiter(rate.Every(orDefault(cfg.MinRefetchInterval, defaultMinRefetchInterval)), 1),
		refreshEvery: orDefault(cfg.RefreshInterval, defaultRefreshInterval),
		retryEvery:   orDefault(cfg.RetryInterval, defaultRetryInterval),
		now:          now,
	}
	v.ctx, v.cancel = context.WithCancel(context.Background())

	first, cancel := context.WithTimeout(ctx, firstLoadTimeout)
	_ = v.load(first) // a failure is recorded for Ready and retried below
	cancel()

	v.wg.Go(v.refreshLoop)
	return v, nil
}

// orDefault is d, or def when d is zero.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Verify checks a raw FIT (without "Bearer ") and returns its claims. A
// rejected token gives a *VerifyError; ErrKeysUnavailable means no key set was
// ever loaded; a ctx error means the caller gave up during a key refetch.
func (v *Verifier) Verify(ctx context.Context, token string) (*Invocation, error) {
	inv, err := v.verify(ctx, token)
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			v.metrics.rejected(ve.Reason)
			if ce := v.log.Check(zap.DebugLevel, "invocation token rejected"); ce != nil {
				ce.Write(append(logctx.Fields(ctx), zap.String("reason", ve.Reason))...)
			}
		}
		return nil, err
	}
	return inv, nil
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
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
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
	return inv, nil
}

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

// key finds the key the header names. It runs after the algorithm check and
// before the signature and claim checks.
func (v *Verifier) key(ctx context.Context, hdr joseHeader) (*rsa.PublicKey, error) {
	kid := hdr.kid
	if kid == "" {
		return nil, &VerifyError{Reason: "unknown_kid", Err: errors.New("no kid in the header")}
	}
	keys := v.keys.Load()
	if keys == nil {
		return nil, ErrKeysUnavailable
	}
	k, ok := (*keys)[kid]
	if !ok {
		// Forge may have rotated its keys: refetch (shared and rate-limited),
		// then look again whatever that gave, since another caller's refetch
		// may have brought the key meanwhile.
		err := v.refresh(ctx, true)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("forge: waiting for the key set: %w", ctx.Err())
		}
		if k, ok = (*v.keys.Load())[kid]; !ok {
			if err != nil {
				return nil, &VerifyError{Reason: "unknown_kid", Err: fmt.Errorf("kid not in the key set (refetch: %w)", err)}
			}
			return nil, &VerifyError{Reason: "unknown_kid", Err: errors.New("kid not in the key set")}
		}
	}
	// A key published for another algorithm must not verify this one.
	if k.alg != "" && k.alg != hdr.alg {
		return nil, &VerifyError{Reason: "key_alg_mismatch", Err: fmt.Errorf("the key is published for %s", k.alg)}
	}
	return k.key, nil
}

// claimsError names what golang-jwt's Validator refused. The signature is
// good here; the claims themselves say which check failed, since golang-jwt
// joins every failure and says "required claim missing" without which.
func (v *Verifier) claimsError(inv *Invocation, err error) error {
	reason := "invalid"
	switch {
	case inv.Issuer != Issuer:
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

// KeysError is Ready's answer while no key set was ever loaded: why the
// latest fetch failed and when the next is due. Its message is meant for
// /readyz: it says it once, without the wrapping of the packages below.
type KeysError struct {
	URL     string
	Problem string    // the latest fetch's failure, described; "" before any
	Retry   time.Time // when the next fetch is due
}

func (e *KeysError) Error() string {
	msg := "no keys yet"
	if e.Problem != "" {
		msg += ": fetching " + e.URL + " failed: " + e.Problem
	}
	if !e.Retry.IsZero() {
		msg += "; retrying at " + e.Retry.UTC().Format(time.RFC3339)
	}
	return msg
}

// Is makes errors.Is(err, ErrKeysUnavailable) true.
func (e *KeysError) Is(target error) bool { return target == ErrKeysUnavailable }

// Ready is nil once a key set is loaded, else a *KeysError (errors.Is
// ErrKeysUnavailable).
func (v *Verifier) Ready() error {
	if v.keys.Load() != nil {
		return nil
	}
	v.mu.Lock()
	err, next := v.lastErr, v.nextFetch
	v.mu.Unlock()
	ke := &KeysError{URL: v.jwksURL, Retry: next}
	if err != nil {
		ke.Problem = fetchProblem(err)
	}
	return ke
}

// fetchProblem says why a key set fetch failed in a few words: the cause at
// the bottom, not each layer's prefix (jwk.Fetch, Get "url", …).
func fetchProblem(err error) string {
	var dns *net.DNSError
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &dns):
		return "lookup " + dns.Name + ": " + dns.Err
	case errors.As(err, &op):
		return op.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	msg := err.Error()
	for {
		// jwx's "jwk.Fetch: …", "jwk.Parse: …" layers.
		i := strings.Index(msg, ": ")
		if i < 0 || !strings.HasPrefix(msg, "jwk.") {
			return msg
		}
		msg = msg[i+2:]
	}
}

// Close stops the background refresh and waits for any fetch in flight. Keys
// already loaded keep verifying; nothing is fetched any more.
func (v *Verifier) Close() {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	v.cancel()
	v.wg.Wait()
	if v.ownTransport != nil {
		v.ownTransport.CloseIdleConnections()
	}
}

// refreshLoop refetches the key set every refreshEvery or, while none was
// ever loaded, after retryEvery doubling up to maxRetryInterval so a Forge
// outage at start is retried promptly without a warning every 2 s for hours.
func (v *Verifier) refreshLoop() {
	v.mu.Lock()
	wait := v.wait // set by NewVerifier's first load
	v.mu.Unlock()
	t := time.NewTimer(cmp.Or(wait, v.retryEvery))
	defer t.Stop()
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-t.C:
		}
		_ = v.refresh(v.ctx, false) // recorded by load, with the wait to the next
		v.mu.Lock()
		wait = v.wait
		v.mu.Unlock()
		t.Reset(cmp.Or(wait, v.retryEvery))
	}
}

// maxRetryInterval caps the backoff while no key set was ever loaded.
const maxRetryInterval = 30 * time.Second

// scheduleNext sets, after a fetch, how long the refresh loop waits before
// the next: refreshEvery once keys are held, else a backoff from retryEvery
// doubling up to maxRetryInterval. v.mu is held.
func (v *Verifier) scheduleNext(failed bool) time.Duration {
	switch {
	case v.keys.Load() != nil:
		v.wait = v.refreshEvery
	case !failed || v.wait == 0:
		v.wait = v.retryEvery
	default:
		v.wait = min(2*v.wait, max(maxRetryInterval, v.retryEvery))
	}
	v.nextFetch = v.now().Add(v.wait)
	return v.wait
}

// refresh fetches the key set, or joins the fetch already in flight. With
// limited (an unknown kid) the fetch happens only if the rate limit allows.
// The caller stops waiting when ctx ends; the fetch goes on for the others.
func (v *Verifier) refresh(ctx context.Context, limited bool) error {
	ch := v.flight.DoChan("jwks", func() (any, error) {
		if limited && !v.limiter.Allow() {
			return nil, errRefetchLimited
		}
		v.mu.Lock()
		if v.closed {
			v.mu.Unlock()
			return nil, errClosed
		}
		v.wg.Add(1) // cannot race Close's Wait: closed is still false
		v.mu.Unlock()
		defer v.wg.Done()

		fctx, cancel := context.WithTimeout(v.ctx, fetchTimeout)
		defer cancel()
		return nil, v.load(fctx)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// load fetches and parses the key set and publishes it; on failure the set
// held so far stays.
func (v *Verifier) load(ctx context.Context) error {
	keys, err := v.fetch(ctx)
	if err != nil {
		v.mu.Lock()
		v.lastErr = err
		held := v.keys.Load() != nil
		wait := v.scheduleNext(true)
		v.mu.Unlock()
		v.metrics.fetched("error", 0)
		if v.ctx.Err() == nil { // a fetch cut short by Close is no news
			if held {
				v.log.Warn("jwks fetch failed; keeping the keys held", zap.String("url", v.jwksURL),
					zap.Error(err), zap.Duration("retry_in", wait))
			} else {
				v.log.Warn("jwks fetch failed; no keys yet", zap.String("url", v.jwksURL),
					zap.Error(err), zap.Duration("retry_in", wait))
			}
		}
		return err
	}
	v.keys.Store(&keys)
	v.mu.Lock()
	v.lastErr = nil
	v.scheduleNext(false)
	v.mu.Unlock()
	v.metrics.fetched("ok", len(keys))
	v.log.Debug("jwks loaded", zap.String("url", v.jwksURL), zap.Int("keys", len(keys)))
	return nil
}

// fetch downloads the set and keeps the RSA keys meant for signatures.
func (v *Verifier) fetch(ctx context.Context) (keySet, error) {
	set, err := jwk.Fetch(ctx, v.jwksURL, jwk.WithHTTPClient(v.client), jwk.WithMaxFetchBodySize(maxJWKSBytes))
	if err != nil {
		return nil, err
	}
	keys := make(keySet, set.Len())
	for i := range set.Len() {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		if kid == "" || k.KeyType() != jwa.RSA() {
			continue
		}
		if use, ok := k.KeyUsage(); ok && use != "sig" {
			continue
		}
		if _, dup := keys[kid]; dup {
			continue // the first one wins, as in a lookup by kid
		}
		pk, err := k.PublicKey() // a JWK carrying private parts still verifies
		if err != nil {
			continue
		}
		var pub rsa.PublicKey
		if err := jwk.Export(pk, &pub); err != nil || pub.N.BitLen() < minRSABits {
			continue
		}
		var alg string
		if a, ok := k.Algorithm(); ok {
			alg = a.String()
		}
		keys[kid] = publicKey{key: &pub, alg: alg}
	}
	if len(keys) == 0 {
		return nil, errNoUsableKey
	}
	return keys, nil
}

// verifierMetrics are the Verifier's Prometheus metrics; a nil one records
// nothing.
type verifierMetrics struct {
	rejections *prometheus.CounterVec
	fetches    *prometheus.CounterVec
	keys       prometheus.Gauge
}

func newVerifierMetrics(r prometheus.Registerer) (*verifierMetrics, error) {
	m := &verifierMetrics{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forge_fit_rejections_total",
			Help: "Forge invocation tokens rejected, by reason.",
		}, []string{"reason"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forge_jwks_fetches_total",
			Help: "Fetches of Forge's signing key set, by result (ok, error).",
		}, []string{"result"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "forge_jwks_keys",
			Help: "Signing keys in the key set held.",
		}),
	}
	var err error
	if m.rejections, err = metrics.Register(r, m.rejections); err != nil {
		return nil, err
	}
	if m.fetches, err = metrics.Register(r, m.fetches); err != nil {
		return nil, err
	}
	if m.keys, err = metrics.Register(r, m.keys); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *verifierMetrics) rejected(reason string) {
	if m != nil {
		m.rejections.WithLabelValues(reason).Inc()
	}
}

func (m *verifierMetrics) fetched(result string, keys int) {
	if m == nil {
		return
	}
	m.fetches.WithLabelValues(result).Inc()
	if result == "ok" {
		m.keys.Set(float64(keys))
	}
}
