package server

import (
	"net/http"
	"testing"
)

func TestServes(t *testing.T) {
	cases := []struct {
		method, path string
		want         bool
	}{
		{"POST", "/triggers/scheduled", true},
		{"GET", "/triggers/scheduled", false},
		{"POST", "/triggers/nope", false},
		{"POST", "/resolvers/token", true},
		{"POST", "/resolvers/", false},
		{"POST", "/resolvers", true},
		{"GET", "/internal/installations", true},
		{"POST", "/triggers/scheduled/", false},
	}
	for _, tc := range cases {
		if got := Serves(tc.method, tc.path); got != tc.want {
			t.Errorf("Serves(%s %s) = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}

// TestHeaderNames: header() looks names up as they are, so each constant
// must already be in Go's canonical form.
func TestHeaderNames(t *testing.T) {
	for _, h := range []string{hdrAuthorization, hdrAppToken, hdrRequestID, hdrTraceID, hdrSpanID} {
		if c := http.CanonicalHeaderKey(h); c != h {
			t.Errorf("%q is not canonical (%q)", h, c)
		}
	}
}
