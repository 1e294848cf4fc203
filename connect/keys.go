package connect

import (
	"cmp"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Errors of KeySource.Key.
var (
	// ErrUnknownKid: every install key server answered that it has no key
	// of this kid (404 or 410), or the kid is no kid at all. A refusal (401).
	ErrUnknownKid = errors.New("connect: no install key server has this kid")
	// ErrKeysUnavailable: the key could not be had from a server (it could
	// not be reached, timed out, answered another error or something that is
	// no public key). Not a refusal: the install may be genuine, so Verify
	// passes it on and the server answers 503, which Atlassian retries, not
	// 401, which it reads as a refused install.
	ErrKeysUnavailable  = errors.New("connect: install key server unavailable")
	ErrKeyFetchLimited  = errors.New("connect: install key fetches are rate limited")
	ErrNotAtlassianHost = errors.New("connect: baseUrl is not an Atlassian site")

	// errNotServed is one server's "no such kid".
	errNotServed = errors.New("no key of this kid")
)

// keyServers maps a site's host suffix to the servers publishing the keys of
// its signed installs, first choice first. Only these fixed URLs are ever
// called: the body that names the site is not verified yet when the key is
// chosen, so nothing of it goes into a URL but the kid, checked and escaped.
// Sources: Atlassian's signed-install announcement (community 49046), its
// AGC guide, and atlassian-connect-express 11.5.3 (../shared/docs/CONNECT.md §2.3).
var keyServers = []struct {
	suffix  string
	servers []string
}{
	{".atlassian.net", []string{"https://connect-install-keys.atlassian.com", "https://asap-distribution.us-west-2.prod.atl-asap.net"}},
	{".jira.com", []string{"https://connect-install-keys.atlassian.com", "https://asap-distribution.us-west-2.prod.atl-asap.net"}},
	{".jira-dev.com", []string{"https://cs-migrations--cdn.us-east-1.staging.public.atl-paas.net", "https://asap-distribution.us-west-2.staging.atl-asap.net"}},
	{".atlassian-us-gov-mod.net", []string{"https://connect-install-keys.atlassian-us-gov-mod.com", "https://asap-distribution.us-west-2.prod.atl-auth-us-gov-mod.net"}},
	{".atlassian-stg-fedm.net", []string{"https://cs-migrations--fedrampcdn.us-east-1.staging.cdn.atlassian-us-gov-mod.com", "https://asap-distribution.us-west-2.staging.atl-auth-us-gov-mod.net"}},
}

// SiteHost checks that baseURL is an https Atlassian site (a host under one
// of the suffixes above) and returns its host.
func SiteHost(baseURL string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Port() != "" {
		return "", ErrNotAtlassianHost
	}
	host := strings.ToLower(u.Hostname())
	for _, ks := range keyServers {
		if name, ok := strings.CutSuffix(host, ks.suffix); ok && name != "" && !strings.HasSuffix(name, ".") {
			return host, nil
		}
	}
	return "", ErrNotAtlassianHost
}

// DefaultServers returns the install key servers for an Atlassian site host
// (nil when it is none).
func DefaultServers(host string) []string {
	for _, ks := range keyServers {
		if strings.HasSuffix(host, ks.suffix) {
			return ks.servers
		}
	}
	return nil
}

// kidPattern bounds what goes into <server>/<kid>: Atlassian's kids are
// uuid-like; a slash, a dot segment or a query could aim the fetch elsewhere.
var kidPattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$`)

// KeySourceOptions configures a KeySource.
type KeySourceOptions struct {
	// Override replaces every server of the table (CONNECT_KEYS_URL).
	Override   string
	HTTPClient *http.Client  // nil: a client that follows no redirect
	Timeout    time.Duration // per fetch; 0 means 5 s
	// Limit bounds the fetches of unknown kids, which anyone can cause by
	// sending a token; 0 means one a second with a burst of 10. For all
	// three, a negative value counts as 0.
	Limit rate.Limit
	Burst int
	Log   *zap.Logger
}

// KeySource fetches the PEM public keys of signed installs by kid and keeps
// them: Atlassian gives a rotated key a new kid, so a kid's key never changes.
type KeySource struct {
	override string
	hc       *http.Client
	timeout  time.Duration
	limiter  *rate.Limiter
	group    singleflight.Group
	log      *zap.Logger

	mu    sync.RWMutex
	cache map[string]*rsa.PublicKey // server + "/" + kid
}

// maxCachedKeys bounds the cache; only keys a real server published get in.
const maxCachedKeys = 256

// maxKeyBody bounds a key server's answer: a PEM RSA key is under 1 KiB.
const maxKeyBody = 16 << 10

// NewKeySource returns a KeySource.
func NewKeySource(o KeySourceOptions) *KeySource {
	k := &KeySource{
		override: strings.TrimRight(o.Override, "/"),
		hc:       o.HTTPClient,
		timeout:  cmp.Or(max(o.Timeout, 0), 5*time.Second),
		log:      o.Log,
		cache:    make(map[string]*rsa.PublicKey),
	}
	if k.hc == nil {
		k.hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if k.log == nil {
		k.log = zap.NewNop()
	}
	k.limiter = rate.NewLimiter(cmp.Or(max(o.Limit, 0), 1), cmp.Or(max(o.Burst, 0), 10))
	return k
}

// Key returns the public key kid of the installs of the Atlassian site host.
func (k *KeySource) Key(ctx context.Context, host, kid string) (*rsa.PublicKey, error) {
	if !kidPattern.MatchString(kid) {
		return nil, ErrUnknownKid
	}
	servers := []string{k.override}
	if k.override == "" {
		if servers = DefaultServers(host); servers == nil {
			return nil, ErrNotAtlassianHost
		}
	}
	var errs []error
	unavailable := false
	for _, srv := range servers {
		key, err := k.keyFrom(ctx, srv, kid)
		if err == nil {
			return key, nil
		}
		if errors.Is(err, ErrKeyFetchLimited) {
			return nil, err
		}
		if ctx.Err() != nil {
			// The caller left: whatever the fetch answered meanwhile (a 503
			// can win the race with ctx.Done), the install was not judged.
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, context.Cause(ctx))
		}
		unavailable = unavailable || !errors.Is(err, errNotServed)
		errs = append(errs, err)
	}
	if unavailable {
		// A server that failed may hold the kid: the install cannot be judged.
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, errors.Join(errs...))
	}
	return nil, fmt.Errorf("%w: %w", ErrUnknownKid, errors.Join(errs...))
}

func (k *KeySource) keyFrom(ctx context.Context, server, kid string) (*rsa.PublicKey, error) {
	id := server + "/" + url.PathEscape(kid)
	k.mu.RLock()
	key := k.cache[id]
	k.mu.RUnlock()
	if key != nil {
		return key, nil
	}
	// One fetch per kid however many installs wait for it; the first
	// caller's context bounds it (each caller still leaves on its own).
	ch := k.group.DoChan(id, func() (any, error) {
		if !k.limiter.Allow() {
			return nil, ErrKeyFetchLimited
		}
		key, err := k.fetch(context.WithoutCancel(ctx), id)
		if err != nil {
			k.log.Info("connect install key fetch failed", zap.String("url", id), zap.Error(err))
			return nil, err
		}
		k.mu.Lock()
		if len(k.cache) >= maxCachedKeys {
			clear(k.cache)
		}
		k.cache[id] = key
		k.mu.Unlock()
		return key, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*rsa.PublicKey), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (k *KeySource) fetch(ctx context.Context, target string) (*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/x-pem-file, text/plain")
	resp, err := k.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyBody+1))
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		return nil, fmt.Errorf("%w (HTTP %d)", errNotServed, resp.StatusCode)
	default:
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if len(b) > maxKeyBody {
		return nil, errors.New("answer too large for a public key")
	}
	return parsePublicKey(b)
}

// parsePublicKey reads a PEM RSA public key (PKIX or PKCS#1) of 2048 bits or more.
func parsePublicKey(b []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("answer is not a PEM public key")
	}
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok || rk.N.BitLen() < 2048 {
		return nil, errors.New("not an RSA public key of 2048 bits or more")
	}
	return rk, nil
}
