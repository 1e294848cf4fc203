package forge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/forge-remote/forge-remote/store"
)

// rejectedPrefix keys the fingerprint of the last token Atlassian refused per
// installation. Another replica that has never seen that token would store it
// again when Forge re-delivers it (its exp is later than the lowered one), so
// the Client checks this marker before using a token.
const rejectedPrefix = "forge/apptoken-rejected/"

type rejectedToken struct {
	// Fingerprint is secret.Fingerprint of the token, never the token
	// itself. Two tokens sharing one (odds of 1 in 2^32) would cost the
	// newer one nothing worse than being taken for stale until the next.
	Fingerprint string    `json:"fingerprint"`
	Exp         time.Time `json:"exp"`
}

func rejectedKey(installationID string) string {
	return rejectedPrefix + url.PathEscape(installationID)
}

// MarkUnusable records that Atlassian refused token (HTTP 401) for the
// installation: Get answers *StaleError from now on, until Forge delivers a
// newer token. The record keeps its place (operators still see it, not fresh);
// a record already holding another token is left alone.
func (a *AppTokens) MarkUnusable(ctx context.Context, installationID, token string) error {
	if installationID == "" || token == "" {
		return nil
	}
	now := a.now()
	var origExp time.Time
	err := a.kv.Update(ctx, appTokenPrefix+installationID, func(old []byte, exists bool) ([]byte, time.Duration, error) {
		origExp = time.Time{}
		if !exists {
			return nil, 0, store.Keep
		}
		t, err := decodeAppToken(installationID, old)
		if err != nil || t.Token != token {
			return nil, 0, store.Keep
		}
		origExp = t.Exp
		if t.Exp.After(now) {
			t.Exp = now // the token is dead now, whatever its exp says
		}
		return encodeAppToken(t), keepAfterExpiry, nil
	})
	if err != nil {
		return fmt.Errorf("forge: mark app token unusable: %w", err)
	}
	if origExp.IsZero() {
		return nil // superseded or gone: nothing to mark
	}

	// This process ignores the token should Forge deliver it again (same
	// hash), and, like the store, counts it as expired now, so any newer
	// token is let through to the store's compare.
	sum := maphash.String(a.seed, token)
	a.mu.Lock()
	if h, ok := a.held[installationID]; !ok || h.sum == sum || !h.exp.After(origExp) {
		a.held[installationID] = heldToken{sum: sum, exp: now}
	}
	a.mu.Unlock()

	if ttl := origExp.Sub(now); ttl > 0 {
		b, err := json.Marshal(rejectedToken{Fingerprint: secret.Fingerprint(token), Exp: origExp})
		if err == nil {
			err = a.kv.Put(ctx, rejectedKey(installationID), b, ttl+time.Minute)
		}
		if err != nil {
			return fmt.Errorf("forge: mark app token unusable: %w", err)
		}
	}
	a.log.Warn("app token refused by Atlassian, marked unusable",
		zap.String("installation_id", installationID), zap.Time("exp", origExp))
	return nil
}

// Usable is Get, also refusing a token marked unusable (by any replica).
func (a *AppTokens) Usable(ctx context.Context, installationID string) (AppToken, error) {
	t, err := a.Get(ctx, installationID)
	if err != nil {
		return AppToken{}, err
	}
	b, err := a.kv.Get(ctx, rejectedKey(installationID))
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrSealed):
		return t, nil // no marker, or one sealed under a previous STORE_KEY
	case err != nil:
		return AppToken{}, fmt.Errorf("forge: read app token marker: %w", err)
	}
	var r rejectedToken
	if json.Unmarshal(b, &r) == nil && r.Fingerprint == secret.Fingerprint(t.Token) {
		return AppToken{}, &StaleError{InstallationID: installationID, Exp: a.now()}
	}
	return t, nil
}

// PurgeInstallation forgets everything AppTokens holds for the installation:
// its token record and any unusable-token marker (uninstall).
func (a *AppTokens) PurgeInstallation(ctx context.Context, installationID string) error {
	return errors.Join(a.Delete(ctx, installationID), a.kv.Delete(ctx, rejectedKey(installationID)))
}
