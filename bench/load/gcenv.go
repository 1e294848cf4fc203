package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// gcSetting is GOGC or GOMEMLIMIT as forge-remote and the HTTP floor ran with
// it: the image's (the Dockerfile's ENV), so that the figures are those of
// what ships, unless the tool's own environment set another, to try it.
type gcSetting struct {
	Name  string `json:"name"`
	Value string `json:"value"` // "": Go's default
	From  string `json:"from"`  // "Dockerfile", "environment" or "unset"
}

// gcLine lists settings for a report line.
func gcLine(gc []gcSetting) string {
	var s []string
	for _, g := range gc {
		v := g.Name + "=" + g.Value
		if g.Value == "" {
			v = g.Name + " Go's default"
		}
		s = append(s, v+" ("+g.From+")")
	}
	return strings.Join(s, ", ")
}

// gcEnv is what a server run as the image runs gets in its environment; an
// empty value is Go's default, as unset is.
func gcEnv(gc []gcSetting) []string {
	var env []string
	for _, g := range gc {
		env = append(env, g.Name+"="+g.Value)
	}
	return env
}

// gcValid is what the runtime reads as meant, or "": it would take a
// malformed GOGC for 100 without a word.
var gcValid = map[string]*regexp.Regexp{
	"GOGC":       regexp.MustCompile(`^(off|-?[0-9]{1,9})?$`),
	"GOMEMLIMIT": regexp.MustCompile(`^(off|[0-9]+(B|KiB|MiB|GiB|TiB)?)?$`),
}

// imageGC takes GOGC and GOMEMLIMIT from the ENV lines of the final stage
// (after the last FROM) of root's Dockerfile: `ENV K=V K2=V2` or `ENV K V`,
// lines continued with a backslash, values optionally in plain double quotes;
// no escapes, variables or stage references (our Dockerfile uses none). A
// variable that lookup (os.LookupEnv) finds wins, even empty.
func imageGC(root string, lookup func(string) (string, bool)) ([]gcSetting, error) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	image := map[string]string{}
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\\\n", " "), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.EqualFold(f[0], "FROM"):
			image = map[string]string{}
		case len(f) > 0 && strings.EqualFold(f[0], "ENV"):
			if len(f) > 2 && !strings.Contains(f[1], "=") { // ENV K V: the rest is V
				f = []string{f[0], f[1] + "=" + strings.Join(f[2:], " ")}
			}
			for _, kv := range f[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				if !ok || k == "" || strings.Contains(v, `"`) {
					return nil, fmt.Errorf("Dockerfile: %q: %q is not K=V nor K=\"V\"", line, kv)
				}
				image[k] = v
			}
		}
	}
	var gc []gcSetting
	for _, name := range []string{"GOGC", "GOMEMLIMIT"} {
		g := gcSetting{Name: name, From: "unset"}
		if v, ok := image[name]; ok {
			g.Value, g.From = v, "Dockerfile"
		}
		if v, ok := lookup(name); ok {
			g.Value, g.From = v, "environment"
		}
		if !gcValid[name].MatchString(g.Value) {
			return nil, fmt.Errorf("%s=%q from the %s: the Go runtime reads GOGC as off or a percentage, GOMEMLIMIT as off or bytes with an optional B, KiB, MiB, GiB or TiB suffix", name, g.Value, g.From)
		}
		gc = append(gc, g)
	}
	return gc, nil
}
