package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// packagePrefix is how Go errors name their package: "resolvers: ", "forge: ".
var packagePrefix = regexp.MustCompile(`\b(forge|resolvers|scheduler|server|store|weavy|manifest|devmode|jwk|jwt|http|net|json|bbolt|redis): `)

// Every message a client can see is written for the client: no Go package
// prefix of any error it was built from, whatever wraps the error.
func TestClientMessagesHaveNoPackagePrefix(t *testing.T) {
	reg := resolvers.NewRegistry()
	_, unknown := reg.Invoke(context.Background(), "x", nil, nil)
	errs := map[string]error{
		"unknown resolver":   unknown,
		"unknown, wrapped":   fmt.Errorf("dispatch: %w", unknown),
		"unknown sentinel":   resolvers.ErrUnknownResolver,
		"no user":            resolvers.ErrNoUser,
		"anonymous":          resolvers.ErrAnonymous,
		"license inactive":   resolvers.ErrLicenseInactive,
		"bad request":        &resolvers.BadRequestError{Msg: "malformed payload: invalid JSON at offset 3"},
		"verify":             &forge.VerifyError{Reason: "expired", Err: errors.New("token is expired")},
		"keys":               forge.ErrKeysUnavailable,
		"keys error":         &forge.KeysError{URL: "https://forge.example/jwks.json", Problem: "connection refused"},
		"stale":              &forge.StaleError{InstallationID: "ari:cloud:ecosystem::installation/1", Exp: time.Unix(1e9, 0)},
		"unknown inst":       forge.ErrUnknownInstallation,
		"weavy api":          &weavy.APIError{Status: 401, Title: "Unauthorized"},
		"weavy 429":          &weavy.APIError{Status: 429},
		"weavy limited":      &weavy.RateLimitedError{RetryAfter: 3 * time.Second},
		"weavy timeout":      fmt.Errorf("weavy: issuing token: %w", weavy.ErrTimeout),
		"weavy unreachable":  weavy.ErrUnreachable,
		"weavy bad response": weavy.ErrBadResponse,
		"weavy unconfigured": errWeavyNotConfigured,
		"store":              fmt.Errorf("store: bolt: %w", store.ErrUnavailable),
		"sealed":             store.ErrSealed,
		"deadline":           fmt.Errorf("forge: fetch: %w", context.DeadlineExceeded),
		"other":              errors.New("resolvers: something internal"),
		"body too large":     &http.MaxBytesError{Limit: 1 << 20},
		"connect keys":       fmt.Errorf("%w: %w", connect.ErrKeysUnavailable, context.DeadlineExceeded),
	}
	for name, err := range errs {
		_, code, msg := classify(err)
		if packagePrefix.MatchString(msg) || msg == "" {
			t.Errorf("%s: %s %q", name, code, msg)
		}
	}
	// A Connect key that could not be fetched is no refusal: 503, not 401,
	// and not the 504 of the deadline it wraps.
	if st, code, _ := classify(errs["connect keys"]); st != http.StatusServiceUnavailable || code != "connect_keys_unavailable" {
		t.Errorf("connect keys unavailable: %d %s", st, code)
	}
	if _, _, msg := classify(unknown); msg != `unknown resolver "x"` {
		t.Errorf("unknown resolver message %q", msg)
	}
	if _, code, msg := classify(&forge.StaleError{InstallationID: "inst-1", Exp: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}); code != "app_token_stale" ||
		!strings.Contains(msg, "inst-1") || !strings.Contains(msg, "2030-01-02T03:04:05Z") {
		t.Errorf("stale: %s %q", code, msg)
	}
	// A caller's function key is echoed, but not without bound.
	_, long := reg.Invoke(context.Background(), strings.Repeat("é", 500), nil, nil)
	if _, _, msg := classify(long); len(msg) > 150 || !strings.HasSuffix(msg, `…"`) {
		t.Errorf("a long key is echoed in full: %d bytes", len(msg))
	}
}
