// Package server is the HTTP face of forge-remote: configuration, the Gin
// engine and its middleware, the one error-to-status mapping, probes and metrics.
package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/forge-remote/forge-remote/chat"
	"github.com/forge-remote/forge-remote/forge"
	"github.com/forge-remote/forge-remote/forge/budget"
	"github.com/forge-remote/forge-remote/internal/safeurl"
	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/forge-remote/forge-remote/scheduler"
	"github.com/forge-remote/forge-remote/store"
	"github.com/forge-remote/forge-remote/weavy"
)

// DefaultJWKSURL is where Forge publishes its invocation-token signing keys.
const DefaultJWKSURL = "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json"

// Config is everything read from the environment, once, at start.
type Config struct {
	AppID            string // normalised ARI
	JWKSURL          string
	WeavyURL         string
	WeavyAPIKey      secret.String
	WeavyTokenTTL    time.Duration
	WeavyUIDScope    weavy.UIDScope
	WeavyTimeout     time.Duration
	ChatLease        time.Duration // how long an open keeps a page chat membership
	ChatRecheck      time.Duration // how long Confluence's verdict on a page is kept; 0: every open asks
	ChatCacheEntries int           // bound of each of the chat's memberships, apps and directory maps
	StoreURL         secret.URL    // a redis URL may carry a password
	StoreKey         secret.String // unset: the backend decides (bolt creates a key file)
	ListenAddr       string
	InternalAPIToken secret.String
	LogLevel         zapcore.Level
	JobConcurrency   int           // background jobs running at once
	ProfileResync    time.Duration // a synced profile is read from Confluence again after this long

	// The Confluence points budget (README "Confluence rate limits").
	ConfluencePointsPerHour int64       // per UTC hour, for the app or each site
	ConfluencePool          budget.Pool // app (Tier 1) or site (Tier 2)
	ConfluenceReserve       float64     // the fraction background work leaves to page checks
	ConfluenceSpread        bool        // hourly jobs at each installation's own moment of the hour

	// The Connect/Forge bridge: off unless ConnectAppKey is set. None of
	// these is a secret: the app key is in the Connect descriptor, and each
	// installation's shared secret is in the store, never in the config.
	ConnectAppKey  string
	ConnectBaseURL string // the Connect descriptor's baseUrl: `aud` of signed installs
	ConnectKeysURL string // overrides the install key servers; "" = Atlassian's
}

