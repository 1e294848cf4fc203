package ids

import "testing"

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"3f6c1d2e-8b4a-4f5e-9c7d-2a1b0e9f8d7c": true,
		"3F6C1D2E-8B4A-4F5E-9C7D-2A1B0E9F8D7C": true,
		"3f6c1d2e-8b4a-4f5e-9c7d-2a1b0e9f8d7":  false,
		"3f6c1d2e08b4a-4f5e-9c7d-2a1b0e9f8d7c": false,
		"3f6c1d2e-8b4a-4f5e-9c7d-2a1b0e9f8d7g": false,
		"":                                     false,
	} {
		if got := IsUUID(s); got != want {
			t.Errorf("IsUUID(%q) = %v", s, got)
		}
	}
}
