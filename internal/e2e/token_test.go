package e2e

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// tokenEnv is baseEnv with the Weavy fake configured.
func tokenEnv(t *testing.T, jwks *forgetest.JWKSServer, wv *weavysim.Server) map[string]string {
	env := baseEnv(t, jwks)
	env["WEAVY_URL"] = wv.URL
	env["WEAVY_API_KEY"] = weavysim.APIKey
	// The longest WEAVY_TIMEOUT allowed: a mint from the fake on a loaded
	// machine must not time out. TestTokenWeavyTimeout, whose subject it is,
	// shortens it.
	env["WEAVY_TIMEOUT"] = "20s"
	return env
}

type tokenFixture struct {
	key *forgetest.Key
	wv  *weavysim.Server
	ts  *testServer
	env map[string]string
}

func newTokenFixture(t *testing.T) *tokenFixture {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	env := tokenEnv(t, jwks, wv)
	ts := startServer(t, env)
	ts.waitReady(t)
	return &tokenFixture{key: key, wv: wv, ts: ts, env: env}
}

func (f *tokenFixture) token(t *testing.T, account, body string, extra map[string]string) reply {
	t.Helper()
	fit := forgetest.MintFIT(t, f.key, forgetest.WithPrincipal(account))
	return f.ts.post(t, "/resolvers/token", fit, extra, body)
}

func TestTokenResolver(t *testing.T) {
	f := newTokenFixture(t)
	alice := forgetest.AccountID

	first := f.token(t, alice, `{"refresh":false}`, nil)
	if first.Status != http.StatusOK || !strings.HasPrefix(first.str("access_token"), "wyu_") {
		t.Fatalf("first call: %d %s", first.Status, first.Body)
	}
	if n, _ := first.JSON["expires_in"].(float64); n < 3500 || n > 3600 {
		t.Fatalf("expires_in %v, want about an hour", first.JSON["expires_in"])
	}
	if f.wv.UIDOf(first.str("access_token")) != alice {
		t.Fatalf("token minted for %q, want the FIT principal", f.wv.UIDOf(first.str("access_token")))
	}
	second := f.token(t, alice, ``, nil)
	if second.str("access_token") != first.str("access_token") || f.wv.Mints() != 1 {
		t.Fatalf("second call minted again (%d mints)", f.wv.Mints())
	}

	// Body fields and headers never choose whose token is returned.
	spoof := f.token(t, alice, `{"accountId":"557058:attacker","uid":"attacker","refresh":false}`,
		map[string]string{"x-atlassian-account-id": "attacker", "x-weavy-uid": "attacker"})
	if spoof.str("access_token") != first.str("access_token") || f.wv.Mints() != 1 {
		t.Fatalf("body/header identity was honoured")
	}

	// The envelope form answers the same.
	env := f.ts.post(t, "/resolvers", forgetest.MintFIT(t, f.key, forgetest.WithPrincipal(alice)), nil,
		`{"call":{"functionKey":"token","payload":{"refresh":false}},"context":{"accountId":"attacker"}}`)
	if env.Status != http.StatusOK || env.str("access_token") != first.str("access_token") {
		t.Fatalf("envelope: %d %s", env.Status, env.Body)
	}

	// Refresh: a new, different token that then is the cached one.
	ref := f.token(t, alice, `{"refresh":true}`, nil)
	if ref.Status != http.StatusOK || ref.str("access_token") == first.str("access_token") {
		t.Fatalf("refresh: %d %s", ref.Status, ref.Body)
	}
	if again := f.token(t, alice, `{}`, nil); again.str("access_token") != ref.str("access_token") {
		t.Fatalf("refreshed token is not the cached one")
	}
	if f.wv.Mints() != 2 {
		t.Fatalf("%d mints, want 2", f.wv.Mints())
	}
	for _, r := range f.wv.Requests() {
		if strings.HasPrefix(r, "DELETE") {
			t.Fatalf("a refresh revoked tokens: %s", r)
		}
	}

	// A call without a user (a trigger's FIT) is refused with 403.
	noUser := f.ts.post(t, "/resolvers/token", forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("")), nil, `{}`)
	if noUser.Status != http.StatusForbidden || noUser.ErrCode != "no_user" {
		t.Fatalf("no principal: %d %s", noUser.Status, noUser.Body)
	}
	// Forge's anonymous viewer, and a paid installation whose licence lapsed
	// (either spelling Forge has used, or user-based billing without access),
	// get 403 without a Weavy call; a FIT that states no licence (free apps,
	// development) or an active one is served.
	mintsBefore, reqsBefore := f.wv.Mints(), len(f.wv.Requests())
	license := func(l map[string]any) forgetest.FITOption {
		return forgetest.WithClaims(func(c map[string]any) { c["app"].(map[string]any)["license"] = l })
	}
	userAccess := forgetest.WithClaims(func(c map[string]any) {
		c["context"].(map[string]any)["userAccess"] = map[string]any{"enabled": true, "hasAccess": false}
	})
	for _, tc := range []struct {
		name string
		opts []forgetest.FITOption
		code string
	}{
		{"anonymous", []forgetest.FITOption{forgetest.WithPrincipal(forge.AnonymousPrincipal)}, "anonymous"},
		{"active false", []forgetest.FITOption{forgetest.WithPrincipal(alice), license(map[string]any{"active": false, "type": "commercial"})}, "license_inactive"},
		{"isActive false", []forgetest.FITOption{forgetest.WithPrincipal(alice), license(map[string]any{"isActive": false})}, "license_inactive"},
		{"active wins", []forgetest.FITOption{forgetest.WithPrincipal(alice), license(map[string]any{"active": false, "isActive": true})}, "license_inactive"},
		{"user-based billing", []forgetest.FITOption{forgetest.WithPrincipal(alice), userAccess}, "license_inactive"},
	} {
		r := f.ts.post(t, "/resolvers/token", forgetest.MintFIT(t, f.key, tc.opts...), nil, `{"refresh":true}`)
		if r.Status != http.StatusForbidden || r.ErrCode != tc.code {
			t.Fatalf("%s: %d %s, want 403 %s", tc.name, r.Status, r.Body, tc.code)
		}
	}
	if f.wv.Mints() != mintsBefore || len(f.wv.Requests()) != reqsBefore {
		t.Fatalf("refused calls reached Weavy: %v", f.wv.Requests()[reqsBefore:])
	}
	for _, l := range []map[string]any{{"active": true}, {"isActive": true, "supportEntitlementNumber": nil}, {"type": "commercial"}} {
		if r := f.ts.post(t, "/resolvers/token", forgetest.MintFIT(t, f.key, forgetest.WithPrincipal(alice), license(l)), nil, `{}`); r.Status != http.StatusOK {
			t.Fatalf("licence %v: %d %s", l, r.Status, r.Body)
		}
	}
	if bad := f.token(t, alice, `{"refresh":"yes"}`, nil); bad.Status != http.StatusBadRequest {
		t.Fatalf("refresh of the wrong type: %d %s", bad.Status, bad.Body)
	}

	// A restart on the same bolt file serves the stored token without a mint.
	f.ts.Stop(t)
	f.ts = startServer(t, f.env)
	f.ts.waitReady(t)
	if r := f.token(t, alice, `{}`, nil); r.str("access_token") != ref.str("access_token") || f.wv.Mints() != 2 {
		t.Fatalf("after restart: %s, %d mints", r.Body, f.wv.Mints())
	}
}

