package cli

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/forge-remote/forge-remote/devmode"
	"github.com/forge-remote/forge-remote/internal/testwait"
)

// devServer is `dev` run in-process until the test ends.
type devServer struct {
	devStarted
	out, errOut *syncBuffer
	getenv      func(string) string
	stop        func()
}

// startDev runs devCmd with env and waits until it serves. There is no
// deadline: the test binary's -timeout bounds a start that never comes.
func startDev(t *testing.T, env map[string]string) *devServer {
	t.Helper()
	d := &devServer{out: &syncBuffer{}, errOut: &syncBuffer{}, getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan devStarted, 1)
	go func() { done <- devCmd(ctx, nil, d.getenv, d.out, d.errOut, func(s devStarted) { started <- s }) }()
	select {
	case d.devStarted = <-started:
	case err := <-done:
		cancel()
		t.Fatalf("dev did not start: %v\n%s", err, d.errOut.String())
	}
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("dev exited with %v", err)
			}
		})
	}
	t.Cleanup(d.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dev's log:\n%s\ndev's stderr:\n%s", d.out.String(), d.errOut.String())
		}
	})
	return d
}

// `dev` on a fresh machine prints commands that, pasted into a shell in the
// order printed, record the installation, return a wyu_ token and show the
// installation in the operator view, with no warning or error logged and no
// call leaving for a real Atlassian host: the profile sync they cause reads
// the Confluence simulator.
func TestDevModeCommandsWork(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is needed to paste the printed commands")
	}
	const account = "712020:3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d"
	d := startDev(t, map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "FORGE_REMOTE_DEV_DIR": privateDir(t)})

	var cmds []string
	for _, line := range strings.Split(d.errOut.String(), "\n") {
		if strings.HasPrefix(line, "curl ") {
			cmds = append(cmds, line)
		}
	}
	if len(cmds) != 5 {
		t.Fatalf("want 5 commands, got %d:\n%s", len(cmds), d.errOut.String())
	}
	for _, c := range cmds {
		if strings.Contains(c, "atlassian.com") || strings.Contains(c, "dev-install") {
			t.Errorf("printed command names a real host or a made-up event id: %.200s", c)
		}
	}
	// Dev mode asks Confluence on every chat open, and says how to see a refusal.
	if banner := d.errOut.String(); !strings.Contains(banner, "CHAT_RECHECK=0s") || !strings.Contains(banner, "invoke chat --content-id 98305 --restricted") {
		t.Errorf("the printed text does not tell CHAT_RECHECK=0s and --restricted:\n%s", banner)
	}
	// The UI calls carry the user's token, as Forge sends it to an endpoint
	// with auth.appUserToken; the triggers and the operator view do not.
	for i, c := range cmds {
		if ui := strings.Contains(c, "/resolvers/"); ui != strings.Contains(c, "-H 'x-forge-oauth-user: ey") {
			t.Errorf("command %d: a UI call %v, but its user token header does not agree: %.200s", i, ui, c)
		}
	}
	paste := func(cmd string) string {
		t.Helper()
		b, err := exec.Command("bash", "-c", cmd+" -w '\\n%{http_code}'").Output()
		if err != nil {
			t.Fatalf("%.60s…: %v", cmd, err)
		}
		return string(b)
	}
	if got := paste(cmds[0]); !strings.HasSuffix(got, "200") {
		t.Fatalf("install event answered: %s", got)
	}
	if got := paste(cmds[1]); !strings.HasSuffix(got, "202") {
		t.Fatalf("scheduled trigger answered: %s", got)
	}
	if got := paste(cmds[2]); !strings.Contains(got, `"access_token":"wyu_`) || !strings.HasSuffix(got, "200") {
		t.Fatalf("token command: %s", got)
	}
	// The page chat: opened closed, with the dev user its only member.
	if got := paste(cmds[3]); !strings.Contains(got, `"app_id":`) || !strings.HasSuffix(got, "200") {
		t.Fatalf("chat command: %s", got)
	}
	pageApp, ok := d.sims.weavy.App("confluence-00000000-0000-4000-8000-00000000c10d-page-98305")
	if !ok || pageApp.Access != "none" || len(pageApp.Members) != 1 {
		t.Fatalf("the page chat in the Weavy simulator: %+v (found %v)", pageApp, ok)
	}
	// The simulated Confluence was asked, as the dev user, about the page.
	if checks := d.sims.confluence.ContentChecks(); len(checks) != 1 || checks[0].Path != "/wiki/api/v2/pages/98305" || checks[0].As != "5b10ac8d82e05b22cc7d4ef5" {
		t.Fatalf("Confluence's page checks: %+v", checks)
	}
	got := paste(cmds[4])
	if !strings.Contains(got, "installation/00000000-0000-4000-8000-00000000de01") || !strings.Contains(got, `"app_token_fresh":true`) ||
		!strings.Contains(got, `"api_base_url":"`+d.sims.confluence.APIBaseURL("00000000-0000-4000-8000-00000000c10d")+`"`) ||
		!strings.Contains(got, `"installer_account_id":"5b10ac8d82e05b22cc7d4ef5"`) {
		t.Fatalf("installations command: %s", got)
	}

	// The first token queued the user's profile sync: it reads the
	// Confluence simulator and writes the name into the Weavy simulator.
	testwait.For(t, "the dev user's profile synced", func() bool {
		p, ok := d.sims.weavy.Profile("5b10ac8d82e05b22cc7d4ef5")
		return ok && p["name"] == "Dev User 5b10ac8d82e05b22cc7d4ef5"
	})
	testwait.For(t, "housekeeping", func() bool { return strings.Contains(d.out.String(), `"msg":"housekeeping done"`) })
	if d.sims.confluence.Calls() == 0 || d.sims.confluence.ExpiredCalls() != 0 {
		t.Errorf("Confluence simulator: %d calls, %d refused", d.sims.confluence.Calls(), d.sims.confluence.ExpiredCalls())
	}

	// invoke signs and sends one call to the running dev server; with an
	// app token the Confluence simulator accepts though another process made it.
	var invOut syncBuffer
	if err := invokeCmd(context.Background(), []string{"token", "--account-id", account, "--refresh"}, d.getenv, &invOut, &syncBuffer{}); err != nil || !strings.Contains(invOut.String(), "wyu_") {
		t.Fatalf("invoke: %v %s", err, invOut.String())
	}
	testwait.For(t, "the invoked user's profile synced", func() bool {
		p, ok := d.sims.weavy.Profile(account)
		return ok && p["name"] == "Dev User "+account
	})

	logs := d.out.String()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			t.Errorf("the walk-through logged: %s", line)
		}
		if !strings.Contains(line, `"simulated":"forge,confluence,weavy"`) {
			t.Errorf("a log line does not say what is simulated: %s", line)
		}
	}
	if strings.Contains(logs, "atlassian.com/ex/") {
		t.Error("the log names a real Atlassian apiBaseUrl")
	}
}

