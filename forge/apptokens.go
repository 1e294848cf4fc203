package forge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/forge-remote/forge-remote/internal/logctx"
	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/forge-remote/forge-remote/store"
)

// Errors of AppTokens.Get. A *StaleError matches ErrAppTokenStale with errors.Is.
var (
	ErrAppTokenStale       = errors.New("forge: no app token with enough life left")
	ErrUnknownInstallation = errors.New("forge: unknown installation")
)

// StaleError says when the last app token held for an installation expires
// (or expired): background work cannot call Confluence until the next
// inbound call from Forge brings a fresh token.
type StaleError struct {
	InstallationID string
	Exp            time.Time
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("forge: app token for %s expires at %s: no token with enough life left",
		e.InstallationID, e.Exp.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrAppTokenStale) true.
func (e *StaleError) Is(target error) bool { return target == ErrAppTokenStale }

// assumedLifetime is used when a token's exp cannot be read: Forge documents at
// least 2 h of life when a token is delivered.
const assumedLifetime = 2 * time.Hour

// maxLifetime is the longest life Forge gives an app system token.
const maxLifetime = 4 * time.Hour

// DefaultMinLife is how much life an app token must have left to be handed out.
const DefaultMinLife = 5 * time.Minute

// keepAfterExpiry keeps an expired token's record for a while so that operators
// and callers can still be told when it expired.
const keepAfterExpiry = 7 * 24 * time.Hour

const appTokenPrefix = "forge/apptoken/"

// AppToken is one installation's app system token as captured from Forge.
type AppToken struct {
	InstallationID string    `json:"installationId"`
	APIBaseURL     string    `json:"apiBaseUrl"`
	CloudID        string    `json:"cloudId"`
	Token          string    `json:"token"`
	Exp            time.Time `json:"exp"`
	UpdatedAt      time.Time `json:"updatedAt"`
	// FromUser: delivered with a user's FIT (a UI call) rather than a
	// trigger's. A user can replay their FIT with headers of their own, so
	// such a token only fills a gap: it never replaces a fresh token, and a
	// trigger's token always replaces it.
	FromUser bool `json:"fromUser,omitempty"`
}

// String shows the installation, the token's fingerprint and its expiry,
// never the token itself.
func (t AppToken) String() string {
	return fmt.Sprintf("AppToken{%s %s exp=%s}", t.InstallationID, secret.Fingerprint(t.Token), t.Exp.UTC().Format(time.RFC3339))
}

// GoString is String, so that %#v does not print the token either.
func (t AppToken) GoString() string { return t.String() }

// Format prints String for every verb (%v %+v %#v %s %q %x …).
func (t AppToken) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

// MarshalJSON writes String: encoding/json, and zap.Any of anything holding an
// AppToken, show no token. (Records are stored in their own binary form.)
func (t AppToken) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// LogValue makes log/slog log String.
func (t AppToken) LogValue() slog.Value { return slog.StringValue(t.String()) }

// MarshalLogObject makes zap.Any and zap.Object log the token's fingerprint,
// never the token.
func (t AppToken) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("installation_id", t.InstallationID)
	enc.AddString("api_base_url", t.APIBaseURL)
	enc.AddString("fingerprint", secret.Fingerprint(t.Token))
	enc.AddTime("exp", t.Exp)
	enc.AddBool("from_user", t.FromUser)
	return nil
}

// AppTokensOptions configures AppTokens.
type AppTokensOptions struct {
	Now        func() time.Time
	Logger     *zap.Logger
	Registerer prometheus.Registerer
	MinLife    time.Duration // 0 → DefaultMinLife
}

// AppTokenStore is what AppTokens keeps its records in: the part of a
// key-value store it uses. Any store.KV is one (store/memory, store/bolt,
// store/redis, sealed or not); a remote with a store of its own implements
// these five methods with the contract store.KV documents.
type AppTokenStore interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Update(ctx context.Context, key string, fn store.UpdateFunc) error
	Delete(ctx context.Context, key string) error
	Scan(ctx context.Context, prefix string, fn func(key string, value []byte) error) error
}

