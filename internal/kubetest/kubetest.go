// Package kubetest starts a real kube-apiserver (backed by a real etcd) for tests, through
// controller-runtime's envtest, with meshrelay's CRDs installed.
//
// The binaries are not downloaded: scripts/kube-tools.sh builds kube-apiserver from the Go
// module proxy (hack/kubetools) and provides etcd (Debian's etcd-server) in
// <repo>/.bin/envtest, which Start uses unless KUBEBUILDER_ASSETS names another directory.
// scripts/test.sh runs it before the tests. A test whose binaries are missing fails with a
// message naming scripts/kube-tools.sh; it never skips. The same script installs helm into
// <repo>/.bin/helm for the tests of `meshrelay cluster register --install`, which UseHelm puts
// on PATH (helm.go).
//
// Each Start gives a test its own API server and etcd (ready in a few seconds), stopped when the
// test ends. The API server authorizes with RBAC: Env.Client is an admin (system:masters),
// and AddUser and AddServiceAccount make identities bound to the ClusterRoles a test names,
// with a REST config and a kubeconfig file for child processes.
//
//	env := kubetest.Start(t, kubetest.WithCRDPaths(istioCRDs))
//	agent := env.AddServiceAccount(t, "meshrelay", "agent", "meshrelay-agent")
//	cmd := exec.Command(bin, "agent", "--kubeconfig", agent.Kubeconfig)
package kubetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
)

// module is the main module's path; the repository root is the directory of its go.mod.
const module = "github.com/meshrelay/meshrelay"

// CRDDir is the directory of meshrelay's CRDs, relative to the repository root.
const CRDDir = "charts/meshrelay-server/crds"

// AssetsDir is the directory of the kube-apiserver and etcd binaries that
// scripts/kube-tools.sh prepares, relative to the repository root.
const AssetsDir = ".bin/envtest"

// startTimeout bounds the start of etcd and of the API server each; envtest's default (20s)
// is short for a loaded 2-core CI machine running many test packages at once.
// KUBEBUILDER_CONTROLPLANE_START_TIMEOUT overrides it.
const startTimeout = 90 * time.Second

// Env is a running API server.
type Env struct {
	// Config is the REST config of an admin user (group system:masters).
	Config *rest.Config
	// Client is a client for Config whose Scheme knows client-go's built-in kinds,
	// apiextensions/v1 and meshrelay's custom resources.
	Client client.Client
	// Scheme is Client's scheme.
	Scheme *k8sruntime.Scheme
	// Kubeconfig is the path of a kubeconfig file for Config, for child processes and
	// kubectl.
	Kubeconfig string
	// Environment is the underlying envtest environment.
	Environment *envtest.Environment
	// CRDs are the CRDs installed: meshrelay's and those of WithCRDPaths.
	CRDs []*apiextensionsv1.CustomResourceDefinition
}

// Option configures Start.
type Option func(*options)

type options struct {
	crdPaths      []string
	apiServerArgs [][]string
	schemeAdders  []func(*k8sruntime.Scheme) error
	noMeshrelay   bool
}

// WithCRDPaths installs the CRDs in these directories or YAML files too (e.g. Istio's
// kubernetes/customresourcedefinitions.gen.yaml from the istio.io/api module). A path that
// does not exist fails the test.
func WithCRDPaths(paths ...string) Option {
	return func(o *options) { o.crdPaths = append(o.crdPaths, paths...) }
}

// WithAPIServerArg sets a kube-apiserver flag, without its leading "--", replacing its
// default: WithAPIServerArg("etcd-prefix", "/cluster-a").
func WithAPIServerArg(flag string, values ...string) Option {
	return func(o *options) { o.apiServerArgs = append(o.apiServerArgs, append([]string{flag}, values...)) }
}

// WithRBAC starts the API server with --authorization-mode=RBAC, so that the identities of
// AddUser and AddServiceAccount may do only what their ClusterRoles allow. It is envtest's
// default too; the option says so where a test depends on it.
func WithRBAC() Option { return WithAPIServerArg("authorization-mode", "RBAC") }

