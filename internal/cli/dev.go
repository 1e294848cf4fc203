package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/devmode"
	"github.com/forge-remote/forge-remote/devmode/confluencesim"
	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/server"
)

const devUsage = `usage: forge-remote dev [--account-id ID]

Runs the server on LISTEN_ADDR (default 127.0.0.1:8080, loopback only) with a
simulated Forge (its own signing key and JWKS), a simulated Confluence (the
installation's apiBaseUrl) and, unless WEAVY_URL is set, a simulated Weavy.
The simulated Confluence lets every user view every page, blog post (any
numeric id) and space (any key) until ` + "`forge-remote invoke chat ... --restricted`" + `
restricts one; dev mode sets CHAT_RECHECK=0 unless you set it, so that every
chat open asks it and a restriction shows at once. Prints ready-to-paste curl
commands, the UI calls with a user token (x-forge-oauth-user). Key, state and
database are kept in FORGE_REMOTE_DEV_DIR (default: the user's cache
directory).

flags:
`

// devStarted is what devCmd tells its caller (tests) once it serves.
type devStarted struct {
	addr net.Addr
	sims *simulators
}

// devCmd runs the server on loopback with a built-in Forge simulator (its own
// signing key and JWKS), a Confluence simulator serving the installation's
// apiBaseUrl and, without WEAVY_URL, a Weavy simulator.
func devCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, onListen func(devStarted)) error {
	fs := newFlags("dev", devUsage)
	account := fs.String("account-id", devAccountID, "accountId used in the printed commands")
	if err := fs.parse(args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.printUsage(stderr)
		return fmt.Errorf("dev: unexpected argument %q", fs.Arg(0))
	}
	listen := getenv("LISTEN_ADDR")
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	if err := devmode.CheckLoopback(listen); err != nil {
		return err
	}
	dir := devDir(getenv)
	key, err := devmode.LoadOrCreateKey(dir)
	if err != nil {
		return err
	}
	sims := startSimulators(dir, key, getenv("WEAVY_URL") == "")
	defer sims.Close()

	internal := make([]byte, 16)
	_, _ = rand.Read(internal)
	env := map[string]string{
		"FORGE_APP_ID":       devmode.AppID,
		"FORGE_JWKS_URL":     sims.jwks.URL + "/.well-known/jwks.json",
		"STORE_URL":          "bolt://" + filepath.Join(dir, "forge-remote.db"),
		"LISTEN_ADDR":        listen,
		"INTERNAL_API_TOKEN": "dev-" + hex.EncodeToString(internal),
	}
	// The server keeps Confluence's verdict on a page for CHAT_RECHECK (10
	// min by default): in dev mode every open asks, so that `invoke chat
	// --restricted` shows the refusal at once, unless the developer says
	// otherwise.
	if getenv("CHAT_RECHECK") == "" {
		env["CHAT_RECHECK"] = "0"
	}
	// The hourly trigger's curl runs its jobs at once, not at the
	// installation's moment of the hour, unless the developer says otherwise.
	if getenv("CONFLUENCE_SPREAD") == "" {
		env["CONFLUENCE_SPREAD"] = "off"
	}
	if sims.weavy != nil {
		env["WEAVY_URL"] = sims.weavy.URL
		env["WEAVY_API_KEY"] = weavysim.APIKey
	}
	dev := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return getenv(k)
	}
	cfg, err := server.LoadConfig(dev)
	if err != nil {
		return err
	}
	// Every line says what is simulated: tokens from here are not real.
	log := newLogger(stdout, cfg.LogLevel).With(zap.Bool("dev_mode", true), zap.String("simulated", sims.names()))
	defer func() { _ = log.Sync() }()
	srv, err := server.New(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		return err
	}
	apiBase := sims.confluence.APIBaseURL(devmode.CloudID)
	return srv.Run(ctx, func(a net.Addr) {
		base := "http://" + a.String()
		st := devmode.State{Addr: a.String(), InternalToken: env["INTERNAL_API_TOKEN"], APIBaseURL: apiBase, ConfluenceAddr: sims.confluenceAddr()}
		if err := devmode.SaveState(dir, st); err != nil {
			log.Warn("saving dev state for invoke", zap.Error(err))
		}
		cmds, err := devmode.Commands(key, base, apiBase, *account, env["INTERNAL_API_TOKEN"], time.Now())
		if err != nil {
			log.Error("printing dev commands", zap.Error(err))
			return
		}
		weavy := "SIMULATED"
		if sims.weavy == nil {
			weavy = cfg.WeavyURL
		}
		fmt.Fprintf(stderr, "\nforge-remote dev mode on %s (Forge and Confluence simulated; Weavy %s; data in %s)\n"+
			"# CHAT_RECHECK=%s: Confluence's verdict on a page is kept that long (0: every chat open asks, so a restriction shows at once)\n%s",
			base, weavy, dir, cfg.ChatRecheck, cmds)
		if onListen != nil {
			onListen(devStarted{a, sims})
		}
	})
}

