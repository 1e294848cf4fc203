package bearer

import "testing"

func TestToken(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc": "abc", "bearer abc": "abc", "BEARER  abc ": "abc",
		"": "", "Bearer": "", "Bearer ": "", "Bearer    ": "", "Basic abc": "", "Bearerabc": "",
	} {
		got, ok := Token(h)
		if got != want || ok != (want != "") {
			t.Errorf("Token(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
}
