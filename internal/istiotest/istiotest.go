// Package istiotest runs a real istiod (pilot-discovery) for tests, against the real
// kube-apiserver of internal/kubetest, and asks it over ADS what Envoy configuration it gives
// a sidecar or a gateway.
//
// The binary is not downloaded: scripts/istio-tools.sh builds pilot-discovery from the Go
// module proxy (hack/istiotools pins istio.io/istio) into <repo>/.bin/istio, which Start uses
// unless MESHRELAY_ISTIOD names another binary. scripts/test.sh runs it before the tests. A
// test whose binary is missing fails with a message naming scripts/istio-tools.sh; it never
// skips.
//
// Files: istiotest.go starts istiod (Binary, Start and its options); apply.go writes
// Kubernetes objects from YAML (Apply); proxy.go describes the proxy that asks (Proxy,
// Sidecar, Router); ads.go is the ADS client (Config, Eventually); config.go reads a Config
// (Endpoints, ClusterTLS, FilterChains) and prints it for failure messages.
//
//	env := kubetest.Start(t, kubetest.WithCRDPaths(kubetest.IstioCRDs(t)))
//	istiod := istiotest.Start(t, env)
//	istiotest.Apply(t, env, manifests)
//	istiod.Eventually(t, istiotest.Sidecar("default", "client"), func(c *istiotest.Config) error {
//		if len(c.Endpoints("outbound|10000||bluegreen.global")) != 2 { ... }
//	})
//
// istiod is eventually consistent: it sees objects some time after they are written, so
// tests assert with Eventually. Each Start runs its own istiod on free loopback ports (ready
// in about 2 s); it is stopped when the test ends and the tail of its log is printed if the
// test failed. istiod needs only Istio's CRDs and its namespace (which Start creates); it
// runs without Gateway API CRDs, webhook configurations or an istio ConfigMap.
//
// What istiod reads from the cluster, as the tests of this package show: an endpoint of a
// Kubernetes Service has a locality and a tlsMode only through its Pod (the topology labels of
// the Pod's Node, the Pod's security.istio.io/tlsMode label), so an EndpointSlice endpoint
// without a Pod behind it has neither, whatever the slice's zone says. A test that wants local
// endpoints with a locality writes a Node, a Pod with status.podIP (Apply writes the status)
// and an EndpointSlice whose endpoint's targetRef names the Pod.
package istiotest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/proc"
)

// BinaryPath is the path of pilot-discovery that scripts/istio-tools.sh builds, relative to
// the repository root.
const BinaryPath = ".bin/istio/pilot-discovery"

// EnvBinary names an environment variable that overrides BinaryPath.
const EnvBinary = "MESHRELAY_ISTIOD"

// Namespace is istiod's own namespace (POD_NAMESPACE), where it keeps its CA and where
// mesh-wide Istio configuration lives.
const Namespace = "istio-system"

// DefaultClusterID is the cluster ID istiod runs with unless WithClusterID says otherwise:
// Istio's default for a Kubernetes registry.
const DefaultClusterID = "Kubernetes"

// readyTimeout bounds istiod's start: it syncs its informers with the API server first.
const readyTimeout = 90 * time.Second

// Istiod is a running istiod.
type Istiod struct {
	// GRPCAddr is the plain-text gRPC address (ADS), host:port.
	GRPCAddr string
	// HTTPAddr is the HTTP address of /ready and /debug, host:port.
	HTTPAddr string
	// ClusterID is the cluster ID istiod runs with; Config gives it to proxies that name none.
	ClusterID string
	// LogPath is the file holding istiod's output.
	LogPath string

	conn *grpc.ClientConn
}

// Option configures Start.
type Option func(*options)

type options struct {
	clusterID    string
	meshNetworks string
}

// WithClusterID sets istiod's cluster ID (--clusterID), the ID of the cluster whose API server
// it reads. The default is DefaultClusterID.
func WithClusterID(id string) Option { return func(o *options) { o.clusterID = id } }

// WithMeshNetworks gives istiod a meshNetworks configuration (YAML, the "networks:" document
// of Istio's MeshNetworks), which declares the networks and their gateways. Without it istiod
// knows no network gateway, and then it neither rewrites remote-network endpoints to gateways
// nor applies a proxy's REQUESTED_NETWORK_VIEW.
func WithMeshNetworks(yaml string) Option { return func(o *options) { o.meshNetworks = yaml } }

