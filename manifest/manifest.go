// Package manifest models the parts of a Forge manifest.yml this remote relies
// on, checks what Forge's own schema cannot know, and renders deployment copies.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
)

// Manifest is the subset of manifest.yml the remote depends on.
type Manifest struct {
	App struct {
		ID      string `yaml:"id"`
		Runtime struct {
			Name string `yaml:"name"`
		} `yaml:"runtime"`
		// Connect is set for an app moving from Connect: its key is what the
		// reserved clientKey property is read under (CONNECT_APP_KEY).
		Connect *struct {
			Key    string `yaml:"key"`
			Remote string `yaml:"remote"`
		} `yaml:"connect"`
	} `yaml:"app"`
	Modules     Modules     `yaml:"modules"`
	Remotes     []Remote    `yaml:"remotes"`
	Resources   []Resource  `yaml:"resources"`
	Permissions Permissions `yaml:"permissions"`
}

// Modules are the module types the remote serves.
type Modules struct {
	GlobalPage       []UIModule         `yaml:"confluence:globalPage"`
	Macro            []UIModule         `yaml:"macro"`
	Endpoint         []Endpoint         `yaml:"endpoint"`
	ScheduledTrigger []ScheduledTrigger `yaml:"scheduledTrigger"`
	Trigger          []Trigger          `yaml:"trigger"`
	PreUninstall     []PreUninstall     `yaml:"preUninstall"`
}

// UIModule is a Custom UI module whose resolver is a remote endpoint.
type UIModule struct {
	Key      string `yaml:"key"`
	Resource string `yaml:"resource"`
	Resolver struct {
		Endpoint string `yaml:"endpoint"`
		Function string `yaml:"function"`
	} `yaml:"resolver"`
}

// Endpoint ties a module to a remote, a route and the tokens Forge sends.
type Endpoint struct {
	Key    string `yaml:"key"`
	Remote string `yaml:"remote"`
	Route  struct {
		Path string `yaml:"path"`
	} `yaml:"route"`
	Auth struct {
		AppSystemToken struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"appSystemToken"`
		AppUserToken struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"appUserToken"`
	} `yaml:"auth"`
}

// ScheduledTrigger calls an endpoint at an interval.
type ScheduledTrigger struct {
	Key      string `yaml:"key"`
	Endpoint string `yaml:"endpoint"`
	Interval string `yaml:"interval"`
}

// Trigger delivers events to an endpoint.
type Trigger struct {
	Key      string   `yaml:"key"`
	Endpoint string   `yaml:"endpoint"`
	Events   []string `yaml:"events"`
}

// PreUninstall is called before the app is uninstalled.
type PreUninstall struct {
	Key      string `yaml:"key"`
	Endpoint string `yaml:"endpoint"`
}

// Remote is a remote backend's base URL.
type Remote struct {
	Key        string   `yaml:"key"`
	BaseURL    string   `yaml:"baseUrl"`
	Operations []string `yaml:"operations"`
}

// Resource is a static Custom UI bundle.
type Resource struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

// Permissions are the app's scopes and egress.
type Permissions struct {
	Scopes   []string `yaml:"scopes"`
	External struct {
		Fetch struct {
			Client  []Address `yaml:"client"`
			Backend []Address `yaml:"backend"`
		} `yaml:"fetch"`
		Images []Address `yaml:"images"`
		Media  []Address `yaml:"media"`
	} `yaml:"external"`
}

// Address is one egress entry.
type Address struct {
	Address string `yaml:"address"`
}

