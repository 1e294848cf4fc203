package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
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
	"github.com/forge-remote/forge-remote/server"
)

// Site S is forgetest's default installation; site T another customer's.
const (
	instT  = "ari:cloud:ecosystem::installation/11111111-2222-4333-8444-555555555555"
	cloudT = "c0ffee00-1111-4222-8333-444455556666"
	// pageP is the content id forgetest's FITs carry.
	pageP = "98305"
)

var dirS = "cf-" + forgetest.CloudID

type chatFixture struct {
	*tokenFixture
	// conf is the sites' Confluence: every page, blog post and space exists
	// and is viewable by everyone unless restricted (Restrict, RestrictSpace).
	conf       *forgetest.Confluence
	offset     atomic.Int64 // the server's clock: wall time plus this
	userTokens sync.Map     // FIT → the user token Forge sends with it
}

func (f *chatFixture) now() time.Time { return time.Now().Add(time.Duration(f.offset.Load())) }

func newChatFixture(t *testing.T, env map[string]string) *chatFixture {
	return newChatFixtureWith(t, env, server.Options{})
}

// newChatFixtureWith is newChatFixture with server options (the clock is
// the fixture's).
func newChatFixtureWith(t *testing.T, env map[string]string, o server.Options) *chatFixture {
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	f := &chatFixture{}
	f.conf = forgetest.NewConfluenceWith(t, confluencesim.Options{AnyContent: true, Now: f.now})
	e := tokenEnv(t, jwks, wv)
	for k, v := range env {
		e[k] = v
	}
	o.Now = f.now
	ts := startServerWith(t, e, o)
	ts.waitReady(t)
	f.tokenFixture = &tokenFixture{key: key, wv: wv, ts: ts, env: e}
	return f
}

// fit is a user's FIT on a site, naming a page (or, with page "", the
// space or nothing: see target), its apiBaseUrl the fixture's Confluence.
// Forge's user token for its principal goes with it (open sends it).
func (f *chatFixture) fit(t *testing.T, account string, opts ...forgetest.FITOption) string {
	var minted forgetest.FIT
	all := append([]forgetest.FITOption{forgetest.WithNow(f.now), forgetest.WithPrincipal(account)}, opts...)
	all = append(all, func(x *forgetest.FIT) {
		if x.APIBaseURL == "" {
			x.APIBaseURL = f.conf.APIBaseURL(x.CloudID)
		}
		minted = *x
	})
	fit := forgetest.MintFIT(t, f.key, all...)
	if minted.Principal != "" {
		f.userTokens.Store(fit, f.conf.IssueUserToken(t, minted.Principal, f.now().Add(4*time.Hour)))
	}
	return fit
}

// userTokenOf is the user token minted with fit.
func (f *chatFixture) userTokenOf(fit string) string {
	tok, _ := f.userTokens.Load(fit)
	s, _ := tok.(string)
	return s
}

// onSiteT puts the FIT on the other customer's site.
var onSiteT = forgetest.WithInstallation(instT, cloudT)

// extension sets context.extension (nil: none, the site-wide chat).
func extension(ext map[string]any) forgetest.FITOption {
	return forgetest.WithClaims(func(c map[string]any) {
		if ext == nil {
			delete(c["context"].(map[string]any), "extension")
			return
		}
		c["context"].(map[string]any)["extension"] = ext
	})
}

func onPage(id string) forgetest.FITOption {
	return extension(map[string]any{"type": "macro", "content": map[string]any{"id": id, "type": "page"}, "space": map[string]any{"key": "ENG"}})
}

// open calls the chat resolver as Forge does: the FIT, and the user token
// minted with it in x-forge-oauth-user.
func (f *chatFixture) open(t *testing.T, fit, body string) reply {
	t.Helper()
	return f.openWith(t, fit, f.userTokenOf(fit), body)
}

// openWith calls the chat resolver with userToken ("": none) beside fit.
func (f *chatFixture) openWith(t *testing.T, fit, userToken, body string) reply {
	t.Helper()
	h := map[string]string{}
	if userToken != "" {
		h["x-forge-oauth-user"] = userToken
	}
	return f.ts.post(t, "/resolvers/chat", fit, h, body)
}

