package connect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/store"
)

// PropertyKey is the reserved app property that answers, for a Forge app with
// app.connect.key, the Connect clientKey of the requesting tenant (Atlassian's
// app properties API; read-only, absent from the property list). It is a
// migration aid that ends with Connect's end of support.
const PropertyKey = "connect_client_key_019cdff3-8bfb-71fe-9628-875b700aebb8"

// RetryAfterFailure is how long after a failed read of the property the
// installation is left alone: the hourly trigger would otherwise ask again
// every hour anyway, and install events come in bursts.
const RetryAfterFailure = time.Hour

// probe is the reader's state for an installation without a mapping.
type probe struct {
	FirstAttempt time.Time `json:"firstAttempt"`
	NotBefore    time.Time `json:"notBefore,omitzero"`
	LastStatus   int       `json:"lastStatus,omitempty"`
}

// CapturerOptions configures a Capturer.
type CapturerOptions struct {
	Store    *Store
	Products *forge.Client
	Tokens   *forge.AppTokens // the installation's cloudId, from its app token
	AppKey   string           // CONNECT_APP_KEY
	Now      func() time.Time
	Logger   *zap.Logger
}

// Capturer reads the reserved property through the installation's apiBaseUrl
// with its app token, while no clientKey is known for it: a background job
// queued by install and upgrade events and by the hourly trigger.
type Capturer struct {
	store    *Store
	products *forge.Client
	tokens   *forge.AppTokens
	appKey   string
	now      func() time.Time
	log      *zap.Logger
}

// NewCapturer returns a Capturer.
func NewCapturer(o CapturerOptions) *Capturer {
	c := &Capturer{store: o.Store, products: o.Products, tokens: o.Tokens, appKey: o.AppKey, now: o.Now, log: o.Logger}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	return c
}

// propertyPath is the Confluence app property API (Jira serves the same
// under /rest, without /wiki). jsonValue=true asks for the value as JSON.
func (c *Capturer) propertyPath() string {
	return "/wiki/rest/atlassian-connect/1/addons/" + url.PathEscape(c.appKey) + "/properties/" + PropertyKey + "?jsonValue=true"
}

// Run captures the installation's clientKey unless it is known, or a read
// failed less than RetryAfterFailure ago. Without a usable app token it
// makes no call and returns the forge error (the job is then counted stale).
// 401, 403 and 404 are expected answers (grants still propagating, a site
// that never had the Connect app) and end the run quietly.
func (c *Capturer) Run(ctx context.Context, inst string) error {
	if _, ok, err := c.store.ByInstallation(ctx, inst); err != nil || ok {
		return err
	}
	now := c.now()
	p, err := c.readProbe(ctx, inst)
	if err != nil {
		return err
	}
	if now.Before(p.NotBefore) {
		c.log.Debug("connect clientKey read held off after a failure",
			zap.String("installation_id", inst), zap.Time("not_before", p.NotBefore))
		return nil
	}
	if p.FirstAttempt.IsZero() {
		p.FirstAttempt = now
	}

	// Within the client's grace after the first attempt (queued by the
	// install event), 401/403 are retried and do not spoil the app token.
	client := c.products.AsApp(inst).For(budget.ConnectCapture).InstalledAt(p.FirstAttempt)
	var answer struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	err = client.GetJSON(ctx, c.propertyPath(), &answer)
	var perr *forge.ProductError
	switch {
	case errors.Is(err, forge.ErrAppTokenStale), errors.Is(err, forge.ErrUnknownInstallation):
		return err // nothing was asked: no hold-off
	case errors.Is(err, budget.ErrRefused):
		return err // nothing was asked: the points budget says wait (a later hourly run asks)
	case errors.As(err, &perr):
		c.failed(ctx, inst, p, perr.Status)
		switch perr.Status {
		case http.StatusNotFound:
			c.log.Info("connect clientKey not available for this installation (HTTP 404); asking again in an hour",
				zap.String("installation_id", inst))
			return nil
		case http.StatusUnauthorized, http.StatusForbidden:
			c.log.Info("connect clientKey refused; asking again in an hour",
				zap.String("installation_id", inst), zap.Int("status", perr.Status))
			return nil
		}
		return fmt.Errorf("connect: reading the clientKey property: %w", err)
	case err != nil:
		if ctx.Err() == nil {
			c.failed(ctx, inst, p, 0)
		}
		return fmt.Errorf("connect: reading the clientKey property: %w", err)
	}
	clientKey, ok := clientKeyOf(answer.Value)
	if !ok {
		c.failed(ctx, inst, p, http.StatusOK)
		return errors.New("connect: the clientKey property holds no clientKey")
	}
	m := Mapping{InstallationID: inst, ClientKey: clientKey, CapturedAt: now, Source: SourceAppProperty}
	if c.tokens != nil {
		if t, err := c.tokens.Lookup(ctx, inst); err == nil {
			m.CloudID = t.CloudID
		}
	}
	if err := c.store.Record(ctx, m); err != nil {
		return err
	}
	if err := c.store.kv.Delete(ctx, probeKey(inst)); err != nil {
		c.log.Warn("connect: deleting the reader state failed", zap.String("installation_id", inst), zap.Error(err))
	}
	c.log.Info("connect clientKey captured", zap.String("installation_id", inst),
		zap.String("client_key", clientKey), zap.String("source", SourceAppProperty))
	return nil
}

func (c *Capturer) readProbe(ctx context.Context, inst string) (probe, error) {
	var p probe
	b, err := c.store.kv.Get(ctx, probeKey(inst))
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrSealed):
		return p, nil
	case err != nil:
		return p, fmt.Errorf("connect: reading the reader state: %w", err)
	}
	_ = json.Unmarshal(b, &p) // unreadable: start afresh
	return p, nil
}

// failed holds the installation off for RetryAfterFailure, on every replica.
func (c *Capturer) failed(ctx context.Context, inst string, p probe, status int) {
	p.NotBefore = c.now().Add(RetryAfterFailure)
	p.LastStatus = status
	b, _ := json.Marshal(p)
	// Kept a while past the hold-off so the first attempt is remembered.
	if err := c.store.kv.Put(ctx, probeKey(inst), b, 30*24*time.Hour); err != nil {
		c.log.Warn("connect: recording the hold-off failed", zap.String("installation_id", inst), zap.Error(err))
	}
}

// clientKeyOf reads the property's value: the clientKey as a string, or, to
// be safe, an object holding clientKey (also when sent as escaped JSON).
func clientKeyOf(v json.RawMessage) (string, bool) {
	v = bytes.TrimSpace(v)
	var s string
	if json.Unmarshal(v, &s) == nil {
		if t := strings.TrimSpace(s); strings.HasPrefix(t, "{") {
			return clientKeyOf(json.RawMessage(t))
		}
		return validClientKey(s)
	}
	var obj struct {
		ClientKey string `json:"clientKey"`
	}
	if json.Unmarshal(v, &obj) == nil {
		return validClientKey(obj.ClientKey)
	}
	return "", false
}

// validClientKey accepts a printable identifier of sane length: the key is
// echoed by the export and used in store keys.
func validClientKey(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 256 {
		return "", false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return "", false
		}
	}
	return s, true
}
