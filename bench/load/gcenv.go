package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// forge-remote and the HTTP floor run with the Go GC settings the image sets
// (the Dockerfile's ENV), so that the figures are those of what ships; the
// tool's own environment overrides them, to try other values.

// gcVars are the runtime's GC settings the image sets, in report order.
var gcVars = []string{"GOGC", "GOMEMLIMIT"}

// gcSetting is one of gcVars as a run used it.
type gcSetting struct {
	Name  string `json:"name"`
	Value string `json:"value"` // "" with From "unset": Go's default
	From  string `json:"from"`  // gcFromDockerfile, gcFromEnv or gcUnset
	// Dockerfile is the image's value when the environment overrode it.
	Dockerfile string `json:"dockerfile,omitempty"`
}

const (
	gcFromDockerfile = "Dockerfile"
	gcFromEnv        = "environment"
	gcUnset          = "unset"
)

func (g gcSetting) String() string {
	switch {
	case g.From == gcUnset:
		return g.Name + " unset (Go's default)"
	case g.Value == "":
		return fmt.Sprintf("%s empty (Go's default; from the %s)", g.Name, g.From)
	case g.Dockerfile != "":
		return fmt.Sprintf("%s=%s (from the environment; the Dockerfile's is %s)", g.Name, g.Value, g.Dockerfile)
	}
	return fmt.Sprintf("%s=%s (from the %s)", g.Name, g.Value, g.From)
}

// gcLine lists settings for a report line.
func gcLine(gc []gcSetting) string {
	s := make([]string, len(gc))
	for i, g := range gc {
		s[i] = g.String()
	}
	return strings.Join(s, ", ")
}

// gcValues is the settings' values alone, to compare two runs.
func gcValues(gc []gcSetting) string {
	s := make([]string, len(gc))
	for i, g := range gc {
		s[i] = g.Name + "=" + g.Value
		if g.Value == "" { // unset or empty: Go's default either way
			s[i] = g.Name + " default"
		}
	}
	return strings.Join(s, " ")
}

// gcEnv is what a server run as the image runs gets in its environment.
func gcEnv(gc []gcSetting) []string {
	var env []string
	for _, g := range gc {
		if g.From != gcUnset {
			env = append(env, g.Name+"="+g.Value)
		}
	}
	return env
}

// imageGC reads root's Dockerfile and applies lookup (os.LookupEnv) over it:
// a variable in the environment wins, even empty (Go's default then).
func imageGC(root string, lookup func(string) (string, bool)) ([]gcSetting, error) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	image, err := dockerfileEnv(string(b), gcVars...)
	if err != nil {
		return nil, fmt.Errorf("Dockerfile: %w", err)
	}
	return gcSettings(image, lookup)
}

func gcSettings(image map[string]string, lookup func(string) (string, bool)) ([]gcSetting, error) {
	var out []gcSetting
	for _, name := range gcVars {
		g := gcSetting{Name: name, From: gcUnset}
		img, inImage := image[name]
		if inImage {
			g.Value, g.From = img, gcFromDockerfile
		}
		if v, ok := lookup(name); ok {
			g.Value, g.From = v, gcFromEnv
			if inImage && img != v {
				g.Dockerfile = img
			}
		}
		if err := checkGC(name, g.Value); err != nil {
			return nil, fmt.Errorf("%s=%q from the %s: %w", name, g.Value, g.From, err)
		}
		out = append(out, g)
	}
	return out, nil
}

var byteCount = regexp.MustCompile(`^[0-9]+(B|KiB|MiB|GiB|TiB)?$`)

// checkGC refuses what the runtime would not read as meant: it ignores a
// malformed GOGC (using 100) and refuses a malformed GOMEMLIMIT at start.
func checkGC(name, v string) error {
	if v == "" || v == "off" {
		return nil
	}
	switch name {
	case "GOGC":
		if _, err := strconv.ParseInt(v, 10, 32); err != nil {
			return errors.New("want a percentage or off (the runtime would silently use 100)")
		}
	case "GOMEMLIMIT":
		if !byteCount.MatchString(v) {
			return errors.New("want bytes with an optional B, KiB, MiB, GiB or TiB suffix, or off")
		}
	}
	return nil
}

