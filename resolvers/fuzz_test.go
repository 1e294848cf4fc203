package resolvers_test

import (
	"context"
	"errors"
	"testing"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/corpus"
	"github.com/forge-remote/forge-remote/resolvers"
)

// FuzzEnvelope: any body either decodes to a function key or is a
// *BadRequestError (the server's 400), never a panic or another error.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"call":{"functionKey":"token","payload":{"refresh":true}},"context":{}}`,
		`{"call":{"functionKey":"token"}}`, `{"call":{"functionKey":""}}`, `{"call":null}`,
		`[]`, `{`, ``, `{"call":{"functionKey":"x","payload":[[[[[[[[]]]]]]]]}}`,
		`{"call":{"functionKey":"\u0000"}}`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	for _, c := range corpus.Read(f, "resolver") {
		f.Add(c.Data)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		key, _, err := resolvers.ParseEnvelope(body)
		var bre *resolvers.BadRequestError
		if err != nil && !errors.As(err, &bre) {
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
		if err == nil && key == "" {
			t.Fatal("accepted an envelope without a function key")
		}
		h := resolvers.Decoded(func(context.Context, *forge.Invocation, struct {
			Refresh bool `json:"refresh"`
		}) (any, error) {
			return nil, nil
		})
		if _, err := h(t.Context(), &forge.Invocation{}, body); err != nil && !errors.As(err, &bre) {
			t.Fatalf("decode error type %T", err)
		}
	})
}
