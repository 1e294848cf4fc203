// Package safeurl is the one rule for a URL the server trusts or sends a
// credential to (Forge's keys, Weavy with its API key, Connect's install keys
// and base URL, a FIT's apiBaseUrl that app tokens are sent to): https, or
// http to this machine only (127.0.0.0/8, ::1, localhost), which is what the
// tests and dev mode's simulators listen on.
package safeurl

import (
	"net/netip"
	"strings"
)

// Loopback reports whether host (no port; an IPv6 address without brackets)
// is this machine: localhost, an address of 127.0.0.0/8 or ::1. An address
// with a zone is not, nor a name that merely resolves there.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if !addrChars(host) {
		return false // no address; and ParseAddr's error would allocate
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.IsLoopback()
}

// addrChars reports whether s has only the characters of an IP address
// without a zone.
func addrChars(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F', c == '.', c == ':':
		default:
			return false
		}
	}
	return s != ""
}

// OK reports whether raw is an https URL with a host, or an http URL whose
// host is loopback (with a port or not, no user info). It checks the scheme
// and host only, reads raw where it lies and allocates nothing: it is on the
// path of every request (forge's Verify). Callers that need more of a URL's
// shape parse it themselves as well.
func OK(raw string) bool {
	scheme, rest, found := strings.Cut(raw, "://")
	if !found {
		return false
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	switch {
	case strings.EqualFold(scheme, "https"):
		return authority != ""
	case strings.EqualFold(scheme, "http"):
		host, ok := hostOf(authority)
		return ok && Loopback(host)
	}
	return false
}

// hostOf splits authority into its host, refusing user info and anything
// but digits after the port's colon.
func hostOf(authority string) (string, bool) {
	if strings.IndexByte(authority, '@') >= 0 {
		return "", false
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return "", false
		}
		host, port = authority[1:end], authority[end+1:]
		if port != "" {
			if port[0] != ':' {
				return "", false
			}
			port = port[1:]
		}
	} else if i := strings.IndexByte(authority, ':'); i >= 0 {
		host, port = authority[:i], authority[i+1:]
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", false
		}
	}
	return host, host != ""
}
