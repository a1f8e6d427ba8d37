package translate_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPureCoreDependencies keeps the translator a pure core (CONVENTIONS: pure cores import
// no gRPC, Redis, HTTP or client-go), like tailscale's deptest.
func TestPureCoreDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{"google.golang.org/grpc", "github.com/redis/", "net/http", "k8s.io/client-go", "github.com/meshrelay/meshrelay/internal/relay", "github.com/meshrelay/meshrelay/internal/snapshot/redisstore"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("internal/translate depends on %s", dep)
			}
		}
	}
}
