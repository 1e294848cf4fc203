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
	for body, ok := range map[string]bool{``: true, `  `: true, `{}`: true, `{"a":1}`: true, `null`: false, `"x"`: false, `{`: false} {
		if err := resolvers.CheckPayload([]byte(body)); (err == nil) != ok {
			t.Errorf("CheckPayload(%q) = %v", body, err)
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
