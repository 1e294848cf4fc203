//go:build slow

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/forge/forgetest"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// Ten thousand connections opened and left idle do not exhaust the server:
// one goroutine and one descriptor each, a normal call still answers, and the
// counts go back to the baseline both when the clients close and when the
// server cuts off the ones that never send a request (ReadHeaderTimeout). The
// server is the built binary, so each process holds only its own side.
func TestHostileIdleConnections(t *testing.T) {
	t.Parallel()
	n := idleConnectionTarget(t)
	key := forgetest.NewKey(t, "k1")
	jwks := forgetest.NewJWKSServer(t, key)
	env := baseEnv(t, jwks)
	env["LOG_LEVEL"] = "info"
	srv := startBinary(t, serverBinary(t), env, nil)
	srv.waitReady(t)

	base := srv.metrics(t)
	t.Logf("baseline: %s", base.summary())

	conns := make([]net.Conn, n)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const dialers = 32
	for w := range dialers {
		wg.Go(func() {
			var d net.Dialer
			for i := w; i < n; i += dialers {
				c, err := d.Dial("tcp", srv.addr)
				if err != nil {
					select {
					case errs <- fmt.Errorf("connection %d: %w", i, err):
					default:
					}
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	opened := time.Now()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case err := <-errs:
		t.Fatalf("opening %d connections: %v", n, err)
	default:
	}
	t.Logf("%d idle connections opened in %v", n, opened.Sub(start).Round(time.Millisecond))

	// The server holds them all: one goroutine and one descriptor each, no more.
	var held serverReadings
	if !testwait.Poll(t, func() bool {
		held = srv.metrics(t)
		return held.fds >= base.fds+float64(n)*0.99
	}) {
		t.Fatalf("the server does not hold the connections: %s", held.summary())
	}
	t.Logf("holding %d: %s", n, held.summary())
	if held.goroutines > base.goroutines+float64(n)+100 || held.fds > base.fds+float64(n)+100 {
		t.Errorf("more than one goroutine and one fd per idle connection: %s (baseline %s)", held.summary(), base.summary())
	}

	// A normal call is served meanwhile.
	r := srv.post(t, "/triggers/scheduled", forgetest.MintFIT(t, key, forgetest.WithPrincipal("")), `{}`)
	if r.Status != http.StatusAccepted {
		t.Fatalf("a call with %d idle connections open: %d %s", n, r.Status, r.Body)
	}

	// The clients close half: those are released at once.
	for i := range n / 2 {
		conns[i].Close()
		conns[i] = nil
	}
	var half serverReadings
	if !testwait.Poll(t, func() bool {
		half = srv.metrics(t)
		return half.fds <= base.fds+float64(n-n/2)+50 && half.goroutines <= base.goroutines+float64(n-n/2)+50
	}) {
		t.Fatalf("half closed by the clients, still %s", half.summary())
	}
	t.Logf("after the clients closed %d: %s", n/2, half.summary())

	// The rest never send a byte: the server cuts them off itself.
	var after serverReadings
	if !testwait.Poll(t, func() bool {
		after = srv.metrics(t)
		return after.fds <= base.fds+20 && after.goroutines <= base.goroutines+20
	}) {
		t.Fatalf("idle connections not cut off by the server: %s (baseline %s)", after.summary(), base.summary())
	}
	t.Logf("after the server cut off the other %d (%v after opening): %s", n-n/2, time.Since(opened).Round(time.Second), after.summary())
	closed := 0
	for _, c := range conns[n/2:] {
		_ = c.SetReadDeadline(testwait.Deadline(t))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			closed++
		}
	}
	if closed != n-n/2 {
		t.Fatalf("%d of %d idle connections closed by the server", closed, n-n/2)
	}
}

// idleConnectionTarget is 10,000, or less when the descriptor limit cannot
// hold that many beside what the test itself uses.
func idleConnectionTarget(t *testing.T) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max { // Go raises it at start already; make sure
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	n := 10_000
	if room := int(lim.Cur) - 1_500; room < n {
		n = room
		t.Logf("RLIMIT_NOFILE is %d: holding %d connections instead of 10,000", lim.Cur, n)
	}
	if n < 1_000 {
		t.Fatalf("RLIMIT_NOFILE %d is too low for this test (raise it: ulimit -n 12000)", lim.Cur)
	}
	return n
}