func TestTokenConcurrency(t *testing.T) {
	f := newTokenFixture(t)
	const n = 200
	fits := make([]string, n)
	for i := range fits {
		fits[i] = forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("5b10ac8d82e05b22cc7d4ef5"))
	}
	tokens := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := f.ts.post(t, "/resolvers/token", fits[i], nil, `{}`)
			tokens[i] = r.str("access_token")
		})
	}
	wg.Wait()
	if f.wv.Mints() != 1 {
		t.Fatalf("%d cold concurrent calls made %d mints, want 1", n, f.wv.Mints())
	}
	for _, tok := range tokens {
		if tok != tokens[0] || tok == "" {
			t.Fatalf("callers got different tokens")
		}
	}

	// 50 simultaneous refreshes: a handful of mints, answers only 200 or 429.
	before := f.wv.Mints()
	codes := make([]int, 50)
	for i := range codes {
		fit := forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("5b10ac8d82e05b22cc7d4ef5"))
		wg.Go(func() {
			r := f.ts.post(t, "/resolvers/token", fit, nil, `{"refresh":true}`)
			codes[i] = r.Status
			if r.Status == http.StatusTooManyRequests && r.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		})
	}
	wg.Wait()
	for _, c := range codes {
		if c != http.StatusOK && c != http.StatusTooManyRequests {
			t.Fatalf("refresh answered %d", c)
		}
	}
	if m := f.wv.Mints() - before; m < 1 || m > 3 {
		t.Fatalf("50 simultaneous refreshes made %d mints", m)
	}
}

