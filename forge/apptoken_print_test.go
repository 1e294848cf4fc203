package forge_test

import (
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/forge-remote/forge-remote/internal/secret/secrettest"
)

// An AppToken printed, logged or encoded as JSON shows the installation and
// a fingerprint of the token, never the token.
func TestAppTokenNeverPrinted(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9.app-token-never-printed.c2ln"
	tok := forge.AppToken{InstallationID: "inst-1", APIBaseURL: "https://api.example.com", Token: token,
		Exp: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}
	for _, v := range []any{tok, &tok, []forge.AppToken{tok}} {
		printed := secrettest.Print(t, v)
		secrettest.Hidden(t, printed, token, "app-token-never-printed")
		secrettest.Shown(t, printed, "inst-1", secret.Fingerprint(token), "2026-12-02T12:00:00Z")
	}
}
