// Package httpx reads the answers of the outside HTTP APIs forge-remote calls
// (Forge's product APIs, Weavy) the same way in every client: the wait a
// Retry-After asks for, and the start of an error body made safe to quote.
package httpx

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxDelaySeconds keeps a delay-seconds Retry-After inside a time.Duration
// (about 34 years); callers apply the bound that makes sense to them.
const maxDelaySeconds = 1 << 30

// RetryAfter reads RFC 9110's Retry-After header value: delay-seconds or an
// HTTP-date, the date read against now. ok is false when v is empty or
// unreadable (a negative number included); a date already past is 0, true.
func RetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, maxDelaySeconds)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// MaxErrorText is the most of an error body ErrorText keeps, in bytes.
const MaxErrorText = 512

// ErrorText makes text from an error answer safe to carry in an error: the
// secret the request carried (an API key, a token) replaced by [redacted]
// should the server echo it, at most MaxErrorText bytes, valid UTF-8 (a rune
// cut in two is dropped), without surrounding space.
func ErrorText(body, secret string) string {
	// Invalid UTF-8 goes first: dropping a byte inside an echoed secret
	// after the replacement would put the secret back together.
	body = strings.ToValidUTF8(body, "")
	if secret != "" {
		body = strings.ReplaceAll(body, secret, "[redacted]")
	}
	if len(body) > MaxErrorText {
		body = strings.ToValidUTF8(body[:MaxErrorText], "") // a rune cut in two
	}
	return strings.TrimSpace(body)
}
