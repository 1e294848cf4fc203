package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped manifest.yml, `manifest render` with and without --connect-key
// and `manifest check` agree: every render keeps the user's token on the
// resolver endpoint and the scopes the chat resolver's page-access check
// needs, and check passes each.
func TestManifestRenderPassesCheck(t *testing.T) {
	noEnv := func(string) string { return "" }
	check := func(t *testing.T, file string) {
		t.Helper()
		var out, errOut syncBuffer
		if err := run(context.Background(), []string{"forge-remote", "manifest", "check", file}, noEnv, &out, &errOut); err != nil {
			t.Fatalf("manifest check %s: %v\n%s", file, err, errOut.String())
		}
		if !strings.Contains(out.String(), ": ok") {
			t.Fatalf("manifest check %s: stdout %q", file, out.String())
		}
	}
	t.Run("shipped", func(t *testing.T) { check(t, "../../manifest.yml") })
	for _, tc := range []struct {
		name  string
		extra []string
	}{{"render", nil}, {"render --connect-key", []string{"--connect-key", "com.example.weavy-chat"}}} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"forge-remote", "manifest", "render", "--app-id", "11111111-2222-4333-8444-555555555555",
				"--base-url", "https://remote.example.org", "--weavy-url", "https://acme.weavy.io"}, tc.extra...)
			var out, errOut syncBuffer
			if err := run(context.Background(), args, noEnv, &out, &errOut); err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			s := out.String()
			for _, want := range []string{
				"      auth:\n        appSystemToken:\n          enabled: true\n        appUserToken:\n          enabled: true\n",
				"    - read:app-user-token #", "    - read:page:confluence #", "    - read:space:confluence #",
			} {
				if !strings.Contains(s, want) {
					t.Errorf("rendered manifest lacks %q", want)
				}
			}
			file := filepath.Join(t.TempDir(), "manifest.yml")
			if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
			check(t, file)
		})
	}
}

// check refuses a manifest whose resolver endpoint lacks the user's token,
// and says which setting, on stderr.
func TestManifestCheckRefusesWithoutUserToken(t *testing.T) {
	src := strings.Replace(string(repoManifest), "        appUserToken:\n          enabled: true\n", "", 1)
	if src == string(repoManifest) {
		t.Fatal("test setup: manifest.yml has no appUserToken")
	}
	file := filepath.Join(t.TempDir(), "manifest.yml")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut syncBuffer
	err := run(context.Background(), []string{"forge-remote", "manifest", "check", file}, func(string) string { return "" }, &out, &errOut)
	want := file + ": modules.endpoint[0] remote-resolver: auth.appUserToken.enabled must be true: the chat resolver checks page access as the user"
	if err == nil || !strings.Contains(err.Error(), "1 problem(s)") || !strings.Contains(errOut.String(), want) || out.String() != "" {
		t.Fatalf("check: %v\nstderr %q\nwant %q", err, errOut.String(), want)
	}
}
