package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// TestPanicIsAnswered: a handler that panics gets a 500 JSON answer, and the
// request still gets its access-log line and metric, naming the error.
func TestPanicIsAnswered(t *testing.T) {
	jwks := forgetest.NewJWKSServer(t, forgetest.NewKey(t, "k1"))
	env := map[string]string{"FORGE_APP_ID": forgetest.AppID, "FORGE_JWKS_URL": jwks.URL(), "STORE_URL": "memory://"}
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	s, err := New(context.Background(), cfg, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.engine.GET("/test-panic", func(*gin.Context) { panic("boom") })

	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/test-panic", nil))
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `"internal_error"`) {
		t.Fatalf("answer %d %s, want 500 internal_error", w.Code, w.Body)
	}
	if n := logs.FilterMessage("panic serving request").Len(); n != 1 {
		t.Fatalf("%d panic log lines, want 1", n)
	}
	lines := logs.FilterMessage("request").FilterField(zap.String("route", "/test-panic")).All()
	if len(lines) != 1 {
		t.Fatalf("%d access-log lines for the panicking request, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["status"] != int64(500) || f["error_code"] != "internal_error" {
		t.Fatalf("access log %v, want status 500 and error_code internal_error", f)
	}
}
