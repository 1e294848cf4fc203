package weavy

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/forge-remote/forge-remote/internal/ids"
)

// UIDScope decides how an Atlassian user maps to a Weavy user (WEAVY_UID_SCOPE).
//
// ScopeAccount uses the accountId itself. An accountId is global across
// Atlassian sites, so a person is one Weavy user on every site that uses the
// same Weavy environment: simple, and what Weavy's Forge tutorial does. The
// cost: customers sharing one Weavy environment share its user directory and
// can see each other's users.
//
// ScopeSite prefixes the accountId with the site's cloudId. Users are kept
// apart per Confluence site, but a person on two sites is two Weavy users
// (two profiles, two sets of conversations and notifications).
//
// Changing the scope of a running deployment makes every user a new Weavy user.
type UIDScope string

const (
	ScopeAccount UIDScope = "account"
	ScopeSite    UIDScope = "site"
)

// maxUIDLen is Weavy's limit on a uid.
const maxUIDLen = 256

// ParseUIDScope reads WEAVY_UID_SCOPE; the empty string is the default,
// ScopeAccount.
func ParseUIDScope(s string) (UIDScope, error) {
	switch UIDScope(s) {
	case "", ScopeAccount:
		return ScopeAccount, nil
	case ScopeSite:
		return ScopeSite, nil
	}
	return "", fmt.Errorf("weavy: uid scope %q: want %q or %q", s, ScopeAccount, ScopeSite)
}

// UID is the Weavy uid of the Atlassian user accountID under scope; cloudID
// (the site) is needed for ScopeSite only. The result obeys Weavy's rules: no
// whitespace, at least one non-digit, at most 256 characters; and it is
// never "." or "..", which would be dot segments in Weavy's API paths.
func UID(scope UIDScope, cloudID, accountID string) (string, error) {
	if err := checkPart("accountId", accountID); err != nil {
		return "", err
	}
	var uid string
	switch scope {
	case ScopeAccount:
		uid = accountID
		if allDigits(uid) {
			// Weavy reads an all-digit uid as its own numeric user id. Real
			// accountIds are hex or "<n>:<uuid>", so no accountId starts "u-".
			uid = "u-" + uid
		}
	case ScopeSite:
		if err := checkPart("cloudId", cloudID); err != nil {
			return "", err
		}
		uid = cloudID + "-" + accountID // the '-' makes it never all digits
	default:
		return "", fmt.Errorf("weavy: unknown uid scope %q", scope)
	}
	if err := checkUID(uid); err != nil {
		return "", err
	}
	return uid, nil
}

func checkPart(name, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidUID, name)
	}
	if hasSpaceOrControl(s) {
		return fmt.Errorf("%w: %s contains whitespace or control characters", ErrInvalidUID, name)
	}
	return nil
}

// checkUID enforces Weavy's uid rules.
func checkUID(uid string) error {
	switch {
	case uid == "":
		return fmt.Errorf("%w: empty", ErrInvalidUID)
	case !utf8.ValidString(uid):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidUID)
	case utf8.RuneCountInString(uid) > maxUIDLen:
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidUID, maxUIDLen)
	case hasSpaceOrControl(uid):
		return fmt.Errorf("%w: contains whitespace or control characters", ErrInvalidUID)
	case allDigits(uid):
		return fmt.Errorf("%w: all digits (Weavy would read it as a numeric id)", ErrInvalidUID)
	case uid == "." || uid == "..":
		// escapeSegment keeps dots: in /api/users/{uid}/tokens these would be
		// dot segments, which a URL resolver or proxy takes for a path step.
		return fmt.Errorf("%w: %q is a dot segment", ErrInvalidUID, uid)
	}
	return nil
}

func hasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// AccountID is the inverse of UID: the Atlassian accountId that uid was made
// from under scope, and whether uid is one UID can produce. Under ScopeSite the
// cloudId before the accountId is a UUID (36 characters); a uid made from any
// other cloudId is split at its first '-'.
func AccountID(scope UIDScope, uid string) (string, bool) {
	var cloudID, accountID string
	switch scope {
	case ScopeAccount:
		accountID = uid
		if rest, ok := strings.CutPrefix(uid, "u-"); ok && allDigits(rest) {
			accountID = rest
		}
	case ScopeSite:
		if len(uid) > ids.UUIDLen && uid[ids.UUIDLen] == '-' && ids.IsUUID(uid[:ids.UUIDLen]) {
			cloudID, accountID = uid[:ids.UUIDLen], uid[ids.UUIDLen+1:]
		} else {
			var ok bool
			if cloudID, accountID, ok = strings.Cut(uid, "-"); !ok {
				return "", false
			}
		}
	default:
		return "", false
	}
	// The round trip rules out every uid UID would not have made.
	if again, err := UID(scope, cloudID, accountID); err != nil || again != uid {
		return "", false
	}
	return accountID, true
}