// invoke calls any resolver the dev server has: the payload is sent as the
// body, an unknown key is the server's 404 (its message without Go package
// names), and bad arguments are refused before anything is sent. (A
// CHAT_RECHECK the developer sets overrides dev mode's 0.)
func TestDevInvokeAnyResolver(t *testing.T) {
	d := startDev(t, map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "FORGE_REMOTE_DEV_DIR": privateDir(t), "LOG_LEVEL": "warn", "CHAT_RECHECK": "5m"})
	// A CHAT_RECHECK the developer set is kept, and said.
	if !strings.Contains(d.errOut.String(), "CHAT_RECHECK=5m0s") {
		t.Errorf("dev mode's text does not tell the CHAT_RECHECK set:\n%s", d.errOut.String())
	}
	invoke := func(args ...string) (string, string, error) {
		var out, errOut syncBuffer
		err := run(context.Background(), append([]string{"forge-remote", "invoke"}, args...), d.getenv, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	// Refused invokes first, while nothing else talks to Weavy: a mint
	// below queues its user's profile sync, whose requests arrive whenever
	// a busy machine lets them.
	requests := d.sims.weavy.Requests()
	for _, bad := range [][]string{
		{},                            // no key
		{"token", "--payload", "[1]"}, // not an object
		{"token", "--payload", "{"},   // not JSON
		{"chat", "--refresh"},         // --refresh is the token resolver's
		{"token", "extra"},            // a second key
		{"token", "--no-such-flag"},   // unknown flag
	} {
		if _, _, err := invoke(bad...); err == nil {
			t.Errorf("invoke %q: no error", bad)
		}
	}
	if got := d.sims.weavy.Requests(); len(got) != len(requests) {
		t.Errorf("a refused invoke reached Weavy: %q", got[len(requests):])
	}

	mints := d.sims.weavy.Mints()
	if out, _, err := invoke("token", "--payload", `{"refresh":true}`); err != nil || !strings.Contains(out, `"access_token":"wyu_`) {
		t.Fatalf("invoke token --payload: %v %s", err, out)
	}
	if out, _, err := invoke("--account-id", "712020:flags-first", "token"); err != nil || !strings.Contains(out, "wyu_") {
		t.Fatalf("flags before the key: %v %s", err, out)
	}
	if d.sims.weavy.Mints() != mints+2 {
		t.Errorf("Weavy mints %d, want %d", d.sims.weavy.Mints(), mints+2)
	}
	out, _, err := invoke("nope", "--payload", `{"a":1}`)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(out, `"message":"unknown resolver \"nope\""`) {
		t.Fatalf("unknown resolver: %v %s", err, out)
	}
}

// Every command answers --help with its usage on stdout and exit 0, without
// doing anything else (serve does not start, healthcheck calls nothing).
func TestHelpOnEveryCommand(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"},
		{"serve", "--help"}, {"dev", "--help"}, {"dev", "-h"}, {"invoke", "--help"}, {"invoke", "token", "--help"},
		{"healthcheck", "--help"}, {"manifest", "--help"}, {"manifest", "check", "--help"}, {"manifest", "render", "--help"},
		{"weavy", "--help"}, {"weavy", "lockdown", "--help"},
	} {
		var out, errOut syncBuffer
		// No environment at all: serve would fail on FORGE_APP_ID.
		err := run(context.Background(), append([]string{"forge-remote"}, args...), func(string) string { return "" }, &out, &errOut)
		if err != nil || !strings.HasPrefix(out.String(), "usage:") || errOut.String() != "" {
			t.Errorf("%q: err %v, stdout %.40q, stderr %q", args, err, out.String(), errOut.String())
		}
	}
	for _, args := range [][]string{{"nope"}, {"serve", "extra"}, {"dev", "--nope"}, {"healthcheck", "x"}, {"manifest", "nope"}, {"weavy"}, {"weavy", "lockdown", "--nope"}} {
		var out, errOut syncBuffer
		err := run(context.Background(), append([]string{"forge-remote"}, args...), func(string) string { return "" }, &out, &errOut)
		if err == nil || !strings.Contains(errOut.String(), "usage:") {
			t.Errorf("%q: err %v, stderr %.60q", args, err, errOut.String())
		}
	}
}

