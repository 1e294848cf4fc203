package secret_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/internal/secret"
)

type holder struct {
	Key   secret.String
	Raw   secret.Bytes
	Store secret.URL
	Unset secret.String
}

const (
	key      = "wys_key-never-printed-0123456789"
	raw      = "raw-bytes-never-printed-32-bytes"
	password = "url-password-never-printed"
)

// printEveryWay prints v as fmt, encoding/json, zap (JSON and console
// encoders, the observer's fields) and slog (text and JSON) do.
func printEveryWay(t *testing.T, v any) string {
	t.Helper()
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		fmt.Fprintf(&out, verb+"\n", v)
	}
	fmt.Fprintln(&out, v, []any{v}, map[string]any{"v": v})
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	out.Write(js)
	for _, enc := range []zapcore.Encoder{
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
	} {
		var buf bytes.Buffer
		zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.DebugLevel)).
			Info("v", zap.Any("any", v), zap.Reflect("reflect", v))
		out.Write(buf.Bytes())
	}
	core, logs := observer.New(zapcore.DebugLevel)
	zap.New(core).Info("v", zap.Any("any", v))
	for _, e := range logs.All() {
		fmt.Fprint(&out, e.ContextMap())
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("v", "v", v)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("v", "v", v)
	out.Write(buf.Bytes())
	return out.String()
}

func TestSecretsNeverPrinted(t *testing.T) {
	h := holder{Key: key, Raw: secret.Bytes(raw), Store: "redis://forge:" + password + "@cache:6379/0"}
	for _, v := range []any{h, &h, h.Key, h.Raw, h.Store} {
		out := printEveryWay(t, v)
		for _, s := range []string{key, raw, password} {
			for _, form := range []string{
				s,
				hex.EncodeToString([]byte(s)),
				strings.ToUpper(hex.EncodeToString([]byte(s))),
				base64.StdEncoding.EncodeToString([]byte(s)),
				base64.RawURLEncoding.EncodeToString([]byte(s)),
				strings.Trim(fmt.Sprint([]byte(s)), "[]"),
			} {
				if strings.Contains(out, form) {
					t.Errorf("%T printed shows %q as %q:\n%s", v, s, form, out)
				}
			}
		}
	}
	out := printEveryWay(t, h)
	for _, want := range []string{
		secret.Fingerprint(key), secret.Fingerprint(raw), "(unset)", // which secret is set, and which not
		"redis://forge:xxxxx@cache:6379/0", // the URL stays readable without its password
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printed lacks %q:\n%s", want, out)
		}
	}
}

func TestFingerprint(t *testing.T) {
	// The first 8 hex digits of SHA-256 ("abc" is FIPS 180-2's example).
	if got := secret.Fingerprint("abc"); got != "ba7816bf" {
		t.Errorf("Fingerprint(abc) = %q", got)
	}
	if got := secret.Fingerprint(""); got != "" {
		t.Errorf("Fingerprint of nothing = %q", got)
	}
	if secret.String("abc").Fingerprint() != "ba7816bf" || secret.Bytes("abc").Fingerprint() != "ba7816bf" {
		t.Error("the types fingerprint differently from Fingerprint")
	}
	if s := secret.String("abc").String(); s != "(secret ba7816bf)" {
		t.Errorf("String() = %q", s)
	}
	var none secret.Bytes
	if s := fmt.Sprintf("%v %v", none, secret.String("")); s != "(unset) (unset)" {
		t.Errorf("unset = %q", s)
	}
}

func TestURLThatDoesNotParse(t *testing.T) {
	u := secret.URL("redis://user:" + password + "@host:port-is-not-a-number/0")
	if s := fmt.Sprintf("%v %s", u, u); strings.Contains(s, password) || !strings.Contains(s, "(unparsable URL)") {
		t.Errorf("printed %q", s)
	}
	if s := secret.URL("bolt://data/forge-remote.db").String(); s != "bolt://data/forge-remote.db" {
		t.Errorf("a URL without password prints as %q", s)
	}
}

// Reading a secret from JSON keeps its value: only printing hides it.
func TestSecretsDecode(t *testing.T) {
	var h holder
	if err := json.Unmarshal([]byte(`{"Key":"`+key+`","Raw":"`+base64.StdEncoding.EncodeToString([]byte(raw))+`","Store":"redis://x"}`), &h); err != nil {
		t.Fatal(err)
	}
	if string(h.Key) != key || string(h.Raw) != raw || string(h.Store) != "redis://x" {
		t.Errorf("decoded %q %q %q", string(h.Key), string(h.Raw), string(h.Store))
	}
}
