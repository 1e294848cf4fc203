package forge

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/internal/corpus"
	"github.com/forge-remote/forge-remote/internal/jsonread"
)

// A FIT's claims as Forge sends them for a Custom UI call.
const uiClaims = `{"app":{"installationId":"ari:cloud:ecosystem::installation/0c5dbd0a-0e3f-4d8e-9a55-5a3f1ad2b0de","apiBaseUrl":"https://api.atlassian.com/ex/confluence/a436116f-02ce-4520-8fbb-7301462a1674","id":"ari:cloud:ecosystem::app/6e5b6d4a-1c55-4f4a-8bb4-1b35b1dd7cd3","appVersion":"2.4.0","environment":{"type":"PRODUCTION","id":"9d1b0e7e-4b5b-4d0f-a1c9-4b9f5d3e2a10"},"module":{"type":"xen:macro","key":"weavy-chat"},"license":{"isActive":true,"type":"commercial","billingPeriod":"MONTHLY","ceId":"x","supportEntitlementNumber":"SEN-1"}},"context":{"cloudId":"a436116f-02ce-4520-8fbb-7301462a1674","moduleKey":"weavy-chat","siteUrl":"https://example.atlassian.net","localId":"3f0c","accountId":"557058:f3b0cd4c","extension":{"type":"macro","content":{"id":"98305"},"config":null,"isEditing":false,"references":[1,2.5e3,-0.0,true,false,null,"x"]}},"principal":"557058:f3b0cd4c","aud":"ari:cloud:ecosystem::app/6e5b6d4a-1c55-4f4a-8bb4-1b35b1dd7cd3","iss":"forge/invocation-token","iat":1763800000,"nbf":1763800000,"exp":1763800060,"jti":"c7a1"}`

// A trigger's claims: no principal, no context, the installation's contexts.
const triggerClaims = `{"app":{"installationId":"ari:cloud:ecosystem::installation/1","apiBaseUrl":"https://api","id":"ari:cloud:ecosystem::app/2","installation":{"id":"ari:cloud:ecosystem::installation/1","contexts":[{"name":"site","apiBaseUrl":"https://api","cloudId":"c1"},{"cloudId":"c2"}]}},"aud":["ari:cloud:ecosystem::app/2","other"],"iss":"forge/invocation-token","exp":1763800060.75,"iat":"1763800000","icLabel":"x"}`

