// Package devmode runs forge-remote on a laptop with no Forge, Weavy or
// Confluence: a local signing key whose JWKS the process serves, and simulators.
package devmode

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/internal/safeurl"
)

// Identities of the simulated Forge installation.
const (
	AppID          = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-00000000de00"
	InstallationID = "ari:cloud:ecosystem::installation/00000000-0000-4000-8000-00000000de01"
	CloudID        = "00000000-0000-4000-8000-00000000c10d"
	SiteURL        = "https://dev-site.atlassian.net"
	KeyID          = "forge/invocation-token/dev"
	// AppTokenKeyID names the dev key in the app tokens dev mode makes, which
	// the Confluence simulator accepts by their signature.
	AppTokenKeyID = "forge/app-system-token/dev"
	// UserTokenKeyID names the dev key in the user tokens dev mode makes (the
	// x-forge-oauth-user header): another key id than the app token's, so
	// that neither check takes one kind of token for the other.
	UserTokenKeyID = "forge/app-user-token/dev"
	// FITLifetime: genuine FITs live 25 s; dev FITs live an hour so that
	// printed commands can be pasted.
	FITLifetime = time.Hour
	// UserTokenLifetime: Forge's app user tokens live a few hours (up to
	// 4 h); dev ones live 3 h, as dev app tokens do, which outlives the
	// FIT they come with.
	UserTokenLifetime = 3 * time.Hour
)

// State is what a dev server leaves for `invoke`: where it listens and the
// secrets of this laptop-only installation.
type State struct {
	Addr          string `json:"addr"`
	InternalToken string `json:"internal_token"`
	// APIBaseURL is the simulated site's apiBaseUrl on the Confluence
	// simulator, which FITs must name.
	APIBaseURL string `json:"api_base_url"`
	// ConfluenceAddr is where the Confluence simulator listened: a restart
	// listens there again when it can, so that the apiBaseUrl recorded for
	// the installation keeps working.
	ConfluenceAddr string `json:"confluence_addr,omitempty"`
}

// Dir is where dev mode keeps its key, state and database: the user's cache
// directory, not a guessable path in a shared /tmp where another local user
// could plant a signing key or read the state.
func Dir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "forge-remote", "dev")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("forge-remote-dev-%d", os.Getuid()))
}

// checkPrivate refuses a state directory another user could write to.
func checkPrivate(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("dev: %s must be a directory only you can access (chmod 700)", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("dev: %s belongs to another user", dir)
	}
	return nil
}

// CheckLoopback refuses a listen address that is not on the loopback
// interface: dev mode signs its own FITs and must never be reachable.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dev: LISTEN_ADDR %q: %w", addr, err)
	}
	if safeurl.Loopback(host) {
		return nil
	}
	return fmt.Errorf("dev: LISTEN_ADDR %q is not a loopback address; dev mode signs its own tokens and only listens on 127.0.0.1 or ::1", addr)
}

// LoadOrCreateKey keeps one signing key per laptop so that `invoke` and
// pasted commands keep working across restarts of `dev`.
func LoadOrCreateKey(dir string) (*rsa.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	if err := checkPrivate(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "signing-key.pem")
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("dev: %s is not a PEM key; delete it", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("dev: %s: %w", path, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("dev: %s is not an RSA key", path)
		}
		return rk, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dev: %w", err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	return k, nil
}

// JWKSHandler publishes the public half of key as Forge does.
func JWKSHandler(key *rsa.PublicKey) http.Handler {
	body, _ := json.Marshal(map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "kid": KeyID, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
	}}})
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// FIT signs a Forge Invocation Token with the dev key. accountID "" makes a
// trigger's FIT (no principal, no UI context). apiBase is the site's
// apiBaseUrl: the Confluence simulator's, never a real Atlassian host.
func FIT(key *rsa.PrivateKey, accountID, apiBase string, now time.Time) (string, error) {
	return FITIn(key, accountID, apiBase, Where{}, now)
}

// Where is the Confluence place a dev FIT's context.extension names, as
// Forge signs it for a module on a page or in a space: ContentID (a page),
// SpaceKey, both, or neither (the site).
type Where struct {
	ContentID string
	SpaceKey  string
}

