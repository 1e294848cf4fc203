package manifest_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/manifest"
	"github.com/forge-remote/forge-remote/server"
)

func repoManifest(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../manifest.yml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The repository's manifest.yml agrees with the routes the real router serves.
func TestRepositoryManifestValid(t *testing.T) {
	m, err := manifest.Parse(repoManifest(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(server.Serves); err != nil {
		t.Fatal(err)
	}
}

func TestValidateFindsProblems(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"trigger route not served", "path: /triggers/lifecycle", "path: /triggers/lifecycles", "not served"},
		{"scheduled route elsewhere", "path: /triggers/scheduled", "path: /triggers/uninstall", "/triggers/scheduled"},
		{"daily interval", "interval: hour", "interval: day", "cannot keep an app token fresh"},
		{"missing scope", "    - read:confluence-user # profile sync", "    # removed", "missing read:confluence-user"},
		{"token disabled on the scheduled endpoint", "        path: /triggers/scheduled\n      auth:\n        appSystemToken:\n          enabled: true", "        path: /triggers/scheduled", "appSystemToken"},
		{"dangling endpoint", "endpoint: remote-scheduled\n      interval", "endpoint: remote-gone\n      interval", `endpoint "remote-gone" is not declared`},
		{"undeclared remote", "remote: forge-remote\n      route:\n        path: /triggers/uninstall", "remote: elsewhere\n      route:\n        path: /triggers/uninstall", `remote "elsewhere" is not declared`},
		{"missing event", "        - avi:forge:upgraded:app\n", "", "avi:forge:upgraded:app"},
		{"http remote", "baseUrl: https://forge-remote.example.com", "baseUrl: http://forge-remote.example.com", "https origin"},
		{"function resolver", "      resolver:\n        endpoint: remote-resolver\n  macro", "      resolver:\n        function: fn\n  macro", "resolver.function"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := string(repoManifest(t))
			if !strings.Contains(src, tc.from) {
				t.Fatalf("test setup: manifest.yml lacks %q", tc.from)
			}
			m, err := manifest.Parse([]byte(strings.Replace(src, tc.from, tc.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			err = m.Validate(server.Serves)
			var ve *manifest.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want a problem mentioning %q", err, tc.want)
			}
		})
	}
}

// The chat resolver checks page access as the user: each UI resolver
// endpoint must ask Forge for the user's token, and the scopes it reads the
// page, blog post or space with must be declared. Each case fails if its
// rule is removed from Validate.
func TestValidateRefusesWithoutUserToken(t *testing.T) {
	const userToken = "        appUserToken:\n          enabled: true\n"
	const tokenRule = "auth.appUserToken.enabled must be true: the chat resolver checks page access as the user"
	cases := []struct {
		name, from, to, want string
	}{
		{"no appUserToken", userToken, "", "modules.endpoint[0] remote-resolver: " + tokenRule},
		{"appUserToken disabled", userToken, "        appUserToken:\n          enabled: false\n", "modules.endpoint[0] remote-resolver: " + tokenRule},
		// A second resolver endpoint, taken by the macro, is held to the same rule.
		{"another resolver endpoint without it", "        endpoint: remote-resolver\n  endpoint:\n",
			"        endpoint: remote-resolver-2\n  endpoint:\n    - key: remote-resolver-2\n      remote: forge-remote\n      auth:\n        appSystemToken:\n          enabled: true\n",
			"modules.endpoint[0] remote-resolver-2: " + tokenRule + " (the resolver endpoint of modules.macro[0] weavy-chat-macro)"},
		{"no read:app-user-token", "    - read:app-user-token #", "    # read:app-user-token #", "permissions.scopes: missing read:app-user-token: "},
		{"no read:page:confluence", "    - read:page:confluence #", "    # read:page:confluence #", "permissions.scopes: missing read:page:confluence: "},
		{"no read:space:confluence", "    - read:space:confluence #", "    # read:space:confluence #", "permissions.scopes: missing read:space:confluence: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := string(repoManifest(t))
			if strings.Count(src, tc.from) != 1 {
				t.Fatalf("test setup: manifest.yml holds %q %d times, want once", tc.from, strings.Count(src, tc.from))
			}
			m, err := manifest.Parse([]byte(strings.Replace(src, tc.from, tc.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			err = m.Validate(server.Serves)
			var ve *manifest.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want a problem mentioning %q", err, tc.want)
			}
		})
	}
}

// Only the endpoints UI modules call need the user's token: the trigger
// endpoints in manifest.yml have none, and the rule names each resolver
// endpoint once however many modules use it.
func TestUserTokenOnlyOnResolverEndpoints(t *testing.T) {
	m, err := manifest.Parse(repoManifest(t))
	if err != nil {
		t.Fatal(err)
	}
	var ui, other int
	for _, e := range m.Modules.Endpoint {
		switch {
		case e.Key == "remote-resolver":
			ui++
			if !e.Auth.AppUserToken.Enabled || !e.Auth.AppSystemToken.Enabled {
				t.Errorf("endpoint %s: auth %+v, want both tokens", e.Key, e.Auth)
			}
		case e.Auth.AppUserToken.Enabled:
			t.Errorf("endpoint %s (a trigger's) asks for a user token: Forge sends none without a user in session", e.Key)
		default:
			other++
		}
	}
	if ui != 1 || other == 0 {
		t.Fatalf("manifest.yml: %d resolver endpoints, %d others", ui, other)
	}
	m.Modules.Endpoint[0].Auth.AppUserToken.Enabled = false
	err = m.Validate(nil) // no router: every UI endpoint counts as a resolver endpoint
	if err == nil || strings.Count(err.Error(), "appUserToken") != 1 {
		t.Fatalf("Validate = %v, want remote-resolver named once (the global page and the macro share it)", err)
	}
}

func TestRender(t *testing.T) {
	out, err := manifest.Render(repoManifest(t), manifest.RenderOptions{
		AppID:    "ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555",
		BaseURL:  "https://remote.acme.io/",
		WeavyURL: "https://acme.weavy.io",
	})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"id: ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555", "baseUrl: https://remote.acme.io\n", "address: https://acme.weavy.io", "address: wss://acme.weavy.io"} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered manifest lacks %q", want)
		}
	}
	for _, old := range []string{manifest.TemplateAppID, manifest.TemplateBaseURL, "example.weavy.io"} {
		if strings.Contains(s, old) {
			t.Errorf("rendered manifest still holds %q", old)
		}
	}
	m, err := manifest.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(server.Serves); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []manifest.RenderOptions{
		{AppID: "x", BaseURL: "http://remote.acme.io", WeavyURL: "https://acme.weavy.io"},
		{AppID: "x", BaseURL: "https://remote.acme.io/sub", WeavyURL: "https://acme.weavy.io"},
		{AppID: "x", BaseURL: "https://remote.acme.io", WeavyURL: "acme.weavy.io"},
		{BaseURL: "https://remote.acme.io", WeavyURL: "https://acme.weavy.io"},
	} {
		if _, err := manifest.Render(repoManifest(t), bad); err == nil {
			t.Errorf("Render(%+v) accepted bad options", bad)
		}
	}
}

