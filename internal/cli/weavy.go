package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/server"
	"github.com/forge-remote/forge-remote/store/open"
	"github.com/forge-remote/forge-remote/weavy"
)

const weavyUsage = `usage: forge-remote weavy lockdown [--apply]

lockdown closes every chat app the Custom UI ever created (uids confluence-…):
page and space chats to access none, the site-wide chat to its site's
directory, and removes every member without a current lease. Without --apply
it prints what it would do. Re-run it to finish an interrupted run. It reads
the server's environment (WEAVY_URL, WEAVY_API_KEY, STORE_URL, STORE_KEY,
CHAT_LEASE); with a bolt store, stop the server first (bolt has one writer).
`

// weavyCmd runs the operator's commands against Weavy.
func weavyCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(stdout, weavyUsage)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "lockdown" {
		fmt.Fprint(stderr, weavyUsage)
		return errors.New("weavy: unknown or missing subcommand")
	}
	fs := newFlags("weavy lockdown", weavyUsage)
	apply := fs.Bool("apply", false, "make the changes (default: print them only)")
	if err := fs.parse(args[1:], stdout, stderr); err != nil {
		return err
	}
	cfg, err := server.LoadConfig(getenv)
	if err != nil {
		return err
	}
	if cfg.WeavyURL == "" {
		return &server.ConfigError{Var: "WEAVY_URL", Msg: "is required for weavy lockdown"}
	}
	client, err := weavy.NewClient(cfg.WeavyURL, string(cfg.WeavyAPIKey), weavy.ClientOptions{Timeout: cfg.WeavyTimeout})
	if err != nil {
		return err
	}
	kv, err := open.Store(ctx, open.Options{URL: string(cfg.StoreURL), Key: cfg.StoreKey.Bytes()})
	if err != nil {
		return err
	}
	defer kv.Close()
	svc := chat.New(client, kv, chat.Options{Lease: cfg.ChatLease})
	if !*apply {
		fmt.Fprintln(stdout, "dry run: nothing is changed; run with --apply to act")
	}
	_, err = svc.Lockdown(ctx, client, stdout, *apply)
	return err
}
