package resolvers

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzTokenRequest holds the token resolver's payload decoding, and the body
// check, to encoding/json's answers on every input.
func FuzzTokenRequest(f *testing.F) {
	for _, s := range []string{
		`{"refresh":false}`, `{"refresh":true}`, `{}`, ``, ` `, `null`, `{"refresh":null}`, `{"REFRESH":true}`,
		`{"refresh":true,"refresh":false}`, `{"refresh":"true"}`, `{"refresh":1}`, `{"x":[1,{"y":null}],"refresh":true}`,
		`{"refresh":tru}`, `{"refresh":true`, `{"refresh":true}x`, `[]`, `"x"`, `{"\u0072efresh":true}`, `{"ſefresh":true}`,
		`{"refresh":true,}`, "{\"refresh\":true}\n", `{"x":"\ud800"}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if got, want := valid(data), json.Valid(data); got != want {
			t.Fatalf("valid(%q) = %v, json.Valid = %v", data, got, want)
		}
		got, gotErr := decodeTokenRequest(data)
		var want tokenRequest
		wantErr := DecodePayload(data, &want)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("decodeTokenRequest(%q): error %v, DecodePayload: error %v", data, gotErr, wantErr)
		}
		if gotErr != nil {
			if gotErr.Error() != wantErr.Error() {
				t.Fatalf("decodeTokenRequest(%q): error %q, DecodePayload: %q", data, gotErr, wantErr)
			}
			return
		}
		if got != want {
			t.Fatalf("decodeTokenRequest(%q) = %+v, DecodePayload: %+v", data, got, want)
		}
	})
}

// FuzzTokenAnswerJSON holds TokenAnswer.AppendJSON to json.Marshal.
func FuzzTokenAnswerJSON(f *testing.F) {
	f.Add("wyu_0123456789abcdefABCDEF", int64(3599))
	f.Add("", int64(0))
	f.Add(`a"b\c<d>&e`, int64(-1))
	f.Add("\u2028\xff\x00é", int64(1<<62))
	f.Fuzz(func(t *testing.T, tok string, exp int64) {
		a := TokenAnswer{AccessToken: tok, ExpiresIn: exp}
		want, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.AppendJSON([]byte("prefix")); !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("AppendJSON = %s, json.Marshal = %s", got, want)
		}
	})
}