var claimSeeds = []string{
	uiClaims,
	triggerClaims,
	`{}`, `null`, ` {} `, `[]`, `"x"`, `5`, ``, `{`, `{"iss":}`, `{"iss":"a",}`, `{,}`, `{"iss" "a"}`, `{} x`, `{}{}`,
	// Types: null leaves a field, pointers go nil, wrong types fail.
	`{"iss":null,"exp":null,"app":null,"context":null}`,
	`{"iss":"a","iss":null}`, `{"iss":5}`, `{"iss":true}`, `{"iss":{}}`, `{"app":[]}`, `{"app":"x"}`,
	`{"app":{"installation":null}}`, `{"app":{"installation":{"id":"a"},"installation":null}}`,
	`{"app":{"installation":"x"}}`, `{"app":{"installation":{"id":"a"},"installation":"x"}}`,
	`{"app":{"license":{"isActive":1}}}`, `{"app":{"license":{"isActive":null}}}`, `{"app":{"license":[]}}`,
	`{"app":{"license":{"active":false,"isActive":true}}}`, `{"app":{"license":{"active":true,"active":null}}}`,
	`{"app":{"license":{"active":"true"}}}`, `{"app":{"license":{"active":1}}}`,
	// The page, the space and user-based billing, as Forge signs them.
	`{"context":{"extension":{"type":"macro","content":{"id":"98305","type":"page","subtype":null},"space":{"id":"65538","key":"DS"}}}}`,
	`{"context":{"extension":{"content":{"id":98305}}}}`, `{"context":{"extension":{"space":"DS"}}}`, `{"context":{"extension":null}}`,
	`{"context":{"extension":{"content":{"id":"1"}},"extension":{"space":{"key":"K"}}}}`, `{"context":{"extension":[]}}`,
	`{"context":{"userAccess":{"enabled":true,"hasAccess":false}}}`, `{"context":{"userAccess":null}}`,
	`{"context":{"userAccess":{"enabled":"yes"}}}`, `{"context":{"userAccess":[]}}`, `{"context":{"userAccess":{}},"context":{"userAccess":{"hasAccess":true}}}`,
	`{"principal":"unidentified","context":{"accountId":"unidentified","accountType":"anonymous"}}`,
	// Repeated keys merge into the same field.
	`{"app":{"id":"a","module":{"key":"k"}},"app":{"installationId":"i","module":{"type":"t"}}}`,
	`{"app":{"installation":{"contexts":[{"name":"a","cloudId":"x"},{"name":"b"},{"name":"c"}]},"installation":{"contexts":[{"name":"d"}]},"installation":{"contexts":[{"apiBaseUrl":"u"},{},{}]}}}`,
	`{"app":{"installation":{"contexts":[{"name":"a"}]},"installation":{"contexts":[]}}}`,
	`{"app":{"installation":{"contexts":[null,{"name":"a"}]}}}`, `{"app":{"installation":{"contexts":[1]}}}`,
	`{"app":{"installation":{"contexts":{}}}}`, `{"app":{"installation":{"contexts":null}}}`,
	// Names: exact or case-insensitive, escaped, Unicode folds.
	`{"ISS":"a","Exp":1,"APP":{"INSTALLATIONID":"i"},"PrincipaL":"p"}`, `{"\u0069ss":"a","s\u017Fb":"x"}`,
	`{"ſub":"s","\u212Aey":"k","app":{"module":{"\u212Aey":"k"}}}`, `{"iss\u0000":"a"}`, `{"i\ud800ss":"a"}`,
	// Strings: escapes, surrogates, invalid UTF-8, control characters.
	`{"iss":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\ud800x"}`, `{"iss":"` + "\xff\xfe" + `"}`, `{"iss":"é"}`,
	`{"iss":"a` + "\x01" + `"}`, `{"iss":"\x"}`, `{"iss":"\u12"}`, `{"iss":"\u12G4"}`, `{"iss":"abc`,
	// Dates: numbers, fractions, strings, out of range.
	`{"exp":1.5e9,"nbf":-1,"iat":0}`, `{"exp":1e400}`, `{"exp":"1e9"}`, `{"exp":"x"}`, `{"exp":" 1"}`,
	`{"exp":true}`, `{"exp":[]}`, `{"exp":{}}`, `{"exp":01}`, `{"exp":1.}`, `{"exp":-}`, `{"exp":1e}`, `{"exp":9.999999999e9}`,
	`{"exp":-1.5}`, `{"exp":123456789012345678901234567890}`,
	// Audience: string, array of strings, null, other.
	`{"aud":"a"}`, `{"aud":["a","b"]}`, `{"aud":[]}`, `{"aud":["a"],"aud":null}`, `{"aud":["a"],"aud":[]}`,
	`{"aud":[1]}`, `{"aud":["a",[]]}`, `{"aud":5}`, `{"aud":{}}`, `{"aud":["a",]}`,
	// Skipped values must still be valid JSON.
	`{"x":[1,{"a":[true,false,null]},"s"],"y":-0.5e-3}`, `{"x":tru}`, `{"x":[1 2]}`, `{"x":{"a" 1}}`, `{"x":+1}`,
	`{"x":.5}`, `{"x":[}`, `{"x":NaN}`,
	`{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
	`{"x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
	`{"x":` + strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat("}", 10001) + `}`,
}

// fuzzIntern is shared by every fuzz input, as the verifier's is by every FIT.
var fuzzIntern = jsonread.NewInterner()

// FuzzDecodeClaims holds decodeClaims to what golang-jwt's encoding/json
// decoding gave for the same bytes: both fail, or both give the same claims.
func FuzzDecodeClaims(f *testing.F) {
	for _, s := range claimSeeds {
		f.Add([]byte(s))
	}
	for _, c := range corpus.Read(f, "fit") {
		f.Add(c.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Invocation
		gotErr := decodeClaims(data, &got, fuzzIntern)

		var want Invocation
		var claims jwt.Claims = &want // as golang-jwt's ParseUnverified decodes
		wantErr := json.Unmarshal(data, &claims)

		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("decodeClaims(%q): error %v, encoding/json: error %v", data, gotErr, wantErr)
		}
		if gotErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeClaims(%q):\n got %+v\nwant %+v", data, got, want)
		}
	})
}

