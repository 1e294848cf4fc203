package forgetest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The identities a default FIT carries.
const (
	AppID          = "ari:cloud:ecosystem::app/3f6c1d2e-8b4a-4f5e-9c7d-2a1b0e9f8d7c"
	EnvironmentID  = "ari:cloud:ecosystem::environment/3f6c1d2e-8b4a-4f5e-9c7d-2a1b0e9f8d7c/5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"
	InstallationID = "ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	CloudID        = "b7e5c1d4-2f3a-4e6b-9c8d-7a6f5e4d3c2b"
	AccountID      = "712020:1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	SiteURL        = "https://forge-remote-test.atlassian.net"
	ModuleKey      = "weavy-chat"
	AppVersion     = "2.14.0"
)

// FITIssuer is the `iss` of every genuine FIT.
const FITIssuer = "forge/invocation-token"

// FITLifetime is exp - iat of a genuine FIT.
const FITLifetime = 25 * time.Second

// MintLifetime is exp - iat of a FIT that MintFIT signs without WithTimes:
// hours, not Forge's 25 s, because a test may mint a FIT and then wait for a
// parallel slot, a cold build or a busy CPU before sending it. A test whose
// subject is expiry sets the times itself.
const MintLifetime = 6 * time.Hour

// APIBaseURL is the product API base of a Confluence site.
func APIBaseURL(cloudID string) string { return "https://api.atlassian.com/ex/confluence/" + cloudID }

// FIT is what MintFIT signs. MintFIT starts from the FORGE.md defaults and
// applies the options in order.
type FIT struct {
	Now            func() time.Time
	IssuedAt       time.Time // zero: Now(); nbf is the same
	ExpiresAt      time.Time // zero: IssuedAt + MintLifetime
	NoExp          bool
	Issuer         string
	Audience       string
	Principal      string // "" = no principal and no context, as on a trigger
	InstallationID string
	CloudID        string
	APIBaseURL     string            // "": APIBaseURL(CloudID)
	Method         jwt.SigningMethod // nil: RS256 with the Key
	SignKey        any               // with Method

	claimEdits  []func(map[string]any)
	headerEdits []func(map[string]any)
}

// FITOption changes the FIT that MintFIT signs.
type FITOption func(*FIT)

// WithPrincipal sets the calling user's accountId; "" mints a FIT without
// principal and context, like a scheduled or lifecycle trigger's.
func WithPrincipal(accountID string) FITOption {
	return func(f *FIT) { f.Principal = accountID }
}

// WithInstallation sets app.installationId (an ARI, or a bare uuid that is
// made one) and the site's cloudId.
func WithInstallation(id, cloudID string) FITOption {
	if !strings.HasPrefix(id, "ari:") {
		id = "ari:cloud:ecosystem::installation/" + id
	}
	return func(f *FIT) { f.InstallationID, f.CloudID = id, cloudID }
}

// WithAPIBaseURL sets app.apiBaseUrl (and the installation context's), e.g.
// to a Confluence fake's APIBaseURL.
func WithAPIBaseURL(url string) FITOption { return func(f *FIT) { f.APIBaseURL = url } }

// WithAudience sets `aud`.
func WithAudience(aud string) FITOption { return func(f *FIT) { f.Audience = aud } }

// WithIssuer sets `iss`.
func WithIssuer(iss string) FITOption { return func(f *FIT) { f.Issuer = iss } }

// WithTimes sets iat (= nbf) and exp.
func WithTimes(iat, exp time.Time) FITOption {
	return func(f *FIT) { f.IssuedAt, f.ExpiresAt = iat, exp }
}

// WithoutExp leaves `exp` out.
func WithoutExp() FITOption { return func(f *FIT) { f.NoExp = true } }

// WithNow sets the clock the default times come from.
func WithNow(now func() time.Time) FITOption { return func(f *FIT) { f.Now = now } }

// WithClaims edits the claims just before signing (delete, add, retype).
func WithClaims(edit func(claims map[string]any)) FITOption {
	return func(f *FIT) { f.claimEdits = append(f.claimEdits, edit) }
}

// WithHeader edits the JOSE header just before signing (kid, alg, typ…).
func WithHeader(edit func(header map[string]any)) FITOption {
	return func(f *FIT) { f.headerEdits = append(f.headerEdits, edit) }
}

