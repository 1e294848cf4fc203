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

// TargetOf is the chat the verified FIT names: the content (page or blog
// post) the module runs in, else its space, else the site. It is the only
// input that picks a chat: Forge signs context.extension, so a user cannot
// name a page they were not shown.
func TargetOf(inv *forge.Invocation) chat.Target {
	ext := inv.Context.Extension
	switch {
	case ext.Content.ID != "":
		return chat.Target{Kind: chat.KindPage, ID: ext.Content.ID}
	case ext.Space.Key != "":
		return chat.Target{Kind: chat.KindSpace, ID: ext.Space.Key}
	case ext.Space.ID != "":
		return chat.Target{Kind: chat.KindSpaceID, ID: ext.Space.ID}
	}
	return chat.Target{Kind: chat.KindSite}
}

// Chat answers the `chat` resolver. The payload must be a JSON object (or
// none) and is otherwise ignored: neither its fields nor any header choose
// the chat or the user.
func Chat(o ChatOpener, scope weavy.UIDScope) Handler {
	return Decoded(func(ctx context.Context, inv *forge.Invocation, _ struct{}) (any, error) {
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
		c, err := o.Open(ctx, chat.Request{
			InstallationID: inv.InstallationID(),
			CloudID:        inv.CloudID(),
			User:           user,
			Target:         TargetOf(inv),
		})
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