// devAccountID is the accountId dev mode and invoke use unless told another.
const devAccountID = "5b10ac8d82e05b22cc7d4ef5"

// simulators are the services dev mode stands in for. Each is a local
// server; the ones the developer configured for real are nil.
type simulators struct {
	jwks       *httptest.Server      // Forge's signing keys
	confluence *confluencesim.Server // the installation's apiBaseUrl
	weavy      *weavysim.Server      // nil when WEAVY_URL is set
}

// startSimulators starts dev mode's simulators. The Confluence simulator
// listens where the previous run's did when it can: the apiBaseUrl recorded
// for the installation then keeps working across restarts.
func startSimulators(dir string, key *rsa.PrivateKey, weavy bool) *simulators {
	s := &simulators{jwks: httptest.NewServer(devmode.JWKSHandler(&key.PublicKey))}
	var ln net.Listener
	if prev, err := devmode.LoadState(dir); err == nil && prev.ConfluenceAddr != "" && devmode.CheckLoopback(prev.ConfluenceAddr) == nil {
		ln, _ = net.Listen("tcp", prev.ConfluenceAddr)
	}
	// Every accountId is a user, every numeric id a viewable page and blog
	// post, every key a space, until `invoke --restricted` says otherwise;
	// app and user tokens are those any dev process signs with the key.
	s.confluence = confluencesim.New(ln, confluencesim.Options{
		Tokens:     devmode.CheckAppToken(&key.PublicKey),
		UserTokens: devmode.CheckUserToken(&key.PublicKey),
		AnyUser:    true,
		AnyContent: true,
	})
	s.confluence.SetSiteURL(devmode.SiteURL)
	if weavy {
		s.weavy = weavysim.New("")
	}
	return s
}

// names lists what is simulated, for every log line.
func (s *simulators) names() string {
	n := "forge,confluence"
	if s.weavy != nil {
		n += ",weavy"
	}
	return n
}

func (s *simulators) confluenceAddr() string {
	return strings.TrimPrefix(s.confluence.URL(), "http://")
}

func (s *simulators) Close() {
	if s.weavy != nil {
		s.weavy.Close()
	}
	s.confluence.Close()
	s.jwks.Close()
}

// devDir is where dev mode keeps its key, state and database.
func devDir(getenv func(string) string) string {
	if d := getenv("FORGE_REMOTE_DEV_DIR"); d != "" {
		return d
	}
	return devmode.Dir()
}

const invokeUsage = `usage: forge-remote invoke FUNCTION_KEY [--account-id ID] [--payload JSON]
       forge-remote invoke token [--account-id ID] [--refresh]
       forge-remote invoke chat [--account-id ID] [--content-id ID | --space-key KEY] [--restricted | --unrestricted]

Signs one call to the resolver FUNCTION_KEY with the dev key, as Forge would
for a user of the simulated site, and sends it to the running ` + "`forge-remote dev`" + `,
with an app token (x-forge-oauth-system) and the user's token
(x-forge-oauth-user). Prints the answer; exits 1 unless it is 200.
--content-id and --space-key put the page or space in the FIT's
context.extension, as Forge does for a module on that page: the chat
resolver opens that page's (or space's) chat, once the simulated Confluence
says the user can view it, and without them the site-wide one. The answer's
app_id is the Weavy app (kept with its members by the simulated Weavy), uid
its Weavy uid.

--restricted first restricts the page (--content-id) or else the space
(--space-key) in the running dev server's simulated Confluence so that
nobody can view it, every user and the app alike: the chat call then shows
the refusal (403 no_access) and removes the user's membership if they had
one. --unrestricted lifts that restriction first. A restriction lasts until
lifted or until ` + "`dev`" + ` restarts; it shows at once because dev mode sets
CHAT_RECHECK=0 (unless you set it).

flags:
`

