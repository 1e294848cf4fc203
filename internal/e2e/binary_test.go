//go:build slow

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/forge-remote/forge-remote/internal/testwait"
)

// builtBinary is the forge-remote binary built once for the tests that need a
// real process (signals, exit codes, per-process descriptor counts); it is
// removed when the last test using it ends.
var builtBinary struct {
	sync.Mutex
	dir  string
	refs int
	err  error
}

// serverBinary builds (or reuses) the forge-remote binary, without -race: the
// figures the tests read are the production binary's.
func serverBinary(t *testing.T) string {
	t.Helper()
	b := &builtBinary
	b.Lock()
	defer b.Unlock()
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "forge-remote-bin-")
		if err != nil {
			t.Fatal(err)
		}
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "forge-remote"), ".")
		build.Dir = repoRoot // the main package
		out, err := build.CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			t.Fatalf("go build: %v\n%s", err, out)
		}
		b.dir = dir
	}
	b.refs++
	t.Cleanup(func() {
		b.Lock()
		defer b.Unlock()
		if b.refs--; b.refs == 0 {
			os.RemoveAll(b.dir)
			b.dir = ""
		}
	})
	return filepath.Join(b.dir, "forge-remote")
}

// binServer is the built binary running as its own process.
type binServer struct {
	cmd    *exec.Cmd
	addr   string
	URL    string
	Logs   *syncBuffer // stdout, unless an onLine callback takes the lines
	stderr *syncBuffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
	client *http.Client
}

// startBinary runs bin with exactly env and waits until it listens. Each
// stdout line goes to onLine when given, else to Logs.
func startBinary(t *testing.T, bin string, env map[string]string, onLine func(string)) *binServer {
	t.Helper()
	s := &binServer{
		Logs: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{}),
		// No client timeout: go test's own -timeout bounds a call.
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}},
	}
	s.cmd = exec.Command(bin)
	for k, v := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	s.cmd.Stderr = s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, `"server listening"`) {
				var l struct{ Addr string }
				if json.Unmarshal([]byte(line), &l) == nil {
					select {
					case addr <- l.Addr:
					default:
					}
				}
			}
			if onLine != nil {
				onLine(line)
			} else {
				s.Logs.Write([]byte(line + "\n"))
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.client.CloseIdleConnections()
		select {
		case <-s.exited:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-testwait.After(t):
			_ = s.cmd.Process.Kill()
			<-s.exited
			t.Errorf("the server did not stop on SIGTERM")
		}
	})
	select {
	case a := <-addr:
		s.addr = a
		s.URL = "http://" + a
	case <-s.exited:
		t.Fatalf("the server exited at start: %v\nstdout:\n%s\nstderr:\n%s", s.err, s.Logs, s.stderr)
	case <-testwait.After(t):
		t.Fatalf("the server did not listen in time\nstdout:\n%s\nstderr:\n%s", s.Logs, s.stderr)
	}
	return s
}

func (s *binServer) waitReady(t *testing.T) {
	t.Helper()
	if !testwait.Poll(t, func() bool {
		resp, err := s.client.Get(s.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("the server is not ready\nstdout:\n%s", s.Logs)
	}
}

// post sends a Forge call with fit and optional extra headers (key, value…).
func (s *binServer) post(t *testing.T, path, fit, body string, extra ...string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if fit != "" {
		req.Header.Set("Authorization", "Bearer "+fit)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	return s.send(t, req)
}

func (s *binServer) send(t *testing.T, req *http.Request) reply {
	t.Helper()
	r, err := sendReq(s.client, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return r
}

// serverReadings are the resource gauges of /metrics.
type serverReadings struct {
	goroutines, fds, heapInuse, heapLive, heapGoal, rss float64
}

func (r serverReadings) summary() string {
	return fmt.Sprintf("goroutines=%.0f open_fds=%.0f heap_inuse=%.1fMiB heap_live=%.1fMiB heap_goal=%.1fMiB rss=%.1fMiB",
		r.goroutines, r.fds, r.heapInuse/(1<<20), r.heapLive/(1<<20), r.heapGoal/(1<<20), r.rss/(1<<20))
}

func (s *binServer) metrics(t *testing.T) serverReadings {
	t.Helper()
	return scrapeReadings(t, s.client, s.URL)
}

// scrapeReadings reads the resource gauges from baseURL's /metrics.
func scrapeReadings(t *testing.T, c *http.Client, baseURL string) serverReadings {
	t.Helper()
	resp, err := c.Get(baseURL + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer resp.Body.Close()
	want := map[string]*float64{}
	var r serverReadings
	want["go_goroutines"] = &r.goroutines
	want["process_open_fds"] = &r.fds
	want["go_memstats_heap_inuse_bytes"] = &r.heapInuse
	want["go_gc_heap_live_bytes"] = &r.heapLive
	want["go_memstats_next_gc_bytes"] = &r.heapGoal
	want["process_resident_memory_bytes"] = &r.rss
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("/metrics %s: %v", name, err)
			}
			*p = v
			found++
		}
	}
	if found != len(want) {
		t.Fatalf("/metrics lacks some of %v", want)
	}
	return r
}