// --connect-key writes app.connect.key with the remote and the scope the
// clientKey property needs; check knows each of them.
func TestRenderConnectKey(t *testing.T) {
	out, err := manifest.Render(repoManifest(t), manifest.RenderOptions{
		AppID: "ari:cloud:ecosystem::app/11111111-2222-4333-8444-555555555555", BaseURL: "https://remote.example.org",
		WeavyURL: "https://acme.weavy.io", ConnectKey: "com.example.weavy-chat",
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.App.Connect == nil || m.App.Connect.Key != "com.example.weavy-chat" || m.App.Connect.Remote != "forge-remote" {
		t.Fatalf("app.connect: %+v", m.App.Connect)
	}
	if err := m.Validate(server.Serves); err != nil {
		t.Fatal(err)
	}
	plain, _ := manifest.Parse(repoManifest(t))
	if plain.App.Connect != nil {
		t.Fatal("the template has app.connect: only --connect-key should add it")
	}

	for _, tc := range []struct{ name, from, to, want string }{
		{"bad key", "key: com.example.weavy-chat", `key: "com example"`, "app.connect.key"},
		{"no remote", "    remote: forge-remote\n", "", "app.connect.remote"},
		{"no scope", "    - read:app-data:confluence", "    # none", "read:app-data:confluence"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := string(out)
			if !strings.Contains(src, tc.from) {
				t.Fatalf("test setup: rendered manifest lacks %q", tc.from)
			}
			m, err := manifest.Parse([]byte(strings.Replace(src, tc.from, tc.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(server.Serves); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
		})
	}
	if _, err := manifest.Render(repoManifest(t), manifest.RenderOptions{AppID: "ari:cloud:ecosystem::app/x",
		BaseURL: "https://r.example.org", WeavyURL: "https://a.weavy.io", ConnectKey: "bad key/.."}); err == nil {
		t.Fatal("a malformed --connect-key rendered")
	}
}
