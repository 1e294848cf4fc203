package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/forge-remote/forge-remote/forge/forgetest"
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

	var printed strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		fmt.Fprintf(&printed, verb+"\n", cfg)
		fmt.Fprintf(&printed, verb+"\n", &cfg)
	}
	fmt.Fprintln(&printed, cfg, []server.Config{cfg}, map[string]any{"cfg": cfg})
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	printed.Write(js)
	for _, enc := range []zapcore.Encoder{
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
	} {
		var buf bytes.Buffer
		log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.DebugLevel))
		log.Info("config", zap.Any("any", cfg), zap.Reflect("reflect", cfg), zap.Any("ptr", &cfg),
			zap.Any("api_key", cfg.WeavyAPIKey), zap.Any("store_key", cfg.StoreKey),
			zap.Stringer("token", cfg.InternalAPIToken), zap.Any("store_url", cfg.StoreURL))
		printed.Write(buf.Bytes())
	}
	out := printed.String()

	for _, s := range []string{apiKey, internalToken, redisPassword, storeKey} {
		for _, form := range []string{
			s,
			hex.EncodeToString([]byte(s)),
			strings.ToUpper(hex.EncodeToString([]byte(s))),
			base64.StdEncoding.EncodeToString([]byte(s)),
			base64.RawStdEncoding.EncodeToString([]byte(s)),
			base64.RawURLEncoding.EncodeToString([]byte(s)),
			strings.Trim(fmt.Sprint([]byte(s)), "[]"), // a []byte printed as numbers
			fmt.Sprintf("%#v", []byte(s))[len("[]byte{"):40],
		} {
			if strings.Contains(out, form) {
				t.Errorf("config printing shows %q as %q", s, form)
			}
		}
	}
	if t.Failed() {
		t.Logf("printed:\n%s", out)
	}
	// The printing did happen, and kept what an operator needs to tell
	// settings apart: which secrets are set (a fingerprint) and the
	// non-secret values.
	for _, want := range []string{"WeavyAPIKey", "redis://forge:", "localhost:6379", connectKey,
		cfg.WeavyAPIKey.Fingerprint(), cfg.InternalAPIToken.Fingerprint(), cfg.StoreKey.Fingerprint()} {
		if !strings.Contains(out, want) {
			t.Errorf("config printing lacks %q:\n%s", want, out)
		}
	}
}
