package resolvers_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/resolvers"
)

func TestEnvelopeAndPayload(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		key     string
		payload string
		bad     bool
	}{
		{"envelope", `{"call":{"functionKey":"token","payload":{"refresh":true},"jobId":"j"},"context":{"accountId":"evil"}}`, "token", `{"refresh":true}`, false},
		{"no payload", `{"call":{"functionKey":"token"}}`, "token", ``, false},
		{"no key", `{"call":{"payload":{}}}`, "", "", true},
		{"array", `[]`, "", "", true},
		{"truncated", `{"call":`, "", "", true},
		{"empty", ``, "", "", true},
		{"wrong type", `{"call":{"functionKey":5}}`, "", "", true},
		// Members not read never refuse the envelope, whatever their type.
		{"jobId a number", `{"call":{"functionKey":"token","payload":{},"jobId":7}}`, "token", `{}`, false},
		{"context a string", `{"call":{"functionKey":"token"},"context":"ari:cloud:confluence::site/c"}`, "token", ``, false},
		{"context of any shape", `{"call":{"functionKey":"token","invokeType":null,"method":["x"]},"context":{"extension":{"content":{"id":1}},"accountId":null,"license":[]}}`, "token", ``, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key, payload, err := resolvers.ParseEnvelope([]byte(tc.body))
			var bre *resolvers.BadRequestError
			if tc.bad != errors.As(err, &bre) {
				t.Fatalf("err = %v", err)
			}
			if key != tc.key || string(payload) != tc.payload {
				t.Fatalf("got %q %s", key, payload)
			}
		})
	}
}

// TestDecoded: the payload is decoded once, before the handler runs, and
// only a JSON object (or nothing) reaches it.
func TestDecoded(t *testing.T) {
	type req struct {
		Refresh bool `json:"refresh"`
	}
	var got []req
	h := resolvers.Decoded(func(_ context.Context, _ *forge.Invocation, r req) (any, error) {
		got = append(got, r)
		return nil, nil
	})
	for body, ok := range map[string]bool{
		``: true, `  `: true, `null`: true, `{}`: true, `{"a":[1]}`: true, `{"refresh":true}`: true,
		`"x"`: false, `[1]`: false, `{`: false, `{"refresh":"yes"}`: false, `{} {}`: false,
	} {
		got = nil
		_, err := h(t.Context(), &forge.Invocation{}, json.RawMessage(body))
		var bre *resolvers.BadRequestError
		if ok != (err == nil) || err != nil && !errors.As(err, &bre) {
			t.Errorf("%q: %v", body, err)
		}
		if ok != (len(got) == 1) {
			t.Errorf("%q: the handler ran %d times", body, len(got))
		}
		if body == `{"refresh":true}` && (len(got) != 1 || !got[0].Refresh) {
			t.Errorf("%q decoded as %+v", body, got)
		}
	}
}

// A member read with the wrong type is named, with the type expected and
// the type met, never the value.
func TestEnvelopeErrorsNameTheField(t *testing.T) {
	for body, want := range map[string]string{
		`{"call":{"functionKey":5}}`:      `malformed envelope: field "call.functionKey" must be a string, not a number`,
		`{"call":{"functionKey":1.5e9}}`:  `malformed envelope: field "call.functionKey" must be a string, not a number`,
		`{"call":"token"}`:                `malformed envelope: field "call" must be an object, not a string`,
		`{"call":[{"functionKey":"x"}]}`:  `malformed envelope: field "call" must be an object, not an array`,
		`{"call":{"functionKey":"token"}`: `malformed body: invalid JSON at offset 31`,
	} {
		_, _, err := resolvers.ParseEnvelope([]byte(body))
		var bre *resolvers.BadRequestError
		if !errors.As(err, &bre) || bre.Msg != want {
			t.Errorf("%s:\n got %v\nwant %s", body, err, want)
		}
	}
	var req struct {
		Refresh bool `json:"refresh"`
	}
	for payload, want := range map[string]string{
		`{"refresh":"yes"}`: `malformed payload: field "refresh" must be a boolean, not a string`,
		`{"refresh":12345}`: `malformed payload: field "refresh" must be a boolean, not a number`,
		`"x"`:               `malformed payload: it must be an object, not a string`,
	} {
		err := resolvers.DecodePayload(json.RawMessage(payload), &req)
		var bre *resolvers.BadRequestError
		if !errors.As(err, &bre) || bre.Msg != want {
			t.Errorf("%s:\n got %v\nwant %s", payload, err, want)
		}
	}
}

func TestRegistry(t *testing.T) {
	r := resolvers.NewRegistry()
	r.Register("echo", func(_ context.Context, inv *forge.Invocation, p json.RawMessage) (any, error) {
		return inv.Principal + string(p), nil
	})
	out, err := r.Invoke(context.Background(), "echo", &forge.Invocation{Principal: "u"}, json.RawMessage(`{}`))
	if err != nil || out != "u{}" {
		t.Fatalf("%v %v", out, err)
	}
	if _, err := r.Invoke(context.Background(), "nope", &forge.Invocation{}, nil); !errors.Is(err, resolvers.ErrUnknownResolver) {
		t.Fatalf("unknown: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("duplicate registration did not panic")
		}
	}()
	r.Register("echo", nil)
}
