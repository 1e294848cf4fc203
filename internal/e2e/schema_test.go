package e2e

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/cli"
	"github.com/forge-remote/forge-remote/server"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/bolt"
)

// The store's schema version through the real start: a fresh store gets the
// version this server knows, a store at that version starts again, and a
// store at a version it does not know makes it refuse to start, saying why.
func TestSchemaVersionAtStart(t *testing.T) {
	jwks := forgetest.NewJWKSServer(t, forgetest.NewKey(t, "k1"))
	env := baseEnv(t, jwks)
	path := filepath.Join(t.TempDir(), "x.db")
	env["STORE_URL"] = "bolt://" + path
	// schema reads the version beneath the sealing, as every version of the
	// server can, with the server stopped (bolt holds a file lock).
	schema := func(t *testing.T) string {
		t.Helper()
		b, err := bolt.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		v, err := b.Get(t.Context(), store.SchemaKey)
		if err != nil {
			t.Fatalf("%s: %v", store.SchemaKey, err)
		}
		return string(v)
	}

	t.Run("fresh store: written", func(t *testing.T) {
		ts := startServer(t, env)
		ts.waitReady(t)
		ts.Stop(t)
		if got := schema(t); got != "1" {
			t.Fatalf("%s = %q after the first start; want 1", store.SchemaKey, got)
		}
		if !strings.Contains(ts.Logs.String(), "store schema version written") {
			t.Errorf("no log line says the version was written:\n%s", ts.Logs)
		}
	})

	t.Run("same version: starts", func(t *testing.T) {
		ts := startServer(t, env)
		ts.waitReady(t)
		ts.Stop(t)
		if got := schema(t); got != "1" {
			t.Fatalf("%s = %q after a restart; want 1", store.SchemaKey, got)
		}
		if strings.Contains(ts.Logs.String(), "store schema version written") {
			t.Errorf("the version was written again on a restart:\n%s", ts.Logs)
		}
	})

	t.Run("unknown version: refuses to start", func(t *testing.T) {
		b, err := bolt.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(t.Context(), store.SchemaKey, []byte("2"), 0); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		// cli.Serve with a hook: a server that listens is
		// stopped at once, so that a missing check fails rather than hangs.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var out syncBuffer
		err = cli.Serve(ctx, func(k string) string { return env[k] }, &out, func(net.Addr) { cancel() }, server.Options{})
		if err == nil {
			t.Fatalf("the server started on a store at schema version 2\nlogs:\n%s", &out)
		}
		for _, want := range []string{`"schema/version"`, `version "2"`, "knows version 1"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q; want it to say %s", err, want)
			}
		}
		if strings.Contains(out.String(), "server listening") {
			t.Errorf("the server listened:\n%s", &out)
		}
		if got := schema(t); got != "2" {
			t.Errorf("%s = %q after the refusal; want it left at 2", store.SchemaKey, got)
		}
	})
}
