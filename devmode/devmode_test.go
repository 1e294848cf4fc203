package devmode

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The Confluence simulator takes an app token as genuine only when dev
// mode's key signed it: not another key's, not another kind of dev token,
// not an unsigned one.
func TestCheckAppToken(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(3 * time.Hour)
	check := CheckAppToken(&key.PublicKey)

	good, err := AppToken(key, exp, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := check(good); !ok || !got.Equal(exp) {
		t.Fatalf("own token: %v %v", got, ok)
	}
	// An expired one is still recognised: expiry is the simulator's to judge.
	old, _ := AppToken(key, now.Add(-time.Hour), now.Add(-4*time.Hour))
	if got, ok := check(old); !ok || !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("expired token: %v %v", got, ok)
	}

	foreign, _ := AppToken(other, exp, now)
	fit, _ := FIT(key, "712020:abc", "http://127.0.0.1:1/ex/confluence/"+CloudID, now)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"exp": exp.Unix()})
	none.Header["kid"] = AppTokenKeyID
	unsigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix()})
	hs.Header["kid"] = AppTokenKeyID
	hmac, _ := hs.SignedString([]byte("secret"))
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2]
	for name, tok := range map[string]string{
		"another key's": foreign, "a FIT": fit, "unsigned": unsigned, "HS256": hmac,
		"tampered": tampered, "garbage": "not-a-token", "empty": "",
	} {
		if _, ok := check(tok); ok {
			t.Errorf("%s token accepted", name)
		}
	}
}
