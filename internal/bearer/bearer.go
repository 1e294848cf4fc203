// Package bearer reads the credentials of an "Authorization: Bearer …"
// header, for the FIT middleware and the internal routes alike.
package bearer

import "strings"

// Token is the credentials of an Authorization header's value; the scheme is
// matched case-insensitively. It is false when there are none.
func Token(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(scheme):])
	return tok, tok != ""
}
