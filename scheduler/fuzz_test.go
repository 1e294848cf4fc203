package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/store"
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
	for _, b := range corpus(f, "lifecycle", "scheduled", "uninstall") {
		f.Add(b)
	}
	kv := store.NewMemory(nil)
	svc := scheduler.New(scheduler.Options{KV: kv, AppTokens: forge.NewAppTokens(kv, forge.AppTokensOptions{})})
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

// corpus reads the bodies of testdata/forge's dirs (at the module's root),
// to seed the fuzz targets with what Forge really sends.
func corpus(f *testing.F, dirs ...string) [][]byte {
	f.Helper()
	var out [][]byte
	for _, dir := range dirs {
		names, err := filepath.Glob(filepath.Join("..", "testdata", "forge", dir, "*.json"))
		if err != nil || len(names) == 0 {
			f.Fatalf("no corpus in testdata/forge/%s: %v", dir, err)
		}
		for _, name := range names {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}
