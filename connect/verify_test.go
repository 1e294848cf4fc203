package connect_test

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/connect/connecttest"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

const (
	baseURL = "https://remote.example.com/connect"
	siteURL = "https://acme.atlassian.net/wiki"
)

func newVerifier(t *testing.T, keysURL string, now func() time.Time) *connect.Verifier {
	t.Helper()
	v, err := connect.NewVerifier(connect.VerifierConfig{
		AppKey: appKey, BaseURL: baseURL, Now: now,
		Keys: connect.NewKeySource(connect.KeySourceOptions{Override: keysURL}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func install() connecttest.Install {
	return connecttest.Install{
		AppKey: appKey, ClientKey: "client-key-1", SharedSecret: "s3cr3t-shared-0123456789abcdef", BaseURL: siteURL,
		InstallationID: "ari:cloud:ecosystem::installation/1111", Event: connect.EventInstalled,
		Aud: baseURL, Path: "/installed",
	}
}

func verify(t *testing.T, v *connect.Verifier, in connecttest.Install, key *forgetest.Key, path string) (*connect.Lifecycle, error) {
	t.Helper()
	return v.Verify(context.Background(), connect.Request{
		Method: "POST", EscapedPath: path, Authorization: "JWT " + in.Token(t, key), Body: []byte(in.Body()),
	}, in.Event)
}

// Each way a signed install can be wrong is refused, named, and those that
// can be refused without a key never reach the key server.
// A negative leeway is refused: jwt would take it for a stricter clock.
func TestNewVerifierNegativeLeeway(t *testing.T) {
	keys := connect.NewKeySource(connect.KeySourceOptions{})
	if _, err := connect.NewVerifier(connect.VerifierConfig{AppKey: appKey, BaseURL: baseURL, Keys: keys, Leeway: -time.Second}); err == nil {
		t.Fatal("negative leeway accepted")
	}
	if _, err := connect.NewVerifier(connect.VerifierConfig{AppKey: appKey, BaseURL: baseURL, Keys: keys}); err != nil {
		t.Fatalf("zero leeway: %v", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	key := forgetest.NewKey(t, "kid-1")
	other := forgetest.NewKey(t, "kid-1") // same kid, another key: a forgery
	ks := connecttest.NewKeyServer(t, key)
	v := newVerifier(t, ks.URL(), time.Now)

	if lc, err := verify(t, v, install(), key, "/connect/installed"); err != nil || lc.ClientKey != "client-key-1" ||
		lc.InstallationID != "ari:cloud:ecosystem::installation/1111" {
		t.Fatalf("a correct install: %+v %v", lc, err)
	}
	in := install()
	in.Aud = baseURL + "/"
	if _, err := verify(t, v, in, key, "/connect/installed"); err != nil {
		t.Fatalf("aud with a trailing slash: %v", err)
	}

	cases := []struct {
		name, reason string
		edit         func(*connecttest.Install)
		key          *forgetest.Key
		path         string
		noFetch      bool
	}{
		{name: "wrong aud", reason: "bad_audience", edit: func(i *connecttest.Install) { i.Aud = "https://evil.example.com/connect" }},
		{name: "no aud", reason: "missing_claim", edit: func(i *connecttest.Install) {
			i.Edit = func(_, c map[string]any) { delete(c, "aud") }
		}},
		{name: "unknown kid", reason: "unknown_kid", edit: func(i *connecttest.Install) {
			i.Edit = func(h, _ map[string]any) { h["kid"] = "kid-unknown" }
		}},
		{name: "kid aiming elsewhere", reason: "unknown_kid", noFetch: true, edit: func(i *connecttest.Install) {
			i.Edit = func(h, _ map[string]any) { h["kid"] = "../admin?x=1" }
		}},
		{name: "no kid", reason: "missing_kid", noFetch: true, edit: func(i *connecttest.Install) {
			i.Edit = func(h, _ map[string]any) { delete(h, "kid") }
		}},
		{name: "HS256 with the public key as secret", reason: "bad_algorithm", noFetch: true, edit: func(i *connecttest.Install) {
			i.Edit = func(h, _ map[string]any) { h["alg"] = "HS256" }
		}},
		{name: "alg none", reason: "bad_algorithm", noFetch: true, edit: func(i *connecttest.Install) {
			i.Edit = func(h, _ map[string]any) { h["alg"] = "none" }
		}},
		{name: "forged signature", reason: "bad_signature", key: other},
		{name: "iss is not the body's clientKey", reason: "issuer_mismatch", edit: func(i *connecttest.Install) { i.Iss = "another-client" }},
		{name: "wrong qsh", reason: "bad_qsh", edit: func(i *connecttest.Install) { i.QSH = connect.QueryStringHash("POST", "/uninstalled", "", "") }},
		{name: "qsh of the full path", reason: "bad_qsh", edit: func(i *connecttest.Install) { i.Path = "/connect/installed" }},
		{name: "no qsh", reason: "bad_qsh", edit: func(i *connecttest.Install) {
			i.Edit = func(_, c map[string]any) { delete(c, "qsh") }
		}},
		{name: "expired", reason: "expired", edit: func(i *connecttest.Install) { i.Now = time.Now().Add(-10 * time.Minute) }},
		{name: "no exp", reason: "missing_claim", edit: func(i *connecttest.Install) {
			i.Edit = func(_, c map[string]any) { delete(c, "exp") }
		}},
		{name: "baseUrl outside Atlassian", reason: "not_atlassian_site", noFetch: true, edit: func(i *connecttest.Install) { i.BaseURL = "https://acme.evil.example/wiki" }},
		{name: "baseUrl that only ends like Atlassian", reason: "not_atlassian_site", noFetch: true, edit: func(i *connecttest.Install) { i.BaseURL = "https://evilatlassian.net/wiki" }},
		{name: "http baseUrl", reason: "not_atlassian_site", noFetch: true, edit: func(i *connecttest.Install) { i.BaseURL = "http://acme.atlassian.net/wiki" }},
		{name: "another app's install", reason: "wrong_app", edit: func(i *connecttest.Install) { i.AppKey = "com.other.app" }},
		{name: "uninstalled body at installed", reason: "wrong_event", edit: func(i *connecttest.Install) { i.Event = connect.EventUninstalled }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := install()
			if tc.edit != nil {
				tc.edit(&in)
			}
			k := key
			if tc.key != nil {
				k = tc.key
			}
			hits := ks.Hits()
			lc, err := v.Verify(context.Background(), connect.Request{
				Method: "POST", EscapedPath: "/connect/installed", Authorization: "JWT " + in.Token(t, k), Body: []byte(in.Body()),
			}, connect.EventInstalled)
			var ve *connect.VerifyError
			if !errors.As(err, &ve) || ve.Reason != tc.reason || lc != nil {
				t.Fatalf("got %+v, %v; want refusal %s", lc, err, tc.reason)
			}
			if tc.noFetch && ks.Hits() != hits {
				t.Fatalf("the key server was asked %d times", ks.Hits()-hits)
			}
		})
	}

	for _, tc := range []struct{ name, auth, body string }{
		{"no Authorization", "", install().Body()},
		{"Bearer instead of JWT", "Bearer " + install().Token(t, key), install().Body()},
		{"body not JSON", "JWT " + install().Token(t, key), "not json"},
		{"body without clientKey", "JWT " + install().Token(t, key), `{"baseUrl":"` + siteURL + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), connect.Request{Method: "POST", EscapedPath: "/connect/installed",
				Authorization: tc.auth, Body: []byte(tc.body)}, connect.EventInstalled)
			var ve *connect.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("not refused: %v", err)
			}
		})
	}
}

// A kid's key is fetched once however many installs name it, concurrently
// or later; unknown kids are rate limited.
func TestKeySourceCachesAndLimits(t *testing.T) {
	key := forgetest.NewKey(t, "kid-1")
	ks := connecttest.NewKeyServer(t, key)
	v := newVerifier(t, ks.URL(), time.Now)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := verify(t, v, install(), key, "/connect/installed"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := verify(t, v, install(), key, "/connect/installed"); err != nil {
		t.Fatal(err)
	}
	if ks.Hits() != 1 {
		t.Fatalf("%d fetches for one kid, want 1", ks.Hits())
	}

	src := connect.NewKeySource(connect.KeySourceOptions{Override: ks.URL(), Limit: rate.Every(time.Hour), Burst: 3})
	ctx := context.Background()
	hits := ks.Hits()
	limited := 0
	for i := range 10 {
		_, err := src.Key(ctx, "acme.atlassian.net", "kid-random-"+string(rune('a'+i)))
		if errors.Is(err, connect.ErrKeyFetchLimited) {
			limited++
		}
	}
	if ks.Hits()-hits != 3 || limited != 7 {
		t.Fatalf("%d fetches and %d refusals for 10 unknown kids with a burst of 3", ks.Hits()-hits, limited)
	}
}

func TestSiteHost(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://acme.atlassian.net/wiki":         true,
		"https://ACME.atlassian.net":              true,
		"https://acme.jira.com":                   true,
		"https://acme.jira-dev.com":               true,
		"https://acme.atlassian-us-gov-mod.net":   true,
		"https://acme.atlassian-stg-fedm.net":     true,
		"https://atlassian.net":                   false,
		"https://acme.atlassian.net.evil.com":     false,
		"https://acme.atlassian.net:8443":         false,
		"https://user@acme.atlassian.net":         false,
		"http://acme.atlassian.net":               false,
		"https://acme.atlassian-fex.net":          false,
		"javascript:alert(1)//acme.atlassian.net": false,
	} {
		if _, err := connect.SiteHost(raw); (err == nil) != ok {
			t.Errorf("SiteHost(%q) = %v, want ok %v", raw, err, ok)
		}
	}
	if s := connect.DefaultServers("acme.atlassian.net"); len(s) == 0 || s[0] != "https://connect-install-keys.atlassian.com" {
		t.Errorf("servers for atlassian.net: %v", s)
	}
}

// An install key server that cannot be reached, fails, or answers something
// that is no key leaves the install unjudged: the error is ErrKeysUnavailable
// and no *VerifyError (503, not the 401 Atlassian reads as a refusal). So is
// a fetch the rate limit holds back. Only a kid every server says it lacks
// (404) is refused, unknown_kid.
func TestVerifyKeyServerUnavailable(t *testing.T) {
	key := forgetest.NewKey(t, "kid-1")
	down := connecttest.NewKeyServer(t, key)
	down.SetDown(true)
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>maintenance</html>")) }))
	t.Cleanup(garbage.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := "http://" + ln.Addr().String()
	ln.Close()

	for name, url := range map[string]string{"503": down.URL(), "not a key": garbage.URL, "unreachable": unreachable} {
		t.Run(name, func(t *testing.T) {
			lc, err := verify(t, newVerifier(t, url, time.Now), install(), key, "/connect/installed")
			var ve *connect.VerifyError
			if lc != nil || !errors.Is(err, connect.ErrKeysUnavailable) || errors.As(err, &ve) {
				t.Fatalf("got %+v, %v; want ErrKeysUnavailable and no refusal", lc, err)
			}
		})
	}

	t.Run("rate limited", func(t *testing.T) {
		ks := connecttest.NewKeyServer(t, key)
		v, err := connect.NewVerifier(connect.VerifierConfig{AppKey: appKey, BaseURL: baseURL,
			Keys: connect.NewKeySource(connect.KeySourceOptions{Override: ks.URL(), Limit: rate.Every(time.Hour), Burst: 1})})
		if err != nil {
			t.Fatal(err)
		}
		in := install()
		in.Edit = func(h, _ map[string]any) { h["kid"] = "kid-unknown" }
		if _, err := verify(t, v, in, key, "/connect/installed"); reasonOf(err) != "unknown_kid" {
			t.Fatalf("first unknown kid: %v", err)
		}
		lc, err := verify(t, v, install(), key, "/connect/installed")
		if lc != nil || !errors.Is(err, connect.ErrKeysUnavailable) || !errors.Is(err, connect.ErrKeyFetchLimited) || reasonOf(err) != "" {
			t.Fatalf("a genuine install held back by the limit: %+v, %v", lc, err)
		}
	})

	t.Run("caller gone", func(t *testing.T) {
		// The fetch runs on without the caller and a fast 503 can be ready
		// together with ctx.Done: whichever the select takes, the answer is
		// "unjudged", never a refusal. Many tries, so both orders happen.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		in := install()
		for i := range 200 {
			_, err := newVerifier(t, down.URL(), time.Now).Verify(ctx, connect.Request{
				Method: "POST", EscapedPath: "/connect/installed", Authorization: "JWT " + in.Token(t, key), Body: []byte(in.Body()),
			}, in.Event)
			if !errors.Is(err, connect.ErrKeysUnavailable) || reasonOf(err) != "" {
				t.Fatalf("try %d, canceled: %v", i, err)
			}
		}
	})

	t.Run("kid absent: refused", func(t *testing.T) {
		empty := connecttest.NewKeyServer(t)
		if _, err := verify(t, newVerifier(t, empty.URL(), time.Now), install(), key, "/connect/installed"); reasonOf(err) != "unknown_kid" {
			t.Fatalf("kid absent: %v", err)
		}
	})
}

func reasonOf(err error) string {
	var ve *connect.VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}

// docs/ARCHITECTURE.md lists every reason Verify refuses with, and no other.
func TestRefusalReasonsDocumented(t *testing.T) {
	src, err := os.ReadFile("verify.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "**Connect refusals**")
	section, _, _ = strings.Cut(section, "\n### ")
	inCode := map[string]bool{}
	for _, m := range regexp.MustCompile(`refuse\("([a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		inCode[m[1]] = true
	}
	inDoc := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(section, -1) {
		inDoc[m[1]] = true
	}
	if len(inCode) == 0 || !maps.Equal(inCode, inDoc) {
		t.Fatalf("refusal reasons in verify.go %v, in ARCHITECTURE.md %v", slices.Sorted(maps.Keys(inCode)), slices.Sorted(maps.Keys(inDoc)))
	}
}
