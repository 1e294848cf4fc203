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

// The Confluence simulator takes a user token as the user it names only when
// dev mode's key signed it as a user token: an app token, a FIT, another
// key's or an unsigned one is nobody's user token, and a user token is no
// app token.
func TestCheckUserToken(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(UserTokenLifetime)
	check := CheckUserToken(&key.PublicKey)
	const account = "712020:abc"

	good, err := UserToken(key, account, exp, now)
	if err != nil {
		t.Fatal(err)
	}
	if id, got, ok := check(good); !ok || id != account || !got.Equal(exp) {
		t.Fatalf("own token: %q %v %v", id, got, ok)
	}
	if _, ok := CheckAppToken(&key.PublicKey)(good); ok {
		t.Error("a user token passes as an app token")
	}
	// An expired one is still recognised: expiry is the simulator's to judge.
	old, _ := UserToken(key, account, now.Add(-time.Hour), now.Add(-4*time.Hour))
	if id, got, ok := check(old); !ok || id != account || !got.Equal(now.Add(-time.Hour)) {
		t.Errorf("expired token: %q %v %v", id, got, ok)
	}
	if _, err := UserToken(key, "", exp, now); err == nil {
		t.Error("a user token for nobody")
	}

	foreign, _ := UserToken(other, account, exp, now)
	app, _ := AppToken(key, exp, now)
	fit, _ := FIT(key, account, "http://127.0.0.1:1/ex/confluence/"+CloudID, now)
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": account, "iss": "dev-forge-user", "exp": exp.Unix()})
	none.Header["kid"] = UserTokenKeyID
	unsigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	noSub := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": "dev-forge-user", "exp": exp.Unix()})
	noSub.Header["kid"] = UserTokenKeyID
	anonymous, _ := noSub.SignedString(key)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "A") + "B." + parts[2]
	for name, tok := range map[string]string{
		"another key's": foreign, "an app token": app, "a FIT": fit, "unsigned": unsigned,
		"without sub": anonymous, "tampered": tampered, "garbage": "not-a-token", "empty": "",
	} {
		if id, _, ok := check(tok); ok {
			t.Errorf("%s token accepted as %q's", name, id)
		}
	}
}
