// Package connect keeps each installation's Atlassian Connect clientKey before
// Connect ends: it verifies Connect's signed install callbacks, reads the
// reserved clientKey app property through Forge, and stores the mapping.
package connect

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"slices"
	"strings"
)

// CanonicalRequest is Atlassian's canonical request of a query string hash:
// METHOD "&" URI "&" QUERY, where URI is the escaped path relative to
// basePath (the path of the app's baseUrl, which Atlassian discards) and
// QUERY the sorted, percent-encoded parameters without "jwt".
//
// The path is hashed as sent (still percent-encoded, as atlassian-jwt does),
// with "&" encoded as %26 so that a path cannot pass for a query. Names and
// values are sorted by their encoded form, as Atlassian's Java reference
// says; repeated values are joined by a literal ",".
func CanonicalRequest(method, escapedPath, rawQuery, basePath string) string {
	return strings.ToUpper(method) + "&" + canonicalURI(escapedPath, basePath) + "&" + canonicalQuery(rawQuery)
}

// QueryStringHash is the hex SHA-256 of CanonicalRequest: the `qsh` claim.
func QueryStringHash(method, escapedPath, rawQuery, basePath string) string {
	sum := sha256.Sum256([]byte(CanonicalRequest(method, escapedPath, rawQuery, basePath)))
	return hex.EncodeToString(sum[:])
}

func canonicalURI(p, basePath string) string {
	if base := strings.TrimRight(basePath, "/"); base != "" {
		if p == base {
			p = ""
		} else if rest, ok := strings.CutPrefix(p, base+"/"); ok {
			p = "/" + rest
		}
	}
	p = strings.ReplaceAll(p, "&", "%26")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
		if p == "" {
			p = "/"
		}
	}
	return p
}

func canonicalQuery(rawQuery string) string {
	// A malformed pair is dropped by ParseQuery; the hash then differs from
	// the signer's, which is the refusal such a request deserves.
	q, _ := url.ParseQuery(rawQuery)
	type param struct {
		name   string
		values []string
	}
	params := make([]param, 0, len(q))
	for name, values := range q {
		if name == "jwt" {
			continue
		}
		enc := make([]string, len(values))
		for i, v := range values {
			enc[i] = percentEncode(v)
		}
		slices.Sort(enc)
		params = append(params, param{percentEncode(name), enc})
	}
	slices.SortFunc(params, func(a, b param) int { return strings.Compare(a.name, b.name) })
	var sb strings.Builder
	for i, p := range params {
		if i > 0 {
			sb.WriteByte('&')
		}
		sb.WriteString(p.name)
		sb.WriteByte('=')
		sb.WriteString(strings.Join(p.values, ","))
	}
	return sb.String()
}

// percentEncode keeps only RFC 3986's unreserved characters: a space is %20,
// "*" %2A, "~" stays (url.QueryEscape already escapes "*" and keeps "~").
func percentEncode(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
