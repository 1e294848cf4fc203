package server_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/secret/secrettest"
	"github.com/forge-remote/forge-remote/server"
)

// The whole Config, printed every way a log line or a panic might print it,
// shows none of its secrets: not as themselves, nor in hex or base64, nor a
// redis URL's password.
func TestConfigNeverPrintsSecrets(t *testing.T) {
	const (
		apiKey        = "wys_WeavyKeyNeverPrinted0123456789"
		internalToken = "internal-token-never-printed-0123"
		redisPassword = "redis-password-never-printed"
		storeKey      = "StoreKey-never-printed-32-bytes!" // 32 printable bytes: %s would show them plainly
		connectKey    = "com.example.app"
	)
	env := map[string]string{
		"FORGE_APP_ID":       forgetest.AppID,
		"WEAVY_URL":          "https://acme.weavy.io",
		"WEAVY_API_KEY":      apiKey,
		"INTERNAL_API_TOKEN": internalToken,
		"STORE_URL":          "redis://forge:" + redisPassword + "@localhost:6379/0",
		"STORE_KEY":          base64.StdEncoding.EncodeToString([]byte(storeKey)),
		"CONNECT_APP_KEY":    connectKey,
		"CONNECT_BASE_URL":   "https://remote.example.com",
	}
	cfg, err := server.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{cfg, &cfg} {
		printed := secrettest.Print(t, v)
		secrettest.Hidden(t, printed, apiKey, internalToken, redisPassword, storeKey)
		// The printing did happen, and kept what an operator needs to tell
		// settings apart: which secrets are set (a fingerprint) and the
		// values that are no secret.
		secrettest.Shown(t, printed, "WeavyAPIKey", "redis://forge:xxxxx@localhost:6379/0", connectKey,
			cfg.WeavyAPIKey.Fingerprint(), cfg.InternalAPIToken.Fingerprint(), cfg.StoreKey.Fingerprint())
	}
}

// FORGE_JWKS_URL (the trust root) and WEAVY_URL (sent the API key) are https,
// or http on loopback only, as CONNECT_*_URL: anything else stops the start,
// naming the variable.
func TestConfigURLsHTTPSOrLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, variable, value string
		ok                    bool
	}{
		{"jwks https", "FORGE_JWKS_URL", "https://keys.example.com/.well-known/jwks.json", true},
		{"jwks loopback http", "FORGE_JWKS_URL", "http://127.0.0.1:8080/.well-known/jwks.json", true},
		{"jwks localhost http", "FORGE_JWKS_URL", "http://localhost:8080/jwks.json", true},
		{"jwks ::1 http", "FORGE_JWKS_URL", "http://[::1]:8080/jwks.json", true},
		{"jwks http", "FORGE_JWKS_URL", "http://keys.example.com/.well-known/jwks.json", false},
		{"jwks http private address", "FORGE_JWKS_URL", "http://10.0.0.7/jwks.json", false},
		{"jwks http through user info", "FORGE_JWKS_URL", "http://127.0.0.1@keys.example.com/jwks.json", false},
		{"jwks ftp", "FORGE_JWKS_URL", "ftp://127.0.0.1/jwks.json", false},
		{"weavy https", "WEAVY_URL", "https://acme.weavy.io", true},
		{"weavy loopback http", "WEAVY_URL", "http://127.0.0.1:9090", true},
		{"weavy http", "WEAVY_URL", "http://acme.weavy.io", false},
		{"weavy http lookalike", "WEAVY_URL", "http://127.0.0.1.nip.io", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"FORGE_APP_ID": forgetest.AppID, "WEAVY_API_KEY": "wys_test", "WEAVY_URL": "https://acme.weavy.io"}
			env[tc.variable] = tc.value
			_, err := server.LoadConfig(func(k string) string { return env[k] })
			switch {
			case tc.ok && err != nil:
				t.Fatalf("%s=%s refused: %v", tc.variable, tc.value, err)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), "config: "+tc.variable+" must be an absolute https URL")):
				t.Fatalf("%s=%s: err %v, want one naming %s", tc.variable, tc.value, err, tc.variable)
			}
		})
	}
}

