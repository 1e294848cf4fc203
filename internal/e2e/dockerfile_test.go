package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/forge/forgetest"
)

// No container engine runs on our machines, so the Dockerfile is linted as
// text for what the image promises: multi-stage, static binary, non-root,
// /data volume, the healthcheck subcommand.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	froms := regexp.MustCompile(`(?m)^FROM `).FindAllStringIndex(s, -1)
	if len(froms) < 2 {
		t.Errorf("not multi-stage: %d FROM lines", len(froms))
	}
	final := s[froms[len(froms)-1][0]:]
	checks := []struct{ what, re string }{
		{"static build", `CGO_ENABLED=0`},
		{"go version matches go.mod", `FROM golang:1\.26`},
		{"non-root user in the final stage", `(?m)^USER (65532|nonroot)`},
		{"data volume", `(?m)^VOLUME \["/data"\]`},
		{"bolt on the volume", `STORE_URL=bolt:///data/`},
		{"healthcheck subcommand", `(?m)^HEALTHCHECK .*\n?.*"healthcheck"`},
		{"port", `(?m)^EXPOSE 8080`},
	}
	for _, c := range checks {
		if !regexp.MustCompile(c.re).MatchString(s) {
			t.Errorf("Dockerfile lacks %s (%s)", c.what, c.re)
		}
	}
	if strings.Contains(final, "USER root") || !strings.Contains(final, "USER ") {
		t.Errorf("the final stage must run as a non-root user")
	}
	for i, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "ADD ") && strings.Contains(line, "http") {
			t.Errorf("line %d downloads at build time: %s", i+1, line)
		}
	}
}

// The healthcheck subcommand passes for a running server and fails without one.
func TestHealthcheckCommand(t *testing.T) {
	jwks := forgetest.NewJWKSServer(t, forgetest.NewKey(t, "k1"))
	ts := startServer(t, baseEnv(t, jwks))
	addr := strings.TrimPrefix(ts.URL, "http://127.0.0.1")
	healthcheck := func() error {
		var out, errOut syncBuffer
		return run(t.Context(), []string{"forge-remote", "healthcheck"}, func(k string) string {
			if k == "LISTEN_ADDR" {
				return addr
			}
			return ""
		}, &out, &errOut)
	}
	if err := healthcheck(); err != nil {
		t.Fatalf("healthcheck against a running server: %v", err)
	}
	ts.Stop(t)
	if err := healthcheck(); err == nil {
		t.Fatal("healthcheck passed with nothing listening")
	}
}
