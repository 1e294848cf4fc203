// Package secrettest checks that values print without the secrets they hold.
package secrettest

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
)

// Print renders v every way a log line, an error or a panic might: Format,
// Log and Encode together.
func Print(tb testing.TB, v any) string {
	tb.Helper()
	return Format(v) + Log(v) + Encode(tb, v)
}

// Format renders v with every fmt verb, alone and in a slice and a map.
func Format(v any) string {
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		fmt.Fprintf(&out, verb+"\n", v)
	}
	fmt.Fprintln(&out, v, []any{v}, map[string]any{"v": v})
	return out.String()
}

// Log renders v as a log field: zap.Any through zap's JSON and console
// encoders and its test observer, and slog's text and JSON handlers.
func Log(v any) string {
	var out bytes.Buffer
	for _, enc := range []zapcore.Encoder{
		zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
	} {
		zap.New(zapcore.NewCore(enc, zapcore.AddSync(&out), zapcore.DebugLevel)).Info("v", zap.Any("any", v))
	}
	core, logs := observer.New(zapcore.DebugLevel)
	zap.New(core).Info("v", zap.Any("any", v))
	for _, e := range logs.All() {
		fmt.Fprint(&out, e.ContextMap())
	}
	slog.New(slog.NewTextHandler(&out, nil)).Info("v", "v", v)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("v", "v", v)
	return out.String()
}

// Encode renders v as encoding/json does, directly and through zap.Reflect.
func Encode(tb testing.TB, v any) string {
	tb.Helper()
	js, err := json.Marshal(v)
	if err != nil {
		tb.Errorf("json.Marshal(%T): %v", v, err)
	}
	var out bytes.Buffer
	zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&out), zapcore.DebugLevel)).
		Info("v", zap.Reflect("reflect", v))
	return string(js) + out.String()
}

// Forms are the ways secret could appear in printed text: as itself, in hex
// (either case), in base64 (standard, raw, URL-safe) and as a []byte prints
// (decimal, and the start of Go syntax).
func Forms(secret string) []string {
	b := []byte(secret)
	forms := []string{
		secret,
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		strings.Trim(fmt.Sprint(b), "[]"),
	}
	if goSyntax := strings.TrimPrefix(fmt.Sprintf("%#v", b), "[]byte{"); len(goSyntax) > 32 {
		forms = append(forms, goSyntax[:32])
	}
	return forms
}

// Hidden fails tb for each form of each secret found in printed.
func Hidden(tb testing.TB, printed string, secrets ...string) {
	tb.Helper()
	for _, s := range secrets {
		for _, form := range Forms(s) {
			if strings.Contains(printed, form) {
				tb.Errorf("printed shows %q as %q", s, form)
			}
		}
	}
	if tb.Failed() {
		tb.Logf("printed:\n%s", printed)
	}
}

// Shown fails tb for each of want missing from printed: what proves that the
// printing happened and kept what a reader needs.
func Shown(tb testing.TB, printed string, want ...string) {
	tb.Helper()
	for _, w := range want {
		if !strings.Contains(printed, w) {
			tb.Errorf("printed lacks %q:\n%s", w, printed)
		}
	}
}
