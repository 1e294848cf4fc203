package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/manifest"
	"github.com/forge-remote/forge-remote/server"
)

const manifestUsage = `usage:
  forge-remote manifest check [file]     check a manifest against this remote (default: manifest.yml)
  forge-remote manifest render --app-id ID --base-url URL --weavy-url URL [--connect-key KEY]   print a deployment manifest
`

const manifestCheckUsage = `usage: forge-remote manifest check [file]

Checks a Forge manifest (default: manifest.yml) against Forge's rules and
against this remote: its endpoints, the app system token, the user token on
the resolver endpoint (the chat resolver checks page access as the user),
triggers and scopes.
`

const manifestRenderUsage = `usage: forge-remote manifest render --app-id ID --base-url URL --weavy-url URL [--connect-key KEY]

Prints the repository's manifest.yml made for one deployment: your app id,
your remote's https origin and your Weavy environment; with --connect-key,
app.connect.key of the Connect app it replaces (README, "Moving a Connect
app to Forge").

flags:
`

// manifestCmd runs manifest check and manifest render; template is the
// repository's manifest.yml (Program.Manifest).
func manifestCmd(args []string, template []byte, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, manifestUsage)
		return errors.New("manifest: a subcommand is required")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, manifestUsage)
		return nil
	case "check":
		file := "manifest.yml"
		for _, a := range args[1:] {
			if a == "-h" || a == "-help" || a == "--help" {
				fmt.Fprint(stdout, manifestCheckUsage)
				return nil
			}
		}
		switch len(args) {
		case 1:
		case 2:
			file = args[1]
		default:
			fmt.Fprint(stderr, manifestCheckUsage)
			return fmt.Errorf("manifest check: unexpected argument %q", args[2])
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
		fs := newFlags("manifest render", manifestRenderUsage)
		appID := fs.String("app-id", "", "the app id from `forge register` (ARI or uuid), required")
		baseURL := fs.String("base-url", "", "the remote's public https origin, required")
		weavyURL := fs.String("weavy-url", "", "the Weavy environment, https, required")
		connectKey := fs.String("connect-key", "", "the Connect app key this app replaces (app.connect.key); empty: none")
		if err := fs.parse(args[1:], stdout, stderr); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			fs.printUsage(stderr)
			return fmt.Errorf("manifest render: unexpected argument %q", fs.Arg(0))
		}
		for _, f := range []struct{ name, v string }{{"app-id", *appID}, {"base-url", *baseURL}, {"weavy-url", *weavyURL}} {
			if f.v == "" {
				fs.printUsage(stderr)
				return fmt.Errorf("manifest render: the flag --%s is required", f.name)
			}
		}
		id, err := forge.NormalizeAppID(*appID)
		if err != nil {
			return fmt.Errorf("manifest render: --app-id %q is neither ari:cloud:ecosystem::app/<uuid> nor a bare uuid", *appID)
		}
		if len(template) == 0 {
			return errors.New("manifest render: this build has no manifest template (Program.Manifest)")
		}
		out, err := manifest.Render(template, manifest.RenderOptions{AppID: id, BaseURL: *baseURL, WeavyURL: *weavyURL, ConnectKey: *connectKey})
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