// Parse decodes a manifest. Unknown fields are allowed: Forge has many more.
func Parse(b []byte) (*Manifest, error) {
	var m Manifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// Route paths the remote's handlers are reached by.
const (
	ScheduledPath = "/triggers/scheduled"
	LifecyclePath = "/triggers/lifecycle"
	UninstallPath = "/triggers/uninstall"
)

// Scope is a permission scope the remote needs, and why.
type Scope struct {
	Name string
	Why  string
}

// RequiredScopes are needed by the remote; Validate names the reason of each
// one missing. The last three serve the chat resolver's page-access check,
// made as the user with the token Forge sends to auth.appUserToken endpoints.
var RequiredScopes = []Scope{
	{"read:app-system-token", "without it Forge sends no app token (x-forge-oauth-system)"},
	{"read:confluence-user", "the profile sync reads display names and avatars with it"},
	{"read:app-user-token", "without it Forge sends no user token (x-forge-oauth-user) on UI calls"},
	{"read:page:confluence", "the chat resolver checks, as the user, that they can view the page or blog post (REST v2 GET /pages/{id}, /blogposts/{id})"},
	{"read:space:confluence", "the chat resolver checks, as the user, that they can view the space (REST v2 GET /spaces?keys=...)"},
}

// RequiredEvents are the lifecycle events the remote records.
var RequiredEvents = []string{"avi:forge:installed:app", "avi:forge:upgraded:app"}

// ConnectScope is what reading the reserved Connect app property needs
// (Confluence's app properties API, OAuth 2.0 scope).
const ConnectScope = "read:app-data:confluence"

// connectKeyPattern is @forge/manifest's rule for app.connect.key.
var connectKeyPattern = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,90}$`)

// Served answers whether the remote serves method+path (the real router).
type Served func(method, path string) bool

// Problem is one finding of Validate.
type Problem struct {
	Where string // e.g. "modules.scheduledTrigger[0]"
	What  string
}

func (p Problem) String() string { return p.Where + ": " + p.What }

// ValidationError lists every problem found.
type ValidationError struct{ Problems []Problem }

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return "manifest: " + strings.Join(lines, "; ")
}

// Validate checks what Forge's schema cannot know: that the modules reach
// routes this server really serves, with the tokens its handlers need, often
// enough to keep a 2-hour app token fresh, and with the scopes it calls with.
func (m *Manifest) Validate(served Served) error {
	var ps []Problem
	add := func(where, format string, args ...any) {
		ps = append(ps, Problem{Where: where, What: fmt.Sprintf(format, args...)})
	}

	remotes := map[string]Remote{}
	for i, r := range m.Remotes {
		remotes[r.Key] = r
		u, err := url.Parse(r.BaseURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			add(fmt.Sprintf("remotes[%d]", i), "baseUrl must be an https origin like https://remote.example.com, got %q", r.BaseURL)
		}
	}
	endpoints := map[string]Endpoint{}
	for i, e := range m.Modules.Endpoint {
		endpoints[e.Key] = e
		if _, ok := remotes[e.Remote]; !ok {
			add(fmt.Sprintf("modules.endpoint[%d] %s", i, e.Key), "remote %q is not declared in remotes", e.Remote)
		}
	}
	// endpoint resolves a module's endpoint reference.
	endpoint := func(where, key string) (Endpoint, bool) {
		if key == "" {
			add(where, "names no endpoint")
			return Endpoint{}, false
		}
		e, ok := endpoints[key]
		if !ok {
			add(where, "endpoint %q is not declared in modules.endpoint", key)
		}
		return e, ok
	}
	// trigger checks a trigger endpoint: its route is served (POST), and the
	// app system token is sent when the handler relies on it.
	trigger := func(where, key, path string, needToken bool) {
		e, ok := endpoint(where, key)
		if !ok {
			return
		}
		switch {
		case e.Route.Path == "":
			add(where, "endpoint %q has no route.path; the remote serves %s", key, path)
		case e.Route.Path != path:
			add(where, "endpoint %q routes to %s; the remote serves this trigger at %s", key, e.Route.Path, path)
		}
		if e.Route.Path != "" && served != nil && !served("POST", e.Route.Path) {
			add(where, "route.path %s of endpoint %q is not served by the remote", e.Route.Path, key)
		}
		if needToken && !e.Auth.AppSystemToken.Enabled {
			add(where, "endpoint %q must set auth.appSystemToken.enabled: true (it is how the remote gets a fresh app token)", key)
		}
	}

	uis := 0
	// resolverEndpoints are the endpoints UI modules call that the remote
	// answers resolvers on, with the modules calling each.
	resolverEndpoints := map[string][]string{}
	for _, k := range []struct {
		kind string
		mods []UIModule
	}{{"confluence:globalPage", m.Modules.GlobalPage}, {"macro", m.Modules.Macro}} {
		kind := k.kind
		for i, u := range k.mods {
			uis++
			where := fmt.Sprintf("modules.%s[%d] %s", kind, i, u.Key)
			if u.Resolver.Function != "" {
				add(where, "resolver.function runs a Forge function; point resolver.endpoint at the remote")
				continue
			}
			e, ok := endpoint(where+" resolver", u.Resolver.Endpoint)
			if !ok {
				continue
			}
			if e.Route.Path != "" && served != nil && !served("POST", strings.TrimRight(e.Route.Path, "/")+"/resolvers/token") {
				add(where, "endpoint %q prefixes %s: the remote serves /resolvers/... at its root", e.Key, e.Route.Path)
			} else {
				resolverEndpoints[e.Key] = append(resolverEndpoints[e.Key], fmt.Sprintf("modules.%s[%d] %s", kind, i, u.Key))
			}
			if !e.Auth.AppSystemToken.Enabled {
				add(where, "endpoint %q should set auth.appSystemToken.enabled: true so UI calls keep the app token fresh", e.Key)
			}
		}
	}
	if uis == 0 {
		add("modules", "no confluence:globalPage or macro uses the remote's resolvers")
	}
	// Forge sends the user's token only to endpoints that ask for it
	// (auth.appUserToken on the endpoint module, not on remotes[]).
	for i, e := range m.Modules.Endpoint {
		if users, ok := resolverEndpoints[e.Key]; ok && !e.Auth.AppUserToken.Enabled {
			add(fmt.Sprintf("modules.endpoint[%d] %s", i, e.Key),
				"auth.appUserToken.enabled must be true: the chat resolver checks page access as the user (the resolver endpoint of %s)",
				strings.Join(users, ", "))
			delete(resolverEndpoints, e.Key) // a key declared twice is reported once
		}
	}

	if len(m.Modules.ScheduledTrigger) == 0 {
		add("modules.scheduledTrigger", "missing: an hourly trigger to %s is the only way a fresh app token reaches the remote", ScheduledPath)
	}
	for i, s := range m.Modules.ScheduledTrigger {
		where := fmt.Sprintf("modules.scheduledTrigger[%d] %s", i, s.Key)
		trigger(where, s.Endpoint, ScheduledPath, true)
		if s.Interval != "hour" && s.Interval != "fiveMinute" {
			add(where, "interval %q cannot keep an app token fresh: tokens live at least 2 h; use hour", s.Interval)
		}
	}

	var events []string
	for i, t := range m.Modules.Trigger {
		trigger(fmt.Sprintf("modules.trigger[%d] %s", i, t.Key), t.Endpoint, LifecyclePath, false)
		events = append(events, t.Events...)
	}
	for _, ev := range RequiredEvents {
		if !slices.Contains(events, ev) {
			add("modules.trigger", "no trigger delivers %s to %s", ev, LifecyclePath)
		}
	}
	if len(m.Modules.PreUninstall) == 0 {
		add("modules.preUninstall", "missing: the remote purges an installation's data at %s", UninstallPath)
	}
	for i, p := range m.Modules.PreUninstall {
		trigger(fmt.Sprintf("modules.preUninstall[%d] %s", i, p.Key), p.Endpoint, UninstallPath, false)
	}

	for _, s := range RequiredScopes {
		if !slices.Contains(m.Permissions.Scopes, s.Name) {
			add("permissions.scopes", "missing %s: %s", s.Name, s.Why)
		}
	}
	if c := m.App.Connect; c != nil {
		if !connectKeyPattern.MatchString(c.Key) {
			add("app.connect.key", "must be the Connect app key (letters, digits, '.', '_', '-'; at most 90), got %q", c.Key)
		}
		if _, ok := remotes[c.Remote]; !ok {
			// Forge warns otherwise; Connect's lifecycle calls go to this remote.
			add("app.connect.remote", "must name a declared remote (the one serving /connect/*), got %q", c.Remote)
		}
		if !slices.Contains(m.Permissions.Scopes, ConnectScope) {
			add("permissions.scopes", "missing %s: the Connect clientKey property cannot be read without it", ConnectScope)
		}
	}
	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

// Template values of the repository's manifest.yml that Render replaces.
const (
	TemplateAppID    = "ari:cloud:ecosystem::app/3f6c1d2e-8b4a-4f5e-9c7d-2a1b0e9f8d7c"
	TemplateBaseURL  = "https://forge-remote.example.com"
	TemplateWeavyURL = "https://example.weavy.io"
)

// RenderOptions are the deployment's own values.
type RenderOptions struct {
	AppID    string // normalised ARI
	BaseURL  string // the remote's public https origin
	WeavyURL string // the Weavy environment, https
	// ConnectKey, when set, writes app.connect.key (the remote as
	// app.connect.remote) and the scope reading the clientKey property needs.
	ConnectKey string
}

// Render writes a deployment manifest from the template: the app id, the
// remote's base URL and the Weavy environment (fetch, websocket, images and
// media egress) replaced. The result is parsed back to prove it says what
// was asked.
func Render(template []byte, o RenderOptions) ([]byte, error) {
	var errs []error
	base, err := origin(o.BaseURL, "https")
	if err != nil {
		errs = append(errs, fmt.Errorf("--base-url: %w", err))
	}
	weavy, err := origin(o.WeavyURL, "https")
	if err != nil {
		errs = append(errs, fmt.Errorf("--weavy-url: %w", err))
	}
	if o.AppID == "" {
		errs = append(errs, errors.New("--app-id: required"))
	}
	if o.ConnectKey != "" && !connectKeyPattern.MatchString(o.ConnectKey) {
		errs = append(errs, fmt.Errorf("--connect-key: want a Connect app key (letters, digits, '.', '_', '-'; at most 90), got %q", o.ConnectKey))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	for _, v := range []string{TemplateAppID, TemplateBaseURL, TemplateWeavyURL} {
		if !bytes.Contains(template, []byte(v)) {
			return nil, fmt.Errorf("manifest: template lacks %s", v)
		}
	}
	out := bytes.ReplaceAll(template, []byte(TemplateAppID), []byte(o.AppID))
	out = bytes.ReplaceAll(out, []byte(TemplateBaseURL), []byte(base))
	out = bytes.ReplaceAll(out, []byte(TemplateWeavyURL), []byte(weavy))
	out = bytes.ReplaceAll(out, []byte("wss://"+strings.TrimPrefix(TemplateWeavyURL, "https://")), []byte("wss://"+strings.TrimPrefix(weavy, "https://")))
	if o.ConnectKey != "" {
		var err error
		if out, err = addConnect(out, o.ConnectKey); err != nil {
			return nil, err
		}
	}

	m, err := Parse(out)
	if err != nil {
		return nil, err
	}
	if m.App.ID != o.AppID || len(m.Remotes) == 0 || m.Remotes[0].BaseURL != base {
		return nil, errors.New("manifest: rendering did not produce the requested values")
	}
	if o.ConnectKey != "" && (m.App.Connect == nil || m.App.Connect.Key != o.ConnectKey || !slices.Contains(m.Permissions.Scopes, ConnectScope)) {
		return nil, errors.New("manifest: rendering did not produce the requested app.connect.key")
	}
	return out, nil
}

// origin checks an absolute URL with the given scheme and no path, and
// returns it without a trailing slash.
func origin(s, scheme string) (string, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || u.Scheme != scheme || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("want an %s origin like %s://host.example.com, got %q", scheme, scheme, s)
	}
	return u.String(), nil
}

// addConnect inserts app.connect (the key, and the template's first remote
// as its remote) after app.id, and the clientKey property's scope first in
// permissions.scopes: text edits, so the template's comments survive.
func addConnect(out []byte, key string) ([]byte, error) {
	m, err := Parse(out)
	if err != nil {
		return nil, err
	}
	if m.App.Connect != nil {
		return nil, errors.New("manifest: the template already has app.connect")
	}
	if len(m.Remotes) == 0 {
		return nil, errors.New("manifest: the template declares no remote for app.connect.remote")
	}
	idLine := []byte("\n  id: " + m.App.ID + "\n")
	scopes := []byte("\n  scopes:\n")
	if !bytes.Contains(out, idLine) || !bytes.Contains(out, scopes) {
		return nil, errors.New("manifest: template lacks app.id or permissions.scopes where expected")
	}
	out = bytes.Replace(out, idLine, []byte(string(idLine)+
		"  connect:\n    key: "+key+" # the Connect app this Forge app replaces (CONNECT_APP_KEY)\n    remote: "+m.Remotes[0].Key+"\n"), 1)
	out = bytes.Replace(out, scopes, []byte(string(scopes)+
		"    - "+ConnectScope+" # the Connect clientKey app property, read once per installation\n"), 1)
	return out, nil
}
