package open_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/store/bolt"
	"github.com/forge-remote/forge-remote/store/open"
)

// Secrets of the shapes the server keeps: a Weavy user token and a Forge app
// system token (a JWT).
const (
	weavyToken = "wyu_SECRETSECRET"
	appToken   = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhcHAtc3lzdGVtIiwiZXhwIjoxODAwMDAwMDAwfQ.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)

func mustOpen(t *testing.T, o open.Options) store.KV {
	t.Helper()
	kv, err := open.Store(t.Context(), o)
	if err != nil {
		t.Fatalf("Open(%q): %v", o.URL, err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	return kv
}

func TestOpenBoltSealsAtRest(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "forge-remote.db")
	kv := mustOpen(t, open.Options{URL: "bolt://" + path})
	put(t, kv, "user/1/weavy-token", []byte(weavyToken))
	put(t, kv, "installation/1/app-token", []byte(appToken))
	if err := kv.Update(ctx, "user/2/weavy-token", func([]byte, bool) ([]byte, time.Duration, error) {
		return []byte(weavyToken + "2"), time.Hour, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}

	// The same writes straight into bolt show that the check would see them.
	plainPath := filepath.Join(dir, "plain.db")
	plain, err := bolt.Open(plainPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, plain, "user/1/weavy-token", []byte(weavyToken))
	put(t, plain, "installation/1/app-token", []byte(appToken))
	if err := plain.Close(); err != nil {
		t.Fatal(err)
	}

	needles := []string{weavyToken, "SECRETSECRET", appToken, strings.Split(appToken, ".")[1]}
	for _, file := range []string{path, plainPath} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("installation/1/app-token")) {
			t.Fatalf("%s: keys not found in clear; the check is looking in the wrong place", file)
		}
		for _, needle := range needles {
			found := bytes.Contains(data, []byte(needle))
			if want := file == plainPath; found != want {
				t.Errorf("%s: %q in clear = %v; want %v", filepath.Base(file), needle, found, want)
			}
		}
	}
}

func TestOpenBoltKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db", "forge-remote.db")
	keyPath := path + ".key"
	core, logs := observer.New(zap.DebugLevel)
	o := open.Options{URL: "bolt://" + path, Logger: zap.New(core)}

	kv := mustOpen(t, o)
	put(t, kv, "k", []byte(weavyToken))
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}

	info, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %#o; want 0600", perm)
	}
	if info, err := os.Stat(filepath.Dir(path)); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("database directory: %v, %v; want mode 0700", info.Mode(), err)
	}
	text, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := store.ParseKey(string(text))
	if err != nil {
		t.Fatalf("key file does not hold a STORE_KEY: %v", err)
	}

	entries := logs.FilterMessage("store key file created").All()
	if len(entries) != 1 || entries[0].ContextMap()["path"] != keyPath || entries[0].Level != zap.InfoLevel {
		t.Fatalf("logs = %+v; want one info line naming the key file", logs.All())
	}
	for _, e := range logs.All() {
		for _, v := range e.ContextMap() {
			if s, _ := v.(string); strings.Contains(s, strings.TrimSpace(string(text))) {
				t.Errorf("key logged: %+v", e)
			}
		}
	}

	// Reopened, the file is reused (no new line) and the value reads back;
	// so it does with the same key passed as STORE_KEY.
	for _, o := range []open.Options{o, {URL: "bolt://" + path, Key: key}} {
		kv := mustOpen(t, o)
		if v, err := kv.Get(t.Context(), "k"); err != nil || string(v) != weavyToken {
			t.Errorf("Get after reopen = %q, %v", v, err)
		}
		if err := kv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.FilterMessage("store key file created").Len(); n != 1 {
		t.Errorf("%d key file lines after reopening; want the creation line only", n)
	}
}

