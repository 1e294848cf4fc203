package httpx

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Retry-After as delay-seconds or an HTTP-date, read against the caller's
// clock: the end-to-end tests cannot pin the wall clock the date is read by.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 19, 42, 47, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"  ", 0, false},
		{"7", 7 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"0", 0, true}, // retry at once: an answer, not an absent header
		{"-3", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"86400000", 86400000 * time.Second, true},
		{"99999999999999999", maxDelaySeconds * time.Second, true}, // no overflow
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second, true},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), 48 * time.Hour, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second, true}, // the obsolete forms RFC 9110 still accepts
	} {
		if got, ok := RetryAfter(tc.in, now); got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestErrorText(t *testing.T) {
	const key = "wys_secret-api-key"
	for _, tc := range []struct {
		name, body, secret, want string
	}{
		{"echoed secret", `{"title":"bad auth Bearer ` + key + `"}`, key, `{"title":"bad auth Bearer [redacted]"}`},
		{"every echo", key + " " + key, key, "[redacted] [redacted]"},
		{"no secret to redact", " plain text\n", "", "plain text"}, // "" must not be replaced between every rune
		{"invalid UTF-8 dropped", "bad \xff byte", key, "bad  byte"},
		{"an invalid byte inside an echoed secret", "x wys_secret\xff-api-key y", key, "x [redacted] y"},
		{"cut at the cap", strings.Repeat("a", MaxErrorText+100), key, strings.Repeat("a", MaxErrorText)},
		{"a rune cut in two is dropped", strings.Repeat("a", MaxErrorText-1) + "é", key, strings.Repeat("a", MaxErrorText-1)},
		{"secret beyond the cap", strings.Repeat("a", MaxErrorText-4) + key, key, strings.Repeat("a", MaxErrorText-4) + "[red"},
	} {
		if got := ErrorText(tc.body, tc.secret); got != tc.want {
			t.Errorf("%s: ErrorText = %q, want %q", tc.name, got, tc.want)
		}
	}
}
