package budget

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/forge-remote/forge-remote/internal/httpx"
)

// Headers is what one Confluence answer says about the points pool
// (docs/CONFLUENCE-LIMITS.md §2): the RateLimit and RateLimit-Policy
// entries of the quota policies (global-app-quota, tenant-app-quota; the
// Beta- prefixed headers alike), X-RateLimit-NearLimit, and on a 429
// Retry-After, RateLimit-Reason and X-RateLimit-Reset.
type Headers struct {
	Remaining    int64         // r: points left in the window (HasRemaining)
	HasRemaining bool          // r is sent only past about 80% of the quota
	Reset        time.Duration // t: until the window resets (0: not sent)
	Quota        int64         // q of RateLimit-Policy (0: not sent)
	Window       time.Duration // w of RateLimit-Policy (0: not sent)
	NearLimit    bool          // X-RateLimit-NearLimit: true (under 20% left)

	RetryAfter    time.Duration // Retry-After (HasRetryAfter)
	HasRetryAfter bool
	Reason        string    // RateLimit-Reason as sent, cut to 100 bytes
	ResetAt       time.Time // X-RateLimit-Reset (zero: not sent or unreadable)
}

// ParseHeaders reads h. Unknown policies and parameters are ignored, and
// where several quota entries are sent the smallest r and q win. now turns
// an HTTP-date Retry-After into a duration.
func ParseHeaders(h http.Header, now time.Time) Headers {
	var out Headers
	for _, name := range []string{"RateLimit", "Beta-RateLimit"} {
		for _, v := range h.Values(name) {
			for _, e := range entries(v) {
				if !quotaPolicy(e.policy) {
					continue
				}
				if r, ok := e.int("r"); ok && r >= 0 && (!out.HasRemaining || r < out.Remaining) {
					out.Remaining, out.HasRemaining = r, true
				}
				if t, ok := e.int("t"); ok && t >= 0 && t <= 7200 {
					out.Reset = time.Duration(t) * time.Second
				}
			}
		}
	}
	for _, name := range []string{"RateLimit-Policy", "Beta-RateLimit-Policy"} {
		for _, v := range h.Values(name) {
			for _, e := range entries(v) {
				if !quotaPolicy(e.policy) {
					continue
				}
				if q, ok := e.int("q"); ok && q > 0 && (out.Quota == 0 || q < out.Quota) {
					out.Quota = q
				}
				if w, ok := e.int("w"); ok && w > 0 && w <= 86400 {
					out.Window = time.Duration(w) * time.Second
				}
			}
		}
	}
	out.NearLimit = strings.EqualFold(strings.TrimSpace(h.Get("X-RateLimit-NearLimit")), "true")
	out.RetryAfter, out.HasRetryAfter = httpx.RetryAfter(h.Get("Retry-After"), now)
	out.Reason = clean(h.Get("RateLimit-Reason"))
	if s := strings.TrimSpace(h.Get("X-RateLimit-Reset")); s != "" {
		for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z07:00"} {
			if t, err := time.Parse(layout, s); err == nil {
				out.ResetAt = t
				break
			}
		}
	}
	return out
}

// Informs reports whether the answer said anything about the pool.
func (h Headers) Informs() bool { return h.HasRemaining || h.NearLimit || h.Quota > 0 }

// clean keeps a header value fit for a log line and the operator's view.
func clean(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 100 {
		s = s[:100]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return -1
		}
		return r
	}, s)
}

// quotaPolicy: the hourly points pools (global-app-quota, tenant-app-quota).
// Burst and other policies say nothing of the hour's points.
func quotaPolicy(name string) bool { return strings.Contains(strings.ToLower(name), "quota") }

type entry struct {
	policy string
	params map[string]string
}

func (e entry) int(k string) (int64, bool) {
	v, ok := e.params[k]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// entries splits a structured-field list ("p";r=1;t=2, "q";r=3) on the
// commas outside quotes, then each member on ';'.
func entries(v string) []entry {
	var out []entry
	var members []string
	inQuote, start := false, 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			inQuote = !inQuote
		case '\\':
			if inQuote {
				i++
			}
		case ',':
			if !inQuote {
				members = append(members, v[start:i])
				start = i + 1
			}
		}
	}
	members = append(members, v[start:])
	for _, m := range members {
		parts := strings.Split(m, ";")
		e := entry{policy: strings.Trim(strings.TrimSpace(parts[0]), `"`), params: map[string]string{}}
		for _, p := range parts[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
			e.params[strings.ToLower(k)] = strings.Trim(val, `"`)
		}
		if e.policy != "" {
			out = append(out, e)
		}
	}
	return out
}

// Scope is what a 429 pauses.
type Scope string

const (
	ScopeNone Scope = ""     // this call only (burst, unknown reason, no Retry-After)
	ScopeApp  Scope = "app"  // every call of every replica: the app's global pool
	ScopeSite Scope = "site" // every call to one site: its tenant pool
)

// ScopeOf classifies a 429 by its RateLimit-Reason, loosely (the strings
// seen in the field differ from the documented ones): "tenant" pauses the
// site, "global" or another quota reason the whole app, "burst" only the
// call. No reason with a Retry-After is taken for the global pool; no reason
// and no Retry-After (a gateway 429) pauses nothing: the call backs off.
func ScopeOf(h Headers) Scope {
	r := strings.ToLower(h.Reason)
	switch {
	case strings.Contains(r, "tenant"):
		return ScopeSite
	case strings.Contains(r, "global"), strings.Contains(r, "quota"):
		return ScopeApp
	case r == "" && h.HasRetryAfter:
		return ScopeApp
	}
	return ScopeNone
}

// Cost is what Atlassian charges for one call, by its table
// (docs/CONFLUENCE-LIMITS.md §1.2): 1 per request, plus per object returned
// 2 for users, groups and permissions and 1 for anything else; a write
// (POST, PUT, PATCH, DELETE) costs 1 whatever it returns. The objects of a
// 2xx answer are its "results" list when it has one, else the one object it
// is; an answer that is not 2xx is charged the request only (its cost is
// not documented).
func Cost(method, path string, status int, body []byte) int64 {
	if !read(method) || status < 200 || status > 299 {
		return 1
	}
	return 1 + objects(body)*weight(path)
}

// Estimate is what a call is reckoned to cost before it is made: one object.
func Estimate(method, path string) int64 {
	if !read(method) {
		return 1
	}
	return 1 + weight(path)
}

func read(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == ""
}

// weight is the points per object of the API at path.
func weight(path string) int64 {
	p, _, _ := strings.Cut(strings.ToLower(path), "?")
	for _, s := range []string{"/user", "/group", "/permission"} {
		if strings.Contains(p, s) {
			return 2
		}
	}
	return 1
}

// objects counts the objects of an answer: a "results" list, one object, or
// none (an empty body).
func objects(body []byte) int64 {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return 0
	}
	if body[0] == '{' && bytes.Contains(body, []byte(`"results"`)) {
		var list struct {
			Results []json.RawMessage `json:"results"`
		}
		if json.Unmarshal(body, &list) == nil && list.Results != nil {
			return int64(len(list.Results))
		}
	}
	if body[0] == '[' {
		var arr []json.RawMessage
		if json.Unmarshal(body, &arr) == nil {
			return int64(len(arr))
		}
	}
	return 1
}
