package confluencesim_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

func TestMain(m *testing.M) { testwait.VerifyTestMain(m) }

const (
	cloud = "0b1a2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	alice = "712020:alice"
	bob   = "712020:bob"
)

// env is a simulator, an app token and a client, all ended with the test.
type env struct {
	sim    *confluencesim.Server
	app    string
	client *http.Client
}

func start(t *testing.T, opts confluencesim.Options) *env {
	t.Helper()
	e := &env{
		sim:    confluencesim.New(nil, opts),
		app:    "app-token",
		client: &http.Client{Transport: &http.Transport{}},
	}
	t.Cleanup(func() {
		e.sim.Close()
		e.client.CloseIdleConnections()
	})
	e.sim.Accept(e.app, time.Now().Add(time.Hour))
	return e
}

func (e *env) user(id string) string { return e.sim.IssueUserToken(id, time.Now().Add(time.Hour)) }

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   map[string]any
}

// get calls GET {apiBaseUrl}{path} with the bearer token tok.
func (e *env) get(t *testing.T, tok, path string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.sim.APIBaseURL(cloud)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return e.do(t, req)
}

func (e *env) do(t *testing.T, req *http.Request) answer {
	t.Helper()
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: res.StatusCode, header: res.Header}
	if len(b) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &a.body); err != nil {
			t.Fatalf("%s %s: %v in %s", req.Method, req.URL.Path, err, b)
		}
	}
	return a
}

// status calls GET path with tok and fails t unless it answers want.
func (e *env) status(t *testing.T, tok, path string, want int) answer {
	t.Helper()
	a := e.get(t, tok, path)
	if a.status != want {
		t.Fatalf("GET %s = %d %v, want %d", path, a.status, a.body, want)
	}
	return a
}

// spaceKeys calls GET /wiki/api/v2/spaces?query with tok and returns the
// listed keys.
func (e *env) spaceKeys(t *testing.T, tok, query string) []string {
	t.Helper()
	a := e.status(t, tok, "/wiki/api/v2/spaces?"+query, http.StatusOK)
	results, ok := a.body["results"].([]any)
	if !ok {
		t.Fatalf("spaces?%s: results = %#v, want a list", query, a.body["results"])
	}
	keys := []string{}
	for _, r := range results {
		sp := r.(map[string]any)
		if sp["type"] != "global" || sp["status"] != "current" || sp["id"] == "" || sp["name"] == "" {
			t.Fatalf("spaces?%s: %v", query, sp)
		}
		keys = append(keys, sp["key"].(string))
	}
	return keys
}

var notFoundBody = map[string]any{"errors": []any{map[string]any{
	"status": float64(404), "code": "NOT_FOUND", "title": "Not Found", "detail": nil,
}}}

func TestChecksRecordWhoCalled(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.AddSpace("ENG", "65537")
	e.sim.AddContent("98305", confluencesim.Page, "ENG")
	alicesToken := e.user(alice)
	expired := e.sim.IssueUserToken(bob, time.Now().Add(-time.Minute))

	e.status(t, e.app, "/wiki/api/v2/pages/98305", http.StatusOK)
	e.status(t, alicesToken, "/wiki/api/v2/pages/98305", http.StatusOK)
	e.status(t, alicesToken, "/wiki/api/v2/spaces?keys=ENG", http.StatusOK)
	e.status(t, expired, "/wiki/api/v2/pages/98305", http.StatusUnauthorized)
	e.status(t, alicesToken, "/wiki/rest/api/user?accountId="+alice, http.StatusNotFound) // not a content call

	want := []confluencesim.Check{
		{Method: "GET", CloudID: cloud, Path: "/wiki/api/v2/pages/98305", As: confluencesim.AsApp},
		{Method: "GET", CloudID: cloud, Path: "/wiki/api/v2/pages/98305", As: alice},
		{Method: "GET", CloudID: cloud, Path: "/wiki/api/v2/spaces", Query: "keys=ENG", As: alice},
	}
	if got := e.sim.ContentChecks(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ContentChecks = %+v\nwant %+v", got, want)
	}
	if e.sim.Calls() != 5 || e.sim.ExpiredCalls() != 1 || len(e.sim.Requests()) != 5 {
		t.Fatalf("calls %d, expired %d, requests %v", e.sim.Calls(), e.sim.ExpiredCalls(), e.sim.Requests())
	}
}

