//go:build slow

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// SIGTERM while mints are in flight: they finish with 200, the process exits
// 0, and the bolt file reopens cleanly with every token in it.
func TestFaultSIGTERM(t *testing.T) {
	t.Parallel()
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	wv := weavysim.New("")
	t.Cleanup(wv.Close)
	front := newWeavyFront(t, wv)
	env := tokenEnv(t, jwks, wv)
	env["WEAVY_URL"] = front.URL
	// The held mints wait from before the signal until the server says it
	// is shutting down: Weavy's timeout must not end them first.
	env["WEAVY_TIMEOUT"] = "20s"
	env["LOG_LEVEL"] = "info"
	srv := startBinary(t, serverBinary(t), env, nil)
	srv.waitReady(t)
	fit := func(account string) string { return forgetest.MintFIT(t, key, forgetest.WithPrincipal(account)) }

	tokens := map[string]string{}
	warm := srv.post(t, "/resolvers/token", fit("acc-warm"), `{}`)
	if warm.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", warm.Status, warm.Body)
	}
	tokens["acc-warm"] = warm.str("access_token")

	// Five cold users whose mints are held at Weavy until the server is
	// shutting down.
	front.hold()
	const inflight = 5
	fits := make([]string, inflight)
	for i := range fits {
		fits[i] = fit(fmt.Sprintf("acc-inflight-%d", i))
	}
	replies := make([]reply, inflight)
	var wg sync.WaitGroup
	for i := range fits {
		wg.Go(func() { replies[i] = postTo(srv.URL, "/resolvers/token", fits[i], `{}`) })
	}
	testwait.For(t, fmt.Sprintf("%d mints to reach Weavy", inflight), func() bool { return front.waiting.Load() == inflight })
	sigAt := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the server to say it is shutting down", func() bool {
		return strings.Contains(srv.Logs.String(), `"msg":"shutting down"`)
	})
	if n := front.waiting.Load(); n != inflight {
		t.Fatalf("%d of %d mints still in flight when the shutdown began", n, inflight)
	}
	front.release()
	wg.Wait()
	for i, r := range replies {
		if r.Status != http.StatusOK || !strings.HasPrefix(r.str("access_token"), "wyu_") {
			t.Fatalf("in-flight call %d after SIGTERM: %d %s", i, r.Status, r.Body)
		}
		tokens[fmt.Sprintf("acc-inflight-%d", i)] = r.str("access_token")
	}
	select {
	case <-srv.exited:
	case <-testwait.After(t):
		t.Fatal("no exit after SIGTERM")
	}
	if srv.err != nil {
		t.Fatalf("exit after SIGTERM: %v\nstderr:\n%s", srv.err, srv.stderr)
	}
	t.Logf("exit 0, %v after SIGTERM, %d in-flight calls answered 200", time.Since(sigAt).Round(time.Millisecond), inflight)
	if logs := srv.Logs.String(); !strings.Contains(logs, `"msg":"stopped"`) || srv.stderr.String() != "" {
		t.Fatalf("no clean stop in the log, or stderr output:\n%s\nstderr:\n%s", logs, srv.stderr)
	}

	// The file opens without waiting for a lock and passes bbolt's consistency check.
	path := strings.TrimPrefix(env["STORE_URL"], "bolt://")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("reopening the bolt file: %v", err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatalf("bolt consistency check: %v", err)
	}

	// Every token is there: a new server serves them all without a mint.
	mints := wv.Mints()
	ts := startServer(t, env)
	ts.waitReady(t)
	for account, tok := range tokens {
		if r := ts.post(t, "/resolvers/token", fit(account), nil, `{}`); r.str("access_token") != tok {
			t.Fatalf("%s after the restart: %d %s", account, r.Status, r.Body)
		}
	}
	if wv.Mints() != mints {
		t.Fatalf("%d tokens re-minted after the restart", wv.Mints()-mints)
	}
}
