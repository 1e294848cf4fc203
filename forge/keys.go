package forge

import (
	"cmp"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"go.uber.org/zap"
)

var (
	errClosed         = errors.New("verifier closed")
	errRefetchLimited = errors.New("key set refetched too recently")
	errNoUsableKey    = errors.New("no usable RSA signing key in the set")
)

const (
	defaultHTTPTimeout        = 10 * time.Second
	defaultRefreshInterval    = 15 * time.Minute
	defaultMinRefetchInterval = 30 * time.Second
	defaultRetryInterval      = 2 * time.Second

	firstLoadTimeout = 3 * time.Second  // NewVerifier waits no longer than this
	fetchTimeout     = 10 * time.Second // bounds a fetch even if the client has no timeout
	maxJWKSBytes     = 1 << 20          // Forge's set is a few KiB
	minRSABits       = 2048
)

// publicKey is a verification key, prepared when its set loaded, and the
// `alg` its JWK names ("" = none).
type publicKey struct {
	key *rs256Key
	alg string
}

// keySet maps kid to key; it is never modified once published.
type keySet map[string]publicKey

// key finds the key the header names. It runs after the algorithm check and
// before the signature and claim checks.
func (v *Verifier) key(ctx context.Context, hdr joseHeader) (*rs256Key, error) {
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

// fetch downloads the set and keeps the RSA keys meant for signatures, each
// prepared for verification here, once, not on every Verify.
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
		keys[kid] = publicKey{key: prepareRS256(&pub), alg: alg}
	}
	if len(keys) == 0 {
		return nil, errNoUsableKey
	}
	return keys, nil
}