func TestUserTokensFromOptions(t *testing.T) {
	e := start(t, confluencesim.Options{
		AnyContent: true,
		UserTokens: func(tok string) (string, time.Time, bool) {
			id, ok := strings.CutPrefix(tok, "other-process:")
			return id, time.Now().Add(time.Hour), ok
		},
	})
	e.status(t, "other-process:"+bob, "/wiki/api/v2/blogposts/7", http.StatusOK)
	e.status(t, "someone-else:"+bob, "/wiki/api/v2/blogposts/7", http.StatusUnauthorized)
	if got := e.sim.ContentChecks(); len(got) != 1 || got[0].As != bob {
		t.Fatalf("ContentChecks = %+v, want one as %s", got, bob)
	}
}

func TestRestrictedPage(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.SetSiteURL("https://example.atlassian.net")
	e.sim.AddSpace("ENG", "65537")
	e.sim.AddContent("98305", confluencesim.Page, "ENG")
	e.sim.Restrict("98305", alice)
	const page = "/wiki/api/v2/pages/98305"

	a := e.status(t, e.user(alice), page, http.StatusOK)
	links, _ := a.body["_links"].(map[string]any)
	if a.body["id"] != "98305" || a.body["status"] != "current" || a.body["spaceId"] != "65537" || a.body["title"] == "" ||
		links["webui"] == nil || links["base"] != "https://example.atlassian.net/wiki" {
		t.Fatalf("page = %v", a.body)
	}
	for _, tok := range []string{e.user(bob), e.app} { // ECO-822: the app user is shut out too
		if a := e.status(t, tok, page, http.StatusNotFound); !reflect.DeepEqual(a.body, notFoundBody) {
			t.Fatalf("restricted page: %v, want %v", a.body, notFoundBody)
		}
	}
	// Missing content answers exactly as restricted content does.
	if a := e.status(t, e.user(alice), "/wiki/api/v2/pages/98306", http.StatusNotFound); !reflect.DeepEqual(a.body, notFoundBody) {
		t.Fatalf("missing page: %v", a.body)
	}

	e.sim.Restrict("98305", alice, confluencesim.AsApp)
	e.status(t, e.app, page, http.StatusOK)
	e.status(t, e.user(bob), page, http.StatusNotFound)

	e.sim.Restrict("98305") // nobody
	e.status(t, e.user(alice), page, http.StatusNotFound)

	e.sim.Unrestrict("98305")
	e.status(t, e.user(bob), page, http.StatusOK)
	e.status(t, e.app, page, http.StatusOK)
}

func TestBlogPosts(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.AddSpace("ENG", "65537")
	e.sim.AddContent("200", confluencesim.BlogPost, "ENG")
	e.sim.AddContent("300", confluencesim.Page, "ENG")
	tok := e.user(alice)

	if a := e.status(t, tok, "/wiki/api/v2/blogposts/200", http.StatusOK); a.body["id"] != "200" || a.body["spaceId"] != "65537" {
		t.Fatalf("blog post = %v", a.body)
	}
	e.status(t, tok, "/wiki/api/v2/pages/200", http.StatusNotFound)     // a blog post is no page
	e.status(t, tok, "/wiki/api/v2/blogposts/300", http.StatusNotFound) // nor a page a blog post
	e.status(t, tok, "/wiki/api/v2/pages/300", http.StatusOK)

	e.sim.Restrict("200", bob)
	e.status(t, tok, "/wiki/api/v2/blogposts/200", http.StatusNotFound)
	e.status(t, e.user(bob), "/wiki/api/v2/blogposts/200", http.StatusOK)

	for _, id := range []string{"abc", "-1", "12a", "9223372036854775808"} {
		for _, kind := range []string{"pages", "blogposts", "spaces"} {
			a := e.status(t, tok, "/wiki/api/v2/"+kind+"/"+id, http.StatusBadRequest)
			if errs, _ := a.body["errors"].([]any); len(errs) != 1 {
				t.Fatalf("%s/%s: %v, want v2's error shape", kind, id, a.body)
			}
		}
	}
	e.status(t, tok, "/wiki/api/v2/pages/9223372036854775807", http.StatusNotFound) // the largest int64 is an id
}

