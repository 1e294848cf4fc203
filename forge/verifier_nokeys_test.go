package forge_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// Started with Forge's JWKS unreachable (no internet), the log says there are
// no keys yet, not that it keeps keys it never had, and when it retries, with
// the backoff doubling; Ready says why once, without the layers of the
// packages underneath.
func TestNoKeysYetSaysWhenItRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/.well-known/jwks.json"
	ln.Close() // nothing listens there now: connection refused

	logs, observed := observer.New(zapcore.WarnLevel)
	v, err := forge.NewVerifier(t.Context(), forge.VerifierConfig{
		AppID: forgetest.AppID, JWKSURL: url, Logger: zap.New(logs), RetryInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	// The first load and at least two retries.
	testwait.For(t, "three failed loads", func() bool { return observed.FilterMessage("jwks fetch failed; no keys yet").Len() >= 3 })
	if n := observed.FilterMessage("jwks fetch failed; keeping the keys held").Len(); n != 0 {
		t.Errorf("%d lines say keys are kept though none were ever loaded", n)
	}
	lines := observed.FilterMessage("jwks fetch failed; no keys yet").All()
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}
	for i, w := range want {
		f := lines[i].ContextMap()
		if f["retry_in"] != w || f["url"] != url || f["error"] == nil {
			t.Errorf("line %d: fields %v, want retry_in %v", i, f, w)
		}
	}

	err = v.Ready()
	var ke *forge.KeysError
	if !errors.As(err, &ke) || !errors.Is(err, forge.ErrKeysUnavailable) {
		t.Fatalf("Ready = %v, want a *KeysError matching ErrKeysUnavailable", err)
	}
	msg := err.Error()
	for _, want := range []string{"no keys yet: fetching " + url + " failed: ", "connection refused", "; retrying at "} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready says %q, want it to contain %q", msg, want)
		}
	}
	for _, stutter := range []string{"forge:", "jwk.", "Get \""} {
		if strings.Contains(msg, stutter) {
			t.Errorf("Ready says %q: it contains %q", msg, stutter)
		}
	}
	if n := strings.Count(msg, "keys"); n != 1 {
		t.Errorf("Ready says keys %d times: %q", n, msg)
	}
	if ke.Retry.IsZero() || ke.Problem == "" {
		t.Errorf("KeysError %+v: want the problem and the next attempt", ke)
	}
}
