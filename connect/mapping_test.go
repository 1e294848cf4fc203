package connect_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/connect"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/memory"
)

// DropSecrets deletes every shared secret an earlier server kept, those
// sealed under another STORE_KEY too, and nothing else; a second run finds
// nothing and fails nothing. A Forge uninstall also drops one left behind.
func TestDropSecrets(t *testing.T) {
	ctx := context.Background()
	backend := memory.New(time.Now)
	t.Cleanup(func() { _ = backend.Close() })
	kv, err := store.NewSealed(backend, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st := connect.NewStore(kv)
	if err := st.Record(ctx, connect.Mapping{InstallationID: "inst-a", ClientKey: "ck-a", Source: connect.SourceConnectInstall}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"connect/secret/inst-a", "connect/secret/inst-b"} {
		if err := kv.Put(ctx, k, []byte("shared-secret"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Sealed under another key: unreadable here, deleted all the same.
	if err := backend.Put(ctx, "connect/secret/inst-c", []byte("sealed elsewhere"), 0); err != nil {
		t.Fatal(err)
	}
	keys := func() []string {
		var ks []string
		if err := backend.Scan(ctx, "connect/", func(k string, _ []byte) error { ks = append(ks, k); return nil }); err != nil {
			t.Fatal(err)
		}
		return ks
	}

	for range 2 {
		if err := st.DropSecrets(ctx); err != nil {
			t.Fatal(err)
		}
		got := keys()
		for _, k := range got {
			if len(k) >= len("connect/secret/") && k[:len("connect/secret/")] == "connect/secret/" {
				t.Fatalf("left behind: %s (all: %v)", k, got)
			}
		}
		if len(got) != 2 { // the mapping and its clientKey index
			t.Fatalf("keys after the cleanup: %v", got)
		}
	}
	if _, ok, err := st.ByClientKey(ctx, "ck-a"); !ok || err != nil {
		t.Fatalf("the mapping went with the secrets: %v %v", ok, err)
	}

	if err := kv.Put(ctx, "connect/secret/inst-a", []byte("written by an older replica"), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.PurgeInstallation(ctx, "inst-a"); err != nil {
		t.Fatal(err)
	}
	if got := keys(); len(got) != 0 {
		t.Fatalf("after the uninstall purge: %v", got)
	}
}