// openOK opens and returns the app id, failing the test otherwise.
func (f *chatFixture) openOK(t *testing.T, fit string) int64 {
	t.Helper()
	r := f.open(t, fit, `{}`)
	id, _ := r.JSON["app_id"].(float64)
	if r.Status != http.StatusOK || id <= 0 || id != float64(int64(id)) {
		t.Fatalf("chat: %d %s", r.Status, r.Body)
	}
	return int64(id)
}

// userToken is a real wyu_ token for the user of fit, from the token resolver.
func (f *chatFixture) userToken(t *testing.T, fit string) string {
	t.Helper()
	r := f.ts.post(t, "/resolvers/token", fit, nil, `{}`)
	if r.Status != http.StatusOK {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	return r.str("access_token")
}

// asUser calls Weavy directly with a user's token, as an attacker would
// from devtools, and returns the status and body.
func (f *chatFixture) asUser(t *testing.T, token, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.wv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func pageUID(cloud, id string) string { return "confluence-" + cloud + "-page-" + id }

// The whole story on one site and its neighbour: A opens page P; B on the
// same site, holding a valid token, cannot read, post or upsert P; a user
// of site T reaches none of S's apps and sees none of S's users.
func TestChatPageAccess(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, bob, carol := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5", "6c21bd9e93f16c33dd8e5f06"

	before := f.wv.AdminCalls()
	r := f.open(t, f.fit(t, alice, onPage(pageP)), `{}`)
	cold := f.wv.AdminCalls() - before
	if r.Status != http.StatusOK || r.str("uid") != pageUID(forgetest.CloudID, pageP) || r.str("name") != "Confluence page "+pageP {
		t.Fatalf("open: %d %s", r.Status, r.Body)
	}
	appID := int64(r.JSON["app_id"].(float64))
	app, ok := f.wv.App(pageUID(forgetest.CloudID, pageP))
	if !ok || app.ID != appID || app.Access != "none" || app.Directory != dirS || app.Members[alice] != "write" || len(app.Members) != 1 {
		t.Fatalf("app in Weavy: %+v", app)
	}
	// The first open on a site: directory, app, its members (squatters),
	// the user's directories, the membership.
	t.Logf("cold open of the first chat on a site: %d Weavy calls: %v", cold, f.wv.AdminRequests(before))
	if cold != 5 {
		t.Fatalf("cold open made %d Weavy calls, want 5: %v", cold, f.wv.AdminRequests(before))
	}
	if dirs := f.wv.UserDirectories(alice); !slices.Equal(dirs, []string{dirS}) {
		t.Fatalf("alice's directories %v", dirs)
	}

	// Warm: no Weavy call, the same answer.
	before = f.wv.AdminCalls()
	for range 5 {
		if id := f.openOK(t, f.fit(t, alice, onPage(pageP))); id != appID {
			t.Fatalf("warm open answered app %d, want %d", id, appID)
		}
	}
	if n := f.wv.AdminCalls() - before; n != 0 {
		t.Fatalf("warm opens made %d Weavy calls: %v", n, f.wv.AdminRequests(before))
	}

	// A reads and posts with her own token.
	aTok := f.userToken(t, f.fit(t, alice))
	msgs := fmt.Sprintf("/api/apps/%d/messages", appID)
	if st, b := f.asUser(t, aTok, "POST", msgs, `{"text":"secret roadmap"}`); st != http.StatusCreated {
		t.Fatalf("A posting: %d %s", st, b)
	}
	if st, b := f.asUser(t, aTok, "GET", fmt.Sprintf("/api/apps/%d", appID), ""); st != http.StatusOK {
		t.Fatalf("A reading her app: %d %s", st, b)
	}

	// B: same site, valid token, never opened P.
	bTok := f.userToken(t, f.fit(t, bob))
	// C: site T, in T's directory after opening T's site-wide chat.
	cTok := f.userToken(t, f.fit(t, carol, onSiteT))
	f.openOK(t, f.fit(t, carol, onSiteT, extension(nil)))
	// S's site-wide chat exists too, open to S's directory.
	siteS := f.openOK(t, f.fit(t, alice, extension(nil)))
	for _, who := range []struct{ name, tok string }{{"B (site S)", bTok}, {"C (site T)", cTok}} {
		for _, c := range []struct{ method, path, body string }{
			{"GET", msgs, ""},
			{"POST", msgs, `{"text":"let me in"}`},
			{"GET", fmt.Sprintf("/api/apps/%d", appID), ""},
			{"GET", "/api/apps/" + pageUID(forgetest.CloudID, pageP), ""},
			{"PUT", "/api/apps/" + pageUID(forgetest.CloudID, pageP), `{"type":"chat"}`},
			{"PUT", "/api/apps/" + pageUID(forgetest.CloudID, pageP), `{"type":"chat","access":"write"}`},
			{"PUT", fmt.Sprintf("/api/apps/%d/members/%s", appID, "attacker"), `{"access":"write"}`},
		} {
			if st, b := f.asUser(t, who.tok, c.method, c.path, c.body); st < 400 {
				t.Errorf("%s: %s %s answered %d %s", who.name, c.method, c.path, st, b)
			}
		}
	}
	// T's user cannot reach S's site-wide chat either, whatever uid or id.
	for _, path := range []string{fmt.Sprintf("/api/apps/%d/messages", siteS), "/api/apps/confluence-" + forgetest.CloudID + "-global"} {
		if st, _ := f.asUser(t, cTok, "GET", path, ""); st != http.StatusForbidden {
			t.Errorf("C read S's site chat at %s: %d", path, st)
		}
	}
	app, _ = f.wv.App(pageUID(forgetest.CloudID, pageP))
	if len(app.Members) != 1 || app.Access != "none" || app.Messages != 1 {
		t.Fatalf("P after the attempts: %+v", app)
	}
	// No app of S, and no user of S, is visible to C.
	_, list := f.asUser(t, cTok, "GET", "/api/apps", "")
	if strings.Contains(list, forgetest.CloudID) {
		t.Errorf("C lists S's apps: %s", list)
	}
	_, users := f.asUser(t, cTok, "GET", "/api/users", "")
	if strings.Contains(users, alice) || strings.Contains(users, bob) || !strings.Contains(users, carol) {
		t.Errorf("C's user search: %s", users)
	}
}

// An attacker creating P's app with their own token before anyone opens
// it (today's Weavy makes it open, the attacker a member) is no member once
// A has opened it, and can no longer read it.
func TestChatSquatter(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, mallory := forgetest.AccountID, "7d32ce0fa4027d44ee9f6017"
	mTok := f.userToken(t, f.fit(t, mallory, onSiteT))
	uid := pageUID(forgetest.CloudID, "555")
	st, body := f.asUser(t, mTok, "PUT", "/api/apps/"+uid, `{"type":"chat"}`)
	var squat struct {
		ID     int64  `json:"id"`
		Access string `json:"access"`
	}
	_ = json.Unmarshal([]byte(body), &squat)
	if st != http.StatusCreated || squat.Access != "write" {
		t.Fatalf("the fake must let a user create an open app, as Weavy does: %d %s", st, body)
	}
	msgs := fmt.Sprintf("/api/apps/%d/messages", squat.ID)
	if st, _ := f.asUser(t, mTok, "POST", msgs, `{"text":"planted"}`); st != http.StatusCreated {
		t.Fatalf("squatter posting before: %d", st)
	}

	if id := f.openOK(t, f.fit(t, alice, onPage("555"))); id != squat.ID {
		t.Fatalf("A got app %d, the squatted app is %d", id, squat.ID)
	}
	app, _ := f.wv.App(uid)
	if _, still := app.Members[mallory]; still || app.Access != "none" || app.Directory != dirS || app.Members[alice] != "write" {
		t.Fatalf("after A's open: %+v", app)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", msgs, ""}, {"POST", msgs, `{"text":"still here?"}`}, {"PUT", "/api/apps/" + uid, `{"type":"chat"}`},
	} {
		if st, _ := f.asUser(t, mTok, c.method, c.path, c.body); st != http.StatusForbidden {
			t.Errorf("squatter %s %s after A's open: %d", c.method, c.path, st)
		}
	}
}

// Where the FIT names content, the body cannot name another: a
// disagreement is refused (400) and makes nothing; fields it does not read
// are ignored. The chat is the FIT's.
func TestChatBodyCannotOverrideFIT(t *testing.T) {
	f := newChatFixture(t, nil)
	alice := forgetest.AccountID
	other := pageUID(forgetest.CloudID, "777")
	for _, body := range []string{
		`{"contentId":"777"}`,
		`{"contentId":777}`,
		`{"contentId":"` + pageP + `","contentType":"blogpost"}`,
		`{"contentId":"` + pageP + `","spaceKey":"OTHER"}`,
		`{"contentType":"whiteboard"}`,
	} {
		if r := f.open(t, f.fit(t, alice, onPage(pageP)), body); r.Status != http.StatusBadRequest || r.ErrCode != "bad_request" {
			t.Errorf("body %s: %d %s", body, r.Status, r.Body)
		}
	}
	if f.wv.Apps() != 0 || len(f.conf.ContentChecks()) != 0 {
		t.Fatalf("refused bodies made %d apps and %d Confluence checks", f.wv.Apps(), len(f.conf.ContentChecks()))
	}
	for _, body := range []string{
		`{}`,
		`{"contentId":"` + pageP + `","contentType":"page","spaceKey":"ENG"}`,
		`{"uid":"` + other + `","app_id":1,"space":{"key":"X"},"cloudId":"` + cloudT + `"}`,
	} {
		r := f.open(t, f.fit(t, alice, onPage(pageP)), body)
		if r.Status != http.StatusOK || r.str("uid") != pageUID(forgetest.CloudID, pageP) {
			t.Fatalf("body %s: %d %s", body, r.Status, r.Body)
		}
	}
	fit := f.fit(t, alice, onPage(pageP))
	env := f.ts.post(t, "/resolvers", fit, map[string]string{"x-forge-oauth-user": f.userTokenOf(fit)},
		`{"call":{"functionKey":"chat","payload":{"contentId":"777"}},"context":{"extension":{"content":{"id":"777"}},"cloudId":"`+cloudT+`"}}`)
	if env.Status != http.StatusBadRequest {
		t.Fatalf("envelope naming another page: %d %s", env.Status, env.Body)
	}
	if _, made := f.wv.App(other); made || f.wv.Apps() != 1 {
		t.Fatalf("another app was made: %d apps", f.wv.Apps())
	}

	// A space page without content, a blog post, and no extension at all.
	space := f.open(t, f.fit(t, alice, extension(map[string]any{"space": map[string]any{"key": "ENG", "id": "65537"}})), `{}`)
	blog := f.open(t, f.fit(t, alice, extension(map[string]any{"content": map[string]any{"id": "4242", "type": "blogpost"}})), `{}`)
	site := f.open(t, f.fit(t, alice, extension(nil)), `{}`)
	for _, c := range []struct {
		r           reply
		uid, access string
		members     int
	}{
		{space, "confluence-" + forgetest.CloudID + "-space-ENG", "none", 1},
		{blog, pageUID(forgetest.CloudID, "4242"), "none", 1},
		{site, "confluence-" + forgetest.CloudID + "-global", "write", 0},
	} {
		app, ok := f.wv.App(c.uid)
		if c.r.Status != http.StatusOK || c.r.str("uid") != c.uid || !ok || app.Access != c.access || app.Directory != dirS || len(app.Members) != c.members {
			t.Errorf("%s: %d %s; app %+v", c.uid, c.r.Status, c.r.Body, app)
		}
	}
	// Each was checked at its own API, as alice; the site chat was not.
	var paths []string
	for _, c := range f.conf.ContentChecks() {
		if c.As != alice {
			t.Errorf("check %s %s made as %q", c.Path, c.Query, c.As)
		}
		paths = append(paths, c.Path+"?"+c.Query)
	}
	for _, want := range []string{"/wiki/api/v2/pages/" + pageP + "?", "/wiki/api/v2/spaces?keys=ENG", "/wiki/api/v2/blogposts/4242?"} {
		if !slices.Contains(paths, want) {
			t.Errorf("no check %s among %v", want, paths)
		}
	}
	if len(paths) != 3 {
		t.Errorf("%d checks, want 3 (one per target; the site chat none): %v", len(paths), paths)
	}
	// A FIT naming something that is no Confluence id is refused, and
	// nothing is made.
	apps := f.wv.Apps()
	for _, id := range []string{"12 OR 1=1", "99999999999999999999"} {
		if r := f.open(t, f.fit(t, alice, onPage(id)), `{}`); r.Status != http.StatusBadRequest || f.wv.Apps() != apps {
			t.Fatalf("bad content id %q: %d %s", id, r.Status, r.Body)
		}
	}
}

// Where the FIT names no content (a global page, or an app on
// `context: trusted-only`), the body names it, and gets the same check.
func TestChatBodyTargetIsChecked(t *testing.T) {
	f := newChatFixture(t, nil)
	alice, bob := forgetest.AccountID, "5b10ac8d82e05b22cc7d4ef5"
	f.conf.Restrict("4242", alice)
	f.conf.RestrictSpace("SEC", alice)
	global := extension(nil)
	blog := `{"contentId":"4242","contentType":"blogpost"}`
	if r := f.open(t, f.fit(t, alice, global), blog); r.Status != http.StatusOK || r.str("uid") != pageUID(forgetest.CloudID, "4242") {
		t.Fatalf("alice, body blog post: %d %s", r.Status, r.Body)
	}
	if r := f.open(t, f.fit(t, alice, global), `{"spaceKey":"SEC"}`); r.Status != http.StatusOK || r.str("uid") != "confluence-"+forgetest.CloudID+"-space-SEC" {
		t.Fatalf("alice, body space: %d %s", r.Status, r.Body)
	}
	admin := f.wv.AdminCalls()
	for _, body := range []string{blog, `{"contentId":"4242"}`, `{"spaceKey":"SEC"}`} {
		if r := f.open(t, f.fit(t, bob, global), body); r.Status != http.StatusForbidden || r.ErrCode != "no_access" {
			t.Errorf("bob, body %s: %d %s", body, r.Status, r.Body)
		}
	}
	if f.wv.AdminCalls() != admin {
		t.Errorf("bob's refused opens made %d Weavy calls", f.wv.AdminCalls()-admin)
	}
	for _, uid := range []string{pageUID(forgetest.CloudID, "4242"), "confluence-" + forgetest.CloudID + "-space-SEC"} {
		if app, _ := f.wv.App(uid); app.Members[bob] != "" || app.Members[alice] == "" {
			t.Errorf("%s members: %v", uid, app.Members)
		}
	}
	// Nothing named: the site-wide chat, with no check.
	checks := len(f.conf.ContentChecks())
	if r := f.open(t, f.fit(t, bob, global), `{}`); r.Status != http.StatusOK || r.str("uid") != "confluence-"+forgetest.CloudID+"-global" || len(f.conf.ContentChecks()) != checks {
		t.Fatalf("bob, site chat: %d %s", r.Status, r.Body)
	}
}

// Anonymous viewers, lapsed licences and FITs without a user are refused
// before any Weavy call.
func TestChatRefusals(t *testing.T) {
	f := newChatFixture(t, nil)
	license := forgetest.WithClaims(func(c map[string]any) {
		c["app"].(map[string]any)["license"] = map[string]any{"active": false}
	})
	for _, c := range []struct {
		name string
		fit  string
		code string
	}{
		{"anonymous", f.fit(t, forge.AnonymousPrincipal), "anonymous"},
		{"licence inactive", f.fit(t, forgetest.AccountID, license), "license_inactive"},
		{"no user", forgetest.MintFIT(t, f.key, forgetest.WithPrincipal("")), "no_user"},
	} {
		r := f.open(t, c.fit, `{}`)
		if r.Status != http.StatusForbidden || r.ErrCode != c.code {
			t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
		}
	}
	if n := len(f.wv.Requests()); n != 0 {
		t.Fatalf("refused opens reached Weavy: %v", f.wv.Requests())
	}
}

// Many first opens of one page at once, by different users: one app
// provisioning, every user a member.
func TestChatConcurrentFirstOpens(t *testing.T) {
	f := newChatFixture(t, nil)
	const n = 20
	ids := make([]int64, n)
	fits := make([]string, n)
	for i := range n {
		fits[i] = f.fit(t, fmt.Sprintf("acc-%02d", i), onPage("31337"))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { // t.Fatal belongs to the test's goroutine: report, then check
			r := f.open(t, fits[i], `{}`)
			if id, _ := r.JSON["app_id"].(float64); r.Status == http.StatusOK {
				ids[i] = int64(id)
			} else {
				t.Errorf("open %d: %d %s", i, r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	puts := 0
	for _, r := range f.wv.AdminRequests(0) {
		if strings.HasPrefix(r, "PUT /api/apps/confluence-") {
			puts++
		}
	}
	app, _ := f.wv.App(pageUID(forgetest.CloudID, "31337"))
	if puts != 1 || len(app.Members) != n {
		t.Fatalf("%d app upserts, %d members; want 1 and %d", puts, len(app.Members), n)
	}
	for _, id := range ids {
		if id != app.ID {
			t.Fatalf("answers name different apps: %v", ids)
		}
	}

	// One user opening one page many times at once: one Confluence check.
	checks := len(f.conf.ContentChecks())
	f.offset.Add(int64(chat.DefaultRecheck)) // every verdict held is stale
	fit := f.fit(t, "acc-00", onPage("31337"))
	for range n {
		wg.Go(func() {
			if r := f.open(t, fit, `{}`); r.Status != http.StatusOK {
				t.Errorf("concurrent open: %d %s", r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	if d := len(f.conf.ContentChecks()) - checks; d != 1 {
		t.Fatalf("%d concurrent opens by one user made %d Confluence checks, want 1", n, d)
	}
}

func serverOptions(now func() time.Time) server.Options { return server.Options{Now: now} }

// A FIT whose context.cloudId is not its installation's site (Forge signs
// both, so only a Forge bug or a stolen key could make one) must not open,
// create or join any chat of the site it names: the uid, the directory and
// the user's identity all follow the cloudId.
func TestChatSiteMismatch(t *testing.T) {
	f := newChatFixture(t, nil)
	alice := forgetest.AccountID
	otherCloud := forgetest.WithClaims(func(c map[string]any) { c["context"].(map[string]any)["cloudId"] = cloudT })
	noInstallationClaim := forgetest.WithClaims(func(c map[string]any) { delete(c["app"].(map[string]any), "installation") })
	refused := func(name string, fit string) {
		t.Helper()
		before := f.wv.AdminCalls()
		if r := f.open(t, fit, `{}`); r.Status != http.StatusBadRequest || r.ErrCode == "" || !strings.Contains(string(r.Body), "site") {
			t.Fatalf("%s: %d %s", name, r.Status, r.Body)
		}
		if n := f.wv.AdminCalls() - before; n != 0 {
			t.Fatalf("%s: %d Weavy calls: %v", name, n, f.wv.AdminRequests(before))
		}
		if _, made := f.wv.App(pageUID(cloudT, pageP)); made || f.wv.Directory(chat.DirectoryName(cloudT)) {
			t.Fatalf("%s: site T's app or directory was made", name)
		}
	}
	// The first call of the installation: the installation claim lists S only.
	refused("cloudId not among the installation's contexts", f.fit(t, alice, onPage(pageP), otherCloud))

	// Once the installation has opened a chat on S, it stays S's, even for a
	// FIT without the installation claim, on the warm path too.
	f.openOK(t, f.fit(t, alice, onPage(pageP)))
	refused("installation pinned to its first site", f.fit(t, alice, onPage(pageP), otherCloud, noInstallationClaim))
	refused("site-wide chat of another site", f.fit(t, alice, extension(nil), otherCloud, noInstallationClaim))
	if dirs := f.wv.UserDirectories(alice); !slices.Equal(dirs, []string{dirS}) {
		t.Fatalf("alice is in %v", dirs)
	}
}
