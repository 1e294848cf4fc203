package resolvers

import (
	"context"
	"fmt"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/weavy"
)

// TokenKey is the function key of the Weavy token resolver.
const TokenKey = "token"

// TokenBroker hands out Weavy user tokens (weavy.Broker).
type TokenBroker interface {
	Token(ctx context.Context, installationID, uid string, refresh bool) (weavy.Token, error)
}

// TokenAnswer is what the Custom UI's tokenFactory receives.
type TokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"` // seconds of life left in the token returned
}

type tokenRequest struct {
	Refresh bool `json:"refresh"`
}

// Token answers the `token` resolver: a Weavy access token for the user of the
// verified FIT. Identity comes from the FIT's principal only: nothing in the
// payload or the headers chooses whose token is returned.
func Token(b TokenBroker, scope weavy.UIDScope, now func() time.Time) Handler {
	if now == nil {
		now = time.Now
	}
	return Decoded(func(ctx context.Context, inv *forge.Invocation, req tokenRequest) (any, error) {
		if err := RequireUser(inv); err != nil {
			return nil, err
		}
		uid, err := weavy.UID(scope, inv.CloudID(), inv.Principal)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoUser, err)
		}
		tok, err := b.Token(ctx, inv.InstallationID(), uid, req.Refresh)
		if err != nil {
			return nil, err
		}
		return TokenAnswer{AccessToken: tok.AccessToken, ExpiresIn: int64(tok.ExpiresIn(now()) / time.Second)}, nil
	})
}
