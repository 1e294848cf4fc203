package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/forge-remote/forge-remote/devmode"
	"github.com/forge-remote/forge-remote/server"
	"github.com/forge-remote/forge-remote/weavy/weavytest"
)

// devCmd runs the server on loopback with a built-in Forge simulator (its own
// signing key and JWKS) and, without WEAVY_URL, a Weavy simulator.
func devCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, onListen func(net.Addr)) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	account := fs.String("account-id", "5b10ac8d82e05b22cc7d4ef5", "accountId used in the printed commands")
	if err := fs.Parse(args); err != nil {
		return err
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
	jwks := httptest.NewServer(devmode.JWKSHandler(&key.PublicKey))
	defer jwks.Close()

	internal := make([]byte, 16)
	_, _ = rand.Read(internal)
	env := map[string]string{
		"FORGE_APP_ID":       devmode.AppID,
		"FORGE_JWKS_URL":     jwks.URL + "/.well-known/jwks.json",
		"STORE_URL":          "bolt://" + filepath.Join(dir, "forge-remote.db"),
		"LISTEN_ADDR":        listen,
		"INTERNAL_API_TOKEN": "dev-" + hex.EncodeToString(internal),
	}
	dev := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return getenv(k)
	}
	simulated := getenv("WEAVY_URL") == ""
	if simulated {
		sim := weavytest.New("")
		defer sim.Close()
		env["WEAVY_URL"] = sim.URL
		env["WEAVY_API_KEY"] = weavytest.APIKey
	}
	cfg, err := server.LoadConfig(dev)
	if err != nil {
		return err
	}
	log := newLogger(stdout, cfg.LogLevel).With(zap.Bool("dev_mode", true))
	if simulated {
		// Every line says so: tokens from here are not real Weavy tokens.
		log = log.With(zap.String("weavy", "SIMULATOR"))
	}
	defer func() { _ = log.Sync() }()
	srv, err := server.New(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		return err
	}
	return srv.Run(ctx, func(a net.Addr) {
		base := "http://" + a.String()
		if err := devmode.SaveState(dir, devmode.State{Addr: a.String(), InternalToken: env["INTERNAL_API_TOKEN"]}); err != nil {
			log.Warn("saving dev state for invoke", zap.Error(err))
		}
		cmds, err := devmode.Commands(key, base, *account, env["INTERNAL_API_TOKEN"], time.Now())
		if err != nil {
			log.Error("printing dev commands", zap.Error(err))
			return
		}
		fmt.Fprintf(stderr, "\nforge-remote dev mode on %s (Forge simulated; Weavy %s; data in %s)\n%s",
			base, map[bool]string{true: "SIMULATED", false: cfg.WeavyURL}[simulated], dir, cmds)
		if onListen != nil {
			onListen(a)
		}
	})
}

// devDir is where dev mode keeps its key, state and database.
func devDir(getenv func(string) string) string {
	if d := getenv("FORGE_REMOTE_DEV_DIR"); d != "" {
		return d
	}
	return devmode.Dir()
}

// invokeCmd signs one call with the dev key and sends it to the running dev
// server: `invoke token --account-id X [--refresh]`.
func invokeCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "token" {
		fmt.Fprintln(stderr, "usage: forge-remote invoke token --account-id ID [--refresh]")
		return errors.New("invoke: only the token resolver can be invoked")
	}
	fs := flag.NewFlagSet("invoke token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	account := fs.String("account-id", "5b10ac8d82e05b22cc7d4ef5", "the Atlassian accountId the FIT names")
	refresh := fs.Bool("refresh", false, "ask for a new token")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	dir := devDir(getenv)
	st, err := devmode.LoadState(dir)
	if err != nil {
		return err
	}
	key, err := devmode.LoadOrCreateKey(dir)
	if err != nil {
		return err
	}
	fit, err := devmode.FIT(key, *account, time.Now())
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`{"refresh":%t}`, *refresh)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+st.Addr+"/resolvers/token", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+fit)
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