// invokeCmd signs one call with the dev key and sends it to the running dev
// server: `invoke FUNCTION_KEY [--account-id X] [--payload JSON]`, and for the
// token resolver `--refresh` as a shorthand for --payload '{"refresh":true}'.
func invokeCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("invoke", invokeUsage)
	account := fs.String("account-id", devAccountID, "the Atlassian accountId the FIT names")
	payload := fs.String("payload", "", "the resolver's payload, a JSON object (default {})")
	refresh := fs.Bool("refresh", false, `token only: ask for a new token (--payload '{"refresh":true}')`)
	var where devmode.Where
	fs.StringVar(&where.ContentID, "content-id", "", "the page (content id) the call comes from, in the FIT's context.extension")
	fs.StringVar(&where.SpaceKey, "space-key", "", "the space the call comes from, in the FIT's context.extension")
	restricted := fs.Bool("restricted", false, "chat only: first let nobody view the page (--content-id) or else space (--space-key) in the simulated Confluence")
	unrestricted := fs.Bool("unrestricted", false, "chat only: first lift the restriction --restricted put on the page or space")
	// The function key comes first (`invoke token --refresh`); flags may
	// also come before it.
	var key string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		key, args = args[0], args[1:]
	}
	if err := fs.parse(args, stdout, stderr); err != nil {
		return err
	}
	if key == "" && fs.NArg() > 0 {
		key = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fs.printUsage(stderr)
		return fmt.Errorf("invoke: unexpected argument %q", fs.Arg(0))
	}
	if key == "" {
		fs.printUsage(stderr)
		return errors.New("invoke: a function key is required, e.g. invoke token")
	}
	body := *payload
	switch {
	case *refresh && (key != "token" || body != ""):
		return errors.New("invoke: --refresh is for the token resolver, without --payload")
	case *refresh:
		body = `{"refresh":true}`
	case body == "":
		body = "{}"
	}
	if *restricted || *unrestricted {
		switch {
		case *restricted && *unrestricted:
			return errors.New("invoke: --restricted and --unrestricted together")
		case key != "chat":
			return errors.New("invoke: --restricted and --unrestricted are for the chat resolver")
		case where == devmode.Where{}:
			return errors.New("invoke: --restricted and --unrestricted need --content-id or --space-key")
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &obj); err != nil {
		return fmt.Errorf("invoke: --payload must be a JSON object: %w", err)
	}
	dir := devDir(getenv)
	st, err := devmode.LoadState(dir)
	if err != nil {
		return err
	}
	sk, err := devmode.LoadOrCreateKey(dir)
	if err != nil {
		return err
	}
	if *restricted || *unrestricted {
		if err := restrict(ctx, st, where, *restricted, stderr); err != nil {
			return err
		}
	}
	now := time.Now()
	fit, err := devmode.FITIn(sk, *account, st.APIBaseURL, where, now)
	if err != nil {
		return err
	}
	appTok, err := devmode.AppToken(sk, now.Add(3*time.Hour), now)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+st.Addr+"/resolvers/"+url.PathEscape(key), strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+fit)
	req.Header.Set("x-forge-oauth-system", appTok) // as Forge sends to appSystemToken endpoints
	if *account != "" {
		// As Forge sends to appUserToken endpoints on a user's call: the
		// chat resolver checks the page with it.
		userTok, err := devmode.UserToken(sk, *account, now.Add(devmode.UserTokenLifetime), now)
		if err != nil {
			return err
		}
		req.Header.Set("x-forge-oauth-user", userTok)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("invoke: is `go run . dev` running? %w", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	fmt.Fprintf(stdout, "%s\n", bytes.TrimSpace(out))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("invoke: the remote answered %d", resp.StatusCode)
	}
	return nil
}

// restrict restricts (on true) the page, or else the space, where names to
// nobody in the running dev server's Confluence simulator, or lifts that
// restriction (on false), through the simulator's control endpoint.
func restrict(ctx context.Context, st devmode.State, where devmode.Where, on bool, stderr io.Writer) error {
	u, err := url.Parse(st.APIBaseURL)
	if err != nil || u.Scheme != "http" || devmode.CheckLoopback(u.Host) != nil {
		return fmt.Errorf("invoke: the dev state's apiBaseUrl %q is not a local Confluence simulator", st.APIBaseURL)
	}
	ctl := map[string]any{"contentId": where.ContentID}
	what := "page " + where.ContentID
	if where.ContentID == "" {
		ctl = map[string]any{"spaceKey": where.SpaceKey}
		what = "space " + where.SpaceKey
	}
	path := "/_sim/unrestrict"
	if on {
		path = "/_sim/restrict"
		ctl["viewers"] = []string{} // nobody
	}
	body, _ := json.Marshal(ctl)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.Scheme+"://"+u.Host+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("invoke: is `go run . dev` running? the simulated Confluence: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("invoke: the simulated Confluence refused to %s %s: %d %s", strings.TrimPrefix(path, "/_sim/"), what, resp.StatusCode, bytes.TrimSpace(msg))
	}
	if on {
		fmt.Fprintf(stderr, "invoke: the simulated Confluence now lets nobody view %s (undo: --unrestricted)\n", what)
	} else {
		fmt.Fprintf(stderr, "invoke: the simulated Confluence lifted the restriction on %s\n", what)
	}
	return nil
}

// healthcheckCmd is the container's HEALTHCHECK: 0 when /healthz answers 200.
func healthcheckCmd(ctx context.Context, getenv func(string) string) error {
	addr := getenv("LISTEN_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: LISTEN_ADDR %q: %w", addr, err)
	}
	// A wildcard address is reached on loopback; a specific one as it is.
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %d", resp.StatusCode)
	}
	return nil
}