// WithMethod signs with another algorithm and key, for attacks: HS256 with
// Key.PublicPEM(), RS512 or PS256 with Key.Private, or jwt.SigningMethodNone
// with jwt.UnsafeAllowNoneSignatureType.
func WithMethod(m jwt.SigningMethod, key any) FITOption {
	return func(f *FIT) { f.Method, f.SignKey = m, key }
}

// MintFIT signs a realistic Forge Invocation Token with key (its Kid goes in
// the header). key may be nil when WithMethod supplies the signing key.
func MintFIT(t testing.TB, key *Key, opts ...FITOption) string {
	t.Helper()
	f := &FIT{
		Now:            time.Now,
		Issuer:         FITIssuer,
		Audience:       AppID,
		Principal:      AccountID,
		InstallationID: InstallationID,
		CloudID:        CloudID,
	}
	for _, o := range opts {
		o(f)
	}
	method, signKey := f.Method, f.SignKey
	if method == nil {
		if key == nil {
			t.Fatal("forgetest: MintFIT needs a key or WithMethod")
		}
		method, signKey = jwt.SigningMethodRS256, key.Private
	}

	tok := jwt.NewWithClaims(method, jwt.MapClaims(f.claims()))
	if key != nil {
		tok.Header["kid"] = key.Kid
	}
	for _, edit := range f.headerEdits {
		edit(tok.Header)
	}
	s, err := tok.SignedString(signKey)
	if err != nil {
		t.Fatalf("forgetest: sign FIT: %v", err)
	}
	return s
}

// claims builds the payload the way Forge shapes it.
func (f *FIT) claims() map[string]any {
	iat := f.IssuedAt
	if iat.IsZero() {
		iat = f.Now()
	}
	exp := f.ExpiresAt
	if exp.IsZero() {
		exp = iat.Add(MintLifetime)
	}
	apiBase := f.APIBaseURL
	if apiBase == "" {
		apiBase = APIBaseURL(f.CloudID)
	}
	c := map[string]any{
		"iss": f.Issuer,
		"aud": f.Audience,
		"iat": iat.Unix(),
		"nbf": iat.Unix(),
		"exp": exp.Unix(),
		"jti": randomUUID(),
		"app": map[string]any{
			"id":             AppID,
			"installationId": f.InstallationID,
			"apiBaseUrl":     apiBase,
			"appVersion":     AppVersion,
			"environment":    map[string]any{"type": "DEVELOPMENT", "id": EnvironmentID},
			"module":         map[string]any{"type": "xen:macro", "key": ModuleKey},
			"installation": map[string]any{
				"id": f.InstallationID,
				"contexts": []any{map[string]any{
					"name":       "ari:cloud:confluence::site/" + f.CloudID,
					"apiBaseUrl": apiBase,
					"cloudId":    f.CloudID,
				}},
			},
		},
	}
	if f.NoExp {
		delete(c, "exp")
	}
	if f.Principal != "" {
		c["principal"] = f.Principal
		c["context"] = map[string]any{
			"cloudId":   f.CloudID,
			"moduleKey": ModuleKey,
			"siteUrl":   SiteURL,
			"localId":   "6a1e7c52-3b9d-4f80-a2c4-9d8e7f6a5b4c",
			"accountId": f.Principal,
			"extension": map[string]any{"type": "macro", "content": map[string]any{"id": "98305"}},
		}
	}
	for _, edit := range f.claimEdits {
		edit(c)
	}
	return c
}

// MintAppToken makes a token shaped like the `x-forge-oauth-system` header in
// practice: a JWT (header.payload.signature) whose payload has exp, iat, iss…
// Only exp is meaningful (the token is opaque by contract); the signature is
// random bytes, so every token is distinct. Claims other than exp are
// illustrative, not copied from a real token.
func MintAppToken(t testing.TB, exp time.Time) string {
	t.Helper()
	iat := exp.Add(-3 * time.Hour)
	header := map[string]any{"alg": "RS256", "typ": "JWT", "kid": "forge/app-system-token/" + randomUUID()}
	payload := map[string]any{
		"iss":                                  "https://auth.atlassian.com",
		"sub":                                  "712020:app-system-user-" + randomUUID(),
		"aud":                                  "api.atlassian.com",
		"iat":                                  iat.Unix(),
		"nbf":                                  iat.Unix(),
		"exp":                                  exp.Unix(),
		"jti":                                  randomUUID(),
		"https://atlassian.com/appId":          AppID,
		"https://atlassian.com/installationId": InstallationID,
		"scope":                                "read:app-system-token read:confluence-user",
	}
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	return segment(t, header) + "." + segment(t, payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func segment(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("forgetest: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
