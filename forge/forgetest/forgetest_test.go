package forgetest_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

func TestMintFIT(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	now := time.Unix(1_760_000_000, 0)
	tok := forgetest.MintFIT(t, key, forgetest.WithNow(func() time.Time { return now }))

	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return key.Public(), nil },
		jwt.WithTimeFunc(func() time.Time { return now }), jwt.WithValidMethods([]string{"RS256"}))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Header["kid"] != "k1" {
		t.Errorf("kid = %v", parsed.Header["kid"])
	}
	want := map[string]any{
		"iss": forgetest.FITIssuer, "aud": forgetest.AppID, "principal": forgetest.AccountID,
		"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Add(forgetest.MintLifetime).Unix()),
	}
	for k, w := range want {
		if claims[k] != w {
			t.Errorf("%s = %v, want %v", k, claims[k], w)
		}
	}
	app := claims["app"].(map[string]any)
	if app["installationId"] != forgetest.InstallationID || app["apiBaseUrl"] != "https://api.atlassian.com/ex/confluence/"+forgetest.CloudID {
		t.Errorf("app = %v", app)
	}

	trigger := decodePayload(t, forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithInstallation("1b2c3d4e-0000-4000-8000-000000000000", "cloud-2")))
	if _, ok := trigger["principal"]; ok {
		t.Error("trigger FIT has a principal")
	}
	if _, ok := trigger["context"]; ok {
		t.Error("trigger FIT has a context")
	}
	if got := trigger["app"].(map[string]any)["installationId"]; got != "ari:cloud:ecosystem::installation/1b2c3d4e-0000-4000-8000-000000000000" {
		t.Errorf("installationId = %v", got)
	}
	if decodePayload(t, forgetest.MintFIT(t, key))["jti"] == decodePayload(t, forgetest.MintFIT(t, key))["jti"] {
		t.Error("two FITs share a jti")
	}
}

func TestMintAppToken(t *testing.T) {
	exp := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	a, b := forgetest.MintAppToken(t, exp), forgetest.MintAppToken(t, exp)
	if a == b {
		t.Error("two app tokens are equal")
	}
	if n := strings.Count(a, "."); n != 2 {
		t.Fatalf("%d dots, want a JWT", n)
	}
	if got := decodePayload(t, a)["exp"]; got != float64(exp.Unix()) {
		t.Errorf("exp = %v, want %d", got, exp.Unix())
	}
}

func TestJWKSServer(t *testing.T) {
	k1, k2 := forgetest.NewKey(t, "k1"), forgetest.NewKey(t, "k2")
	srv := forgetest.NewJWKSServer(t, k1)
	get := func() (int, []map[string]any) {
		t.Helper()
		res, err := http.Get(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var set struct{ Keys []map[string]any }
		_ = json.NewDecoder(res.Body).Decode(&set)
		return res.StatusCode, set.Keys
	}

	if code, keys := get(); code != 200 || len(keys) != 1 || keys[0]["kid"] != "k1" || keys[0]["alg"] != "RS256" ||
		keys[0]["use"] != "sig" || keys[0]["kty"] != "RSA" || keys[0]["e"] != "AQAB" {
		t.Errorf("published %d %v", code, keys)
	}
	srv.SetKeys(k1, k2.WithAlg("RS512"))
	if _, keys := get(); len(keys) != 2 || keys[1]["alg"] != "RS512" {
		t.Errorf("after SetKeys: %v", keys)
	}
	if k2.Alg != "RS256" {
		t.Error("WithAlg changed the original key")
	}
	srv.SetDown(true)
	if code, _ := get(); code != http.StatusInternalServerError {
		t.Errorf("down: %d", code)
	}
	srv.SetHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	if code, _ := get(); code != http.StatusTeapot {
		t.Errorf("handler: %d", code)
	}
	if srv.Fetches() != 4 {
		t.Errorf("Fetches = %d, want 4", srv.Fetches())
	}
}

func decodePayload(t *testing.T, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