func TestSpacesByKeys(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.AddSpace("ENG", "3")
	e.sim.AddSpace("HR", "2")
	e.sim.AddSpace("OPS", "10")
	e.sim.RestrictSpace("HR", alice)
	aliceTok, bobTok := e.user(alice), e.user(bob)

	if got := e.spaceKeys(t, bobTok, "keys=OPS,HR,ENG,NOPE"); !slices.Equal(got, []string{"ENG", "OPS"}) {
		t.Fatalf("bob sees %v, want [ENG OPS]", got)
	}
	if got := e.spaceKeys(t, aliceTok, "keys=OPS,HR&keys=ENG"); !slices.Equal(got, []string{"HR", "ENG", "OPS"}) {
		t.Fatalf("alice sees %v, want [HR ENG OPS] (by id)", got)
	}
	if got := e.spaceKeys(t, bobTok, "keys=HR"); len(got) != 0 {
		t.Fatalf("bob sees %v of HR, want none", got)
	}
	if got := e.spaceKeys(t, e.app, "keys=HR,ENG"); !slices.Equal(got, []string{"ENG"}) {
		t.Fatalf("the app sees %v, want [ENG]", got)
	}
	if got := e.spaceKeys(t, bobTok, "ids=2,10"); !slices.Equal(got, []string{"OPS"}) {
		t.Fatalf("bob sees %v of ids 2,10, want [OPS]", got)
	}

	if a := e.status(t, aliceTok, "/wiki/api/v2/spaces/2", http.StatusOK); a.body["key"] != "HR" || a.body["id"] != "2" {
		t.Fatalf("space 2 = %v", a.body)
	}
	e.status(t, bobTok, "/wiki/api/v2/spaces/2", http.StatusNotFound)
	e.status(t, aliceTok, "/wiki/api/v2/spaces/4", http.StatusNotFound)

	e.sim.UnrestrictSpace("HR")
	if got := e.spaceKeys(t, bobTok, "keys=HR"); !slices.Equal(got, []string{"HR"}) {
		t.Fatalf("bob sees %v of an open HR", got)
	}
}

func TestSpaceRestrictionHidesItsContent(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.AddSpace("HR", "2")
	e.sim.AddContent("11", confluencesim.Page, "HR")
	e.sim.AddContent("12", confluencesim.BlogPost, "HR")
	e.sim.RestrictSpace("HR", alice)
	aliceTok, bobTok := e.user(alice), e.user(bob)

	e.status(t, aliceTok, "/wiki/api/v2/pages/11", http.StatusOK)
	e.status(t, aliceTok, "/wiki/api/v2/blogposts/12", http.StatusOK)
	e.status(t, bobTok, "/wiki/api/v2/pages/11", http.StatusNotFound)
	e.status(t, bobTok, "/wiki/api/v2/blogposts/12", http.StatusNotFound)
	e.status(t, e.app, "/wiki/api/v2/pages/11", http.StatusNotFound)

	// A page's viewers are those its space AND its restriction let in.
	e.sim.Restrict("11", bob)
	e.status(t, aliceTok, "/wiki/api/v2/pages/11", http.StatusNotFound)
	e.status(t, bobTok, "/wiki/api/v2/pages/11", http.StatusNotFound)
	e.sim.RestrictSpace("HR", alice, bob)
	e.status(t, bobTok, "/wiki/api/v2/pages/11", http.StatusOK)
	e.status(t, aliceTok, "/wiki/api/v2/pages/11", http.StatusNotFound)
}

func TestGuestsAreForbidden(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.AddSpace("ENG", "3")
	e.sim.AddContent("11", confluencesim.Page, "ENG")
	e.sim.AddContent("12", confluencesim.BlogPost, "ENG")
	e.sim.SetGuest(bob)
	guest := e.user(bob)

	for _, p := range []string{"/wiki/api/v2/pages/11", "/wiki/api/v2/blogposts/12", "/wiki/api/v2/spaces?keys=ENG", "/wiki/api/v2/spaces/3"} {
		a := e.status(t, guest, p, http.StatusForbidden)
		if errs, _ := a.body["errors"].([]any); len(errs) != 1 {
			t.Fatalf("%s: %v", p, a.body)
		}
		e.status(t, e.user(alice), p, http.StatusOK)
		e.status(t, e.app, p, http.StatusOK)
	}
	if got := e.sim.ContentChecks(); len(got) != 12 || got[0].As != bob {
		t.Fatalf("ContentChecks = %+v, want 12, the first as the guest", got)
	}
}

