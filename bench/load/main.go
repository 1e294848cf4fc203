// Command load is forge-remote's load benchmark: it starts a server under test
// (ours, or any command such as the Node peer in bench/peer), plays Forge and
// Weavy for it on loopback, and drives POST /resolvers/token with a distinct
// pre-signed FIT per request. With -compare it also runs the HTTP floor
// (bench/floor), what net/http + Gin alone cost on the same requests.
// forge-remote and the floor run with the GOGC and GOMEMLIMIT of the
// Dockerfile, as the image runs them, unless the environment sets them. See
// bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/forge-remote/forge-remote/devmode/weavysim"
	"github.com/forge-remote/forge-remote/forge/forgetest"
)

func main() {
	// GOGC and GOMEMLIMIT in this tool's environment are for the servers it
	// runs (gcenv.go): the load generator keeps Go's defaults, so that trying
	// another setting does not change the generator's cost as well.
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(math.MaxInt64)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

const defaultPeer = "node bench/peer/server.mjs"

type options struct {
	cmd, bin, peer   string
	compare, floor   bool
	duration, warmup time.Duration
	conns            int
	users, installs  int
	poolSize         int
	chats            int
	cache            string
	store            string
	logLevel         string
	appToken         bool
	timeout          time.Duration
	readyTimeout     time.Duration
	json, smoke      bool
	results          bool
	resultsFile      string
	note             string
	args             []string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.cmd, "cmd", "", "command of the server under test, run in the module root (through /bin/sh -c if it uses shell syntax), without the Dockerfile's GOGC/GOMEMLIMIT; default: forge-remote, built as the Dockerfile builds it (static, stripped) and run with them")
	fs.StringVar(&o.bin, "bin", "", "a prebuilt forge-remote binary to test instead of building one (run with the Dockerfile's GOGC/GOMEMLIMIT too)")
	fs.StringVar(&o.peer, "peer", defaultPeer, "the peer's command for -compare")
	fs.BoolVar(&o.compare, "compare", false, "run forge-remote, then the peer, and print them side by side")
	fs.BoolVar(&o.floor, "floor", true, "with -compare: also run the HTTP floor (bench/floor: net/http + Gin answering a constant) third, as http-floor")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured load time per server")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load after the per-user warm-up (JIT, pools, connections)")
	fs.IntVar(&o.conns, "c", 64, "concurrent keep-alive connections")
	fs.IntVar(&o.users, "users", 300, "distinct users (accountIds) the FITs are spread over")
	fs.IntVar(&o.installs, "installs", 4, "distinct installations (sites) the users are spread over")
	fs.IntVar(&o.poolSize, "pool", 20000, "distinct pre-signed FITs (at least -users)")
	fs.IntVar(&o.chats, "chats", 0, "forge-remote's run first opens this many distinct page chats (POST /resolvers/chat, chat i by user i mod -users, Confluence simulated in this process); 0: none")
	fs.StringVar(&o.cache, "cache", "", "where the signing key and FIT pools are kept between runs (default <user cache dir>/forge-remote-bench)")
	fs.StringVar(&o.store, "store", "bolt", "STORE_URL of the server under test: bolt (a fresh file in a temp dir), memory, or redis (a redis-server from PATH started for each run, with a STORE_KEY made for it)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "LOG_LEVEL of the server under test")
	fs.BoolVar(&o.appToken, "app-token", true, "send an x-forge-oauth-system app token (one per installation), as Forge does when the manifest asks for it")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long the server may take to answer 200 on /readyz")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.smoke, "smoke", false, "a few seconds with a small pool: fails only if the tool or the warm path breaks (server not starting, non-2xx, Weavy calls)")
	fs.BoolVar(&o.results, "results", false, "with -compare: write the report to bench/RESULTS.md (keeps a diff against the previous run)")
	fs.StringVar(&o.resultsFile, "results-file", "", "where -results writes (default <module>/bench/RESULTS.md)")
	fs.StringVar(&o.note, "note", "", "with -results: what changed since the previous run, in a sentence")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.cmd, o.peer = strings.TrimSpace(o.cmd), strings.TrimSpace(o.peer)
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.smoke {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("pool", func() { o.poolSize = 500 })
		def("users", func() { o.users = 50 })
		def("installs", func() { o.installs = 2 })
		def("c", func() { o.conns = 8 })
		def("duration", func() { o.duration = 1500 * time.Millisecond })
		def("warmup", func() { o.warmup = 300 * time.Millisecond })
		def("chats", func() { o.chats = 100 })
	}
	switch {
	case o.conns < 1 || o.users < 1 || o.installs < 1:
		return nil, errors.New("-c, -users and -installs must be positive")
	case o.chats < 0:
		return nil, errors.New("-chats must not be negative")
	case o.chats > 0 && o.cmd != "":
		return nil, errors.New("-chats opens forge-remote's chats; a -cmd server does not serve them")
	case o.poolSize < o.users:
		return nil, errors.New("-pool must be at least -users (every user is warmed with its own FIT)")
	case o.installs > o.users:
		return nil, errors.New("-installs must not exceed -users")
	case o.store != "bolt" && o.store != "memory" && o.store != "redis":
		return nil, errors.New("-store must be bolt, memory or redis")
	case o.results && !o.compare:
		return nil, errors.New("-results needs -compare: RESULTS.md holds both servers side by side")
	case o.compare && o.cmd != "":
		return nil, errors.New("-compare runs forge-remote and -peer; -cmd does not apply")
	case o.results && o.smoke:
		return nil, errors.New("-results records real runs, not a smoke")
	case o.compare && o.peer == "":
		return nil, errors.New("-compare needs a -peer command")
	case o.duration <= 0:
		return nil, errors.New("-duration must be positive")
	}
	return o, nil
}

