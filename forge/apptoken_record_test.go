package forge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/forge-remote/forge-remote/store"
)

const recordInst = "ari:cloud:ecosystem::installation/9a8b7c6d-5e4f-4a3b-8c2d-000000000001"

// sampleJWT is shaped as Forge's app system tokens: three base64url
// segments, a 256-byte signature.
var sampleJWT = func() string {
	enc := base64.RawURLEncoding.EncodeToString
	sig := make([]byte, 256)
	for i := range sig {
		sig[i] = byte(i * 7)
	}
	return enc([]byte(`{"alg":"RS256","typ":"JWT","kid":"forge/app-system-token/1"}`)) + "." +
		enc([]byte(`{"iss":"https://auth.atlassian.com","aud":"api.atlassian.com","exp":1795000000,"scope":"read:app-system-token"}`)) + "." +
		enc(sig)
}()

func sampleAppToken() AppToken {
	return AppToken{
		InstallationID: recordInst,
		APIBaseURL:     "https://api.atlassian.com/ex/confluence/5b10ac8d-82e0-4b22-8c7d-000000000001",
		CloudID:        "5b10ac8d-82e0-4b22-8c7d-000000000001",
		Token:          sampleJWT,
		Exp:            time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC),
		UpdatedAt:      time.Date(2026, 11, 22, 12, 0, 0, 123456789, time.UTC),
		FromUser:       true,
	}
}

func sameAppToken(a, b AppToken) bool {
	return a.InstallationID == b.InstallationID && a.APIBaseURL == b.APIBaseURL && a.CloudID == b.CloudID &&
		a.Token == b.Token && a.Exp.Equal(b.Exp) && a.UpdatedAt.Equal(b.UpdatedAt) && a.FromUser == b.FromUser
}

func TestAppTokenRecordRoundTrip(t *testing.T) {
	for _, tok := range []AppToken{sampleAppToken(), {InstallationID: recordInst, Exp: time.Unix(1, 0), UpdatedAt: time.Unix(0, 1)}, func() AppToken {
		t := sampleAppToken()
		t.FromUser, t.APIBaseURL, t.CloudID = false, "", ""
		return t
	}()} {
		b := encodeAppToken(tok)
		got, err := decodeAppToken(recordInst, b)
		if err != nil || !sameAppToken(got, tok) {
			t.Fatalf("round trip of %v: %+v, %v", tok, got, err)
		}
	}
	// A time an int64 of nanoseconds cannot hold (a legacy record's zero
	// time) is clamped: it stays before, or after, every real time.
	zero, err := decodeAppToken(recordInst, encodeAppToken(AppToken{}))
	if err != nil || !zero.Exp.Before(time.Unix(0, 0)) || !zero.UpdatedAt.Before(time.Unix(0, 0)) {
		t.Fatalf("zero times: %+v %v", zero, err)
	}
	// The point of the binary form: smaller than the JSON it replaces, the
	// JWT a quarter smaller than its base64.
	tok := sampleAppToken()
	js, _ := json.Marshal(tok)
	b := encodeAppToken(tok)
	if b[1]&appTokenPacked == 0 || len(b) > len(js)-len(tok.Token)/4-100 {
		t.Errorf("binary record %d bytes (flags %b), JSON %d, token %d", len(b), b[1], len(js), len(tok.Token))
	}
}

// Tokens that are not JWTs, or whose base64 would not come back the same,
// are stored as they are, and read back unchanged.
func TestAppTokenRecordUnpackableTokens(t *testing.T) {
	for _, tok := range []string{
		"opaque-token",
		"a.b",           // two segments
		"a.b.c.d",       // four
		"eyJ.eyJ.x",     // "x" is not a whole base64 group
		"eyK.e30.c2ln",  // the first segment's last bits are not zero: decodes, encodes otherwise
		"e30=.e30.c2ln", // padded
		"e30.e30+.c2ln", // not the URL alphabet
		"..",            // three empty segments: packs, and comes back
		"e30.e30.",      // unsigned
	} {
		at := sampleAppToken()
		at.Token = tok
		got, err := decodeAppToken(recordInst, encodeAppToken(at))
		if err != nil || got.Token != tok {
			t.Errorf("%q: %q, %v", tok, got.Token, err)
		}
	}
	if _, ok := packJWT("e30.e30+.c2ln"); ok {
		t.Error("a token with '+' packed")
	}
	if _, ok := packJWT("eyK.e30.c2ln"); ok {
		t.Error("a non-canonical segment packed")
	}
}

