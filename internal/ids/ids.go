// Package ids checks the shape of the identifiers Atlassian hands out, for the
// packages that parse them (app ids, cloud ids in Weavy uids).
package ids

// UUIDLen is the length of a UUID in its 8-4-4-4-12 hex form.
const UUIDLen = 36

// IsUUID reports whether s is a UUID in its 8-4-4-4-12 hex form (either case).
func IsUUID(s string) bool {
	if len(s) != UUIDLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