// fakes are the loopback stand-ins for Forge's key endpoint and Weavy.
type fakes struct {
	jwks        *httptest.Server
	jwksFetches atomic.Int64
	weavy       *weavysim.Server
	conf        *confluence // with -chats
}

func startFakes(s *signer) *fakes {
	f := &fakes{weavy: weavysim.New(weavysim.APIKey)}
	doc := s.jwks()
	f.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		f.jwksFetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(doc)
	}))
	return f
}

func (f *fakes) close() {
	f.jwks.Close()
	f.weavy.Close()
	if f.conf != nil {
		f.conf.close()
	}
}

func (f *fakes) weavyCalls() int { return len(f.weavy.Requests()) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.store == "redis" {
		if _, err := redisServerPath(); err != nil { // before the build, not after
			return err
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	// forge-remote and the floor run with the image's GC settings; a -cmd
	// server is run as given.
	var gc []gcSetting
	if o.cmd == "" {
		if gc, err = imageGC(root, os.LookupEnv); err != nil {
			return err
		}
	}
	if o.cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		o.cache = filepath.Join(base, "forge-remote-bench")
	}
	progress := stderr
	tmp, err := os.MkdirTemp("", "forge-remote-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	s, err := loadSigner(o.cache)
	if err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	p, err := loadPool(o.cache, s, o.users, o.installs, o.poolSize, time.Now(), progress)
	if err != nil {
		return fmt.Errorf("FIT pool: %w", err)
	}

	rounds, per := 7, 400
	if o.smoke {
		rounds, per = 3, 100
	}
	bv, err := measureVerify(&s.key.PublicKey, p.FITs[0], rounds, per)
	if err != nil {
		return fmt.Errorf("bare verify: %w", err)
	}
	measureAgain := func() error {
		m, err := measureVerify(&s.key.PublicKey, p.FITs[0], rounds, per)
		if err == nil {
			bv.add(m)
		}
		return err
	}

	type spec struct {
		name string
		argv []string
		env  []string // added to the common environment of runOne
	}
	var specs []spec
	ours := func() (spec, error) {
		bin := o.bin
		if bin == "" {
			fmt.Fprintln(progress, "building forge-remote…")
			if bin, err = buildServer(ctx, root, tmp); err != nil {
				return spec{}, err
			}
		}
		return spec{"forge-remote", []string{bin}, gcEnv(gc)}, nil
	}
	switch {
	case o.compare:
		sp, err := ours()
		if err != nil {
			return err
		}
		specs = append(specs, sp, spec{"node-peer", commandArgv(o.peer), nil})
		if err := ensurePeerDeps(ctx, root, o.peer, progress); err != nil {
			return err
		}
		if o.floor {
			fmt.Fprintln(progress, "building the HTTP floor…")
			bin, err := buildFloor(ctx, root, tmp)
			if err != nil {
				return err
			}
			specs = append(specs, spec{floorName, []string{bin}, gcEnv(gc)})
		}
	case o.cmd != "":
		if err := ensurePeerDeps(ctx, root, o.cmd, progress); err != nil {
			return err
		}
		specs = append(specs, spec{"custom", commandArgv(o.cmd), nil})
		if strings.Contains(o.cmd, "bench/peer") {
			specs[0].name = "node-peer"
		}
	default:
		sp, err := ours()
		if err != nil {
			return err
		}
		specs = append(specs, sp)
	}

	rep := &report{
		Machine: machineInfo(root, o.compare || o.cmd != ""),
		Command: commandLine(o.args, os.Getenv("TMPDIR")),
		Config: runConfig{Duration: o.duration.String(), Warmup: o.warmup.String(), Conns: o.conns,
			Users: o.users, Installs: o.installs, Pool: o.poolSize, Chats: o.chats, ChatBudget: chatBudgetIf(o.chats), Store: o.store, TempDir: os.Getenv("TMPDIR"), AppToken: o.appToken, Smoke: o.smoke, GC: gc},
	}
	f := startFakes(s)
	defer f.close()
	if o.chats > 0 {
		if f.conf, err = startConfluence(o.cache, s, o.users, o.installs, time.Now(), progress); err != nil {
			return fmt.Errorf("chat FITs: %w", err)
		}
	}
	for _, sp := range specs {
		fmt.Fprintf(progress, "running %s…\n", sp.name)
		r, err := runOne(ctx, o, sp.name, sp.argv, sp.env, root, tmp, p, f)
		if err != nil {
			return fmt.Errorf("%s: %w", sp.name, err)
		}
		rep.Runs = append(rep.Runs, r)
		if err := measureAgain(); err != nil {
			return fmt.Errorf("bare verify: %w", err)
		}
	}
	rep.BareVerify = verifyFigures{CPUMicros: micros(bv.CPU), WallMicros: micros(bv.Wall), Iterations: bv.Iterations,
		MinCPUMicros: micros(bv.MinCPU), MaxCPUMicros: micros(bv.MaxCPU), Rounds: len(bv.cpus)}
	for i := range rep.Runs {
		if r := &rep.Runs[i]; r.ServerCPUMicrosPerReq > 0 {
			r.CPUPerVerify = r.ServerCPUMicrosPerReq / micros(bv.CPU)
		}
	}
	rep.finish()
	// A floor that did not answer 2xx measured some other path: report it,
	// but neither record it nor let it pass.
	floorErr := rep.floorProblems()

	if o.json {
		if err := rep.writeJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.writeTable(stdout)
	}
	if floorErr != nil {
		return floorErr
	}
	if o.results {
		path := o.resultsFile
		if path == "" {
			path = filepath.Join(root, "bench", "RESULTS.md")
		}
		if err := writeResults(path, root, rep, o.note); err != nil {
			return fmt.Errorf("results: %w", err)
		}
		fmt.Fprintln(progress, "wrote", path)
	}
	if o.smoke {
		return rep.smokeProblems()
	}
	return nil
}

// commandArgv runs a simple command directly, so that its pid is the server's;
// anything with shell syntax goes through /bin/sh -c (CPU and RSS are then
// summed over the shell and its descendants).
func commandArgv(command string) []string {
	if strings.ContainsAny(command, "|&;<>()$`\\\"'*?[#~=%{}\n") {
		return []string{"/bin/sh", "-c", command}
	}
	return strings.Fields(command)
}

// ensurePeerDeps installs bench/peer's locked dependencies when the command
// runs the peer and they are missing.
func ensurePeerDeps(ctx context.Context, root, command string, log io.Writer) error {
	if !strings.Contains(command, "bench/peer") {
		return nil
	}
	dir := filepath.Join(root, "bench", "peer")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "jose")); err == nil {
		return nil
	}
	fmt.Fprintln(log, "installing the peer's locked dependencies (npm ci)…")
	return runQuiet(ctx, dir, "npm", "ci", "--no-audit", "--no-fund")
}