// Binary returns the path of pilot-discovery: $MESHRELAY_ISTIOD when set, else
// <repo>/.bin/istio/pilot-discovery. It fails the test, naming scripts/istio-tools.sh, when
// the file is missing or not executable.
func Binary(t testing.TB) string {
	t.Helper()
	path, from := os.Getenv(EnvBinary), EnvBinary
	if path == "" {
		path, from = filepath.Join(kubetest.RepoRoot(t), BinaryPath), "the default"
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("istiotest: pilot-discovery not found at %s (%s): run scripts/istio-tools.sh to build it "+
			"(scripts/test.sh and make test run it), or set %s to a pilot-discovery binary", path, from, EnvBinary)
	}
	return path
}

// Start runs `pilot-discovery discovery` against env's API server as istiod in namespace
// istio-system (created when missing), on free loopback ports, and waits until it is ready.
// env must have Istio's CRDs (kubetest.WithCRDPaths(kubetest.IstioCRDs(t))). istiod is
// stopped when the test ends; if the test failed, the tail of its log is printed.
func Start(t testing.TB, env *kubetest.Env, opts ...Option) *Istiod {
	t.Helper()
	o := options{clusterID: DefaultClusterID}
	for _, opt := range opts {
		opt(&o)
	}
	bin := Binary(t)

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := env.Client.Create(t.Context(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("istiotest: create namespace %s: %v", Namespace, err)
	}

	// The mesh configuration comes from files, not from the cluster's istio ConfigMap: Istio's
	// defaults (an empty file) and the networks of WithMeshNetworks.
	dir := t.TempDir()
	meshConfig := filepath.Join(dir, "mesh.yaml")
	networks := filepath.Join(dir, "meshNetworks.yaml")
	for path, content := range map[string]string{meshConfig: "", networks: o.meshNetworks} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatalf("istiotest: write %s: %v", path, err)
		}
	}
	// Every listener on its own free loopback port: tests run istiods in parallel.
	var ports [5]string
	for i := range ports {
		p, err := proc.FreePort()
		if err != nil {
			t.Fatalf("istiotest: %v", err)
		}
		ports[i] = strconv.Itoa(p)
	}
	loopback := func(port string) string { return net.JoinHostPort("127.0.0.1", port) }
	d := &Istiod{GRPCAddr: loopback(ports[0]), HTTPAddr: loopback(ports[1]), ClusterID: o.clusterID, LogPath: filepath.Join(dir, "istiod.log")}
	args := []string{"discovery",
		"--kubeconfig", env.Kubeconfig,
		"--namespace", Namespace, // what POD_NAMESPACE would say
		"--clusterID", o.clusterID,
		"--domain", "cluster.local",
		"--meshConfig", meshConfig,
		"--networksConfig", networks,
		"--grpcAddr", d.GRPCAddr, // plain-text ADS
		"--secureGRPCAddr", "", // no TLS ADS: it would need istiod's own certificates
		"--httpAddr", d.HTTPAddr,
		"--httpsAddr", loopback(ports[2]), // webhooks
		"--monitoringAddr", loopback(ports[3]),
		"--ctrlz_address", "127.0.0.1",
		"--ctrlz_port", ports[4],
		"--shutdownDuration", "1s",
	}

	start := time.Now()
	p, err := proc.Start("istiod", bin, d.LogPath, args...)
	if err != nil {
		t.Fatalf("istiotest: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("istiotest: %v", err)
		}
		if t.Failed() {
			t.Logf("istiotest: tail of istiod's log %s:\n%s", d.LogPath, tail(d.LogPath, 60))
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- proc.WaitHTTP(ctx, "http://"+d.HTTPAddr+"/ready") }()
	select {
	case err = <-ready:
	case <-p.Done():
		cancel()
		<-ready
		err = fmt.Errorf("istiod exited: %w", p.Err())
	}
	if err != nil {
		t.Fatalf("istiotest: istiod did not become ready: %v\ntail of %s:\n%s", err, d.LogPath, tail(d.LogPath, 60))
	}
	t.Logf("istiotest: istiod ready in %s (grpc %s, http %s, cluster %s)", time.Since(start).Round(time.Millisecond), d.GRPCAddr, d.HTTPAddr, o.clusterID)

	conn, err := grpc.NewClient(d.GRPCAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatalf("istiotest: dial istiod at %s: %v", d.GRPCAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	d.conn = conn
	return d
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
