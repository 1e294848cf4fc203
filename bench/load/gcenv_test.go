package main

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestDockerfileEnv(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      map[string]string
		err       string // a part of the error; "" for none
	}{
		{name: "pairs on one line", src: "FROM scratch\nENV GOGC=200 GOMEMLIMIT=64MiB\n",
			want: map[string]string{"GOGC": "200", "GOMEMLIMIT": "64MiB"}},
		{name: "NAME value form", src: "FROM scratch\nENV GOGC 300\nENV GOMEMLIMIT   1GiB  \n",
			want: map[string]string{"GOGC": "300", "GOMEMLIMIT": "1GiB"}},
		{name: "continued, with a comment and other variables", src: "FROM scratch\nENV LISTEN_ADDR=:8080 \\\n  # the GC\n    GOGC=150 \\\n    STORE_URL=bolt:///data/x.db\n",
			want: map[string]string{"GOGC": "150"}},
		{name: "quotes and escapes", src: "FROM scratch\nENV GOGC=\"400\" NOTE='a b' GOMEMLIMIT=5\\12MiB\n",
			want: map[string]string{"GOGC": "400", "GOMEMLIMIT": "512MiB"}},
		{name: "quoted value with a blank before ours", src: "FROM scratch\nENV NOTE=\"x GOGC=1\" GOGC=80\n",
			want: map[string]string{"GOGC": "80"}},
		{name: "lower-case instruction, the later ENV wins", src: "FROM scratch\nenv GOGC=100\nEnv GOGC=250\n",
			want: map[string]string{"GOGC": "250"}},
		{name: "empty value", src: "FROM scratch\nENV GOGC=\n",
			want: map[string]string{"GOGC": ""}},
		{name: "a build stage's ENV is not the image's", src: "FROM golang AS build\nENV GOGC=off\nRUN go build\nFROM scratch\nENV GOMEMLIMIT=1GiB\n",
			want: map[string]string{"GOMEMLIMIT": "1GiB"}},
		{name: "a stage built from an earlier one inherits its ENV", src: "FROM alpine AS base\nENV GOGC=300\nFROM --platform=linux/amd64 BASE\nENV GOMEMLIMIT=2GiB\n",
			want: map[string]string{"GOGC": "300", "GOMEMLIMIT": "2GiB"}},
		{name: "none", src: "FROM scratch\nENV LISTEN_ADDR=:8080\n", want: map[string]string{}},
		{name: "a name without value", src: "FROM scratch\nENV GOGC\n", err: "GOGC has no value"},
		{name: "a word without =", src: "FROM scratch\nENV GOGC=1 GOMEMLIMIT\n", err: `"GOMEMLIMIT" is not NAME=value`},
		{name: "unterminated quote", src: "FROM scratch\nENV GOGC=\"1\n", err: "line 2: ENV"},
		{name: "a variable in ours", src: "FROM scratch\nARG G=1\nENV GOGC=${G}\n", err: "line 3: GOGC uses a variable"},
		{name: "a variable elsewhere", src: "FROM scratch\nENV PATH=/x:$PATH GOGC=90\n", want: map[string]string{"GOGC": "90"}},
		{name: "ENV before FROM", src: "ENV GOGC=1\nFROM scratch\n", err: "ENV before FROM"},
		{name: "another escape character", src: "# escape=`\nFROM scratch\nENV GOGC=1\n", err: "escape directive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dockerfileEnv(tc.src, "GOGC", "GOMEMLIMIT")
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q (got %v)", err, tc.err, got)
				}
			case err != nil:
				t.Fatal(err)
			case !maps.Equal(got, tc.want):
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGCSettings(t *testing.T) {
	image := map[string]string{"GOGC": "200", "GOMEMLIMIT": "64MiB"}
	lookup := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	}

	gc, err := gcSettings(image, lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := gcEnv(gc), []string{"GOGC=200", "GOMEMLIMIT=64MiB"}; !slices.Equal(got, want) {
		t.Errorf("from the Dockerfile: env %q, want %q", got, want)
	}
	if got, want := gcLine(gc), "GOGC=200 (from the Dockerfile), GOMEMLIMIT=64MiB (from the Dockerfile)"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}

	// The environment wins, per variable; empty counts as set.
	gc, err = gcSettings(image, lookup(map[string]string{"GOGC": "400", "GOMEMLIMIT": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := gcEnv(gc), []string{"GOGC=400", "GOMEMLIMIT="}; !slices.Equal(got, want) {
		t.Errorf("from the environment: env %q, want %q", got, want)
	}
	if got, want := gcLine(gc), "GOGC=400 (from the environment; the Dockerfile's is 200), GOMEMLIMIT empty (Go's default; from the environment)"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	if got, want := gcValues(gc), "GOGC=400 GOMEMLIMIT default"; got != want {
		t.Errorf("values %q, want %q", got, want)
	}

	// Neither sets them: nothing is added, and the report says so.
	gc, err = gcSettings(map[string]string{}, lookup(map[string]string{"GOGC": "200"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := gcEnv(gc), []string{"GOGC=200"}; !slices.Equal(got, want) {
		t.Errorf("env %q, want %q", got, want)
	}
	if got, want := gcLine(gc), "GOGC=200 (from the environment), GOMEMLIMIT unset (Go's default)"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}

	for _, bad := range []map[string]string{{"GOGC": "200%"}, {"GOGC": "lots"}, {"GOMEMLIMIT": "64M"}, {"GOMEMLIMIT": "-1"}, {"GOMEMLIMIT": "1.5GiB"}} {
		if _, err := gcSettings(image, lookup(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	for _, good := range []map[string]string{{"GOGC": "off"}, {"GOGC": "-1"}, {"GOMEMLIMIT": "off"}, {"GOMEMLIMIT": "1048576"}, {"GOMEMLIMIT": "100B"}, {"GOMEMLIMIT": "2TiB"}} {
		if _, err := gcSettings(image, lookup(good)); err != nil {
			t.Errorf("%v: %v", good, err)
		}
	}
}

// TestImageGC: the repo's Dockerfile sets both GC variables, with values the
// runtime reads as meant, and bench/load finds them.
func TestImageGC(t *testing.T) {
	gc, err := imageGC("../..", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gc {
		if g.From != gcFromDockerfile || g.Value == "" {
			t.Errorf("the Dockerfile does not set %s: %+v", g.Name, g)
		}
	}
}
