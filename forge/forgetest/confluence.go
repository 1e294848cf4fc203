package forgetest

import (
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
)

// Confluence is a fake of Confluence Cloud's product API as reached through
// api.atlassian.com: APIBaseURL(cloudID) is what an installation's apiBaseUrl
// would be. It is dev mode's simulator (confluencesim): it accepts only the
// app and user tokens it issued, only before their exp by its clock, and
// counts every call. Its spaces and content (AddSpace, AddContent, Restrict,
// RestrictSpace, SetGuest) answer the v2 page, blog post and space APIs with
// Confluence's access rules, and ContentChecks says whom each such call was
// made as (confluencesim.AsApp or an accountId). It is closed when the test ends.
type Confluence struct {
	*confluencesim.Server
}

// NewConfluence starts a fake Confluence with no users, spaces or content,
// reading time from time.Now.
func NewConfluence(t testing.TB) *Confluence {
	t.Helper()
	return NewConfluenceWith(t, confluencesim.Options{})
}

// NewConfluenceWith starts a fake Confluence configured by opts, e.g.
// AnyContent.
func NewConfluenceWith(t testing.TB, opts confluencesim.Options) *Confluence {
	t.Helper()
	c := &Confluence{confluencesim.New(nil, opts)}
	t.Cleanup(c.Close)
	return c
}

// IssueAppToken mints an app system token (see MintAppToken) that the fake
// accepts until exp.
func (c *Confluence) IssueAppToken(t testing.TB, exp time.Time) string {
	t.Helper()
	tok := MintAppToken(t, exp)
	c.Accept(tok, exp)
	return tok
}

// IssueUserToken makes a user token for accountID, as Forge's
// x-forge-oauth-user header carries, that the fake accepts until exp; the
// calls made with it are made as accountID.
func (c *Confluence) IssueUserToken(t testing.TB, accountID string, exp time.Time) string {
	t.Helper()
	return c.Server.IssueUserToken(accountID, exp)
}

// AddPage adds page id in the space spaceKey, with the space's id spaceID
// (the space is added, or kept). A bad id fails t.
func (c *Confluence) AddPage(t testing.TB, id, spaceKey, spaceID string) {
	t.Helper()
	c.addContent(t, id, confluencesim.Page, spaceKey, spaceID)
}

// AddBlogPost adds blog post id in the space spaceKey, with the space's id
// spaceID (the space is added, or kept). A bad id fails t.
func (c *Confluence) AddBlogPost(t testing.TB, id, spaceKey, spaceID string) {
	t.Helper()
	c.addContent(t, id, confluencesim.BlogPost, spaceKey, spaceID)
}

func (c *Confluence) addContent(t testing.TB, id, typ, spaceKey, spaceID string) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("forgetest: %v", p)
		}
	}()
	c.AddSpace(spaceKey, spaceID)
	c.AddContent(id, typ, spaceKey)
}

// AddUser adds (or replaces) a user; email "" is a user whose profile
// visibility hides it. avatarPath is the site-relative profilePicture.path,
// e.g. "/wiki/aa-avatar/<accountId>".
func (c *Confluence) AddUser(accountID, displayName, email, avatarPath string) {
	c.Server.AddUser(confluencesim.User{AccountID: accountID, DisplayName: displayName, Email: email, AvatarPath: avatarPath})
}
