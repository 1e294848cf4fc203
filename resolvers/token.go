package resolvers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/jsonread"
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

var tokenRequestNames = []string{"refresh"}

// decodeTokenRequest is DecodePayload(payload, &req) without reflection, as
// the resolver runs on every page view (FuzzTokenRequest holds the two to the
// same answers). A payload it refuses goes through DecodePayload for the
// error message.
func decodeTokenRequest(payload json.RawMessage) (tokenRequest, error) {
	var req tokenRequest
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		return req, nil
	}
	r := jsonread.NewReader(p)
	err := r.Object(func(k []byte) error {
		if jsonread.Canonical(k, tokenRequestNames) != "" {
			return r.Bool(&req.Refresh)
		}
		return r.Skip()
	})
	if err == nil {
		err = r.End()
	}
	if err != nil {
		if err := DecodePayload(payload, &tokenRequest{}); err != nil {
			return tokenRequest{}, err
		}
		return tokenRequest{}, &BadRequestError{Msg: "malformed payload: invalid JSON"}
	}
	return req, nil
}

// AppendJSON appends a's JSON, exactly as encoding/json writes it, without
// reflection (the server writes a resolver's answer this way when it can).
func (a TokenAnswer) AppendJSON(b []byte) []byte {
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, a.AccessToken)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, a.ExpiresIn, 10)
	return append(b, '}')
}

// appendJSONString appends s as encoding/json quotes it: as it is when every
// byte is printable ASCII that needs no escape (Weavy's tokens are), else
// through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Token answers the `token` resolver: a Weavy access token for the user of the
// verified FIT. Identity comes from the FIT's principal only: nothing in the
// payload or the headers chooses whose token is returned.
func Token(b TokenBroker, scope weavy.UIDScope, now func() time.Time) Handler {
	if now == nil {
		now = time.Now
	}
	return func(ctx context.Context, inv *forge.Invocation, payload json.RawMessage) (any, error) {
		if err := RequireUser(inv); err != nil {
			return nil, err
		}
		req, err := decodeTokenRequest(payload)
		if err != nil {
			return nil, err
		}
		uid, err := weavy.UID(scope, inv.CloudID(), inv.Principal)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoUser, err)
		}
		tok, err := b.Token(ctx, inv.InstallationID(), uid, req.Refresh)
		if err != nil {
			return nil, err
		}
		return TokenAnswer{AccessToken: tok.AccessToken, ExpiresIn: int64(tok.ExpiresIn(now()) / time.Second)}, nil
	}
}
