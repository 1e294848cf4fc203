package weavy

import (
	"errors"
	"strings"
	"testing"
)

func TestUID(t *testing.T) {
	const cloud = "a436116f-02ce-4520-8fbb-7301462a1674"
	tests := []struct {
		name      string
		scope     UIDScope
		cloudID   string
		accountID string
		want      string // "" means an error
	}{
		{"account hex", ScopeAccount, "", "5b10ac8d82e05b22cc7d4ef5", "5b10ac8d82e05b22cc7d4ef5"},
		{"account with colon", ScopeAccount, cloud, "712020:9b1c2d3e-aaaa", "712020:9b1c2d3e-aaaa"},
		{"account all digits", ScopeAccount, "", "557058", "u-557058"},
		{"account empty", ScopeAccount, "", "", ""},
		{"account whitespace", ScopeAccount, "", "abc def", ""},
		{"account tab", ScopeAccount, "", "abc\t", ""},
		{"account too long", ScopeAccount, "", strings.Repeat("a", 257), ""},
		{"account at limit", ScopeAccount, "", strings.Repeat("a", 256), strings.Repeat("a", 256)},
		{"site", ScopeSite, cloud, "5b10ac8d82e05b22cc7d4ef5", cloud + "-5b10ac8d82e05b22cc7d4ef5"},
		{"site all digits", ScopeSite, "123", "456", "123-456"},
		{"site without cloudId", ScopeSite, "", "5b10ac8d82e05b22cc7d4ef5", ""},
		{"site cloudId whitespace", ScopeSite, "a b", "5b10", ""},
		{"site too long", ScopeSite, cloud, strings.Repeat("a", 220), ""},
		{"unknown scope", UIDScope("global"), cloud, "5b10", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := UID(tt.scope, tt.cloudID, tt.accountID)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("UID = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("UID = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestUIDErrorsAreInvalidUID(t *testing.T) {
	if _, err := UID(ScopeAccount, "", " "); !errors.Is(err, ErrInvalidUID) {
		t.Fatalf("err = %v", err)
	}
}

// "." and ".." would be dot segments in /api/users/{uid}/…: refused as uids,
// whoever asks (UID, the client's calls); dots within a uid are fine.
func TestDotSegmentUIDs(t *testing.T) {
	for _, uid := range []string{".", ".."} {
		if _, err := UID(ScopeAccount, "", uid); !errors.Is(err, ErrInvalidUID) {
			t.Errorf("UID of accountId %q: %v", uid, err)
		}
		if err := checkUID(uid); !errors.Is(err, ErrInvalidUID) {
			t.Errorf("checkUID(%q) = %v", uid, err)
		}
	}
	for _, uid := range []string{"...", ".a", "a..b", "u-.."} {
		if err := checkUID(uid); err != nil {
			t.Errorf("checkUID(%q) = %v", uid, err)
		}
	}
}

func TestParseUIDScope(t *testing.T) {
	tests := []struct {
		in   string
		want UIDScope
		err  bool
	}{
		{"", ScopeAccount, false},
		{"account", ScopeAccount, false},
		{"site", ScopeSite, false},
		{"Site", "", true},
		{"tenant", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseUIDScope(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseUIDScope(%q) = %q, %v", tt.in, got, err)
			}
		})
	}
}

func TestAccountID(t *testing.T) {
	const cloud = "a436116f-02ce-4520-8fbb-7301462a1674"
	tests := []struct {
		name    string
		scope   UIDScope
		uid     string
		want    string
		wantOK  bool
		cloudID string // for the round trip through UID
	}{
		{"account hex", ScopeAccount, "5b10ac8d82e05b22cc7d4ef5", "5b10ac8d82e05b22cc7d4ef5", true, ""},
		{"account with colon", ScopeAccount, "712020:9b1c2d3e-aaaa", "712020:9b1c2d3e-aaaa", true, ""},
		{"account all digits", ScopeAccount, "u-557058", "557058", true, ""},
		{"account u- not digits", ScopeAccount, "u-abc", "u-abc", true, ""},
		{"account numeric uid", ScopeAccount, "557058", "", false, ""},
		{"account empty", ScopeAccount, "", "", false, ""},
		{"account whitespace", ScopeAccount, "a b", "", false, ""},
		{"site uuid cloud", ScopeSite, cloud + "-712020:9b1c2d3e-aaaa", "712020:9b1c2d3e-aaaa", true, cloud},
		{"site uuid cloud hex account", ScopeSite, cloud + "-5b10ac8d", "5b10ac8d", true, cloud},
		{"site short cloud", ScopeSite, "123-456", "456", true, "123"},
		{"site no dash", ScopeSite, "5b10ac8d", "", false, ""},
		{"site empty account", ScopeSite, cloud + "-", "", false, ""},
		{"unknown scope", UIDScope("global"), "5b10", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := AccountID(tt.scope, tt.uid)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("AccountID(%q, %q) = %q, %v; want %q, %v", tt.scope, tt.uid, got, ok, tt.want, tt.wantOK)
			}
			if !ok {
				return
			}
			if uid, err := UID(tt.scope, tt.cloudID, got); err != nil || uid != tt.uid {
				t.Fatalf("UID(AccountID(uid)) = %q, %v; want %q", uid, err, tt.uid)
			}
		})
	}
}