func TestOpenBoltKeyFileRejected(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"group readable", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 0o640, "0640"},
		{"world readable", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 0o644, "0644"},
		{"16 bytes", "AAAAAAAAAAAAAAAAAAAAAA==", 0o600, "16 bytes"},
		{"not base64", "SECRET*SECRET", 0o600, "not valid base64"},
		{"empty", "", 0o600, "empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			if err := os.WriteFile(path+".key", []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path+".key", tt.mode); err != nil { // umask aside
				t.Fatal(err)
			}
			kv, err := open.Store(t.Context(), open.Options{URL: "bolt://" + path})
			if err == nil {
				kv.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, path+".key") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q; want it to name the key file and %q", msg, tt.want)
			}
			if tt.content != "" && strings.Contains(msg, tt.content) {
				t.Errorf("error repeats the key: %q", msg)
			}
			// The database was released: a correct key opens it.
			mustOpen(t, open.Options{URL: "bolt://" + path, Key: make([]byte, store.KeySize)})
		})
	}

	t.Run("owner only stricter than 0600", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.db")
		mustOpen(t, open.Options{URL: "bolt://" + path}).Close()
		if err := os.Chmod(path+".key", 0o400); err != nil {
			t.Fatal(err)
		}
		mustOpen(t, open.Options{URL: "bolt://" + path})
	})
}

func TestOpenBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	mustOpen(t, open.Options{URL: "bolt://" + path})

	start := time.Now()
	kv, err := open.Store(t.Context(), open.Options{URL: "bolt://" + path})
	elapsed := time.Since(start)
	if err == nil {
		kv.Close()
		t.Fatal("second Open of a locked database succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("error %q; want it to name %s and say it is locked", err, path)
	}
	t.Logf("second Open gave up after %v (bolt's lock timeout: 1s)", elapsed.Round(time.Millisecond))
}

func TestOpenRelativeBoltPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	kv := mustOpen(t, open.Options{URL: "bolt://data/forge-remote.db"})
	put(t, kv, "k", []byte("v"))
	for _, name := range []string{"data/forge-remote.db", "data/forge-remote.db.key"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
}

func TestOpenMemory(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{1}, store.KeySize)} {
		kv := mustOpen(t, open.Options{URL: "memory://", Key: key})
		put(t, kv, "k", []byte("v"))
		if v, err := kv.Get(t.Context(), "k"); err != nil || string(v) != "v" {
			t.Errorf("Get = %q, %v", v, err)
		}
		if _, ok := kv.(*store.Sealed); !ok {
			t.Errorf("Open returned %T; want *store.Sealed", kv)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    open.Options
		want string
	}{
		{"empty", open.Options{}, "STORE_URL"},
		{"no scheme", open.Options{URL: "data/forge-remote.db"}, "STORE_URL"},
		{"unknown scheme", open.Options{URL: "postgres://localhost/db"}, "STORE_URL"},
		{"empty scheme", open.Options{URL: "://x"}, "STORE_URL"},
		{"bolt without path", open.Options{URL: "bolt://"}, "STORE_URL"},
		{"bolt with query", open.Options{URL: "bolt://x.db?timeout=1s"}, "STORE_URL"},
		{"memory with path", open.Options{URL: "memory://x"}, "STORE_URL"},
		{"short key", open.Options{URL: "memory://", Key: make([]byte, 16)}, "STORE_KEY"},
		{"redis", open.Options{URL: "redis://localhost:6379/0"}, "STORE_KEY"},
		{"rediss", open.Options{URL: "rediss://localhost:6379/0"}, "STORE_KEY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kv, err := open.Store(t.Context(), tt.o)
			if err == nil {
				kv.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "store: ") {
				t.Errorf("error %q; want it to start with store: and mention %q", err, tt.want)
			}
		})
	}
}

func put(t *testing.T, kv store.KV, key string, value []byte) {
	t.Helper()
	if err := kv.Put(t.Context(), key, value, 0); err != nil {
		t.Fatal(err)
	}
}