func TestAnyContent(t *testing.T) {
	e := start(t, confluencesim.Options{AnyContent: true})
	e.sim.AddSpace("ENG", "3")
	e.sim.AddContent("5", confluencesim.Page, "ENG")
	aliceTok, bobTok := e.user(alice), e.user(bob)

	page := e.status(t, bobTok, "/wiki/api/v2/pages/123456", http.StatusOK)
	e.status(t, bobTok, "/wiki/api/v2/blogposts/123456", http.StatusOK)
	e.status(t, e.app, "/wiki/api/v2/pages/123456", http.StatusOK)
	e.status(t, bobTok, "/wiki/api/v2/pages/abc", http.StatusBadRequest)
	// Content added keeps its type.
	e.status(t, bobTok, "/wiki/api/v2/pages/5", http.StatusOK)
	e.status(t, bobTok, "/wiki/api/v2/blogposts/5", http.StatusNotFound)

	// The made-up content's space is AnySpaceKey, found by key and by id alike.
	space := e.status(t, bobTok, "/wiki/api/v2/spaces/"+page.body["spaceId"].(string), http.StatusOK)
	if space.body["key"] != confluencesim.AnySpaceKey {
		t.Fatalf("made-up page's space = %v, want %s", space.body, confluencesim.AnySpaceKey)
	}
	if got := e.spaceKeys(t, bobTok, "keys=XYZ,ENG,"+confluencesim.AnySpaceKey); len(got) != 3 {
		t.Fatalf("spaces = %v, want all three", got)
	}
	xyz := e.get(t, bobTok, "/wiki/api/v2/spaces?keys=XYZ").body["results"].([]any)[0].(map[string]any)
	if a := e.status(t, bobTok, "/wiki/api/v2/spaces/"+xyz["id"].(string), http.StatusOK); a.body["key"] != "XYZ" {
		t.Fatalf("space %v by id = %v", xyz["id"], a.body)
	}
	e.status(t, bobTok, "/wiki/api/v2/spaces/777", http.StatusOK)

	e.sim.Restrict("123456", alice)
	e.status(t, aliceTok, "/wiki/api/v2/pages/123456", http.StatusOK)
	e.status(t, bobTok, "/wiki/api/v2/pages/123456", http.StatusNotFound)
	e.status(t, bobTok, "/wiki/api/v2/blogposts/123456", http.StatusNotFound) // the same id

	e.sim.RestrictSpace(confluencesim.AnySpaceKey, bob)
	e.status(t, bobTok, "/wiki/api/v2/pages/999", http.StatusOK)
	e.status(t, aliceTok, "/wiki/api/v2/pages/999", http.StatusNotFound)
	if got := e.spaceKeys(t, aliceTok, "keys="+confluencesim.AnySpaceKey); len(got) != 0 {
		t.Fatalf("alice sees %v of a space closed to her", got)
	}
}

func TestWithoutAnyContentNothingIsMadeUp(t *testing.T) {
	e := start(t, confluencesim.Options{})
	tok := e.user(alice)
	e.status(t, tok, "/wiki/api/v2/pages/1", http.StatusNotFound)
	e.status(t, tok, "/wiki/api/v2/blogposts/1", http.StatusNotFound)
	e.status(t, tok, "/wiki/api/v2/spaces/1", http.StatusNotFound)
	if got := e.spaceKeys(t, tok, "keys="+confluencesim.AnySpaceKey); len(got) != 0 {
		t.Fatalf("spaces = %v, want none", got)
	}
}

