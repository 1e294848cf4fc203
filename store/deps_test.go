package store_test

import (
	"os/exec"
	"strings"
	"testing"
)

// Importing the store contract, or forge as a library, must not link a
// database: the backends live in subpackages for that.
func TestNoBackendInDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	for _, pkg := range []string{
		"github.com/forge-remote/forge-remote/store",
		"github.com/forge-remote/forge-remote/forge",
	} {
		out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list -deps %s listed %q; want the package and its dependencies", pkg, deps)
		}
		for _, dep := range deps {
			for _, backend := range []string{"go.etcd.io/bbolt", "github.com/redis/go-redis/v9"} {
				if dep == backend || strings.HasPrefix(dep, backend+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