// manifest render names each missing flag instead of complaining about an
// empty app id's format.
func TestManifestRenderRequiredFlags(t *testing.T) {
	full := map[string]string{"--app-id": "3f2c9a4e-8b1d-4c7a-9e2f-5d6b7a8c9d0e", "--base-url": "https://remote.example.com", "--weavy-url": "https://acme.weavy.io"}
	for missing := range full {
		args := []string{"forge-remote", "manifest", "render"}
		for f, v := range full {
			if f != missing {
				args = append(args, f, v)
			}
		}
		var out, errOut syncBuffer
		err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
		if err == nil || err.Error() != "manifest render: the flag "+missing+" is required" || out.String() != "" {
			t.Errorf("without %s: %v (stdout %d bytes)", missing, err, len(out.String()))
		}
	}
	var out syncBuffer
	args := []string{"forge-remote", "manifest", "render"}
	for f, v := range full {
		args = append(args, f, v)
	}
	if err := run(context.Background(), args, func(string) string { return "" }, &out, &syncBuffer{}); err != nil ||
		!strings.Contains(out.String(), "ari:cloud:ecosystem::app/3f2c9a4e-8b1d-4c7a-9e2f-5d6b7a8c9d0e") {
		t.Fatalf("render with every flag: %v", err)
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

// `invoke chat --content-id` opens that page's chat as the dev user: the
// answer names the Weavy app, and the simulated Weavy keeps it closed with
// the user a member; --space-key opens the space's, neither the site's. A
// content id that is no Confluence id is the server's 400 and makes nothing.
func TestDevInvokeChat(t *testing.T) {
	d := startDev(t, map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "FORGE_REMOTE_DEV_DIR": privateDir(t), "LOG_LEVEL": "warn"})
	invoke := func(args ...string) (map[string]any, string, error) {
		t.Helper()
		var out, errOut syncBuffer
		err := run(context.Background(), append([]string{"forge-remote", "invoke", "chat"}, args...), d.getenv, &out, &errOut)
		var ans map[string]any
		_ = json.Unmarshal([]byte(out.String()), &ans)
		return ans, out.String(), err
	}
	page := "confluence-" + devmode.CloudID + "-page-98305"
	ans, out, err := invoke("--content-id", "98305")
	if err != nil || ans["uid"] != page || ans["app_id"] == nil {
		t.Fatalf("invoke chat --content-id: %v %s", err, out)
	}
	app, ok := d.sims.weavy.App(page)
	if !ok || float64(app.ID) != ans["app_id"] || app.Access != "none" || len(app.Members) != 1 {
		t.Fatalf("the simulated Weavy's app: %+v (answer %s)", app, out)
	}
	if _, _, err := invoke("--content-id", "98305", "--account-id", "712020:second-user"); err != nil {
		t.Fatal(err)
	}
	if app, _ := d.sims.weavy.App(page); len(app.Members) != 2 {
		t.Fatalf("a second user's open: members %v", app.Members)
	}
	for _, c := range []struct {
		args   []string
		uid    string
		access string
	}{
		{[]string{"--space-key", "DEV"}, "confluence-" + devmode.CloudID + "-space-DEV", "none"},
		{nil, "confluence-" + devmode.CloudID + "-global", "write"},
	} {
		ans, out, err := invoke(c.args...)
		app, _ := d.sims.weavy.App(c.uid)
		if err != nil || ans["uid"] != c.uid || float64(app.ID) != ans["app_id"] || app.Access != c.access {
			t.Errorf("invoke chat %v: %v %s; app %+v", c.args, err, out, app)
		}
	}
	apps := d.sims.weavy.Apps()
	if _, out, err := invoke("--content-id", "../1"); err == nil || !strings.Contains(err.Error(), "400") || d.sims.weavy.Apps() != apps {
		t.Fatalf("a content id that is no id: %v %s", err, out)
	}
	// Each page open asked the simulated Confluence as the user who opened.
	var asked []string
	for _, c := range d.sims.confluence.ContentChecks() {
		asked = append(asked, c.As+" "+c.Path)
	}
	if want := []string{
		devAccountID + " /wiki/api/v2/pages/98305", "712020:second-user /wiki/api/v2/pages/98305", devAccountID + " /wiki/api/v2/spaces",
	}; strings.Join(asked, ",") != strings.Join(want, ",") {
		t.Errorf("Confluence was asked %q, want %q", asked, want)
	}
}

// `invoke chat --restricted` restricts the page (or the space) in the dev
// server's simulated Confluence first: the open is refused 403 no_access at
// once (dev mode asks on every open), nobody is added to the chat and a
// member is removed; --unrestricted lets them in again.
func TestDevInvokeChatRestricted(t *testing.T) {
	d := startDev(t, map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "FORGE_REMOTE_DEV_DIR": privateDir(t), "LOG_LEVEL": "error"})
	invoke := func(args ...string) (string, string, error) {
		t.Helper()
		var out, errOut syncBuffer
		err := run(context.Background(), append([]string{"forge-remote", "invoke", "chat"}, args...), d.getenv, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	refused := func(what string, out string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(out, `"no_access"`) {
			t.Fatalf("%s: %v %s", what, err, out)
		}
	}

	// A page nobody opened yet: refused, and no member anywhere.
	page := "confluence-" + devmode.CloudID + "-page-4242"
	out, errOut, err := invoke("--content-id", "4242", "--restricted")
	refused("a restricted page", out, err)
	if !strings.Contains(errOut, "nobody view page 4242") || !strings.Contains(errOut, "--unrestricted") {
		t.Errorf("invoke does not say what it restricted: %q", errOut)
	}
	if app, ok := d.sims.weavy.App(page); ok && len(app.Members) != 0 {
		t.Fatalf("a refused user is a member: %+v", app)
	}
	// It stays restricted for the next call, whoever makes it.
	out, _, err = invoke("--content-id", "4242", "--account-id", "712020:second-user")
	refused("the restricted page again", out, err)

	// Lifted: the user gets in.
	if out, errOut, err := invoke("--content-id", "4242", "--unrestricted"); err != nil || !strings.Contains(out, page) || !strings.Contains(errOut, "lifted the restriction on page 4242") {
		t.Fatalf("--unrestricted: %v %s %s", err, out, errOut)
	}
	if app, _ := d.sims.weavy.App(page); len(app.Members) != 1 {
		t.Fatalf("after --unrestricted: members %v", app.Members)
	}
	// Restricted after joining: refused at once, and the membership goes.
	out, _, err = invoke("--content-id", "4242", "--restricted")
	refused("restricted after joining", out, err)
	if app, _ := d.sims.weavy.App(page); len(app.Members) != 0 {
		t.Fatalf("a member of a page restricted since: %v", app.Members)
	}

	// A space alike; its pages stay open.
	out, _, err = invoke("--space-key", "SECRET", "--restricted")
	refused("a restricted space", out, err)
	if _, ok := d.sims.weavy.App("confluence-" + devmode.CloudID + "-space-SECRET"); ok {
		t.Error("a refused open made the space's app")
	}
	if out, _, err := invoke("--space-key", "SECRET", "--unrestricted"); err != nil || !strings.Contains(out, "space-SECRET") {
		t.Fatalf("the space unrestricted: %v %s", err, out)
	}

	// Refused before anything is restricted or sent.
	checks := len(d.sims.confluence.ContentChecks())
	for _, bad := range [][]string{
		{"--restricted"}, // nothing to restrict
		{"--content-id", "1", "--restricted", "--unrestricted"}, // both
	} {
		if _, _, err := invoke(bad...); err == nil {
			t.Errorf("invoke chat %q: no error", bad)
		}
	}
	var tokOut syncBuffer
	if err := run(context.Background(), []string{"forge-remote", "invoke", "token", "--content-id", "1", "--restricted"}, d.getenv, &tokOut, &syncBuffer{}); err == nil {
		t.Error("invoke token --restricted: no error")
	}
	// A content id the simulator cannot restrict: its reason, nothing sent.
	if _, _, err := invoke("--content-id", "../1", "--restricted"); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "contentId") {
		t.Errorf("restricting a content id that is no id: %v", err)
	}
	if got := len(d.sims.confluence.ContentChecks()); got != checks {
		t.Errorf("refused invokes asked Confluence %d times", got-checks)
	}
}
