package resolvers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/resolvers"
	"github.com/forge-remote/forge-remote/weavy"
)

type noBroker struct{}

func (noBroker) Token(context.Context, string, string, bool) (weavy.Token, error) {
	return weavy.Token{}, errors.New("not called")
}

type failingOpener struct{ err error }

func (o failingOpener) Open(context.Context, chat.Request) (chat.Chat, error) {
	return chat.Chat{}, o.err
}

// The resolvers' wraps keep what they wrap: errors.Is and errors.As reach the
// cause through them, while classify still sees the resolver's own error.
func TestWrapsKeepTheCause(t *testing.T) {
	ctx := context.Background()
	// "." is a principal no Weavy uid can be made of (a dot segment).
	dot := &forge.Invocation{Principal: ".", App: forge.App{InstallationID: "ari:cloud:ecosystem::installation/i"}}
	for name, h := range map[string]resolvers.Handler{
		"token": resolvers.Token(noBroker{}, weavy.ScopeAccount, nil),
		"chat":  resolvers.Chat(failingOpener{errors.New("not called")}, weavy.ScopeAccount, nil),
	} {
		_, err := h(ctx, dot, nil)
		if !errors.Is(err, resolvers.ErrNoUser) || !errors.Is(err, weavy.ErrInvalidUID) {
			t.Errorf("%s: %v is not both ErrNoUser and weavy.ErrInvalidUID", name, err)
		}
	}

	user := &forge.Invocation{Principal: "5b10ac8d82e05b22cc7d4ef5", App: forge.App{InstallationID: "ari:cloud:ecosystem::installation/i"}}
	for _, cause := range []error{chat.ErrBadTarget, chat.ErrSiteMismatch} {
		_, err := resolvers.Chat(failingOpener{fmt.Errorf("chat: opening: %w", cause)}, weavy.ScopeAccount, nil)(ctx, user, nil)
		var bre *resolvers.BadRequestError
		if !errors.As(err, &bre) || !errors.Is(err, cause) {
			t.Errorf("%v: got %v", cause, err)
		}
	}

	var se *json.SyntaxError
	if err := resolvers.DecodePayload(json.RawMessage(`{"refresh":`), &struct{}{}); !errors.As(err, &se) {
		t.Errorf("payload: %v does not reach the *json.SyntaxError", err)
	}
	if _, _, err := resolvers.ParseEnvelope([]byte(`{"call":`)); !errors.As(err, &se) {
		t.Errorf("envelope: %v does not reach the *json.SyntaxError", err)
	}
	var te *json.UnmarshalTypeError
	if _, _, err := resolvers.ParseEnvelope([]byte(`{"call":{"functionKey":5}}`)); !errors.As(err, &te) {
		t.Errorf("envelope: %v does not reach the *json.UnmarshalTypeError", err)
	}
}
