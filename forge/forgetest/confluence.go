package forgetest

import (
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/devmode/confluencesim"
)

// Confluence is a fake of Confluence Cloud's product API as reached through
// api.atlassian.com: APIBaseURL(cloudID) is what an installation's apiBaseUrl
// would be. It is dev mode's simulator (confluencesim): it accepts only app
// tokens it issued, only before their exp by its clock, and counts every
// call. It is closed when the test ends.
type Confluence struct {
	*confluencesim.Server
}

// NewConfluence starts a fake Confluence with no users, reading time from time.Now.
func NewConfluence(t testing.TB) *Confluence {
	t.Helper()
	c := &Confluence{confluencesim.New(nil, confluencesim.Options{})}
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

// AddUser adds (or replaces) a user; email "" is a user whose profile
// visibility hides it. avatarPath is the site-relative profilePicture.path,
// e.g. "/wiki/aa-avatar/<accountId>".
func (c *Confluence) AddUser(accountID, displayName, email, avatarPath string) {
	c.Server.AddUser(confluencesim.User{AccountID: accountID, DisplayName: displayName, Email: email, AvatarPath: avatarPath})
}
