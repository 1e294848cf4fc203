package forge

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"
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
	// A time an int64 of nanoseconds cannot hold (the zero time) is clamped:
	// it stays before, or after, every real time.
	zero, err := decodeAppToken(recordInst, encodeAppToken(AppToken{}))
	if err != nil || !zero.Exp.Before(time.Unix(0, 0)) || !zero.UpdatedAt.Before(time.Unix(0, 0)) {
		t.Fatalf("zero times: %+v %v", zero, err)
	}
	// The point of the packing: the JWT a quarter smaller than its base64,
	// the rest of the record little more than its fields.
	tok := sampleAppToken()
	b := encodeAppToken(tok)
	fields := len(tok.APIBaseURL) + len(tok.CloudID) + len(tok.Token)
	if b[1]&appTokenPacked == 0 || len(b) > fields-len(tok.Token)/4+2+16+2 {
		t.Errorf("binary record %d bytes (flags %b), fields %d, token %d", len(b), b[1], fields, len(tok.Token))
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

func TestAppTokenRecordMalformed(t *testing.T) {
	good := encodeAppToken(sampleAppToken())
	for name, b := range map[string][]byte{
		"empty":        nil,
		"short":        good[:17],
		"version":      append([]byte{2}, good[1:]...),
		"flags":        append([]byte{appTokenV1, 4}, good[2:]...),
		"packed cut":   good[:len(good)-300],
		"url too long": append(append([]byte{}, good[:18]...), 0xff, 0x01),
		"cloud cut":    good[:18+1+len(sampleAppToken().APIBaseURL)+1],
		"bad varint":   append(append([]byte{}, good[:18]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"json":         []byte(`{"installationId":"x","token":"t","exp":"2026-11-22T15:00:00Z"}`),
	} {
		if got, err := decodeAppToken(recordInst, b); err == nil {
			t.Errorf("%s: decoded %+v", name, got)
		}
	}
}

func FuzzDecodeAppToken(f *testing.F) {
	f.Add(encodeAppToken(sampleAppToken()))
	f.Add([]byte{appTokenV1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0})
	f.Add([]byte{appTokenV1, appTokenPacked, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 'a', 0, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAppToken(recordInst, b)
		if err != nil {
			return
		}
		// Whatever decodes, encodes to a record that decodes the same.
		again, err := decodeAppToken(recordInst, encodeAppToken(got))
		if err != nil || !sameAppToken(got, again) {
			t.Fatalf("%+v re-encoded as %+v (%v)", got, again, err)
		}
	})
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