// runOne starts one server, with extraEnv in its environment, warms it and
// measures it.
func runOne(ctx context.Context, o *options, name string, argv, extraEnv []string, root, tmp string, p *pool, f *fakes) (runResult, error) {
	addr, err := freeAddr()
	if err != nil {
		return runResult{}, err
	}
	storeURL, boltPath := "memory://", ""
	var storeEnv []string
	var rds *redisServer
	switch o.store {
	case "bolt":
		dir, err := os.MkdirTemp(tmp, "store-*")
		if err != nil {
			return runResult{}, err
		}
		boltPath = filepath.Join(dir, "bench.db")
		storeURL = "bolt://" + boltPath
	case "redis":
		// Every run gets one, as every run gets a bolt path: a -peer may be
		// another forge-remote build. The Node peer and the HTTP floor leave
		// theirs empty.
		if rds, err = startRedis(ctx, tmp, o.readyTimeout); err != nil {
			return runResult{}, err
		}
		defer rds.stop() // after the server's stop, deferred below
		storeURL = rds.url()
		storeEnv = []string{"STORE_KEY=" + newStoreKey()}
	}
	env := []string{
		"FORGE_APP_ID=" + forgetest.AppID,
		"FORGE_JWKS_URL=" + f.jwks.URL + "/.well-known/jwks.json",
		"WEAVY_URL=" + f.weavy.URL,
		"WEAVY_API_KEY=" + weavysim.APIKey,
		"STORE_URL=" + storeURL,
		"LISTEN_ADDR=" + addr,
		"LOG_LEVEL=" + o.logLevel,
		"NODE_ENV=production",
	}
	env = append(append(env, storeEnv...), extraEnv...)
	if o.chats > 0 && name == "forge-remote" {
		env = append(env, chatBudgetEnv()...)
	}
	srv, err := startServer(ctx, root, argv, env, addr, o.readyTimeout)
	if err != nil {
		return runResult{}, err
	}
	defer srv.stop()

	l := &loader{addr: addr, fits: p.FITs, timeout: o.timeout}
	if o.appToken {
		l.appTokens = make([]string, o.installs)
		exp := time.Now().Add(3 * time.Hour)
		for i := range l.appTokens {
			l.appTokens[i] = mintAppToken(exp)
		}
		l.installOf = make([]int, len(p.FITs))
		for i, u := range p.UserOf {
			l.installOf[i] = installOf(u, o.installs)
		}
	}

	// Every user once, with its own FIT: from here on every request is a hit.
	weavyBefore := f.weavyCalls()
	warmStart := time.Now()
	if err := l.warm(ctx, min(o.conns, o.users), o.users); err != nil {
		return runResult{}, fmt.Errorf("warm-up: %w; server output:\n%s", err, srv.out)
	}
	warmTime := time.Since(warmStart)
	warmWeavy := f.weavyCalls() - weavyBefore

	// Page chats, forge-remote's only (neither the peer nor the floor
	// serves the chat resolver).
	var chats chatStats
	var chatWeavy, chatChecks int
	var chatRSS int64
	if o.chats > 0 && name == "forge-remote" {
		weavy0, checks0 := f.weavyCalls(), len(f.conf.sim.ContentChecks())
		chats = l.openChats(ctx, o.conns, o.chats, o.users, o.installs, f.conf.fits.FITs)
		chatWeavy, chatChecks = f.weavyCalls()-weavy0, len(f.conf.sim.ContentChecks())-checks0
		chatRSS = treePeakRSS(srv.pid())
		if chats.Errors > 0 || chats.Opens < int64(o.chats) {
			return runResult{}, fmt.Errorf("page chats: %d of %d opened: %s; server output:\n%s", chats.Opens, o.chats, chats.FirstErr, srv.out)
		}
	}

	conns := make([]*conn, o.conns)
	for i := range conns {
		if conns[i], err = l.dial(); err != nil {
			return runResult{}, err
		}
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.c.Close()
			}
		}
	}()
	l.next.Store(uint64(o.users)) // the warm-up used FITs 0..users-1
	if o.warmup > 0 {
		if w := l.run(ctx, conns, o.warmup); w.Errors > 0 && w.Requests == 0 {
			return runResult{}, fmt.Errorf("warm-up load failed: %s; server output:\n%s", w.FirstErr, srv.out)
		}
	}

	pid := srv.pid()
	gc0, gcOK0 := scrapeGC(addr)
	weavy0, jwks0 := f.weavyCalls(), f.jwksFetches.Load()
	cpu0, self0 := treeCPU(pid), selfCPU()
	st := l.run(ctx, conns, o.duration)
	cpu1, self1 := treeCPU(pid), selfCPU()
	weavy1, jwks1 := f.weavyCalls(), f.jwksFetches.Load()
	gc1, gcOK1 := scrapeGC(addr)
	mem := treeStatus(pid)
	rss := mem["VmHWM"]
	if ctx.Err() != nil {
		return runResult{}, ctx.Err()
	}

	r := runResult{
		Name:           name,
		Command:        strings.Join(argv, " "),
		StartToReadyMs: millis(srv.ready),
		WarmUsers:      o.users,
		WarmSeconds:    warmTime.Seconds(),
		WarmWeavyCalls: warmWeavy,
		Requests:       st.Requests,
		Seconds:        st.Elapsed.Seconds(),
		RPS:            float64(st.Requests) / st.Elapsed.Seconds(),
		P50Ms:          millis(st.Hist.quantile(0.50)),
		P90Ms:          millis(st.Hist.quantile(0.90)),
		P99Ms:          millis(st.Hist.quantile(0.99)),
		P999Ms:         millis(st.Hist.quantile(0.999)),
		MaxMs:          millis(time.Duration(st.Hist.max)),
		ServerCPUSecs:  (cpu1 - cpu0).Seconds(),
		PeakRSSMiB:     float64(rss) / (1 << 20),
		EndRSSMiB:      float64(mem["VmRSS"]) / (1 << 20),
		EndAnonMiB:     float64(mem["RssAnon"]) / (1 << 20),
		EndFileMiB:     float64(mem["RssFile"]+mem["RssShmem"]) / (1 << 20), // tmpfs files are shmem
		WeavyCalls:     weavy1 - weavy0,
		JWKSFetches:    jwks1 - jwks0,
		Non2xx:         st.Non2xx,
		BadBodies:      st.BadBody,
		TransportErrs:  st.Errors,
		FirstError:     st.FirstErr,
		Statuses:       st.StatusSet,
		FITReuse:       float64(st.Requests) / float64(len(p.FITs)),
		ChatOpens:      chats.Opens,
		ChatSeconds:    chats.Elapsed.Seconds(),
		ChatWeavyCalls: chatWeavy,
		ChatChecks:     chatChecks,
		ChatPeakRSSMiB: float64(chatRSS) / (1 << 20),
	}
	if st.Requests > 0 {
		r.ServerCPUMicrosPerReq = micros(cpu1-cpu0) / float64(st.Requests)
		r.GenCPUMicrosPerReq = micros(self1-self0) / float64(st.Requests)
	}
	if gcOK0 && gcOK1 && st.Elapsed > 0 {
		r.GCPerSec = (gc1.Cycles - gc0.Cycles) / st.Elapsed.Seconds()
		r.LiveHeapMiB, r.GCLimitMiB = gc1.LiveHeapMiB, gc1.LimitMiB
	}
	if boltPath != "" {
		srv.stop() // bolt's lock: the file opens only once the server is gone
		if r.Store, err = readStore(boltPath); err != nil {
			return runResult{}, err
		}
	}
	if rds != nil {
		srv.stop() // what the server left, with nothing writing any more
		if r.Redis, err = rds.figures(ctx); err != nil {
			return runResult{}, err
		}
	}
	return r, nil
}

