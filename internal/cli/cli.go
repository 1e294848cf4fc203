// Package cli is the forge-remote program: its commands (serve, dev, invoke,
// healthcheck, manifest, weavy) behind one entry point, Program.Run. main.go
// calls it with the process' arguments, environment and streams; the
// end-to-end tests (internal/e2e) call it, and Serve, to run the real server
// in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/forge-remote/forge-remote/server"
)

const usage = `usage: forge-remote [command]

commands:
  serve        run the server (default); configured by environment variables, see README.md
  dev          run on loopback with a simulated Forge and Confluence (and Weavy unless WEAVY_URL is set); prints curl commands
  invoke       sign and send one resolver call to the dev server: invoke FUNCTION_KEY [--payload JSON] [--account-id ID]
  healthcheck  exit 0 when the local server's /healthz answers 200 (the container HEALTHCHECK)
  manifest     check or render the Forge manifest (manifest check [file], manifest render --app-id ID …)
  weavy        weavy lockdown [--apply]: close every chat app the Custom UI created, remove members without a lease

Every command takes --help.
`

const serveUsage = `usage: forge-remote [serve]

Runs the server. It takes no flags: configuration is read from environment
variables (FORGE_APP_ID is required; see README.md, "Configuration").
`

const healthcheckUsage = `usage: forge-remote healthcheck

Exits 0 when the server on LISTEN_ADDR (default :8080, reached on loopback)
answers 200 on /healthz; the container's HEALTHCHECK runs it.
`

// Program is the forge-remote command.
type Program struct {
	// Manifest is the repository's manifest.yml, the template of `manifest
	// render` (main embeds it: only the root package can). Without it render
	// fails; every other command runs.
	Manifest []byte
}

// Run is the whole program: args[0] is the program's name, args[1] the
// command (default serve). Asked-for usage (--help) is success.
func (p Program) Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	var rest []string
	if len(args) > 2 {
		rest = args[2:]
	}
	var err error
	switch cmd {
	case "serve":
		if err = noArgs("serve", serveUsage, rest, stdout, stderr); err == nil {
			err = Serve(ctx, getenv, stdout, nil, server.Options{})
		}
	case "dev":
		err = devCmd(ctx, rest, getenv, stdout, stderr, nil)
	case "invoke":
		err = invokeCmd(ctx, rest, getenv, stdout, stderr)
	case "healthcheck":
		if err = noArgs("healthcheck", healthcheckUsage, rest, stdout, stderr); err == nil {
			err = healthcheckCmd(ctx, getenv)
		}
	case "weavy":
		err = weavyCmd(ctx, rest, getenv, stdout, stderr)
	case "manifest":
		err = manifestCmd(rest, p.Manifest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprint(stderr, usage)
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil // the usage asked for is printed
	}
	return err
}

// cmdFlags is a command's flag set and usage. Parse errors are reported by
// parse, not by the flag package, so that --help goes to stdout.
type cmdFlags struct {
	*flag.FlagSet
	usage string
}

func newFlags(name, usage string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{fs, usage}
}

// parse parses args. --help prints the usage to stdout and returns
// flag.ErrHelp, which Program.Run turns into success; a bad flag prints the usage to
// stderr and returns the error.
func (f *cmdFlags) parse(args []string, stdout, stderr io.Writer) error {
	err := f.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		f.printUsage(stdout)
		return err
	case err != nil:
		f.printUsage(stderr)
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}

func (f *cmdFlags) printUsage(w io.Writer) {
	fmt.Fprint(w, f.usage)
	f.SetOutput(w)
	f.PrintDefaults()
	f.SetOutput(io.Discard)
}

// noArgs is the argument check of a command that takes none.
func noArgs(name, usage string, args []string, stdout, stderr io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, usage)
			return flag.ErrHelp
		}
	}
	if len(args) > 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%s: unexpected argument %q", name, args[0])
	}
	return nil
}

// Serve is the serve command: it runs the server, configured by getenv and
// logging JSON lines to stdout, until ctx ends. onListen (may be nil) learns
// the bound address; o injects dependencies (tests: a clock, short timeouts),
// its Logger is always the command's own.
func Serve(ctx context.Context, getenv func(string) string, stdout io.Writer, onListen func(net.Addr), o server.Options) error {
	cfg, err := server.LoadConfig(getenv)
	if err != nil {
		return err
	}
	log := newLogger(stdout, cfg.LogLevel)
	defer func() { _ = log.Sync() }()
	// go-redis reports dial failures through a process-wide logger that
	// writes plain text to stderr; keep every line JSON.
	redis.SetLogger(redisLogger{log.Named("redis")})
	o.Logger = log
	srv, err := server.New(ctx, cfg, o)
	if err != nil {
		return err
	}
	if err := srv.Run(ctx, onListen); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

type redisLogger struct{ log *zap.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.log.Warn("redis client", zap.String("detail", fmt.Sprintf(format, v...)))
}

// newLogger writes JSON lines to w.
func newLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w))))
}
