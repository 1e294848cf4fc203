// Package chat opens the Weavy chat of a Confluence page, space or site for a
// user the verified FIT names: closed apps provisioned with the API key,
// memberships leased and pruned, one Weavy directory per site.
package chat

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/forge-remote/forge-remote/internal/ids"
)

// Kind is what a chat belongs to.
type Kind byte

// Kinds of chat. A blog post's chat is a page chat: content ids are unique
// within a site whatever the content's type, and the uid the Custom UI used
// to build said "page" for both.
const (
	KindPage    Kind = 'p'
	KindSpace   Kind = 's' // by space key
	KindSpaceID Kind = 'i' // by space id, when Forge sends no key
	KindSite    Kind = 'g' // the site-wide chat
)

// Target is the chat to open: what the verified FIT names, or the request
// body when the FIT names nothing, and in either case checked with
// Confluence as the user before anyone joins (Request.Check).
type Target struct {
	Kind Kind
	ID   string // content id, space key or space id; empty for KindSite
}

// ErrBadTarget is wrapped when the FIT's content or space cannot name a chat.
var ErrBadTarget = errors.New("chat: the invocation's content or space cannot name a chat")

// maxIDLen bounds content ids, space keys and space ids.
const maxIDLen = 64

// check refuses what a signed FIT should never carry: ids that are not
// numbers, space keys with characters Confluence does not allow.
func (t Target) check() error {
	switch t.Kind {
	case KindSite:
		return nil
	case KindPage, KindSpaceID:
		if t.ID == "" || len(t.ID) > maxIDLen || !digits(t.ID) {
			return fmt.Errorf("%w: id %q is not a number", ErrBadTarget, t.ID)
		}
		if _, err := strconv.ParseInt(t.ID, 10, 64); err != nil {
			// Confluence's ids are int64s: this one names nothing.
			return fmt.Errorf("%w: id %q is out of range", ErrBadTarget, t.ID)
		}
	case KindSpace:
		if t.ID == "" || len(t.ID) > maxIDLen || strings.IndexFunc(t.ID, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '~' || r == '_' || r == '-' || r == ':')
		}) >= 0 {
			return fmt.Errorf("%w: space key %q", ErrBadTarget, t.ID)
		}
	default:
		return fmt.Errorf("%w: unknown kind", ErrBadTarget)
	}
	return nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// UIDPrefix starts the uid of every chat app this project creates, and
// created when the Custom UI built uids in the browser.
const UIDPrefix = "confluence-"

// AppUID is the Weavy uid of t's chat on the site cloudID. It is the uid the
// Custom UI built before the server provisioned chats, so existing chats keep
// their history; being guessable is harmless now that users can neither
// create nor join these apps (see Service.provision).
func AppUID(cloudID string, t Target) string {
	p := UIDPrefix + cloudID
	switch t.Kind {
	case KindPage:
		return p + "-page-" + t.ID
	case KindSpace:
		return p + "-space-" + t.ID
	case KindSpaceID:
		return p + "-spaceid-" + t.ID
	}
	return p + "-global"
}

// Name is the app's display name: the server has no title without a
// Confluence call, and the UI shows the page around the chat anyway.
func Name(t Target) string {
	switch t.Kind {
	case KindPage:
		return "Confluence page " + t.ID
	case KindSpace:
		return "Confluence space " + t.ID
	case KindSpaceID:
		return "Confluence space " + t.ID
	}
	return "Confluence"
}

// DirectoryName is the Weavy user directory of the site cloudID.
func DirectoryName(cloudID string) string { return "cf-" + cloudID }

// parseAppUID reads back the site and target of a uid AppUID made; ok is
// false for any other uid.
func parseAppUID(uid string) (cloudID string, t Target, ok bool) {
	rest, found := strings.CutPrefix(uid, UIDPrefix)
	if !found || len(rest) < ids.UUIDLen+1 || rest[ids.UUIDLen] != '-' || !ids.IsUUID(rest[:ids.UUIDLen]) {
		return "", Target{}, false
	}
	cloudID, rest = rest[:ids.UUIDLen], rest[ids.UUIDLen+1:]
	switch {
	case rest == "global":
		t = Target{Kind: KindSite}
	case strings.HasPrefix(rest, "page-"):
		t = Target{Kind: KindPage, ID: rest[len("page-"):]}
	case strings.HasPrefix(rest, "space-"):
		t = Target{Kind: KindSpace, ID: rest[len("space-"):]}
	case strings.HasPrefix(rest, "spaceid-"):
		t = Target{Kind: KindSpaceID, ID: rest[len("spaceid-"):]}
	default:
		return "", Target{}, false
	}
	return cloudID, t, true
}
