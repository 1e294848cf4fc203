package server_test

import (
	"encoding/base64"
	"testing"

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
