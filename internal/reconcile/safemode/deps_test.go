package safemode_test

import (
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPureCoreDependencies keeps the safe-mode decision a pure core (CONVENTIONS: pure
// cores import no I/O), like tailscale's deptest: the standard library's pure parts and the
// resource types only, and no clock read.
func TestPureCoreDependencies(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatalf("read package: %v", err)
	}
	allowed := map[string]bool{
		"fmt": true, "sort": true, "strings": true, "time": true,
		"github.com/meshrelay/meshrelay/api/v1alpha1": true,
	}
	for _, imp := range pkg.Imports {
		if !allowed[imp] {
			t.Errorf("internal/reconcile/safemode imports %s; the decision must stay pure (no I/O, logging, metrics or store)", imp)
		}
	}
	for _, f := range pkg.GoFiles {
		src, err := os.ReadFile(filepath.Join(".", f))
		if err != nil {
			t.Fatal(err)
		}
		for _, clock := range []string{"time.Now(", "time.Since(", "time.Until(", "time.After(", "time.Sleep(", "time.NewTimer(", "time.NewTicker("} {
			if strings.Contains(string(src), clock) {
				t.Errorf("%s calls %s: the time is passed in", f, clock)
			}
		}
	}
}
