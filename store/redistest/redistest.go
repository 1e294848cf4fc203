// Package redistest starts a real, throwaway redis-server on a loopback port
// for tests, with the knobs to pause, kill and restart it.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/forge-remote/forge-remote/internal/syncbuf"
)

// startTimeout bounds how long a fresh redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process, stopped when its test ends. Nothing is
// persisted (--save "", --appendonly no), so a restart starts empty.
type Server struct {
	t        testing.TB
	bin      string
	dir      string
	port     int
	password string

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while killed
	exited chan struct{} // closed once cmd has been waited for
	log    *syncBuffer
	client *redis.Client
}

// Start starts a redis-server without a password. When the binary is missing
// the test is skipped, or fails when the CI environment variable is set, so
// CI cannot pass by silently testing nothing.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWithPassword(t, "")
}

// StartWithPassword starts a redis-server that requires password
// (requirepass); "" means none.
func StartWithPassword(t testing.TB, password string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not installed (CI is set, so this fails rather than skips): apt-get install -y redis-server")
		}
		t.Skipf("redis-server not installed: apt-get install -y redis-server")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), password: password}
	t.Cleanup(s.stop)

	// A free port can be taken by someone else between probing and binding;
	// try a few before giving up.
	for attempt := 1; ; attempt++ {
		s.port = freePort(t)
		err := s.start()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("redistest: %v", err)
		}
	}
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is redis://127.0.0.1:N/0, with the password in it when there is one.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr(), Path: "/0"}
	if s.password != "" {
		u.User = url.UserPassword("", s.password)
	}
	return u.String()
}

// Client returns a plain client for the server (no key prefix), for looking
// at what a store really wrote. It is closed when the test ends.
func (s *Server) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.password})
	}
	return s.client
}

// Pause freezes the server (SIGSTOP): connections stay open but nothing
// answers, the failure tight timeouts exist for.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume undoes Pause (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill ends the server at once (SIGKILL) and waits for it to exit.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Restart kills the server if it runs and starts a fresh one on the same
// port; it holds no data from before.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redistest: %v to a server that is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
}

// start runs redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--loglevel", "warning",
	}
	if s.password != "" {
		args = append(args, "--requirepass", s.password)
	}
	log := &syncBuffer{}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	s.mu.Lock()
	s.cmd, s.exited, s.log = cmd, exited, log
	s.mu.Unlock()

	if err := s.waitReady(exited); err != nil {
		s.Kill()
		return fmt.Errorf("redis-server on port %d: %w; its log:\n%s", s.port, err, log.String())
	}
	return nil
}

func (s *Server) waitReady(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr: s.Addr(), Password: s.password,
		DialTimeout: 200 * time.Millisecond, MaxRetries: -1,
	})
	defer c.Close()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		case <-ctx.Done():
			return fmt.Errorf("no answer to PING within %v: %w", startTimeout, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// killLocked kills the running server, if any; a stopped process dies of
// SIGKILL too. The caller holds s.mu.
func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		_ = s.client.Close()
	}
	s.killLocked()
}

// freePort asks the kernel for a port that is free right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects the server's output, written by exec's copying
// goroutine and read by the test.
type syncBuffer = syncbuf.Buffer