// Claims nothing reads never refuse a FIT, whatever their type; the ones
// read keep their meaning.
func TestDecodeClaimsIgnoresUnreadClaims(t *testing.T) {
	unread := []string{
		`"sub":%s`, `"jti":%s`, `"icLabel":%s`, `"somethingNew":%s`,
		`"app":{"installationId":"i","id":%s,"version":%s,"module":{"key":"k","type":%s},"license":{"active":false,"isActive":true,` +
			`"billingPeriod":%s,"ceId":%s,"supportEntitlementNumber":%s,"type":%s,"modes":%s,"capabilitySet":%s,"isEvaluation":%s,"trialEndDate":%s},` +
			`"installation":{"id":%s,"contexts":[{"name":%s,"apiBaseUrl":%s,"cloudId":"c1"}]}}`,
		`"context":{"cloudId":"c1","workspaceId":%s,"accountType":%s,"userAccess":{"enabled":true,"hasAccess":true,"x":%s}}`,
	}
	for _, v := range []string{`null`, `5`, `-1.5e300`, `true`, `"s"`, `{}`, `{"a":[1,null]}`, `[]`, `[{"b":"c"}]`} {
		for _, member := range unread {
			data := `{"iss":"forge/invocation-token",` + strings.ReplaceAll(member, "%s", v) + `,"principal":"p"}`
			var inv Invocation
			if err := decodeClaims([]byte(data), &inv, nil); err != nil {
				t.Errorf("%s: %v", data, err)
				continue
			}
			if inv.Issuer != "forge/invocation-token" || inv.Principal != "p" {
				t.Errorf("%s: decoded %+v", data, inv)
			}
			if strings.HasPrefix(member, `"app"`) && (inv.App.InstallationID != "i" || inv.App.Module.Key != "k" ||
				!inv.LicenseInactive() || inv.CloudID() != "c1") {
				t.Errorf("%s: app decoded as %+v", data, inv.App)
			}
		}
	}
}

var headerSeeds = []string{
	`{"alg":"RS256","kid":"k1","typ":"JWT"}`, `{"kid":"k1"}`, `{"alg":5,"kid":["k"]}`, `{"alg":"RS256","alg":5}`,
	`{"alg":5,"alg":"RS256"}`, `{"ALG":"RS256","Kid":"k"}`, `{"\u0061lg":"RS256"}`, `{"alg":"RS\u0032\u00356"}`,
	`null`, `[]`, `"x"`, `{"alg":"RS256"`, `{"alg":"RS256"} x`, `{"crit":["exp"],"alg":"none"}`, ``,
}

// FuzzDecodeHeader holds decodeHeader to golang-jwt's map decoding.
func FuzzDecodeHeader(f *testing.F) {
	for _, s := range headerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got joseHeader
		gotErr := decodeHeader(data, &got)

		var m map[string]any
		wantErr := json.Unmarshal(data, &m)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("decodeHeader(%q): error %v, encoding/json: error %v", data, gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		alg, _ := m["alg"].(string)
		kid, _ := m["kid"].(string)
		if got.alg != alg || got.kid != kid {
			t.Fatalf("decodeHeader(%q) = alg %q kid %q; encoding/json: alg %q kid %q", data, got.alg, got.kid, alg, kid)
		}
	})
}

func BenchmarkDecodeClaims(b *testing.B) {
	data := []byte(uiClaims)
	for _, in := range []*jsonread.Interner{nil, jsonread.NewInterner()} {
		name := "ours"
		if in != nil {
			name = "ours-interned"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var inv Invocation
				if err := decodeClaims(data, &inv, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var inv Invocation
			var claims jwt.Claims = &inv
			if err := json.Unmarshal(data, &claims); err != nil {
				b.Fatal(err)
			}
		}
	})
}