// PROFILE_RESYNC is a Go duration from 1h to 30 days (720h), 7 days unset;
// anything else stops the start with a message naming it.
func TestConfigProfileResync(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  time.Duration // 0: refused
	}{
		{"", 7 * 24 * time.Hour},
		{"1h", time.Hour},
		{"168h", 7 * 24 * time.Hour},
		{"720h", 30 * 24 * time.Hour},
		{"59m", 0},
		{"721h", 0},
		{"0", 0},
		{"-24h", 0},
		{"7d", 0}, // not a Go duration
		{"weekly", 0},
	} {
		t.Run(tc.value, func(t *testing.T) {
			env := map[string]string{"FORGE_APP_ID": forgetest.AppID, "PROFILE_RESYNC": tc.value}
			cfg, err := server.LoadConfig(func(k string) string { return env[k] })
			switch {
			case tc.want != 0 && (err != nil || cfg.ProfileResync != tc.want):
				t.Fatalf("PROFILE_RESYNC=%q: %v, err %v; want %v", tc.value, cfg.ProfileResync, err, tc.want)
			case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), "config: PROFILE_RESYNC ")):
				t.Fatalf("PROFILE_RESYNC=%q: err %v, want one naming PROFILE_RESYNC", tc.value, err)
			}
		})
	}
}

// CHAT_CACHE_ENTRIES is a whole number from 1,000 to 10,000,000, the chat's
// default bound unset; anything else stops the start naming it.
func TestConfigChatCacheEntries(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int // 0: refused
	}{
		{"", chat.DefaultMaxEntries},
		{"1000", 1000},
		{"250000", 250_000},
		{"10000000", 10_000_000},
		{"999", 0},
		{"10000001", 0},
		{"0", 0},
		{"-5", 0},
		{"50k", 0},
		{"1e5", 0},
	} {
		t.Run(tc.value, func(t *testing.T) {
			env := map[string]string{"FORGE_APP_ID": forgetest.AppID, "CHAT_CACHE_ENTRIES": tc.value}
			cfg, err := server.LoadConfig(func(k string) string { return env[k] })
			switch {
			case tc.want != 0 && (err != nil || cfg.ChatCacheEntries != tc.want):
				t.Fatalf("CHAT_CACHE_ENTRIES=%q: %v, err %v; want %v", tc.value, cfg.ChatCacheEntries, err, tc.want)
			case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), "config: CHAT_CACHE_ENTRIES ")):
				t.Fatalf("CHAT_CACHE_ENTRIES=%q: err %v, want one naming CHAT_CACHE_ENTRIES", tc.value, err)
			}
		})
	}
}

// The Confluence budget's variables: defaults, accepted values, and bad
// values that stop the start naming the variable.
func TestConfigConfluenceBudget(t *testing.T) {
	load := func(env map[string]string) (server.Config, error) {
		env["FORGE_APP_ID"] = forgetest.AppID
		return server.LoadConfig(func(k string) string { return env[k] })
	}
	cfg, err := load(map[string]string{})
	if err != nil || cfg.ConfluencePointsPerHour != 65000 || cfg.ConfluencePool != "app" || cfg.ConfluenceReserve != 0.3 || !cfg.ConfluenceSpread {
		t.Fatalf("defaults: %+v, %v", cfg, err)
	}
	cfg, err = load(map[string]string{"CONFLUENCE_POINTS_PER_HOUR": "120000", "CONFLUENCE_POOL": "site", "CONFLUENCE_RESERVE": "0", "CONFLUENCE_SPREAD": "off"})
	if err != nil || cfg.ConfluencePointsPerHour != 120000 || cfg.ConfluencePool != "site" || cfg.ConfluenceReserve != 0 || cfg.ConfluenceSpread {
		t.Fatalf("set: %+v, %v", cfg, err)
	}
	for _, tc := range []struct{ variable, value string }{
		{"CONFLUENCE_POINTS_PER_HOUR", "65k"},
		{"CONFLUENCE_POINTS_PER_HOUR", "0"},
		{"CONFLUENCE_POINTS_PER_HOUR", "-1"},
		{"CONFLUENCE_POINTS_PER_HOUR", "600000"},
		{"CONFLUENCE_POOL", "tenant"},
		{"CONFLUENCE_RESERVE", "30%"},
		{"CONFLUENCE_RESERVE", "-0.1"},
		{"CONFLUENCE_RESERVE", "1"},
		{"CONFLUENCE_RESERVE", "NaN"},
		{"CONFLUENCE_SPREAD", "yes"},
	} {
		_, err := load(map[string]string{tc.variable: tc.value})
		if err == nil || !strings.Contains(err.Error(), "config: "+tc.variable+" must") {
			t.Errorf("%s=%s: %v, want an error naming %s", tc.variable, tc.value, err, tc.variable)
		}
	}
}