func (w Where) extension() map[string]any {
	ext := map[string]any{"type": "macro"}
	if w.ContentID != "" {
		ext["content"] = map[string]any{"id": w.ContentID, "type": "page"}
	}
	if w.SpaceKey != "" {
		ext["space"] = map[string]any{"key": w.SpaceKey}
	}
	return ext
}

// FITIn is FIT for a user's call from the page or space w names, which is
// what picks the chat the chat resolver opens.
func FITIn(key *rsa.PrivateKey, accountID, apiBase string, w Where, now time.Time) (string, error) {
	claims := jwt.MapClaims{
		"iss": "forge/invocation-token", "aud": AppID,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(FITLifetime).Unix(),
		"jti": randomHex(16),
		"app": map[string]any{
			"id": AppID, "installationId": InstallationID, "apiBaseUrl": apiBase, "appVersion": "1.0.0",
			"environment": map[string]any{"type": "DEVELOPMENT", "id": "dev"},
			"module":      map[string]any{"type": "xen:macro", "key": "weavy-chat-macro"},
			"installation": map[string]any{"id": InstallationID, "contexts": []any{
				map[string]any{"name": "confluence", "apiBaseUrl": apiBase, "cloudId": CloudID},
			}},
		},
	}
	if accountID != "" {
		claims["principal"] = accountID
		claims["context"] = map[string]any{
			"cloudId": CloudID, "moduleKey": "weavy-chat-macro", "siteUrl": SiteURL,
			"localId": "dev-local", "accountId": accountID,
		}
		if w != (Where{}) {
			claims["context"].(map[string]any)["extension"] = w.extension()
		}
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = KeyID
	return t.SignedString(key)
}

// AppToken makes an app system token that expires at exp, as Forge's
// x-forge-oauth-system header carries, signed with the dev key so that the
// Confluence simulator of any dev process accepts it (see CheckAppToken).
func AppToken(key *rsa.PrivateKey, exp, now time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "dev-forge", "aud": "api.atlassian.com", "iat": now.Unix(), "exp": exp.Unix(), "jti": randomHex(8),
	})
	t.Header["kid"] = AppTokenKeyID
	return t.SignedString(key)
}

// CheckAppToken accepts the app tokens AppToken signed with key and says when
// they expire; expiry itself is the simulator's to judge, by its clock.
func CheckAppToken(key *rsa.PublicKey) confluencesim.TokenCheck {
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	return func(token string) (time.Time, bool) {
		var c jwt.RegisteredClaims
		t, err := p.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
			if t.Header["kid"] != AppTokenKeyID {
				return nil, errors.New("not a dev app token")
			}
			return key, nil
		})
		if err != nil || !t.Valid || c.ExpiresAt == nil {
			return time.Time{}, false
		}
		return c.ExpiresAt.Time, true
	}
}

// UserToken makes an app user token for accountID that expires at exp, as
// Forge's x-forge-oauth-user header carries to endpoints with
// auth.appUserToken, signed with the dev key so that the Confluence simulator
// of any dev process answers its calls as accountID (see CheckUserToken).
// Genuine user tokens are opaque to the app; this one names the user in sub.
func UserToken(key *rsa.PrivateKey, accountID string, exp, now time.Time) (string, error) {
	if accountID == "" {
		return "", errors.New("dev: a user token needs an accountId")
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "dev-forge-user", "sub": accountID, "aud": "api.atlassian.com",
		"iat": now.Unix(), "exp": exp.Unix(), "jti": randomHex(8),
	})
	t.Header["kid"] = UserTokenKeyID
	return t.SignedString(key)
}

// CheckUserToken accepts the user tokens UserToken signed with key: whose
// they are (sub) and when they expire; expiry itself is the simulator's to
// judge, by its clock. App tokens and FITs are not user tokens.
func CheckUserToken(key *rsa.PublicKey) confluencesim.UserTokenCheck {
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	return func(token string) (string, time.Time, bool) {
		var c jwt.RegisteredClaims
		t, err := p.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
			if t.Header["kid"] != UserTokenKeyID {
				return nil, errors.New("not a dev user token")
			}
			return key, nil
		})
		if err != nil || !t.Valid || c.ExpiresAt == nil || c.Subject == "" || c.Issuer != "dev-forge-user" {
			return "", time.Time{}, false
		}
		return c.Subject, c.ExpiresAt.Time, true
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SaveState records where the dev server listens for `invoke`.
func SaveState(dir string, s State) error {
	b, _ := json.Marshal(s)
	return os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600)
}