// A token Weavy said expires in 30 s is served from the cache until then and
// not once the server's clock is past it: the clock is moved, not waited for
// (the fakes are on real sockets, so no synctest bubble).
func TestTokenExpiryHonoured(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	var offset atomic.Int64 // the server's clock runs ahead of the wall by this
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ts := startServerWith(t, tokenEnv(t, jwks, wv), serverOptions(now))
	ts.waitReady(t)
	token := func() reply {
		t.Helper()
		fit := forgetest.MintFIT(t, key, forgetest.WithNow(now), forgetest.WithPrincipal("acc-short"))
		return ts.post(t, "/resolvers/token", fit, nil, `{}`)
	}
	wv.ExpiresIn.Store(30)
	first := token()
	if n, _ := first.JSON["expires_in"].(float64); first.Status != http.StatusOK || n > 30 {
		t.Fatalf("first call: %d, expires_in %v for a 30 s token", first.Status, first.JSON["expires_in"])
	}
	if r := token(); r.str("access_token") != first.str("access_token") {
		t.Fatalf("a token with about 30 s left was not served from the cache")
	}
	offset.Store(int64(31 * time.Second))
	if r := token(); r.Status != http.StatusOK || r.str("access_token") == first.str("access_token") {
		t.Fatalf("a token Weavy said expires in 30 s was served 31 s later (%d)", r.Status)
	}
}

// weavyOutage is one way Weavy fails and the JSON error a caller then gets.
type weavyOutage struct {
	mode   weavysim.Mode
	status int
	code   string
}

// weavyOutages are the ways Weavy fails at once (a hang is tested apart: it
// lasts until the server's WEAVY_TIMEOUT).
var weavyOutages = []weavyOutage{
	{weavysim.Fail500, http.StatusBadGateway, "weavy_unavailable"},
	{weavysim.HTML502, http.StatusBadGateway, "weavy_unavailable"},
	{weavysim.Reset, http.StatusBadGateway, "weavy_unavailable"},
}

func TestTokenWeavyFaults(t *testing.T) {
	f := newTokenFixture(t)
	warm := f.token(t, "acc-warm", `{}`, nil)
	if warm.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", warm.Status, warm.Body)
	}
	for i, tc := range weavyOutages {
		t.Run(fmt.Sprint(tc.status, tc.code, i), func(t *testing.T) {
			f.wv.SetMode(tc.mode)
			defer f.wv.SetMode(weavysim.OK)
			r := f.token(t, fmt.Sprintf("acc-cold-%d", i), `{}`, nil)
			if r.Status != tc.status || r.ErrCode != tc.code {
				t.Fatalf("cold user: %d %s", r.Status, r.Body)
			}
			if tc.mode == weavysim.Fail500 && !strings.Contains(string(r.Body), "500") {
				t.Errorf("message does not say what Weavy answered: %s", r.Body)
			}
			if w := f.token(t, "acc-warm", `{}`, nil); w.Status != http.StatusOK || w.str("access_token") != warm.str("access_token") {
				t.Fatalf("cached user during the outage: %d %s", w.Status, w.Body)
			}
		})
	}
}

// A Weavy that never answers costs a cold user WEAVY_TIMEOUT and a 504,
// while a cached user keeps its token. The server runs with a short timeout
// only while Weavy hangs, so no call that should succeed can run into it:
// the cached user's token was minted before, under the long one, and is read
// back from the bolt file.
func TestTokenWeavyTimeout(t *testing.T) {
	f := newTokenFixture(t)
	warm := f.token(t, "acc-warm", `{}`, nil)
	if warm.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", warm.Status, warm.Body)
	}
	f.ts.Stop(t)
	short := maps.Clone(f.env)
	short["WEAVY_TIMEOUT"] = "1s"
	f.ts = startServer(t, short)
	f.ts.waitReady(t)
	f.wv.SetMode(weavysim.Hang)
	mints := f.wv.Mints()

	start := time.Now()
	r := f.token(t, "acc-cold", `{}`, nil)
	if r.Status != http.StatusGatewayTimeout || r.ErrCode != "weavy_timeout" || r.Header.Get("Retry-After") != "" {
		t.Fatalf("cold user while Weavy hangs: %d %s (Retry-After %q)", r.Status, r.Body, r.Header.Get("Retry-After"))
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("504 after %v, before WEAVY_TIMEOUT", d) // a machine's slowness only lengthens it
	}
	if w := f.token(t, "acc-warm", `{}`, nil); w.Status != http.StatusOK || w.str("access_token") != warm.str("access_token") {
		t.Fatalf("cached user while Weavy hangs: %d %s", w.Status, w.Body)
	}
	if f.wv.Mints() != mints {
		t.Fatalf("a token was minted while Weavy hung")
	}

	// Weavy back, under the long timeout again: the cold user is served.
	f.wv.SetMode(weavysim.OK)
	f.ts.Stop(t)
	f.ts = startServer(t, f.env)
	f.ts.waitReady(t)
	if r := f.token(t, "acc-cold", `{}`, nil); r.Status != http.StatusOK {
		t.Fatalf("cold user once Weavy is back: %d %s", r.Status, r.Body)
	}
}