// connectKeyPattern is what Forge's manifest schema allows in app.connect.key.
var connectKeyPattern = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,90}$`)

// ConfigError names the variable that stops the start.
type ConfigError struct {
	Var string
	Msg string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config: %s %s", e.Var, e.Msg) }

// LoadConfig reads the configuration through getenv. Every problem found is
// reported, each naming its variable.
func LoadConfig(getenv func(string) string) (Config, error) {
	var errs []error
	bad := func(v, format string, args ...any) {
		errs = append(errs, &ConfigError{Var: v, Msg: fmt.Sprintf(format, args...)})
	}
	get := func(v, def string) string {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			return s
		}
		return def
	}
	dur := func(v string, def time.Duration, min, max time.Duration) time.Duration {
		s := get(v, "")
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			bad(v, "is not a duration (e.g. 1h, 30s): %q", s)
			return def
		}
		if d < min || d > max {
			bad(v, "must be between %s and %s, got %s", min, max, d)
			return def
		}
		return d
	}

	var c Config
	if s := get("FORGE_APP_ID", ""); s == "" {
		bad("FORGE_APP_ID", "is required: the app id from manifest.yml (ari:cloud:ecosystem::app/<uuid> or the uuid)")
	} else if id, err := forge.NormalizeAppID(s); err != nil {
		bad("FORGE_APP_ID", "is not an app id (ari:cloud:ecosystem::app/<uuid> or the uuid): %q", s)
	} else {
		c.AppID = id
	}

	c.JWKSURL = get("FORGE_JWKS_URL", DefaultJWKSURL)
	if err := checkSecureURL(c.JWKSURL); err != nil {
		bad("FORGE_JWKS_URL", "%v", err)
	}

	c.WeavyURL = strings.TrimRight(get("WEAVY_URL", ""), "/")
	c.WeavyAPIKey = secret.String(get("WEAVY_API_KEY", ""))
	switch {
	case c.WeavyURL != "":
		if err := checkSecureURL(c.WeavyURL); err != nil {
			bad("WEAVY_URL", "%v", err)
		} else if u, _ := url.Parse(c.WeavyURL); u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
			bad("WEAVY_URL", "must be the environment's origin like https://acme.weavy.io, without path, query or credentials")
		}
		if c.WeavyAPIKey == "" {
			bad("WEAVY_API_KEY", "is required when WEAVY_URL is set")
		} else if !strings.HasPrefix(string(c.WeavyAPIKey), "wys_") || strings.ContainsAny(string(c.WeavyAPIKey), " \t\r\n") {
			bad("WEAVY_API_KEY", "must be a Weavy API key (wys_… without spaces)")
		}
	case c.WeavyAPIKey != "":
		bad("WEAVY_URL", "is required when WEAVY_API_KEY is set")
	}
	c.WeavyTokenTTL = dur("WEAVY_TOKEN_TTL", time.Hour, time.Minute, 30*24*time.Hour)
	c.WeavyTimeout = dur("WEAVY_TIMEOUT", 10*time.Second, 100*time.Millisecond, 20*time.Second)
	// At least an hour: the prune runs hourly, so a shorter lease would only
	// cost users re-joins; at most 30 days, the bound README promises.
	c.ChatLease = dur("CHAT_LEASE", chat.DefaultLease, time.Hour, 30*24*time.Hour)
	// At most an hour: a user whose access was taken away reads on for up
	// to this long through opens answered from memory.
	c.ChatRecheck = dur("CHAT_RECHECK", chat.DefaultRecheck, 0, time.Hour)
	// The bound of each of the chat's three large in-memory maps (members
	// and verdicts, apps, directory assignments): at least 1,000, so that
	// a typo does not make every open a store read and a Confluence check;
	// at most 10,000,000 (about 1.5 GB of heap full).
	c.ChatCacheEntries = chat.DefaultMaxEntries
	if s := get("CHAT_CACHE_ENTRIES", ""); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 || n > 10_000_000 {
			bad("CHAT_CACHE_ENTRIES", "must be a whole number from 1000 to 10000000 (each entry costs about 150 B of heap across the three maps), got %q", s)
		} else {
			c.ChatCacheEntries = n
		}
	}
	scope, err := weavy.ParseUIDScope(get("WEAVY_UID_SCOPE", string(weavy.ScopeAccount)))
	if err != nil {
		bad("WEAVY_UID_SCOPE", "must be account or site")
	}
	c.WeavyUIDScope = scope

	c.StoreURL = secret.URL(get("STORE_URL", "bolt://data/forge-remote.db"))
	if scheme, _, _ := strings.Cut(string(c.StoreURL), "://"); scheme != "bolt" && scheme != "memory" && scheme != "redis" && scheme != "rediss" {
		// Never echo the value: a redis URL may carry a password.
		bad("STORE_URL", "must be bolt://<path>, redis://[user:password@]host:port/db, rediss://… or memory://")
	}
	if s := get("STORE_KEY", ""); s != "" {
		k, err := store.ParseKey(s)
		if err != nil {
			bad("STORE_KEY", "must be base64 of 32 random bytes (openssl rand -base64 32)")
		}
		c.StoreKey = secret.String(k)
	} else if strings.HasPrefix(string(c.StoreURL), "redis") {
		bad("STORE_KEY", "is required with a redis STORE_URL: every replica must seal with the same key (openssl rand -base64 32)")
	}

	c.ListenAddr = get("LISTEN_ADDR", ":8080")
	if _, port, err := net.SplitHostPort(c.ListenAddr); err != nil || port == "" {
		bad("LISTEN_ADDR", "must be host:port or :port, got %q", c.ListenAddr)
	}

	c.InternalAPIToken = secret.String(get("INTERNAL_API_TOKEN", ""))
	if c.InternalAPIToken != "" && len(c.InternalAPIToken) < 16 {
		bad("INTERNAL_API_TOKEN", "must be at least 16 characters")
	}

	// At least an hour: the sync runs hourly, so less would change nothing
	// but the promise; at most 30 days, the time a user with no new token
	// stays in the sync set (scheduler's userRetention): beyond it a profile
	// would never be read again.
	c.ProfileResync = dur("PROFILE_RESYNC", scheduler.DefaultProfileResync, time.Hour, 30*24*time.Hour)

	c.JobConcurrency = 4
	if s := get("JOB_CONCURRENCY", ""); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 64 {
			bad("JOB_CONCURRENCY", "must be a whole number from 1 to 64, got %q", s)
		} else {
			c.JobConcurrency = n
		}
	}

	loadConfluence(&c, get, bad)
	loadConnect(&c, get, bad)

	if err := c.LogLevel.UnmarshalText([]byte(get("LOG_LEVEL", "info"))); err != nil ||
		c.LogLevel < zapcore.DebugLevel || c.LogLevel > zapcore.ErrorLevel {
		bad("LOG_LEVEL", "must be debug, info, warn or error")
	}
	return c, errors.Join(errs...)
}

// loadConfluence reads the points budget's variables.
func loadConfluence(c *Config, get func(v, def string) string, bad func(v, format string, args ...any)) {
	c.ConfluencePointsPerHour = budget.DefaultPointsPerHour
	if s := get("CONFLUENCE_POINTS_PER_HOUR", ""); s != "" {
		// Atlassian's pools: 65,000 (Tier 1, Tier 2 Free) to 500,000 (Tier 2 cap).
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 100 || n > 500_000 {
			bad("CONFLUENCE_POINTS_PER_HOUR", "must be a whole number of points from 100 to 500000 (Atlassian's Tier 1 pool is 65000), got %q", s)
		} else {
			c.ConfluencePointsPerHour = n
		}
	}
	switch s := get("CONFLUENCE_POOL", "app"); s {
	case "app", "site":
		c.ConfluencePool = budget.Pool(s)
	default:
		bad("CONFLUENCE_POOL", "must be app (Tier 1: one pool for every site) or site (Tier 2: a pool per site), got %q", s)
	}
	c.ConfluenceReserve = budget.DefaultReserve
	if s := get("CONFLUENCE_RESERVE", ""); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f != f || f < 0 || f > 0.9 {
			bad("CONFLUENCE_RESERVE", "must be a fraction from 0 to 0.9 of the hour's points kept for page checks (e.g. 0.3), got %q", s)
		} else {
			c.ConfluenceReserve = f
		}
	}
	switch s := get("CONFLUENCE_SPREAD", "on"); s {
	case "on", "off":
		c.ConfluenceSpread = s == "on"
	default:
		bad("CONFLUENCE_SPREAD", "must be on (hourly jobs at each installation's own moment of the hour) or off (when the trigger comes), got %q", s)
	}
}

// loadConnect reads CONNECT_*: the key turns the bridge on and needs the base
// URL; the other two without the key are a mistake worth stopping for.
func loadConnect(c *Config, get func(v, def string) string, bad func(v, format string, args ...any)) {
	c.ConnectAppKey = get("CONNECT_APP_KEY", "")
	base := get("CONNECT_BASE_URL", "")
	keys := get("CONNECT_KEYS_URL", "")
	if c.ConnectAppKey == "" {
		for _, v := range []struct{ name, val string }{{"CONNECT_BASE_URL", base}, {"CONNECT_KEYS_URL", keys}} {
			if v.val != "" {
				bad("CONNECT_APP_KEY", "is required when %s is set", v.name)
			}
		}
		return
	}
	if !connectKeyPattern.MatchString(c.ConnectAppKey) {
		bad("CONNECT_APP_KEY", "must be the Connect app key of manifest.yml's app.connect.key (letters, digits, '.', '_', '-'; at most 90)")
	}
	switch u, err := url.Parse(base); {
	case base == "":
		bad("CONNECT_BASE_URL", "is required with CONNECT_APP_KEY: the Connect descriptor's baseUrl, e.g. https://remote.example.com")
	case err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		!safeurl.OK(base):
		bad("CONNECT_BASE_URL", "must be an https URL (http only on loopback) without credentials, query or fragment, got %q", base)
	case strings.TrimRight(u.Path, "/") != "" && strings.TrimRight(u.Path, "/") != "/connect":
		// Atlassian calls <baseUrl><lifecycle path>; the remote serves /connect/installed.
		bad("CONNECT_BASE_URL", "path must be empty (lifecycle paths /connect/installed, /connect/uninstalled) or /connect (paths /installed, /uninstalled), got %q", u.Path)
	default:
		c.ConnectBaseURL = strings.TrimRight(base, "/")
	}
	if keys != "" {
		u, err := url.Parse(keys)
		if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !safeurl.OK(keys) {
			bad("CONNECT_KEYS_URL", "must be an https URL (http only on loopback) without credentials or query, got %q", keys)
		} else {
			c.ConnectKeysURL = strings.TrimRight(keys, "/")
		}
	}
}

// checkSecureURL accepts what the server may trust or send a credential to:
// an absolute https URL, or http on loopback (tests, dev mode), the rule of
// every URL in the configuration (safeurl.OK).
func checkSecureURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !safeurl.OK(s) {
		return fmt.Errorf("must be an absolute https URL (http only on loopback: 127.0.0.0/8, ::1, localhost), got %q", s)
	}
	return nil
}