// A record written as JSON by an earlier version is still read, and the
// installation is the key's, not what the record claims.
func TestAppTokenRecordLegacyJSON(t *testing.T) {
	tok := sampleAppToken()
	js, _ := json.Marshal(tok)
	got, err := decodeAppToken(recordInst, js)
	if err != nil || !sameAppToken(got, tok) {
		t.Fatalf("legacy: %+v, %v", got, err)
	}
	if got, err := decodeAppToken("other", js); err != nil || got.InstallationID != "other" {
		t.Fatalf("legacy under another key: %+v, %v", got, err)
	}
}

func TestAppTokenRecordMalformed(t *testing.T) {
	good := encodeAppToken(sampleAppToken())
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          good[:17],
		"version":        append([]byte{2}, good[1:]...),
		"flags":          append([]byte{appTokenV1, 4}, good[2:]...),
		"packed cut":     good[:len(good)-300],
		"url too long":   append(append([]byte{}, good[:18]...), 0xff, 0x01),
		"cloud cut":      good[:18+1+len(sampleAppToken().APIBaseURL)+1],
		"bad varint":     append(append([]byte{}, good[:18]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"broken JSON":    []byte(`{"token":`),
		"wrong JSON typ": []byte(`{"token":1}`),
	} {
		if got, err := decodeAppToken(recordInst, b); err == nil {
			t.Errorf("%s: decoded %+v", name, got)
		}
	}
}

// Through AppTokens: a store holding a legacy JSON record is read, compared
// against and, when replaced, rewritten in the binary form.
func TestAppTokensUpgradeLegacyRecord(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	kv := store.NewMemory(clock)
	ctx := context.Background()
	old := sampleAppToken()
	old.FromUser = false
	old.Exp = now.Add(time.Hour)
	js, _ := json.Marshal(old)
	if err := kv.Put(ctx, appTokenPrefix+recordInst, js, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	a := NewAppTokens(kv, AppTokensOptions{Now: clock})
	if got, err := a.Get(ctx, recordInst); err != nil || !sameAppToken(got, old) {
		t.Fatalf("legacy get: %+v %v", got, err)
	}
	var listed int
	if err := a.List(ctx, func(got AppToken) error {
		listed++
		if !sameAppToken(got, old) {
			t.Errorf("listed %+v", got)
		}
		return nil
	}); err != nil || listed != 1 {
		t.Fatalf("list: %d %v", listed, err)
	}

	// An older token does not replace it, so the record stays as it was.
	inv := &Invocation{App: App{InstallationID: recordInst, APIBaseURL: old.APIBaseURL,
		Installation: &Installation{Contexts: []InstallationContext{{CloudID: old.CloudID}}}}}
	older := "h." + jwtPayload(t, now.Add(30*time.Minute)) + ".s"
	if err := a.Capture(ctx, inv, older); err != nil {
		t.Fatal(err)
	}
	if b, _ := kv.Get(ctx, appTokenPrefix+recordInst); !bytes.Equal(b, js) {
		t.Fatalf("an older token rewrote the legacy record: %q", b)
	}

	newer := "h." + jwtPayload(t, now.Add(3*time.Hour)) + ".s"
	a.ForgetAll()
	if err := a.Capture(ctx, inv, newer); err != nil {
		t.Fatal(err)
	}
	b, _ := kv.Get(ctx, appTokenPrefix+recordInst)
	if len(b) == 0 || b[0] != appTokenV1 {
		t.Fatalf("replaced record not binary: %q", b)
	}
	if got, err := a.Get(ctx, recordInst); err != nil || got.Token != newer || !got.Exp.Equal(now.Add(3*time.Hour)) {
		t.Fatalf("after replace: %+v %v", got, err)
	}
}

func FuzzDecodeAppToken(f *testing.F) {
	f.Add(encodeAppToken(sampleAppToken()))
	js, _ := json.Marshal(sampleAppToken())
	f.Add(js)
	f.Add([]byte{appTokenV1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0})
	f.Add([]byte{appTokenV1, appTokenPacked, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 'a', 0, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAppToken(recordInst, b)
		if err != nil {
			return
		}
		// Whatever decodes, encodes to a record that decodes the same.
		again, err := decodeAppToken(recordInst, encodeAppToken(got))
		if err != nil || !sameAppTokenFuzz(got, again) {
			t.Fatalf("%+v re-encoded as %+v (%v)", got, again, err)
		}
	})
}

// sameAppTokenFuzz is sameAppToken where times outside int64 nanoseconds
// (a legacy JSON record may hold any) are clamped as encodeAppToken does.
func sameAppTokenFuzz(a, b AppToken) bool {
	a.Exp, a.UpdatedAt = time.Unix(0, appTokenNanos(a.Exp)), time.Unix(0, appTokenNanos(a.UpdatedAt))
	return sameAppToken(a, b)
}

// jwtPayload is a JWT's middle segment holding exp, all TokenExpiry reads.
func jwtPayload(t *testing.T, exp time.Time) string {
	t.Helper()
	b, err := json.Marshal(map[string]int64{"exp": exp.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
