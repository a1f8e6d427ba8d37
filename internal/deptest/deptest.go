// Package deptest guards the seams between packages in tests, like tailscale's
// tstest/deptest: it lists what a package imports with `go list` and fails the test for each
// import that the package must not have. A seam holds only while a test fails when it is
// crossed. Only tests import this package.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

// Deps returns every package that pkg (an import path or a directory) depends on, directly
// or not, without its tests: `go list -deps`.
func Deps(t testing.TB, pkg string) []string {
	t.Helper()
	return list(t, "-deps", pkg)
}

// DepsWithTests is Deps with the dependencies of pkg's tests too: `go list -deps -test`.
func DepsWithTests(t testing.TB, pkg string) []string {
	t.Helper()
	return list(t, "-deps", "-test", pkg)
}

// Imports returns the packages that pkg's own (non-test) files import.
func Imports(t testing.TB, pkg string) []string {
	t.Helper()
	return list(t, "-f", `{{join .Imports "\n"}}`, pkg)
}

func list(t testing.TB, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.Fields(string(out))
}

// Forbid fails t once for every package in deps that is one of forbidden or lies under one
// of them (forbidden "net/http" covers "net/http/httptrace", not "net/httpx"). what names the
// package whose dependencies deps are.
func Forbid(t testing.TB, what string, deps []string, forbidden ...string) {
	t.Helper()
	if len(deps) == 0 {
		t.Fatalf("%s: no dependencies listed", what)
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("%s depends on %s (forbidden: %s)", what, dep, f)
			}
		}
	}
}
