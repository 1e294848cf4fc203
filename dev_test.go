package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/internal/testwait"
)

// `dev` on a fresh machine prints commands that, pasted into a shell, return a
// wyu_ token, a 2xx for the triggers and the installation in the operator view.
func TestDevModeCommandsWork(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is needed to paste the printed commands")
	}
	env := map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "FORGE_REMOTE_DEV_DIR": privateDir(t), "LOG_LEVEL": "warn"}
	getenv := func(k string) string { return env[k] }
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan error, 1)
	listening := make(chan net.Addr, 1)
	go func() { done <- devCmd(ctx, nil, getenv, &out, &errOut, func(a net.Addr) { listening <- a }) }()
	select {
	case <-listening:
	case err := <-done:
		cancel()
		t.Fatalf("dev did not start: %v\n%s", err, errOut.String())
	case <-testwait.After(t):
		cancel()
		t.Fatal("dev did not start")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev exited with %v", err)
		}
	}()

	var cmds []string
	for _, line := range strings.Split(errOut.String(), "\n") {
		if strings.HasPrefix(line, "curl ") {
			cmds = append(cmds, line)
		}
	}
	if len(cmds) != 4 {
		t.Fatalf("want 4 commands, got %d:\n%s", len(cmds), errOut.String())
	}
	paste := func(cmd string) string {
		t.Helper()
		b, err := exec.Command("bash", "-c", cmd+" -w '\\n%{http_code}'").Output()
		if err != nil {
			t.Fatalf("%.60s…: %v", cmd, err)
		}
		return string(b)
	}
	if got := paste(cmds[0]); !strings.Contains(got, `"access_token":"wyu_`) || !strings.HasSuffix(got, "200") {
		t.Fatalf("token command: %s", got)
	}
	for _, c := range cmds[1:3] {
		if got := paste(c); !strings.HasSuffix(got, "200") && !strings.HasSuffix(got, "202") {
			t.Fatalf("trigger command answered: %s", got)
		}
	}
	if got := paste(cmds[3]); !strings.Contains(got, "installation/00000000-0000-4000-8000-00000000de01") || !strings.Contains(got, `"app_token_fresh":true`) {
		t.Fatalf("installations command: %s", got)
	}
	if !strings.Contains(out.String(), `"weavy":"SIMULATOR"`) {
		t.Fatalf("log lines do not say the Weavy simulator is in use")
	}

	// invoke signs and sends one call to the running dev server.
	var invOut syncBuffer
	if err := invokeCmd(context.Background(), []string{"token", "--account-id", "712020:abc", "--refresh"}, getenv, &invOut, &syncBuffer{}); err != nil || !strings.Contains(invOut.String(), "wyu_") {
		t.Fatalf("invoke: %v %s", err, invOut.String())
	}
}

func TestDevModeRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{":8080", "0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"} {
		env := map[string]string{"LISTEN_ADDR": addr, "FORGE_REMOTE_DEV_DIR": privateDir(t)}
		err := devCmd(context.Background(), nil, func(k string) string { return env[k] }, &syncBuffer{}, &syncBuffer{}, nil)
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

// privateDir is a fresh directory only this user can access, as dev mode
// requires of its state directory.
func privateDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// Dev mode refuses a state directory other users can access: they could plant
// the signing key.
func TestDevModeRefusesSharedDir(t *testing.T) {
	d := t.TempDir()
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "FORGE_REMOTE_DEV_DIR": d}
	err := devCmd(context.Background(), nil, func(k string) string { return env[k] }, &syncBuffer{}, &syncBuffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("shared dev dir: %v", err)
	}
}
