package forge_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// FuzzVerify feeds arbitrary tokens to the verifier: it must never panic, and
// it must never accept anything but a token signed by the published key with
// our audience — which a fuzzer cannot forge, so every mutation of a valid
// token that changes its bytes must be refused with a *VerifyError.
func FuzzVerify(f *testing.F) {
	key := forgetest.NewKey(f, "k1")
	jwks := forgetest.NewJWKSServer(f, key)
	v, err := forge.NewVerifier(context.Background(), forge.VerifierConfig{AppID: forgetest.AppID, JWKSURL: jwks.URL(), MinRefetchInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	valid := forgetest.MintFIT(f, key, forgetest.WithTimes(time.Now(), time.Now().Add(time.Hour)))
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJmb3JnZS9pbnZvY2F0aW9uLXRva2VuIn0.")
	f.Add(strings.Repeat("A", 70000))
	f.Add(valid[:len(valid)-3])
	f.Fuzz(func(t *testing.T, tok string) {
		inv, err := v.Verify(context.Background(), tok)
		if tok == valid {
			if err != nil {
				t.Fatalf("the valid token was refused: %v", err)
			}
			return
		}
		if err == nil {
			// Base64 tolerates a few non-canonical encodings of the same
			// bytes; anything accepted must carry the genuine claims.
			if inv.Audience[0] != forgetest.AppID || inv.InstallationID() != forgetest.InstallationID {
				t.Fatalf("accepted a token with claims %+v", inv)
			}
			return
		}
		var ve *forge.VerifyError
		if !errors.As(err, &ve) {
			t.Fatalf("refusal is not a *VerifyError: %v", err)
		}
		if len(tok) > 8 && strings.Contains(err.Error(), tok) {
			t.Fatalf("the error repeats the token")
		}
	})
}

// FuzzTokenExpiry: the app token decoder never panics and never returns an
// absurd time.
func FuzzTokenExpiry(f *testing.F) {
	f.Add(forgetest.MintAppToken(f, time.Unix(1_800_000_000, 0)))
	f.Add("a.eyJleHAiOjF9.c")
	f.Add("..")
	f.Add("a.eyJleHAiOiIxIn0.c")
	f.Add("a.e30=.c")
	f.Fuzz(func(t *testing.T, tok string) {
		exp, ok := forge.TokenExpiry(tok)
		if ok && (exp.Before(time.Unix(0, 0)) || exp.Year() > 5200) {
			t.Fatalf("absurd expiry %v", exp)
		}
		if !ok && !exp.IsZero() {
			t.Fatalf("not ok but a time")
		}
	})
}