// LoadState reads what a running dev server saved.
func LoadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return s, fmt.Errorf("dev: no dev server state in %s (start one with `go run . dev`): %w", dir, err)
	}
	return s, json.Unmarshal(b, &s)
}

// Commands returns ready-to-paste curl commands against base, in the order
// Forge would send them: the install event, the hourly trigger, a user's
// call, then the operator's view. apiBase is the simulated site's apiBaseUrl.
func Commands(key *rsa.PrivateKey, base, apiBase, accountID, internalToken string, now time.Time) (string, error) {
	userFIT, err := FIT(key, accountID, apiBase, now)
	if err != nil {
		return "", err
	}
	trigFIT, err := FIT(key, "", apiBase, now)
	if err != nil {
		return "", err
	}
	pageFIT, err := FITIn(key, accountID, apiBase, Where{ContentID: "98305"}, now)
	if err != nil {
		return "", err
	}
	// Forge's app tokens live 2-4 h; endpoints with auth.appSystemToken
	// (every one in manifest.yml) receive one on every call, user calls too.
	appTok, err := AppToken(key, now.Add(3*time.Hour), now)
	if err != nil {
		return "", err
	}
	// The endpoint of the UI resolvers enables auth.appUserToken, so Forge
	// sends the user's token with their calls: the chat resolver asks
	// Confluence with it whether they can view the page.
	userTok, err := UserToken(key, accountID, now.Add(UserTokenLifetime), now)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n# The install event Forge sends (records the installation):\n")
	fmt.Fprintf(&b, "curl -sS -X POST %s/triggers/lifecycle -H 'Authorization: Bearer %s' -H 'x-forge-oauth-system: %s' -H 'Content-Type: application/json' -d '{\"eventType\":\"avi:forge:installed:app\",\"id\":\"%s\",\"context\":\"ari:cloud:confluence::site/%s\",\"installerAccountId\":\"%s\",\"app\":{\"id\":\"%s\",\"version\":\"1.0.0\"},\"environment\":{\"id\":\"dev\"}}'\n", base, trigFIT, appTok, InstallationID, CloudID, accountID, AppID)
	fmt.Fprintf(&b, "\n# The hourly scheduled trigger (brings a fresh app token):\n")
	fmt.Fprintf(&b, "curl -sS -X POST %s/triggers/scheduled -H 'Authorization: Bearer %s' -H 'x-forge-oauth-system: %s' -H 'Content-Type: application/json' -d '{}'\n", base, trigFIT, appTok)
	fmt.Fprintf(&b, "\n# A Weavy token for %s (the Custom UI's token resolver):\n", accountID)
	fmt.Fprintf(&b, "curl -sS -X POST %s/resolvers/token -H 'Authorization: Bearer %s' -H 'x-forge-oauth-system: %s' -H 'x-forge-oauth-user: %s' -H 'Content-Type: application/json' -d '{\"refresh\":false}'\n", base, userFIT, appTok, userTok)
	fmt.Fprintf(&b, "\n# The chat of page 98305 for %s (the chat resolver: the page comes from the signed FIT only;\n", accountID)
	fmt.Fprintf(&b, "# the simulated Confluence, asked with the user's token, lets everyone view every page until restricted):\n")
	fmt.Fprintf(&b, "curl -sS -X POST %s/resolvers/chat -H 'Authorization: Bearer %s' -H 'x-forge-oauth-system: %s' -H 'x-forge-oauth-user: %s' -H 'Content-Type: application/json' -d '{}'\n", base, pageFIT, appTok, userTok)
	fmt.Fprintf(&b, "\n# The operator's view:\n")
	fmt.Fprintf(&b, "curl -sS %s/internal/installations -H 'Authorization: Bearer %s'\n", base, internalToken)
	fmt.Fprintf(&b, "\n# Or sign and send one call: go run . invoke token --account-id %s --refresh\n", accountID)
	fmt.Fprintf(&b, "# (any resolver by its function key, with a payload: go run . invoke token --payload '{\"refresh\":true}')\n")
	fmt.Fprintf(&b, "# See a refusal: go run . invoke chat --content-id 98305 --restricted (the simulated Confluence then\n")
	fmt.Fprintf(&b, "# lets nobody view page 98305: 403 no_access); undo it with --unrestricted. --space-key KEY alike.\n\n")
	return b.String(), nil
}
