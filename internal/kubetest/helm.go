package kubetest

import (
	"os"
	"path/filepath"
	"testing"
)

// HelmPath is the path of the helm binary that scripts/kube-tools.sh installs (the version
// go.mod requires of helm.sh/helm/v4), relative to the repository root.
const HelmPath = ".bin/helm/helm"

// EnvHelm names an environment variable that overrides HelmPath.
const EnvHelm = "MESHRELAY_HELM"

// UseHelm puts the helm binary first on PATH for the rest of the test, where `meshrelay
// cluster register --install` (and internal/register) look for it: $MESHRELAY_HELM when
// set, else <repo>/.bin/helm/helm. It sets PATH with t.Setenv, so the test must not be
// parallel. It fails the test, naming scripts/kube-tools.sh, when the file is missing or not
// executable. It returns the binary's path.
func UseHelm(t testing.TB) string {
	t.Helper()
	path, from := os.Getenv(EnvHelm), EnvHelm
	if path == "" {
		path, from = filepath.Join(RepoRoot(t), HelmPath), "the default"
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("kubetest: helm not found at %s (%s): run scripts/kube-tools.sh helm to install it "+
			"(scripts/test.sh and make test run it), or set %s to a helm v4 binary", path, from, EnvHelm)
	}
	// A directory holding only helm, so that nothing else on PATH changes.
	dir := t.TempDir()
	if err := os.Symlink(path, filepath.Join(dir, "helm")); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return path
}
