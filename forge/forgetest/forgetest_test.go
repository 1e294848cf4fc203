package forgetest_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
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

func TestConfluencePageCheckAsUser(t *testing.T) {
	conf := forgetest.NewConfluence(t)
	conf.AddPage(t, "98305", "ENG", "65537")
	conf.AddBlogPost(t, "98306", "ENG", "65537")
	conf.Restrict("98305", "712020:alice")
	get := func(tok, path string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, conf.APIBaseURL(forgetest.CloudID)+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	exp := time.Now().Add(time.Hour)
	alice, bob := conf.IssueUserToken(t, "712020:alice", exp), conf.IssueUserToken(t, "712020:bob", exp)
	if get(alice, "/wiki/api/v2/pages/98305") != http.StatusOK || get(bob, "/wiki/api/v2/pages/98305") != http.StatusNotFound ||
		get(bob, "/wiki/api/v2/blogposts/98306") != http.StatusOK || get(conf.IssueAppToken(t, exp), "/wiki/api/v2/pages/98305") != http.StatusNotFound {
		t.Fatal("page check answers differ from Confluence's access rules")
	}
	checks := conf.ContentChecks()
	if len(checks) != 4 || checks[0].As != "712020:alice" || checks[1].As != "712020:bob" || checks[3].As != confluencesim.AsApp {
		t.Fatalf("ContentChecks = %+v", checks)
	}
}