func TestFailuresCarryHeaders(t *testing.T) {
	e := start(t, confluencesim.Options{AnyContent: true})
	tok := e.user(alice)
	e.sim.FailNextWithHeaders(1, http.StatusTooManyRequests, http.Header{
		"Retry-After": {"5"}, "X-Ratelimit-Reset": {"2026-03-02T10:00:00Z"}, "Ratelimit-Reason": {"confluence-quota-global-based"},
	})
	e.sim.FailNext(1, http.StatusServiceUnavailable, "")

	a := e.status(t, tok, "/wiki/api/v2/pages/1", http.StatusTooManyRequests)
	if a.header.Get("Retry-After") != "5" || a.header.Get("X-RateLimit-Reset") != "2026-03-02T10:00:00Z" || a.header.Get("RateLimit-Reason") == "" {
		t.Fatalf("429's headers: %v", a.header)
	}
	if a := e.status(t, tok, "/wiki/api/v2/pages/1", http.StatusServiceUnavailable); a.header.Get("Retry-After") != "" {
		t.Fatalf("503's headers: %v", a.header)
	}
	e.sim.SetHeaders(http.Header{"X-Ratelimit-Nearlimit": {"true"}})
	if a := e.status(t, tok, "/wiki/api/v2/pages/1", http.StatusOK); a.header.Get("X-RateLimit-NearLimit") != "true" {
		t.Fatalf("200's headers: %v", a.header)
	}
	if got := len(e.sim.ContentChecks()); got != 3 {
		t.Fatalf("%d checks, want the failed ones too (3)", got)
	}
}

// hangingGet starts GET pages/1 with ctx and waits until the simulator holds
// it; the channel gets the client's error.
func (e *env) hangingGet(t *testing.T, ctx context.Context) <-chan error {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.sim.APIBaseURL(cloud)+"/wiki/api/v2/pages/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.app)
	done := make(chan error, 1)
	go func() {
		res, err := e.client.Do(req)
		if err == nil {
			res.Body.Close()
			err = errors.New(res.Status)
		}
		done <- err
	}()
	testwait.For(t, "the call to hang", func() bool { return e.sim.Hanging() == 1 })
	return done
}

func TestHangNextEndsWhenTheClientGivesUp(t *testing.T) {
	e := start(t, confluencesim.Options{AnyContent: true})
	e.sim.HangNext(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := e.hangingGet(t, ctx)
	cancel()
	if err := testwait.Recv(t, "the client to give up", done); !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want context.Canceled", err)
	}
	testwait.For(t, "the handler to return", func() bool { return e.sim.Hanging() == 0 })
	e.status(t, e.app, "/wiki/api/v2/pages/1", http.StatusOK) // one call hung, not the next
}

func TestCloseReleasesHangingCalls(t *testing.T) {
	e := start(t, confluencesim.Options{AnyContent: true})
	e.sim.HangNext(2)
	done := e.hangingGet(t, context.Background())
	closed := make(chan struct{})
	go func() {
		e.sim.Close()
		close(closed)
	}()
	testwait.Recv(t, "Close to return", closed)
	if err := testwait.Recv(t, "the client's answer", done); err == nil || strings.Contains(err.Error(), "200") {
		t.Fatalf("client: %v, want the connection cut", err)
	}
	if e.sim.Hanging() != 0 {
		t.Fatalf("%d calls still hanging", e.sim.Hanging())
	}
}

// control posts body to the control endpoint path and returns the status.
func (e *env) control(t *testing.T, method, path, contentType, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, e.sim.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	return e.do(t, req).status
}

func TestControlEndpoint(t *testing.T) {
	e := start(t, confluencesim.Options{AnyContent: true})
	aliceTok, bobTok := e.user(alice), e.user(bob)
	const page = "/wiki/api/v2/pages/98305"
	post := func(path, body string, want int) {
		t.Helper()
		if got := e.control(t, http.MethodPost, path, "application/json", body); got != want {
			t.Fatalf("POST %s %s = %d, want %d", path, body, got, want)
		}
	}

	post("/_sim/restrict", `{"contentId":"98305","viewers":["`+alice+`"]}`, http.StatusNoContent)
	e.status(t, aliceTok, page, http.StatusOK)
	e.status(t, bobTok, page, http.StatusNotFound)
	post("/_sim/restrict", `{"contentId":"98305","viewers":[]}`, http.StatusNoContent)
	e.status(t, aliceTok, page, http.StatusNotFound)
	post("/_sim/unrestrict", `{"contentId":"98305"}`, http.StatusNoContent)
	e.status(t, bobTok, page, http.StatusOK)

	post("/_sim/restrict", `{"spaceKey":"`+confluencesim.AnySpaceKey+`"}`, http.StatusNoContent)
	e.status(t, bobTok, page, http.StatusNotFound)
	post("/_sim/unrestrict", `{"spaceKey":"`+confluencesim.AnySpaceKey+`"}`, http.StatusNoContent)
	e.status(t, bobTok, page, http.StatusOK)

	for _, bad := range []string{
		`{"contentId":"abc","viewers":[]}`,
		`{"viewers":["x"]}`,
		`{"contentId":"1","spaceKey":"DEV"}`,
		`{"contentId":"1","viewer":["x"]}`,
		`{"contentId":`,
	} {
		post("/_sim/restrict", bad, http.StatusBadRequest)
	}
	post("/_sim/unrestrict", `{"contentId":"1","viewers":["x"]}`, http.StatusBadRequest)
	post("/_sim/nothing", `{}`, http.StatusNotFound)
	if got := e.control(t, http.MethodPost, "/_sim/restrict", "text/plain", `{"contentId":"98305"}`); got != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain = %d, want 415", got)
	}
	if got := e.control(t, http.MethodGet, "/_sim/restrict", "application/json", ""); got != http.StatusMethodNotAllowed {
		t.Fatalf("GET = %d, want 405", got)
	}
	e.status(t, bobTok, page, http.StatusOK) // nothing refused changed anything

	// Control requests are not API calls.
	if calls := e.sim.Calls(); calls != len(e.sim.ContentChecks()) || e.sim.ExpiredCalls() != 0 {
		t.Fatalf("%d calls, %d checks, %d expired", calls, len(e.sim.ContentChecks()), e.sim.ExpiredCalls())
	}
}

