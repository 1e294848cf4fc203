package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImageGC(t *testing.T) {
	const image = "FROM scratch\nENV GOGC=200 GOMEMLIMIT=64MiB\n"
	for _, tc := range []struct {
		name, dockerfile string
		env              map[string]string
		want             string // gcLine, or a part of the error
		wantErr          bool
	}{
		{name: "K=V form, final stage, continued, quoted",
			dockerfile: "FROM golang AS build\nENV GOGC=off\nRUN go build \\\n  .\nFROM scratch\n# ENV GOGC=1\nENV LISTEN_ADDR=:8080 \\\n    GOGC=\"400\"  GOMEMLIMIT=40MiB\nCMD [\"serve\"]\n",
			want:       "GOGC=400 (Dockerfile), GOMEMLIMIT=40MiB (Dockerfile)"},
		{name: "K V form, any case, the later ENV wins",
			dockerfile: "FROM scratch\nENV GOGC 300\nenv GOMEMLIMIT \"1GiB\"\nEnv GOGC   250\n",
			want:       "GOGC=250 (Dockerfile), GOMEMLIMIT=1GiB (Dockerfile)"},
		{name: "the environment wins, even empty", dockerfile: image, env: map[string]string{"GOGC": "off", "GOMEMLIMIT": ""},
			want: "GOGC=off (environment), GOMEMLIMIT Go's default (environment)"},
		{name: "neither sets it", dockerfile: "FROM scratch\nENV GOGC=200\nFROM scratch\n", env: map[string]string{"GOMEMLIMIT": "2TiB"},
			want: "GOGC Go's default (unset), GOMEMLIMIT=2TiB (environment)"},
		{name: "other good values", dockerfile: image, env: map[string]string{"GOGC": "-1", "GOMEMLIMIT": "100B"},
			want: "GOGC=-1 (environment), GOMEMLIMIT=100B (environment)"},
		{name: "ENV K alone", dockerfile: "FROM scratch\nENV GOGC\n", want: `"GOGC" is not K=V`, wantErr: true},
		{name: "a word without =", dockerfile: "FROM scratch\nENV GOGC=1 GOMEMLIMIT\n", want: `"GOMEMLIMIT" is not K=V`, wantErr: true},
		{name: "a blank in quotes", dockerfile: "FROM scratch\nENV NOTE=\"a b\" GOGC=1\n", want: `"NOTE=\"a" is not K=V`, wantErr: true},
		{name: "a variable", dockerfile: "FROM scratch\nARG G=1\nENV GOGC=${G}\n", want: `GOGC="${G}" from the Dockerfile`, wantErr: true},
		{name: "GOGC with %", dockerfile: image, env: map[string]string{"GOGC": "200%"}, want: `GOGC="200%" from the environment`, wantErr: true},
		{name: "GOGC a word", dockerfile: image, env: map[string]string{"GOGC": "lots"}, want: "GOGC=", wantErr: true},
		{name: "GOMEMLIMIT in M", dockerfile: image, env: map[string]string{"GOMEMLIMIT": "64M"}, want: "GOMEMLIMIT=", wantErr: true},
		{name: "GOMEMLIMIT negative", dockerfile: image, env: map[string]string{"GOMEMLIMIT": "-1"}, want: "GOMEMLIMIT=", wantErr: true},
		{name: "GOMEMLIMIT a fraction", dockerfile: image, env: map[string]string{"GOMEMLIMIT": "1.5GiB"}, want: "GOMEMLIMIT=", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(tc.dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			gc, err := imageGC(dir, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			switch {
			case tc.wantErr:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one containing %q (got %v)", err, tc.want, gc)
				}
			case err != nil:
				t.Fatal(err)
			case gcLine(gc) != tc.want:
				t.Errorf("got %q, want %q", gcLine(gc), tc.want)
			}
		})
	}
}

// TestRepoDockerfileGC: the repo's Dockerfile sets both GC variables, in one
// ENV line, with values the runtime reads as meant, and the tool reads them.
func TestRepoDockerfileGC(t *testing.T) {
	gc, err := imageGC("../..", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gc {
		if g.From != "Dockerfile" || g.Value == "" {
			t.Errorf("the Dockerfile does not set %s: %+v", g.Name, g)
		}
	}
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// What the servers get is what that line says.
	if line := "\nENV " + strings.Join(gcEnv(gc), " ") + "\n"; !strings.Contains(string(b), line) {
		t.Errorf("the Dockerfile has no line %q", line)
	}
}