// No FIT, app token, user token, API key, store key, internal token or Weavy token ever
// appears in the logs, even at debug level and on error paths.
func TestNoSecretsInLogs(t *testing.T) {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	env := tokenEnv(t, jwks, wv)
	storeKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	env["STORE_KEY"] = storeKey
	var offset atomic.Int64 // the server's clock runs ahead of the wall by this
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ts := startServerWith(t, env, serverOptions(now))
	ts.waitReady(t)

	var secrets []string
	appTok := forgetest.MintAppToken(t, time.Now().Add(3*time.Hour))
	secrets = append(secrets, appTok, weavysim.APIKey, storeKey, internalToken)
	// Confluence, asked as the user by the chat resolver: Forge's user
	// token of each call's principal goes with it.
	conf := forgetest.NewConfluenceWith(t, confluencesim.Options{AnyContent: true, Now: now})
	call := func(path, body string, opts ...forgetest.FITOption) reply {
		var minted forgetest.FIT
		opts = append([]forgetest.FITOption{forgetest.WithNow(now), forgetest.WithAPIBaseURL(conf.APIBaseURL(forgetest.CloudID))}, opts...)
		fit := forgetest.MintFIT(t, key, append(opts, func(f *forgetest.FIT) { minted = *f })...)
		secrets = append(secrets, fit)
		h := map[string]string{"x-forge-oauth-system": appTok, "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124"}
		if minted.Principal != "" {
			userTok := conf.IssueUserToken(t, minted.Principal, now().Add(4*time.Hour))
			secrets = append(secrets, userTok)
			h["x-forge-oauth-user"] = userTok
		}
		return ts.post(t, path, fit, h, body)
	}
	tok := call("/resolvers/token", `{}`)
	secrets = append(secrets, tok.str("access_token"))
	secrets = append(secrets, call("/resolvers/token", `{"refresh":true}`).str("access_token"))
	call("/resolvers/token", `{"refresh":`)
	call("/resolvers/nope", `{}`)
	call("/triggers/scheduled", `{}`, forgetest.WithPrincipal(""))
	call("/triggers/scheduled", `{}`, forgetest.WithAudience("ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000000"))
	wv.SetMode(weavysim.Fail500)
	call("/resolvers/token", `{}`, forgetest.WithPrincipal("acc-other"))
	wv.SetMode(weavysim.OK)
	ts.post(t, "/triggers/scheduled", "garbage."+appTok, nil, "{}")
	ts.internal(t, "/internal/app-token?installationId="+forgetest.InstallationID)
	ts.get(t, "/internal/installations", "wrong-"+internalToken)

	// The chat resolver: cold, warm, a squatted app, a bad target, Weavy down.
	chatApps := map[string]int64{}
	for _, page := range []string{pageP, "555"} {
		r := call("/resolvers/chat", `{}`, onPage(page))
		if r.Status != http.StatusOK {
			t.Fatalf("chat: %d %s", r.Status, r.Body)
		}
		chatApps[page] = int64(r.JSON["app_id"].(float64))
	}
	call("/resolvers/chat", `{}`, onPage(pageP))
	call("/resolvers/chat", `{}`, extension(nil))
	call("/resolvers/chat", `{}`, onPage("1 OR 1"))
	// The page check refusing, throttled, failing, and a restriction
	// removing a member: none of it logs the user token.
	conf.Restrict("556", forgetest.AccountID)
	call("/resolvers/chat", `{}`, onPage("556"), forgetest.WithPrincipal("acc-other"))
	// (A burst 429: a quota one would pause the checks that follow.)
	conf.FailNextWithHeaders(1, http.StatusTooManyRequests, http.Header{
		"Retry-After": {"30"}, "Ratelimit-Reason": {"confluence-burst-based"}})
	call("/resolvers/chat", `{}`, onPage("557"))
	conf.FailNext(1, http.StatusInternalServerError, "")
	call("/resolvers/chat", `{}`, onPage("558"))
	offset.Add(int64(chat.DefaultRecheck))
	conf.Restrict("555", "nobody")
	if r := call("/resolvers/chat", `{}`, onPage("555")); r.ErrCode != "no_access" {
		t.Fatalf("chat after a restriction: %d %s", r.Status, r.Body)
	}
	squatTok := call("/resolvers/token", `{}`, forgetest.WithPrincipal("acc-squatter")).str("access_token")
	secrets = append(secrets, squatTok)
	if st := putAsUser(t, wv.URL, squatTok, pageUID(forgetest.CloudID, "666")); st != http.StatusCreated {
		t.Fatalf("squatting: %d", st)
	}
	call("/resolvers/chat", `{}`, onPage("666"), forgetest.WithPrincipal("acc-other"))
	wv.SetMode(weavysim.Fail500)
	call("/resolvers/chat", `{}`, onPage("4711"))
	wv.SetMode(weavysim.OK)
	// The hourly prune of leases past their end (one failing, one removing).
	offset.Add(int64(chat.DefaultLease + time.Hour))
	wv.SetMode(weavysim.Fail500)
	call("/triggers/scheduled", `{}`, forgetest.WithPrincipal(""))
	failed := regexp.MustCompile(`"job failed"[^\n]*"job":"chat_leases"`)
	testwait.For(t, "the failing prune logged", func() bool { return failed.MatchString(ts.Logs.String()) })
	wv.SetMode(weavysim.OK)
	offset.Add(int64(time.Hour))
	call("/triggers/scheduled", `{}`, forgetest.WithPrincipal(""))
	testwait.For(t, "the prune removed the members", func() bool {
		app, _ := wv.App(pageUID(forgetest.CloudID, pageP))
		return len(app.Members) == 0
	})
	ts.Stop(t)

	// The operator's lockdown, dry run and applied, and one against Weavy down.
	var lockOut syncBuffer
	for _, args := range [][]string{{}, {"--apply"}} {
		if err := run(t.Context(), append([]string{"forge-remote", "weavy", "lockdown"}, args...),
			func(k string) string { return env[k] }, &lockOut, &lockOut); err != nil {
			t.Fatalf("lockdown %v: %v\n%s", args, err, lockOut.String())
		}
	}
	wv.SetMode(weavysim.Fail500)
	if err := run(t.Context(), []string{"forge-remote", "weavy", "lockdown"}, func(k string) string { return env[k] }, &lockOut, &lockOut); err == nil {
		t.Fatal("lockdown against a failing Weavy succeeded")
	} else {
		lockOut.Write([]byte(err.Error()))
	}
	wv.SetMode(weavysim.OK)

	logs := ts.Logs.String() + lockOut.String()
	for _, want := range []string{"chat app provisioned", "chat memberships past their lease removed", "app_id",
		"Confluence says the user cannot view the target", "confluence_unavailable"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the chat paths under test did not log %q:\n%s", want, logs)
		}
	}
	if !strings.Contains(logs, `"level":"debug"`) || !strings.Contains(logs, "463ac35c9f6413ad48485a3953bb6124") {
		t.Fatalf("expected debug lines carrying the trace id; logs:\n%s", logs)
	}
	for _, s := range secrets {
		if s == "" {
			t.Fatal("a secret under test is empty")
		}
		if strings.Contains(logs, s) {
			t.Fatalf("a secret appears in the logs or the lockdown's output: %.12s…", s)
		}
		// Also no recognisable piece: the JWT payload segment.
		if parts := strings.Split(s, "."); len(parts) == 3 && strings.Contains(logs, parts[1]) {
			t.Fatalf("a token's payload appears in the logs")
		}
	}
	// Every line about a request names it, the verifier's refusals included.
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "invocation token rejected") && !strings.Contains(line, `"request_id"`) {
			t.Fatalf("a refusal's log line does not name its request: %s", line)
		}
	}
	if !strings.Contains(logs, `"msg":"invocation token rejected","request_id":`) ||
		!regexp.MustCompile(`invocation token rejected[^\n]*"trace_id":"463ac35c9f6413ad48485a3953bb6124"[^\n]*"reason":"bad_audience"`).MatchString(logs) {
		t.Fatal("the refused FIT's log line does not carry its request and trace ids")
	}
	if strings.Contains(logs, "wyu_") || strings.Contains(logs, "wys_") {
		t.Fatalf("a Weavy token or key prefix appears in the logs")
	}
}

// putAsUser upserts app uid with a user's token, as the UIKit (or an
// attacker) does, and returns the status.
func putAsUser(t *testing.T, weavyURL, token, uid string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, weavyURL+"/api/apps/"+uid, strings.NewReader(`{"type":"chat"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