var _ AppTokenStore = store.KV(nil)

// AppTokens captures the app system token Forge sends with each call and hands
// it out to background work while it has enough life left.
type AppTokens struct {
	kv      AppTokenStore
	now     func() time.Time
	log     *zap.Logger
	minLife time.Duration

	// held remembers, per installation, the newest token seen by this process so
	// that the same token arriving again costs neither a decode nor a store write.
	mu   sync.RWMutex
	held map[string]heldToken
	seed maphash.Seed

	captured prometheus.Counter
}

// heldToken is what this process remembers of the newest token per
// installation: a hash to recognise it again, not the token itself (10,000
// installations would otherwise keep 10 MB of secrets in memory).
type heldToken struct {
	sum      uint64
	exp      time.Time
	fromUser bool
}

// NewAppTokens returns AppTokens over kv.
func NewAppTokens(kv AppTokenStore, o AppTokensOptions) *AppTokens {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	a := &AppTokens{
		kv: kv, now: o.Now, log: o.Logger, minLife: cmp.Or(o.MinLife, DefaultMinLife),
		held: make(map[string]heldToken),
		seed: maphash.MakeSeed(),
		captured: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "forge_app_tokens_captured_total",
			Help: "App system tokens stored because they expire later than the one held.",
		}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(a.captured)
	}
	return a
}

// Capture records token (the x-forge-oauth-system header of a verified call)
// for the invocation's installation when it expires later than the one held.
// An empty token is a no-op.
func (a *AppTokens) Capture(ctx context.Context, inv *Invocation, token string) error {
	inst := inv.InstallationID()
	if token == "" || inst == "" {
		return nil
	}
	sum := maphash.String(a.seed, token)
	a.mu.RLock()
	h, held := a.held[inst]
	a.mu.RUnlock()
	if held && h.sum == sum {
		return nil // the common case: Forge reuses a token until it rotates it
	}
	fromUser := !inv.FromTrigger()
	now := a.now()
	if held && fromUser && h.exp.Sub(now) >= a.minLife {
		return nil // a user's call never replaces a fresh token
	}
	exp, ok := TokenExpiry(token)
	if !ok {
		exp = now.Add(assumedLifetime)
	}
	// Forge's tokens live at most 4 h. A claim of more is either a change on
	// Forge's side or a forged header: either way, never let one token block
	// newer ones for longer than a genuine token could.
	if limit := now.Add(maxLifetime); exp.After(limit) {
		logctx.Logger(ctx, a.log).Warn("app token claims more than 4 h of life; its expiry is capped",
			zap.String("installation_id", inst), zap.Time("claimed_exp", exp))
		exp = limit
	}
	if held && !exp.After(h.exp) && !(h.fromUser && !fromUser) {
		return nil
	}
	rec := AppToken{
		InstallationID: inst,
		APIBaseURL:     inv.APIBaseURL(),
		CloudID:        inv.CloudID(),
		Token:          token,
		Exp:            exp,
		UpdatedAt:      now,
		FromUser:       fromUser,
	}
	stored := false
	err := a.kv.Update(ctx, appTokenPrefix+inst, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		stored = false
		if exists {
			prev, err := decodeAppToken(inst, old)
			if err == nil && !replaces(prev, rec, a.minLife, now) {
				return nil, 0, store.Keep
			}
		}
		stored = true
		return encodeAppToken(rec), exp.Sub(now) + keepAfterExpiry, nil
	})
	if err != nil {
		return fmt.Errorf("forge: capture app token: %w", err)
	}
	a.remember(inst, heldToken{sum: sum, exp: exp, fromUser: fromUser})
	if stored {
		a.captured.Inc()
		logctx.Logger(ctx, a.log).Info("app token captured", zap.String("installation_id", inst), zap.Time("exp", exp))
	}
	return nil
}

