package service_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The layers stay apart: the domain root and the wiring of a replica reach
// no Dapr package, even indirectly (the adapters are built by daprdeps),
// and core reaches no loader or adapter of the project.
func TestLayers(t *testing.T) {
	const mod = "github.com/open-autoglm/autoglm/app/"
	for _, tc := range []struct {
		pkg     string
		allowed func(dep string) bool // of the project's own packages
	}{
		{"core", func(dep string) bool {
			return dep == "clock" || dep == "merge" || dep == "internal/errcode" || dep == "internal/jsonvalue"
		}},
		{"service", func(dep string) bool {
			return !strings.HasPrefix(dep, "dapr") || dep == "daprsub" // daprsub: plain net/http routes
		}},
	} {
		out, err := exec.Command("go", "list", "-deps", mod+tc.pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", tc.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "github.com/dapr/") {
				t.Errorf("%s depends on %s", tc.pkg, dep)
			}
			if own, ok := strings.CutPrefix(dep, mod); ok && own != tc.pkg && !tc.allowed(own) {
				t.Errorf("%s depends on %s", tc.pkg, own)
			}
		}
	}
}
