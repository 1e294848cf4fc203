package forge

import (
	"strings"
	"testing"
)

func TestNormalizeAppID(t *testing.T) {
	const want = "ari:cloud:ecosystem::app/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
	tests := []struct {
		name string
		in   string
		want string // "" = an error is expected
	}{
		{"ari", want, want},
		{"bare uuid", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", want},
		{"upper-case uuid", "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9", want},
		{"upper-case prefix", "ARI:cloud:ecosystem::app/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", want},
		{"surrounding space", "  " + want + "\n", want},
		{"empty", "", ""},
		{"prefix only", "ari:cloud:ecosystem::app/", ""},
		{"installation ari", "ari:cloud:ecosystem::installation/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", ""},
		{"connect key", "com.example.my-app", ""},
		{"uuid without dashes", "0f1e2d3c4b5a49788695a4b3c2d1e0f9", ""},
		{"dash misplaced", "0f1e2d3c4-b5a-4978-8695-a4b3c2d1e0f9", ""},
		{"non-hex", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fz", ""},
		{"trailing junk", want + "/x", ""},
		{"braced uuid", "{0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeAppID(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NormalizeAppID(%q) = %q, want an error", tt.in, got)
				}
				if !strings.HasPrefix(err.Error(), "forge: ") {
					t.Errorf("error %q lacks the forge: prefix", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeAppID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}
