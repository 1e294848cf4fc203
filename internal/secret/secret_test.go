package secret_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/forge-remote/forge-remote/internal/secret"
	"github.com/forge-remote/forge-remote/internal/secret/secrettest"
)

type holder struct {
	Key   secret.String
	Raw   secret.String
	Store secret.URL
	Unset secret.String
}

const (
	key      = "wys_key-never-printed-0123456789"
	raw      = "raw-bytes-never-printed-32-bytes"
	password = "url-password-never-printed"
)

func TestSecretsNeverPrinted(t *testing.T) {
	h := holder{Key: key, Raw: raw, Store: "redis://forge:" + password + "@cache:6379/0"}
	for _, v := range []any{h, &h, h.Key, h.Raw, h.Store} {
		secrettest.Hidden(t, secrettest.Print(t, v), key, raw, password)
	}
	secrettest.Shown(t, secrettest.Print(t, h),
		secret.Fingerprint(key), secret.Fingerprint(raw), "(unset)", // which secret is set, and which not
		"redis://forge:xxxxx@cache:6379/0", // the URL stays readable without its password
	)
}

func TestFingerprint(t *testing.T) {
	// The first 8 hex digits of SHA-256 ("abc" is FIPS 180-2's example).
	if got := secret.Fingerprint("abc"); got != "ba7816bf" {
		t.Errorf("Fingerprint(abc) = %q", got)
	}
	if got := secret.Fingerprint(""); got != "" {
		t.Errorf("Fingerprint of nothing = %q", got)
	}
	if secret.String("abc").Fingerprint() != "ba7816bf" {
		t.Error("String fingerprints differently from Fingerprint")
	}
	if s := secret.String("abc").String(); s != "(secret ba7816bf)" {
		t.Errorf("String() = %q", s)
	}
	if s := fmt.Sprintf("%v", secret.String("")); s != "(unset)" {
		t.Errorf("unset = %q", s)
	}
	if b := secret.String("").Bytes(); b != nil {
		t.Errorf("unset as bytes = %#v, want nil", b)
	}
}

func TestURLThatDoesNotParse(t *testing.T) {
	u := secret.URL("redis://user:" + password + "@host:port-is-not-a-number/0")
	if s := fmt.Sprintf("%v %s", u, u); strings.Contains(s, password) || !strings.Contains(s, "(unparsable URL)") {
		t.Errorf("printed %q", s)
	}
	if s := secret.URL("bolt://data/forge-remote.db").String(); s != "bolt://data/forge-remote.db" {
		t.Errorf("a URL without password prints as %q", s)
	}
}

// Reading a secret from JSON keeps its value: only printing hides it.
func TestSecretsDecode(t *testing.T) {
	var h holder
	if err := json.Unmarshal([]byte(`{"Key":"`+key+`","Raw":"`+raw+`","Store":"redis://x"}`), &h); err != nil {
		t.Fatal(err)
	}
	if string(h.Key) != key || string(h.Raw) != raw || string(h.Store) != "redis://x" {
		t.Errorf("decoded %q %q %q", string(h.Key), string(h.Raw), string(h.Store))
	}
}