// replaces reports whether next should replace the stored prev: a later
// expiry, except that a user-delivered token never replaces a fresh one and a
// trigger-delivered token always replaces a user-delivered one.
func replaces(prev, next AppToken, minLife time.Duration, now time.Time) bool {
	switch {
	case next.FromUser && prev.Exp.Sub(now) >= minLife:
		return false
	case !next.FromUser && prev.FromUser:
		return true
	default:
		return next.Exp.After(prev.Exp)
	}
}

func (a *AppTokens) remember(inst string, t heldToken) {
	a.mu.Lock()
	if h, ok := a.held[inst]; !ok || t.exp.After(h.exp) || (h.fromUser && !t.fromUser) {
		a.held[inst] = t
	}
	a.mu.Unlock()
}

// Get returns the installation's app token when it has at least MinLife left.
// It fails with ErrUnknownInstallation when none was ever seen and with a
// *StaleError (errors.Is ErrAppTokenStale) otherwise.
func (a *AppTokens) Get(ctx context.Context, installationID string) (AppToken, error) {
	t, err := a.Lookup(ctx, installationID)
	if err != nil {
		return AppToken{}, err
	}
	if t.Exp.Sub(a.now()) < a.minLife {
		return AppToken{}, &StaleError{InstallationID: installationID, Exp: t.Exp}
	}
	return t, nil
}

// Lookup returns the record held for the installation whatever its expiry.
func (a *AppTokens) Lookup(ctx context.Context, installationID string) (AppToken, error) {
	b, err := a.kv.Get(ctx, appTokenPrefix+installationID)
	// A record sealed under a previous STORE_KEY is as good as none: the
	// next call from Forge brings a token again.
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrSealed) {
		return AppToken{}, ErrUnknownInstallation
	}
	if err != nil {
		return AppToken{}, fmt.Errorf("forge: read app token: %w", err)
	}
	t, err := decodeAppToken(installationID, b)
	if err != nil {
		return AppToken{}, fmt.Errorf("forge: decode app token record: %w", err)
	}
	return t, nil
}

// List calls fn for every installation's record. Callers must not expose Token.
func (a *AppTokens) List(ctx context.Context, fn func(AppToken) error) error {
	return a.kv.Scan(ctx, appTokenPrefix, func(key string, v []byte) error {
		t, err := decodeAppToken(strings.TrimPrefix(key, appTokenPrefix), v)
		if err != nil {
			return nil // a record we cannot read is skipped, not fatal to the listing
		}
		return fn(t)
	})
}

// Delete forgets the installation's token (uninstall).
func (a *AppTokens) Delete(ctx context.Context, installationID string) error {
	a.Forget(installationID)
	return a.kv.Delete(ctx, appTokenPrefix+installationID)
}

// Forget drops this process's memory of the installation's token, not the
// stored record: another replica deleted that. Without it, Forge delivering
// the remembered token again (a reinstall) would not be stored.
func (a *AppTokens) Forget(installationID string) {
	a.mu.Lock()
	delete(a.held, installationID)
	a.mu.Unlock()
}

// ForgetAll is Forget for every installation: for a replica that may have
// missed another's purge. Each next delivery costs one store update.
func (a *AppTokens) ForgetAll() {
	a.mu.Lock()
	clear(a.held)
	a.mu.Unlock()
}

// Fresh reports whether t has at least the minimum life left at the given time.
func (a *AppTokens) Fresh(t AppToken) bool { return t.Exp.Sub(a.now()) >= a.minLife }

// TokenExpiry reads `exp` from a JWT's payload without verifying anything: the
// app token is opaque by contract, so a token that is not a readable JWT gives
// false and the caller assumes the documented minimum lifetime.
func TokenExpiry(token string) (time.Time, bool) {
	first := strings.IndexByte(token, '.')
	if first < 0 {
		return time.Time{}, false
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second < 0 {
		return time.Time{}, false
	}
	seg := rest[:second]
	if len(seg) > 16<<10 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil || claims.Exp == "" {
		return time.Time{}, false
	}
	f, err := claims.Exp.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)).UTC(), true
}
