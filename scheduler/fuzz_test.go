package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/internal/corpus"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/store/memory"
)

// FuzzLifecycle: any event body, top-level or wrapped in payload, is recorded,
// acknowledged or refused with ErrBadEvent (the server's 400) — never a panic
// or another error — and identity never comes from the body.
func FuzzLifecycle(f *testing.F) {
	for _, s := range []string{
		`{"eventType":"avi:forge:installed:app","id":"e","installerAccountId":"a","app":{"id":"x","version":"1"},"environment":{"id":"env"}}`,
		`{"payload":{"eventType":"avi:forge:upgraded:app","upgraderAccountId":"u","app":{"version":"2"}}}`,
		`{"eventType":"avi:forge:installed:app","retryContext":{"retryCount":3,"retryReason":"TIMEOUT","retryData":{}}}`,
		`{"eventType":"avi:confluence:created:page"}`, `{"payload":null}`, `{"payload":"x"}`, `{}`, `[]`, `null`, ``, `{"eventType":5}`,
		`{"app":{"installationId":"ari:cloud:ecosystem::installation/attacker"},"eventType":"avi:forge:installed:app"}`,
	} {
		f.Add([]byte(s))
	}
	for _, b := range slices.Concat(corpus.Read(f, "lifecycle"), corpus.Read(f, "scheduled"), corpus.Read(f, "uninstall")) {
		f.Add(b.Data)
	}
	kv := memory.New(nil)
	f.Cleanup(func() { _ = kv.Close() })
	q := scheduler.NewQueue(scheduler.QueueOptions{KV: kv, AppTokens: forge.NewAppTokens(kv, forge.AppTokensOptions{})})
	svc := scheduler.New(scheduler.Options{Queue: q})
	f.Cleanup(svc.Close)
	inv := &forge.Invocation{App: forge.App{InstallationID: "ari:cloud:ecosystem::installation/fuzz", APIBaseURL: "https://api.atlassian.com/ex/confluence/c"}}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := svc.Lifecycle(context.Background(), inv, body)
		var be *scheduler.BadEventError
		if err != nil && (!errors.As(err, &be) || !errors.Is(err, scheduler.ErrBadEvent)) {
			t.Fatalf("unexpected error %v", err)
		}
		// A member the server does not read never refuses an event, whatever
		// it holds: the body as such a member, in either shape.
		if json.Valid(body) {
			for _, ev := range []string{
				`{"eventType":"avi:forge:installed:app","installerAccountId":"a","app":{"version":"1","name":` + string(body) + `},"zz":` + string(body) + `}`,
				`{"payload":{"eventType":"avi:forge:upgraded:app","permissions":` + string(body) + `},"zz":` + string(body) + `}`,
			} {
				var v any
				if json.Unmarshal([]byte(ev), &v) != nil {
					continue // past encoding/json's nesting limit
				}
				if err := svc.Lifecycle(context.Background(), inv, []byte(ev)); err != nil {
					t.Fatalf("an unread member refused the event: %v", err)
				}
			}
		}
		list, err := svc.Installations(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range list {
			if in.InstallationID != inv.App.InstallationID {
				t.Fatalf("the body chose an installation: %s", in.InstallationID)
			}
		}
	})
}
