package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports (the kernel fixes it for userspace ABI).
const clockTicks = 100

// procStat is what the bench reads of one process from /proc/<pid>/stat.
type procStat struct {
	pid, ppid int
	cpuTicks  int64 // utime + stime + cutime + cstime (reaped children count once)
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// comm may contain spaces and parentheses: fields start after the last ')'.
	j := bytes.LastIndexByte(b, ')')
	if j < 0 {
		return procStat{}, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[j+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime..cstime are fields 14..17.
	if len(f) < 15 {
		return procStat{}, errors.New("short /proc stat")
	}
	s := procStat{pid: pid}
	s.ppid, _ = strconv.Atoi(f[1])
	for _, k := range f[11:15] {
		v, _ := strconv.ParseInt(k, 10, 64)
		s.cpuTicks += v
	}
	return s, nil
}

// tree lists pid and all its live descendants.
func tree(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, err := readStat(p); err == nil {
			children[s.ppid] = append(children[s.ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU is the CPU time used so far by pid and its descendants (a shell
// running the real server, node's child processes if any).
func treeCPU(pid int) time.Duration {
	var ticks int64
	for _, p := range tree(pid) {
		if s, err := readStat(p); err == nil {
			ticks += s.cpuTicks
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// treePeakRSS sums VmHWM (peak resident set) over pid and its descendants.
func treePeakRSS(pid int) int64 { return treeStatus(pid)["VmHWM"] }

// treeStatus sums the memory lines of /proc/<pid>/status (VmHWM, VmRSS,
// RssAnon, RssFile, RssShmem; in bytes) over pid and its descendants.
// RssAnon is what the process holds in its heap; RssFile is mapped files
// (bolt's mmap, the binary), RssShmem the same of files on a tmpfs.
func treeStatus(pid int) map[string]int64 {
	total := map[string]int64{}
	for _, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			name, v, ok := strings.Cut(line, ":")
			if !ok || !strings.HasSuffix(v, " kB") {
				continue
			}
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				total[name] += kb << 10
			}
		}
	}
	return total
}

// selfCPU is this process's CPU time (the load generator's cost).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tailBuffer keeps the last bytes a process wrote, to show when it fails.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// serverProc is the server under test, in its own process group.
type serverProc struct {
	cmd    *exec.Cmd
	out    *tailBuffer
	done   chan struct{}
	err    error
	addr   string
	ready  time.Duration // process start → first 200 from /readyz
	tstart time.Time
}

// startServer runs argv (or, with shell, /bin/sh -c command) in dir with env
// added to this process's environment, and waits until /readyz answers 200.
func startServer(ctx context.Context, dir string, argv []string, env []string, addr string, readyTimeout time.Duration) (*serverProc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out := &tailBuffer{max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &serverProc{cmd: cmd, out: out, done: make(chan struct{}), addr: addr}

	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext}}
	url := "http://" + addr + "/readyz"
	p.tstart = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q: %w", strings.Join(argv, " "), err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()

	limit := time.After(readyTimeout)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.ready = time.Since(p.tstart)
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("server exited before ready (%v); its output:\n%s", p.err, out)
		case <-limit:
			p.stop()
			return nil, fmt.Errorf("server not ready after %s; its output:\n%s", readyTimeout, out)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (p *serverProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the server's process group, then SIGKILL after 5 s.
func (p *serverProc) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// freeAddr picks a free loopback port for the server under test.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// moduleRoot finds the directory of forge-remote's go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/forge-remote/forge-remote\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the forge-remote module (go.mod not found)")
		}
		dir = parent
	}
}

// buildServer builds forge-remote into dir.
func buildServer(ctx context.Context, root, dir string) (string, error) {
	return goBuild(ctx, root, filepath.Join(dir, "forge-remote"), ".")
}

// buildFloor builds the HTTP floor (bench/floor) into dir.
func buildFloor(ctx context.Context, root, dir string) (string, error) {
	return goBuild(ctx, root, filepath.Join(dir, "http-floor"), "./bench/floor")
}

// imageBuildFlags are the Dockerfile's `go build` flags (with CGO_ENABLED=0;
// TestBuildLikeTheImage holds the two together): no gin MsgPack codec
// (3 MB of code we never call), no symbol tables, no build paths.
var imageBuildFlags = []string{"-tags", "nomsgpack", "-trimpath", "-ldflags=-s -w"}

// goBuild builds pkg as the Dockerfile builds the image's binary: static
// (no cgo, so no libc mapped in) and with its flags. The run measures what
// ships.
func goBuild(ctx context.Context, root, bin, pkg string) (string, error) {
	args := append(append([]string{"build"}, imageBuildFlags...), "-o", bin, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}
