package forge_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/corpus"
	"github.com/forge-remote/forge-remote/internal/safeurl"
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

// FuzzVerifyMatchesGolangJWT signs arbitrary header and claims bytes with the
// published key and holds Verify to what golang-jwt's ParseWithClaims, with
// the options Verify gave it before it decoded FITs itself, says of the same
// token: the same tokens accepted, with the same claims.
func FuzzVerifyMatchesGolangJWT(f *testing.F) {
	key := forgetest.NewKey(f, "k1")
	jwks := forgetest.NewJWKSServer(f, key)
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	v, err := forge.NewVerifier(context.Background(), forge.VerifierConfig{
		AppID: forgetest.AppID, JWKSURL: jwks.URL(), Now: clock, MinRefetchInterval: time.Hour,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(forge.FITIssuer),
		jwt.WithAudience(forgetest.AppID),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5*time.Second),
		jwt.WithTimeFunc(clock),
	)
	valid := forgetest.MintFIT(f, key, forgetest.WithTimes(now, now.Add(time.Hour)))
	parts := strings.Split(valid, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	f.Add(hdr, claims)
	f.Add([]byte(`{"alg":"RS256","kid":"k1","KID":"x","alg":"RS256"}`), claims)
	f.Add([]byte(`{"alg":"RS256","kid":"k2"}`), claims)
	f.Add(hdr, []byte(`{"iss":"forge/invocation-token","aud":"`+forgetest.AppID+`","exp":`+strconv.FormatInt(now.Unix()+60, 10)+`,"app":{"installationId":"i"}}`))
	f.Add(hdr, []byte(`{"ISS":"forge/invocation-token","Aud":["x","`+forgetest.AppID+`"],"exp":"`+strconv.FormatInt(now.Unix()+60, 10)+`","iat":1e9,"app":{"installationId":"i"},"app":{"id":"a"}}`))
	f.Add(hdr, []byte(`{"iss":"forge/invocation-token","aud":"`+forgetest.AppID+`","exp":`+strconv.FormatInt(now.Unix()+60, 10)+`}`))
	f.Add(hdr, []byte(`null`))
	f.Add(hdr, []byte(`{"iss":"forge/invocation-token","aud":"`+forgetest.AppID+`","exp":`+strconv.FormatInt(now.Unix()+60, 10)+`,"app":{"installationId":"i","apiBaseUrl":"http://evil.example"}}`))
	f.Add(hdr, []byte(`{"iss":"forge/invocation-token","aud":"`+forgetest.AppID+`","exp":`+strconv.FormatInt(now.Unix()+60, 10)+`,"app":{"installationId":"i","apiBaseUrl":"http://127.0.0.1:8080"}}`))
	for _, file := range corpus.Read(f, "fit") {
		b := file.Data
		// The corpus as Forge would sign it for this app, now.
		var c map[string]any
		if err := json.Unmarshal(b, &c); err != nil {
			f.Fatal(err)
		}
		c["aud"], c["iat"], c["nbf"], c["exp"] = forgetest.AppID, now.Unix(), now.Unix(), now.Unix()+25
		fresh, _ := json.Marshal(c)
		f.Add(hdr, b)
		f.Add(hdr, fresh)
	}
	f.Fuzz(func(t *testing.T, header, claims []byte) {
		signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
		sum := sha256.Sum256([]byte(signing))
		sig, err := rsa.SignPKCS1v15(nil, key.Private, crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		tok := signing + "." + base64.RawURLEncoding.EncodeToString(sig)

		got, gotErr := v.Verify(context.Background(), tok)
		var want forge.Invocation
		_, wantErr := parser.ParseWithClaims(tok, &want, func(t *jwt.Token) (any, error) {
			if kid, _ := t.Header["kid"].(string); kid != key.Kid {
				return nil, errors.New("unknown kid")
			}
			return key.Public(), nil
		})
		if wantErr == nil && want.App.InstallationID == "" {
			wantErr = errors.New("no installationId") // Verify's own check
		}
		if wantErr == nil && want.App.APIBaseURL != "" && !safeurl.OK(want.App.APIBaseURL) {
			wantErr = errors.New("cleartext apiBaseUrl") // Verify's own check
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("header %s claims %s: Verify error %v, golang-jwt error %v", header, claims, gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(*got, want) {
			t.Fatalf("header %s claims %s:\nVerify     %+v\ngolang-jwt %+v", header, claims, *got, want)
		}
	})
}