// WithScheme adds kinds to the scheme of Env.Client, such as Istio's typed resources.
func WithScheme(addToScheme ...func(*k8sruntime.Scheme) error) Option {
	return func(o *options) { o.schemeAdders = append(o.schemeAdders, addToScheme...) }
}

// WithoutMeshrelayCRDs leaves meshrelay's own CRDs out, for an API server that plays a
// cluster without them.
func WithoutMeshrelayCRDs() Option { return func(o *options) { o.noMeshrelay = true } }

// Start starts an API server and etcd, installs meshrelay's CRDs (and those of
// WithCRDPaths), and stops both when the test ends. It fails the test, naming
// scripts/kube-tools.sh, when the binaries are missing.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}

	assets := BinaryAssetsDir(t)
	scheme, err := newScheme(o.schemeAdders)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	crdPaths := o.crdPaths
	if !o.noMeshrelay {
		crdPaths = append([]string{filepath.Join(RepoRoot(t), CRDDir)}, crdPaths...)
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		Scheme:                scheme,
		CRDDirectoryPaths:     crdPaths,
		ErrorIfCRDPathMissing: true,
	}
	te.ControlPlane.GetAPIServer().Path = filepath.Join(assets, "kube-apiserver")
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		te.ControlPlaneStartTimeout = startTimeout
	}
	args := te.ControlPlane.GetAPIServer().Configure()
	for _, a := range o.apiServerArgs {
		args.Set(a[0], a[1:]...)
	}

	start := time.Now()
	cfg, err := te.Start()
	if err != nil {
		// A partly started environment still has processes to stop.
		_ = te.Stop()
		t.Fatalf("kubetest: start kube-apiserver and etcd from %s: %v", assets, err)
	}
	t.Cleanup(func() {
		if err := te.Stop(); err != nil {
			t.Errorf("kubetest: stop kube-apiserver and etcd: %v", err)
		}
	})
	t.Logf("kubetest: kube-apiserver at %s ready in %s", cfg.Host, time.Since(start).Round(time.Millisecond))

	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("kubetest: new client: %v", err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, te.KubeConfig, 0o600); err != nil {
		t.Fatalf("kubetest: write kubeconfig: %v", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, Kubeconfig: kubeconfig, Environment: te, CRDs: te.CRDs}
}

func newScheme(adders []func(*k8sruntime.Scheme) error) (*k8sruntime.Scheme, error) {
	s := k8sruntime.NewScheme()
	all := append([]func(*k8sruntime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, kubev1alpha1.AddToScheme}, adders...)
	for _, add := range all {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("build scheme: %w", err)
		}
	}
	return s, nil
}

// BinaryAssetsDir returns the directory holding kube-apiserver and etcd:
// KUBEBUILDER_ASSETS when set, else <repo>/.bin/envtest. It fails the test, naming
// scripts/kube-tools.sh, when either binary is missing.
func BinaryAssetsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	from := "KUBEBUILDER_ASSETS"
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), AssetsDir)
		from = "the default"
	}
	var missing []string
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		fi, err := os.Stat(filepath.Join(dir, bin))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("kubetest: %s not found in %s (%s): run scripts/kube-tools.sh to build kube-apiserver and provide etcd there "+
			"(scripts/test.sh and make test run it), or set KUBEBUILDER_ASSETS to a directory holding both",
			strings.Join(missing, " and "), dir, from)
	}
	return dir
}

// RepoRoot returns the root of the meshrelay repository: the nearest directory above the
// working directory (a test's package directory) whose go.mod declares the meshrelay
// module, or else the one above this source file.
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return root
}

var errNoRoot = errors.New("no go.mod of module " + module + " above the working directory or this package's source")

func repoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errNoRoot
}

func isModuleRoot(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == module
		}
	}
	return false
}

// IstioCRDs returns the path of Istio's own generated CRD file in the module cache
// (istio.io/api's kubernetes/customresourcedefinitions.gen.yaml, at the version go.mod
// requires), for WithCRDPaths.
func IstioCRDs(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		t.Fatalf("locate module istio.io/api (run `go mod download istio.io/api`): %v %s", err, out)
	}
	path := filepath.Join(dir, "kubernetes", "customresourcedefinitions.gen.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Istio CRDs: %v", err)
	}
	return path
}