// dockerfileEnv returns the variables of names that the Dockerfile's final
// stage sets with ENV (the environment the image runs with): both forms,
// `ENV K=V K2="V 2"` and `ENV K V`, lines continued with a backslash, and a
// stage built FROM an earlier one inheriting its ENV. Variables it does not
// name are read only as far as finding where each ends.
func dockerfileEnv(src string, names ...string) (map[string]string, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	stages := map[string]map[string]string{}
	var env map[string]string // the current stage's; nil before the first FROM
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimSpace(lines[i])
		if line == "" || line[0] == '#' {
			if d, ok := strings.CutPrefix(strings.ReplaceAll(line, " ", ""), "#escape="); ok && d != `\` {
				return nil, fmt.Errorf("line %d: escape directive %q: only the default \\ is understood", start, d)
			}
			continue
		}
		// A continued instruction: comment and empty lines inside it are
		// skipped, as docker does.
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			i++
			if next := strings.TrimSpace(lines[i]); next != "" && next[0] != '#' {
				line = strings.TrimSuffix(line, `\`) + " " + next
			}
		}
		line = strings.TrimSuffix(line, `\`)
		instr, rest := line, ""
		if j := strings.IndexAny(line, " \t"); j >= 0 {
			instr, rest = line[:j], strings.TrimSpace(line[j:])
		}
		switch strings.ToUpper(instr) {
		case "FROM":
			// FROM [--platform=…] image [AS name]
			f := strings.Fields(rest)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:]
			}
			if len(f) == 0 {
				return nil, fmt.Errorf("line %d: FROM without an image", start)
			}
			env = map[string]string{}
			for k, v := range stages[strings.ToLower(f[0])] {
				env[k] = v
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[strings.ToLower(f[2])] = env
			}
		case "ENV":
			if env == nil {
				return nil, fmt.Errorf("line %d: ENV before FROM", start)
			}
			pairs, err := envPairs(rest)
			if err != nil {
				return nil, fmt.Errorf("line %d: ENV %s: %w", start, rest, err)
			}
			for _, p := range pairs {
				if want[p[0]] && strings.Contains(p[2], "$") {
					return nil, fmt.Errorf("line %d: %s uses a variable: give it a literal value", start, p[0])
				}
				env[p[0]] = p[1]
			}
		}
	}
	out := map[string]string{}
	for _, n := range names {
		if v, ok := env[n]; ok {
			out[n] = v
		}
	}
	return out, nil
}

// envPairs reads an ENV instruction's arguments: name, value, and the
// value as written (before quotes and escapes are taken off).
func envPairs(args string) ([][3]string, error) {
	words, raw, err := shellWords(args)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, errors.New("no variable")
	}
	if !strings.Contains(raw[0], "=") {
		// ENV NAME value…: the rest of the line is the value.
		name := words[0]
		value := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(args), raw[0]))
		if value == "" {
			return nil, fmt.Errorf("%s has no value", name)
		}
		v, _, err := shellWords(value)
		if err != nil {
			return nil, err
		}
		return [][3]string{{name, strings.Join(v, " "), value}}, nil
	}
	var out [][3]string
	for i, w := range words {
		name, value, ok := strings.Cut(w, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%q is not NAME=value", raw[i])
		}
		_, rawValue, _ := strings.Cut(raw[i], "=")
		out = append(out, [3]string{name, value, rawValue})
	}
	return out, nil
}

// shellWords splits s at unquoted blanks, taking off quotes and backslash
// escapes as docker does for ENV; raw holds each word as written.
func shellWords(s string) (words, raw []string, err error) {
	var w, r strings.Builder
	in := false // inside a word
	var quote byte
	flush := func() {
		if in {
			words, raw = append(words, w.String()), append(raw, r.String())
		}
		w.Reset()
		r.Reset()
		in = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t'):
			flush()
			continue
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote != 0 && c == quote:
			quote = 0
		case c == '\\' && quote != '\'' && i+1 < len(s):
			r.WriteByte(c)
			i++
			c = s[i]
			w.WriteByte(c)
		default:
			w.WriteByte(c)
		}
		r.WriteByte(c)
		in = true
	}
	if quote != 0 {
		return nil, nil, fmt.Errorf("unterminated %c quote", quote)
	}
	flush()
	return words, raw, nil
}
