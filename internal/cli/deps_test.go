package cli_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The production binary links no test kit: forgetest, storetest, redistest,
// connecttest and the like are for tests only. Dev mode's simulators live in
// devmode/ because dev mode runs them.
func TestBinaryLinksNoTestKit(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	const module = "github.com/forge-remote/forge-remote"
	out, err := exec.Command(gobin, "list", "-deps", module).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", module, err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 2 {
		t.Fatalf("go list -deps listed %q; want the program and its dependencies", deps)
	}
	for _, dep := range deps {
		if !strings.HasPrefix(dep, module+"/") {
			continue
		}
		if last := dep[strings.LastIndex(dep, "/")+1:]; strings.HasSuffix(last, "test") {
			t.Errorf("the binary links the test kit %s", dep)
		}
	}
}
