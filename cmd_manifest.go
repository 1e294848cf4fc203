package main

import (
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/manifest"
	"github.com/forge-remote/forge-remote/server"
)

// manifestTemplate is the repository's manifest.yml, the template of render.
//
//go:embed manifest.yml
var manifestTemplate []byte

const manifestUsage = `usage:
  forge-remote manifest check [file]     check a manifest against this remote (default: manifest.yml)
  forge-remote manifest render --app-id ID --base-url URL --weavy-url URL   print a deployment manifest
`

func manifestCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manifestUsage)
		return errors.New("manifest: a subcommand is required")
	}
	switch args[0] {
	case "check":
		file := "manifest.yml"
		if len(args) > 1 {
			file = args[1]
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("manifest check: %w", err)
		}
		m, err := manifest.Parse(b)
		if err != nil {
			return fmt.Errorf("manifest check %s: %w", file, err)
		}
		if err := m.Validate(server.Serves); err != nil {
			var ve *manifest.ValidationError
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					fmt.Fprintf(stderr, "%s: %s\n", file, p)
				}
				return fmt.Errorf("manifest check: %s has %d problem(s)", file, len(ve.Problems))
			}
			return err
		}
		fmt.Fprintf(stdout, "%s: ok (agrees with the routes, tokens and scopes this remote needs)\n", file)
		return nil
	case "render":
		fs := flag.NewFlagSet("manifest render", flag.ContinueOnError)
		fs.SetOutput(stderr)
		appID := fs.String("app-id", "", "the app id from `forge register` (ARI or uuid)")
		baseURL := fs.String("base-url", "", "the remote's public https origin")
		weavyURL := fs.String("weavy-url", "", "the Weavy environment, https")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		id, err := forge.NormalizeAppID(*appID)
		if err != nil {
			return fmt.Errorf("manifest render: --app-id: %w", err)
		}
		out, err := manifest.Render(manifestTemplate, manifest.RenderOptions{AppID: id, BaseURL: *baseURL, WeavyURL: *weavyURL})
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	default:
		fmt.Fprint(stderr, manifestUsage)
		return fmt.Errorf("manifest: unknown subcommand %q", args[0])
	}
}
