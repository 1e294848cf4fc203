// Command forge-remote is the remote backend of a Confluence Forge app: it
// verifies Forge invocations, keeps each installation's app token fresh and
// hands the signed-in user a Weavy access token. The commands live in
// internal/cli; this file wires them to the process.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/forge-remote/forge-remote/internal/cli"
)

// manifestYML is the repository's manifest.yml, the template of `manifest
// render`. It is embedded here because only the package in the repository's
// root may embed a file there.
//
//go:embed manifest.yml
var manifestYML []byte

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := (cli.Program{Manifest: manifestYML}).Run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "forge-remote:", err)
		os.Exit(1)
	}
}
