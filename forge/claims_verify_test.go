package forge_test

import (
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/corpus"
)

// withClaimsJSON replaces the top-level claims that members (a JSON object)
// names, keeping the signed FIT's own iss, aud and times.
func withClaimsJSON(t *testing.T, members string) forgetest.FITOption {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(members), &m); err != nil {
		t.Fatalf("%s: %v", members, err)
	}
	return forgetest.WithClaims(func(c map[string]any) { maps.Copy(c, m) })
}

// A claim something reads, of a type its field cannot hold, refuses the FIT
// as malformed even though its signature holds: it is never read as empty.
func TestVerifyRefusesMistypedReadClaims(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	now := fixedClock()
	v := newVerifier(t, forgetest.NewJWKSServer(t, key), func(c *forge.VerifierConfig) { c.Now = now })

	for _, members := range []string{
		`{"iss":5}`, `{"aud":[1]}`, `{"aud":{}}`, `{"exp":"tomorrow"}`, `{"nbf":true}`, `{"iat":[]}`,
		`{"principal":{}}`, `{"app":"x"}`, `{"app":{"installationId":5}}`, `{"app":{"installationId":"i","apiBaseUrl":[]}}`,
		`{"app":{"installationId":"i","module":"k"}}`, `{"app":{"installationId":"i","installation":"x"}}`,
		`{"app":{"installationId":"i","installation":{"contexts":{}}}}`, `{"app":{"installationId":"i","installation":{"contexts":[1]}}}`,
		`{"app":{"installationId":"i","license":{"active":"true"}}}`, `{"app":{"installationId":"i","license":{"isActive":1}}}`,
		`{"context":{"cloudId":7}}`, `{"context":{"accountId":false}}`, `{"context":{"extension":{"content":{"id":98305}}}}`,
		`{"context":{"extension":{"space":"DS"}}}`, `{"context":{"userAccess":{"enabled":"yes"}}}`, `{"context":{"userAccess":[]}}`,
	} {
		inv, err := v.Verify(t.Context(), forgetest.MintFIT(t, key, forgetest.WithNow(now), withClaimsJSON(t, members)))
		if inv != nil || reason(err) != "malformed" || !errors.Is(err, jwt.ErrTokenMalformed) {
			t.Errorf("%s: Verify = %+v, %v; want reason malformed", members, inv, err)
		}
	}
}

// Every FIT of the corpus, signed now for this app, is accepted, and its
// identity is read: these are the shapes Forge sends.
func TestVerifyAcceptsCorpus(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	now := fixedClock()
	v := newVerifier(t, forgetest.NewJWKSServer(t, key), func(c *forge.VerifierConfig) { c.Now = now })

	for _, file := range corpus.Read(t, "fit") {
		t.Run(filepath.Base(file.Path), func(t *testing.T) {
			var claims map[string]any
			if err := json.Unmarshal(file.Data, &claims); err != nil {
				t.Fatal(err)
			}
			app, _ := claims["app"].(map[string]any)
			wantInstallation, _ := app["installationId"].(string)
			wantPrincipal, _ := claims["principal"].(string)
			tok := forgetest.MintFIT(t, key, forgetest.WithClaims(func(c map[string]any) {
				aud, iat, nbf, exp := c["aud"], c["iat"], c["nbf"], c["exp"]
				clear(c)
				maps.Copy(c, claims)
				c["aud"], c["iat"], c["nbf"], c["exp"] = aud, iat, nbf, exp
			}), forgetest.WithNow(now))
			inv, err := v.Verify(t.Context(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if wantInstallation == "" || inv.InstallationID() != wantInstallation || inv.Principal != wantPrincipal ||
				inv.CloudID() == "" || inv.FromTrigger() != (wantPrincipal == "") {
				t.Errorf("claims read as %+v", inv)
			}
		})
	}
}
