package main

import (
	"os/exec"
	"path"
	"strings"
	"testing"
)

// TestProductDependencies keeps the product binary lean (issue 15): no benchmark, no Helm SDK
// (cluster register --install runs the helm binary), no DNS server library (the failover
// benchmark's), and no test kit of this module (a package that imports "testing", or is
// named <pkg>test, exists for tests). Benchmarks live in cmd/meshrelay-bench.
func TestProductDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/meshrelay/meshrelay/"
	// Forbidden packages and everything under them.
	forbidden := []string{module + "internal/bench", module + "cmd/meshrelay-bench", module + "test", "helm.sh", "github.com/miekg/dns"}
	deps := 0
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		deps++
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("cmd/meshrelay depends on %s", pkg)
			}
		}
		if !strings.HasPrefix(pkg, module) {
			continue
		}
		if strings.HasSuffix(path.Base(pkg), "test") {
			t.Errorf("cmd/meshrelay depends on the test kit %s", pkg)
		}
		for _, imp := range imports {
			if imp == "testing" {
				t.Errorf("cmd/meshrelay depends on %s, which imports testing (a test kit)", pkg)
			}
		}
	}
	if deps < 100 {
		t.Fatalf("go list -deps listed %d packages: not the product's dependencies", deps)
	}
}
