package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// A FIT whose app.apiBaseUrl is cleartext off loopback is refused (401
// invalid_invocation_token, reason insecure_api_base_url) before its app
// token is captured: the token would be sent there. On loopback (the
// Confluence fake here) http is accepted.
func TestFITAPIBaseURLMustBeHTTPS(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	ts := startServer(t, baseEnv(t, forgetest.NewJWKSServer(t, key)))
	ts.waitReady(t)
	conf := forgetest.NewConfluence(t)
	appTok := map[string]string{"x-forge-oauth-system": conf.IssueAppToken(t, time.Now().Add(3*time.Hour))}

	evil := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithAPIBaseURL("http://evil.example/ex/confluence/"+forgetest.CloudID))
	r := ts.post(t, "/triggers/scheduled", evil, appTok, "{}")
	if r.Status != http.StatusUnauthorized || r.ErrCode != "invalid_invocation_token" {
		t.Fatalf("http apiBaseUrl: %d %s, want 401 invalid_invocation_token", r.Status, r.Body)
	}
	if msg, _ := r.JSON["error"].(map[string]any)["message"].(string); !strings.HasSuffix(msg, "insecure_api_base_url") {
		t.Fatalf("the refusal does not say why: %q", msg)
	}
	if r := ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID); r.Status != http.StatusNotFound {
		t.Fatalf("the refused FIT's app token was captured: %d %s", r.Status, r.Body)
	}

	base := conf.APIBaseURL(forgetest.CloudID)
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("the Confluence fake is not on loopback http: %s", base)
	}
	ok := forgetest.MintFIT(t, key, forgetest.WithPrincipal(""), forgetest.WithAPIBaseURL(base))
	if r := ts.post(t, "/triggers/scheduled", ok, appTok, "{}"); r.Status != http.StatusAccepted {
		t.Fatalf("loopback http apiBaseUrl: %d %s", r.Status, r.Body)
	}
	if r := ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID); r.Status != http.StatusOK || r.str("api_base_url") != base {
		t.Fatalf("app token after the loopback FIT: %d %s", r.Status, r.Body)
	}
}