// chatBudgetEnv is what the chats' server runs with besides the rest: a
// Confluence pool per site (Atlassian's Tier 2), unless the environment
// chose the pool or its points. The page checks cost 2 points each (a
// request and a page): one app-wide pool (Tier 1: 65,000 an hour) holds
// about 30,000 of them, and the budget rightly refuses the rest with 503
// confluence_busy, while 200,000 chats over 10,000 sites are 20 checks a
// site.
func chatBudgetEnv() []string {
	if os.Getenv("CONFLUENCE_POOL") != "" || os.Getenv("CONFLUENCE_POINTS_PER_HOUR") != "" {
		return nil
	}
	return []string{"CONFLUENCE_POOL=site"}
}

// chatBudgetIf is chatBudget when the run opens chats.
func chatBudgetIf(chats int) string {
	if chats == 0 {
		return ""
	}
	return chatBudget()
}

// chatBudget names the Confluence pool the chats ran against.
func chatBudget() string {
	if env := chatBudgetEnv(); len(env) > 0 {
		return env[0] + " (set by the tool: a pool per site)"
	}
	var set []string
	for _, name := range []string{"CONFLUENCE_POOL", "CONFLUENCE_POINTS_PER_HOUR"} {
		if v := os.Getenv(name); v != "" {
			set = append(set, name+"="+v)
		}
	}
	return strings.Join(set, " ") + " (from the environment)"
}

// warm sends users' first FITs (pool indexes 0..users-1), each once, on n
// connections, and fails on any answer that is not a 2xx with a token.
func (l *loader) warm(ctx context.Context, n, users int) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cn *conn
			defer func() {
				if cn != nil {
					cn.c.Close()
				}
			}()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= users {
					return
				}
				var err error
				if cn == nil {
					if cn, err = l.dial(); err != nil {
						mu.Lock()
						first = cmpOr(first, err)
						mu.Unlock()
						return
					}
				}
				status, ok, keep, err := l.do(cn, i)
				switch {
				case err != nil:
				case status < 200 || status > 299:
					err = fmt.Errorf("user %d answered %d: %s", i, status, cn.body)
				case !ok:
					err = fmt.Errorf("user %d: no wyu_ access token in %s", i, cn.body)
				}
				if err != nil {
					mu.Lock()
					first = cmpOr(first, err)
					mu.Unlock()
					return
				}
				if !keep {
					cn.c.Close()
					cn = nil
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
