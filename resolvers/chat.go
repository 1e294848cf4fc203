package resolvers

import (
	"context"
	"errors"
	"fmt"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/weavy"
)

// ChatKey is the function key of the chat resolver.
const ChatKey = "chat"

// ChatOpener opens a chat for a user (chat.Service).
type ChatOpener interface {
	Open(ctx context.Context, r chat.Request) (chat.Chat, error)
}

// ChatAnswer is what the Custom UI mounts: <wy-chat uid="<app_id>">.
type ChatAnswer struct {
	AppID int64  `json:"app_id"`
	UID   string `json:"uid"`
	Name  string `json:"name"`
}

// ChatBody is what the chat resolver reads of its payload: the page or
// space the Custom UI's context names. It is a claim, used only when the
// FIT names no content (a global page, or an app that opted into Forge's
// `context: trusted-only`), and checked with Confluence like the FIT's.
// Every other field is ignored, whatever its type.
type ChatBody struct {
	ContentID   string `json:"contentId"`
	ContentType string `json:"contentType"` // page or blogpost
	SpaceKey    string `json:"spaceKey"`
}

// Content types a chat's page check knows; anything else the FIT names is
// looked up as a page.
const (
	contentPage     = "page"
	contentBlogPost = "blogpost"
)

// TargetOf is the chat a call names, and the content's type: the content
// (page or blog post) the FIT's context.extension names, else the body's,
// else the FIT's space, else the body's space, else the site. Neither is
// trusted to say the user may see it: the chat resolver asks Confluence, as
// the user, before anyone joins. A body that names another target than the
// FIT's is the attack the check guards against, and is refused outright.
func TargetOf(inv *forge.Invocation, body ChatBody) (chat.Target, string, error) {
	ext := inv.Context.Extension
	if body.ContentType != "" && body.ContentType != contentPage && body.ContentType != contentBlogPost {
		return chat.Target{}, "", &BadRequestError{Msg: "contentType must be page or blogpost"}
	}
	if body.SpaceKey != "" && ext.Space.Key != "" && body.SpaceKey != ext.Space.Key {
		return chat.Target{}, "", &BadRequestError{Msg: "the body's spaceKey is not the space this invocation was signed for"}
	}
	switch {
	case ext.Content.ID != "":
		if body.ContentID != "" && body.ContentID != ext.Content.ID {
			return chat.Target{}, "", &BadRequestError{Msg: "the body's contentId is not the content this invocation was signed for"}
		}
		if body.ContentType != "" && ext.Content.Type != "" && body.ContentType != ext.Content.Type {
			return chat.Target{}, "", &BadRequestError{Msg: "the body's contentType is not the content's this invocation was signed for"}
		}
		return chat.Target{Kind: chat.KindPage, ID: ext.Content.ID}, ext.Content.Type, nil
	case body.ContentID != "":
		return chat.Target{Kind: chat.KindPage, ID: body.ContentID}, body.ContentType, nil
	case ext.Space.Key != "":
		return chat.Target{Kind: chat.KindSpace, ID: ext.Space.Key}, "", nil
	case ext.Space.ID != "":
		return chat.Target{Kind: chat.KindSpaceID, ID: ext.Space.ID}, "", nil
	case body.SpaceKey != "":
		return chat.Target{Kind: chat.KindSpace, ID: body.SpaceKey}, "", nil
	}
	return chat.Target{Kind: chat.KindSite}, "", nil
}

// Chat answers the `chat` resolver: the chat of the page, space or site the
// call names (TargetOf), once Confluence, asked as the user with the app
// user token Forge sent (x-forge-oauth-user), says they can view it. The
// site-wide chat needs no check: it is open to the site's directory.
func Chat(o ChatOpener, scope weavy.UIDScope, access *Access) Handler {
	return Decoded(func(ctx context.Context, inv *forge.Invocation, body ChatBody) (any, error) {
		if err := RequireUser(inv); err != nil {
			return nil, err
		}
		if !siteMatchesInstallation(inv) {
			return nil, &BadRequestError{Msg: "the invocation's site is not its installation's"}
		}
		user, err := weavy.UID(scope, inv.CloudID(), inv.Principal)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoUser, err)
		}
		target, contentType, err := TargetOf(inv, body)
		if err != nil {
			return nil, err
		}
		req := chat.Request{
			InstallationID: inv.InstallationID(),
			CloudID:        inv.CloudID(),
			User:           user,
			Target:         target,
		}
		if target.Kind != chat.KindSite {
			token, ok := forge.UserTokenFrom(ctx)
			if !ok {
				access.warnNoUserToken(ctx, inv)
				return nil, ErrUserTokenMissing
			}
			req.Check = access.Check(inv.APIBaseURL(), token, target, contentType)
		}
		c, err := o.Open(ctx, req)
		if errors.Is(err, chat.ErrSiteMismatch) {
			return nil, &BadRequestError{Msg: "the invocation's site is not its installation's", Err: err}
		}
		if errors.Is(err, chat.ErrBadTarget) {
			return nil, &BadRequestError{Msg: "the page, space or site of this invocation cannot name a chat", Err: err}
		}
		if err != nil {
			return nil, err
		}
		return ChatAnswer{AppID: c.AppID, UID: c.UID, Name: c.Name}, nil
	})
}

// siteMatchesInstallation reports whether the site of a UI call
// (context.cloudId) is one the installation claim lists, when it lists any.
// Both are signed by Forge; the chat follows the cloudId, so a pairing of one
// site's installation with another's cloudId must not open that site's chats.
func siteMatchesInstallation(inv *forge.Invocation) bool {
	if inv.App.Installation == nil || inv.Context.CloudID == "" {
		return true
	}
	listed := false
	for _, c := range inv.App.Installation.Contexts {
		if c.CloudID == "" {
			continue
		}
		listed = true
		if c.CloudID == inv.Context.CloudID {
			return true
		}
	}
	return !listed
}