// GET /wiki/rest/api/user/bulk answers as Confluence's v1 bulk lookup: the
// known users among the first 100 ids, unknown ids left out, emails only
// where the profile shows them, _links.base naming the site.
func TestUsersBulk(t *testing.T) {
	e := start(t, confluencesim.Options{})
	e.sim.SetSiteURL("https://acme.atlassian.net")
	e.sim.AddUser(confluencesim.User{AccountID: alice, DisplayName: "Alice", Email: "alice@example.com", AvatarPath: "/wiki/aa-avatar/a"})
	e.sim.AddUser(confluencesim.User{AccountID: bob, DisplayName: "Bob", AvatarPath: "/wiki/aa-avatar/b"}) // email hidden

	a := e.status(t, e.app, "/wiki/rest/api/user/bulk?accountId="+alice+"&accountId=712020:nobody&accountId="+bob+"&accountId="+alice, http.StatusOK)
	results, _ := a.body["results"].([]any)
	if len(results) != 2 || a.body["size"] != float64(2) || a.body["limit"] != float64(confluencesim.UserBulkMax) {
		t.Fatalf("bulk = %v, want alice and bob once each", a.body)
	}
	first, second := results[0].(map[string]any), results[1].(map[string]any)
	if first["accountId"] != alice || first["displayName"] != "Alice" || first["email"] != "alice@example.com" ||
		first["profilePicture"].(map[string]any)["path"] != "/wiki/aa-avatar/a" {
		t.Errorf("alice = %v", first)
	}
	if _, shown := second["email"]; second["accountId"] != bob || shown {
		t.Errorf("bob = %v, want no email", second)
	}
	if links, _ := a.body["_links"].(map[string]any); links["base"] != "https://acme.atlassian.net/wiki" {
		t.Errorf("_links = %v", a.body["_links"])
	}

	// Only the first 100 ids are looked at: the 101st, known, is not returned.
	q := ""
	for i := range confluencesim.UserBulkMax {
		q += "accountId=712020:missing-" + string(rune('a'+i%26)) + strings.Repeat("x", i) + "&"
	}
	a = e.status(t, e.app, "/wiki/rest/api/user/bulk?"+q+"accountId="+alice, http.StatusOK)
	if results, _ := a.body["results"].([]any); len(results) != 0 {
		t.Errorf("the 101st id was answered: %v", results)
	}
	// A user token reads it too (Confluence's 'Can use' permission).
	e.status(t, e.user(bob), "/wiki/rest/api/user/bulk?accountId="+alice, http.StatusOK)
	e.status(t, e.app, "/wiki/rest/api/user/bulk", http.StatusBadRequest)
	e.status(t, "nope", "/wiki/rest/api/user/bulk?accountId="+alice, http.StatusUnauthorized)
	if n := e.sim.BulkUserCalls(); n != 3 {
		t.Errorf("BulkUserCalls = %d, want the 3 answered", n)
	}
}
