package forge_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/secret"
)

// An AppToken printed by fmt or logged by zap shows the installation and a
// fingerprint of the token, never the token.
func TestAppTokenNeverPrinted(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9.app-token-never-printed.c2ln"
	tok := forge.AppToken{InstallationID: "inst-1", APIBaseURL: "https://api.example.com", Token: token,
		Exp: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}

	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		fmt.Fprintf(&out, verb+"\n", tok)
		fmt.Fprintf(&out, verb+"\n", &tok)
	}
	fmt.Fprintln(&out, tok, []forge.AppToken{tok}, map[string]any{"t": tok})
	var buf bytes.Buffer
	zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zapcore.DebugLevel)).
		Info("token", zap.Any("any", tok), zap.Object("object", tok), zap.Stringer("stringer", tok))
	out.Write(buf.Bytes())
	core, logs := observer.New(zapcore.DebugLevel)
	zap.New(core).Info("token", zap.Any("any", tok))
	for _, e := range logs.All() {
		fmt.Fprint(&out, e.ContextMap())
	}

	printed := out.String()
	for _, form := range []string{"app-token-never-printed", hex.EncodeToString([]byte(token)),
		strings.ToUpper(hex.EncodeToString([]byte(token))), base64.StdEncoding.EncodeToString([]byte(token))} {
		if strings.Contains(printed, form) {
			t.Fatalf("the token is printed as %q:\n%s", form, printed)
		}
	}
	for _, want := range []string{"inst-1", secret.Fingerprint(token), "2026-12-02T12:00:00Z"} {
		if !strings.Contains(printed, want) {
			t.Errorf("printed lacks %q:\n%s", want, printed)
		}
	}
}
