package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	apiv1alpha1 "github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/charts"
	"github.com/meshrelay/meshrelay/charts/chartstest"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// serverIdentity creates the meshrelay-server chart's service account and the RBAC the chart
// grants it (rendered with values, plus kubernetes.enabled), and returns it.
func serverIdentity(t *testing.T, env *kubetest.Env, values map[string]any) *kubetest.User {
	t.Helper()
	vals := map[string]any{"kubernetes": map[string]any{"enabled": true}}
	for k, v := range values {
		vals[k] = v
	}
	return chartIdentity(t, env, charts.Server, "meshrelay-server", vals)
}

// chartIdentity creates a chart's service account (meshrelay-system/saName) and exactly the
// RBAC the chart renders with values, and returns that identity.
func chartIdentity(t *testing.T, env *kubetest.Env, chart, saName string, vals map[string]any) *kubetest.User {
	t.Helper()
	r, err := chartstest.Render(chart, chartstest.Options{Values: vals})
	if err != nil {
		t.Fatalf("render chart %s: %v", chart, err)
	}
	sa := env.AddServiceAccount(t, "meshrelay-system", saName)
	n := 0
	for _, o := range r.Objects {
		var obj client.Object
		switch o.Kind {
		case "ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		case "Role":
			obj = &rbacv1.Role{}
		case "RoleBinding":
			obj = &rbacv1.RoleBinding{}
		default:
			continue
		}
		if err := o.Into(obj); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(t.Context(), obj); err != nil {
			t.Fatalf("create %s %s: %v", o.Kind, o.Name, err)
		}
		n++
	}
	if n == 0 {
		t.Fatalf("chart %s renders no RBAC", chart)
	}
	return sa
}

// startKubeServer runs `meshrelay server --kubernetes` as the chart's service account.
func (h *harness) startKubeServer(name string, sa *kubetest.User, extra ...string) *server {
	h.t.Helper()
	s := &server{relay: h.addr(), admin: h.addr(), dataDir: filepath.Join(h.dir, name+"-data")}
	s.args = append([]string{"server", "--kubernetes", "--kubeconfig", sa.Kubeconfig, "--relay-address", s.relay, "--admin-address", s.admin,
		"--data-dir", s.dataDir, "--token-file", h.token, "--admin-token-file", h.adminToken, "--log-level", "debug"}, extra...)
	h.trustAdmin(s.admin, s.caFile())
	s.p = h.start(name, s.args...)
	waitProcReady(h.t, s.p, s.admin)
	return s
}

func applyCR(t *testing.T, c client.Client, y string) {
	t.Helper()
	cr := parseCR(t, y)
	if ns := cr.GetNamespace(); ns != "" {
		if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	if err := c.Create(t.Context(), cr); err != nil {
		t.Fatalf("create %s %s: %v", cr.GetObjectKind().GroupVersionKind().Kind, cr.GetName(), err)
	}
}

func parseCR(t *testing.T, y string) v1alpha1.Object {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(y), &tm); err != nil {
		t.Fatal(err)
	}
	cr, err := v1alpha1.New(tm.Kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(y), cr); err != nil {
		t.Fatalf("parse %s: %v", y, err)
	}
	return cr
}

func getCR(t *testing.T, c client.Client, kind, namespace, name string) (v1alpha1.Object, error) {
	t.Helper()
	cr, err := v1alpha1.New(kind)
	if err != nil {
		t.Fatal(err)
	}
	return cr, c.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: name}, cr)
}

// acceptedOf returns the Accepted condition of a custom resource for its current generation.
func acceptedOf(t *testing.T, c client.Client, kind, namespace, name string) (*metav1.Condition, v1alpha1.Object, error) {
	t.Helper()
	cr, err := getCR(t, c, kind, namespace, name)
	if err != nil {
		return nil, nil, err
	}
	cond := meta.FindStatusCondition(cr.GetStatus().Conditions, v1alpha1.ConditionAccepted)
	if cond == nil || cond.ObservedGeneration != cr.GetGeneration() || cr.GetStatus().ObservedGeneration != cr.GetGeneration() {
		return nil, cr, fmt.Errorf("%s %s/%s: no status for generation %d yet (%+v)", kind, namespace, name, cr.GetGeneration(), cr.GetStatus())
	}
	return cond, cr, nil
}

const blueVD = `apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata: {name: service-blue, namespace: default}
spec:
  hosts: [service-blue.global]
  ports: [{number: 80, targetPort: {name: http}}]
  services: [{name: service-blue}]
`

// A RouteTable whose weights are all zero passes the CRD's schema but not meshrelay's
// validation.
const zeroWeights = `apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata: {name: zero, namespace: default}
spec:
  hosts: [zero.example.com]
  http:
  - forwardTo:
      destinations:
      - ref: {name: default-service-blue-80}
        weight: 0
`

// TestKubeServer runs the management server in Kubernetes mode as a real process, with the
// RBAC of its chart, against a real API server, with two universal agents: the clusters and
// the VirtualDestination applied as custom resources reach the agents' outputs; a bad
// resource gets Accepted=False naming the field in its status while the rest flows; statuses
// are not rewritten while nothing changes; deleting a custom resource removes its outputs.
func TestKubeServer(t *testing.T) {
	h := newHarness(t)
	mgmt := kubetest.Start(t, kubetest.WithRBAC())
	for _, c := range []string{"local", "remote"} {
		applyCR(t, mgmt.Client, fmt.Sprintf("apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: %s}\n", c))
	}
	applyCR(t, mgmt.Client, blueVD)
	applyCR(t, mgmt.Client, zeroWeights)

	s := h.startKubeServer("server", serverIdentity(t, mgmt, nil))
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 30*time.Second, "remote's output has blue from the VirtualDestination custom resource", func() error {
		return outputHas(t, remote, seKey("service-blue"))
	})

	poll.Eventually(t, 20*time.Second, "statuses written", func() error {
		cond, cr, err := acceptedOf(t, mgmt.Client, apiv1alpha1.KindVirtualDestination, "default", "service-blue")
		if err != nil {
			return err
		}
		if cond.Status != metav1.ConditionTrue || strings.Join(cr.GetStatus().SelectedClusters, ",") != "local,remote" {
			return fmt.Errorf("VirtualDestination: %+v, selected %v", cond, cr.GetStatus().SelectedClusters)
		}
		cond, _, err = acceptedOf(t, mgmt.Client, apiv1alpha1.KindRouteTable, "default", "zero")
		if err != nil {
			return err
		}
		if cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonInvalid || !strings.Contains(cond.Message, "spec.http[0].forwardTo.destinations") {
			return fmt.Errorf("bad RouteTable: %+v", cond)
		}
		for _, c := range []string{"local", "remote"} {
			if cond, _, err = acceptedOf(t, mgmt.Client, apiv1alpha1.KindKubernetesCluster, "", c); err != nil {
				return err
			}
			if cond.Status != metav1.ConditionTrue {
				return fmt.Errorf("KubernetesCluster %s: %+v", c, cond)
			}
		}
		return nil
	})
	if errs := strings.Join(s.status(t).ConfigErrors, "\n"); !containsAll(errs, `RouteTable "default/zero"`, "weights sum to 0") {
		t.Errorf("server /status configErrors: %q, want the bad RouteTable", errs)
	}

	// No status churn: a new input (translations) rewrites no status.
	rvs := map[string]string{}
	for _, k := range [][3]string{{apiv1alpha1.KindVirtualDestination, "default", "service-blue"}, {apiv1alpha1.KindRouteTable, "default", "zero"},
		{apiv1alpha1.KindKubernetesCluster, "", "local"}, {apiv1alpha1.KindKubernetesCluster, "", "remote"}} {
		cr, err := getCR(t, mgmt.Client, k[0], k[1], k[2])
		if err != nil {
			t.Fatal(err)
		}
		rvs[strings.Join(k[:], "/")] = cr.GetResourceVersion()
	}
	unchanged := func(when string) {
		t.Helper()
		for k, rv := range rvs {
			parts := strings.SplitN(k, "/", 3)
			cr, err := getCR(t, mgmt.Client, parts[0], parts[1], parts[2])
			if err != nil {
				t.Fatal(err)
			}
			if cr.GetResourceVersion() != rv {
				t.Errorf("%s: %s rewritten while its status did not change (resourceVersion %s -> %s)", when, k, rv, cr.GetResourceVersion())
			}
		}
	}
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 8080))
	sleep(t, 3*time.Second)
	unchanged("after new inputs")

	// A restarted server finds every status as it would write it: no write either.
	if err := s.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	h.restartServer(s, "server-again")
	poll.Eventually(t, 30*time.Second, "the restarted server translates", func() error {
		if st := s.status(t); st.Translations == 0 {
			return fmt.Errorf("no translation yet (safe mode %+v)", st.SafeMode)
		}
		return nil
	})
	sleep(t, 2*time.Second)
	unchanged("after a restart")

	// Deleting the custom resource removes what it made.
	vd, err := getCR(t, mgmt.Client, apiv1alpha1.KindVirtualDestination, "default", "service-blue")
	if err != nil {
		t.Fatal(err)
	}
	if err := mgmt.Client.Delete(t.Context(), vd); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "blue's ServiceEntry gone from remote", func() error {
		return outputLacks(t, remote, seKey("service-blue"))
	})
}

// statusWrites counts the "status written" lines of a server's log for a resource key.
func statusWrites(t *testing.T, s *server, key string) int {
	t.Helper()
	b, err := os.ReadFile(s.p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `msg="status written"`) && strings.Contains(l, "resource="+key+" ") {
			n++
		}
	}
	return n
}

func leaseHolder(t *testing.T, env *kubetest.Env, name string) string {
	t.Helper()
	var l coordinationv1.Lease
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: "meshrelay-system", Name: name}, &l); err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// TestKubeServerReplicasLease runs two replicas of one management cluster in Kubernetes mode
// (Redis shared, the chart's RBAC with leader election): they elect their leader with a
// coordination.k8s.io Lease; only the leader writes status, each once; when the leader
// stops, the other takes the Lease and writes the status of the next change.
func TestKubeServerReplicasLease(t *testing.T) {
	h := newHarness(t)
	rs := redistest.Start(t)
	mgmt := kubetest.Start(t, kubetest.WithRBAC())
	applyCR(t, mgmt.Client, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: local}\nspec: {skipWarming: true}\n")
	applyCR(t, mgmt.Client, blueVD)
	applyCR(t, mgmt.Client, zeroWeights)
	sa := serverIdentity(t, mgmt, map[string]any{"leaderElection": true, "replicas": 2, "redis": map[string]any{"address": rs.Addr()}})
	const lease = "meshrelay-server-leader"
	flags := func(id string) []string {
		return []string{"--redis-address", rs.Addr(), "--leader-election", "--leader-election-lease", "meshrelay-system/" + lease,
			"--lease-duration", "2s", "--replica-id", id}
	}
	servers := map[string]*server{"a": h.startKubeServer("server-a", sa, flags("a")...), "b": h.startKubeServer("server-b", sa, flags("b")...)}

	var leader string
	poll.Eventually(t, 20*time.Second, "a leader holds the Lease", func() error {
		if leader = leaseHolder(t, mgmt, lease); leader != "a" && leader != "b" {
			return fmt.Errorf("lease holder %q", leader)
		}
		return nil
	})
	keys := []string{"KubernetesCluster//local", "VirtualDestination/default/service-blue", "RouteTable/default/zero"}
	poll.Eventually(t, 20*time.Second, "statuses written", func() error {
		for _, k := range [][3]string{{apiv1alpha1.KindKubernetesCluster, "", "local"}, {apiv1alpha1.KindVirtualDestination, "default", "service-blue"},
			{apiv1alpha1.KindRouteTable, "default", "zero"}} {
			if _, _, err := acceptedOf(t, mgmt.Client, k[0], k[1], k[2]); err != nil {
				return err
			}
		}
		return nil
	})
	sleep(t, 2*time.Second)
	follower := map[string]string{"a": "b", "b": "a"}[leader]
	for _, k := range keys {
		if n := statusWrites(t, servers[leader], k); n != 1 {
			t.Errorf("leader %s wrote the status of %s %d times, want once", leader, k, n)
		}
		if n := statusWrites(t, servers[follower], k); n != 0 {
			t.Errorf("follower %s wrote the status of %s %d times, want never", follower, k, n)
		}
	}

	// The leader stops (and releases the Lease): the other leads and writes the next status.
	if err := servers[leader].p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 15*time.Second, "the follower takes the Lease", func() error {
		if got := leaseHolder(t, mgmt, lease); got != follower {
			return fmt.Errorf("lease holder %q, want %q", got, follower)
		}
		return nil
	})
	vd, err := getCR(t, mgmt.Client, apiv1alpha1.KindVirtualDestination, "default", "service-blue")
	if err != nil {
		t.Fatal(err)
	}
	vd.(*v1alpha1.VirtualDestination).Spec.Hosts = []string{"blue.global"}
	if err := mgmt.Client.Update(t.Context(), vd); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "the new leader writes generation 2's status", func() error {
		_, cr, err := acceptedOf(t, mgmt.Client, apiv1alpha1.KindVirtualDestination, "default", "service-blue")
		if err != nil {
			return err
		}
		if cr.GetGeneration() != 2 {
			return fmt.Errorf("generation %d", cr.GetGeneration())
		}
		return nil
	})
	if n := statusWrites(t, servers[follower], keys[1]); n != 1 {
		t.Errorf("new leader %s wrote the VirtualDestination's status %d times, want once", follower, n)
	}
}

// TestClusterRegisterCLI runs `meshrelay cluster register --install` and `cluster
// deregister --uninstall` against two real API servers (management and workload).
func TestClusterRegisterCLI(t *testing.T) {
	mgmt := kubetest.Start(t)
	remote := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	// The agent chart's cacerts Role lives in istio-system, which must exist (README).
	if err := remote.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, _ := selfSigned(t)
	writeFile(t, filepath.Join(dir, "ca.crt"), string(ca))
	writeFile(t, filepath.Join(dir, "token"), "cli-token\n")
	common := []string{"--cluster", "east", "--mgmt-kubeconfig", mgmt.Kubeconfig, "--remote-kubeconfig", remote.Kubeconfig}
	registerArgs := append([]string{"cluster", "register", "--token-file", filepath.Join(dir, "token"),
		"--relay-ca-file", filepath.Join(dir, "ca.crt"), "--relay-address", "mgmt.example.com:9900", "--install", "--set", "image.tag=e2e"}, common...)

	// --install runs helm: without it on PATH, nothing changes and the error gives the command.
	t.Setenv("PATH", t.TempDir())
	out, errOut, err := cli(t, registerArgs...)
	if err == nil || !containsAll(errOut, "the helm binary, which is not on PATH", "helm upgrade --install meshrelay-agent ./charts/meshrelay-agent", "--set relay.address=mgmt.example.com:9900 --set image.tag=e2e") {
		t.Errorf("cluster register --install without helm: %v\n%s\n%s", err, out, errOut)
	}
	if _, err := getCR(t, mgmt.Client, apiv1alpha1.KindKubernetesCluster, "", "east"); !apierrors.IsNotFound(err) {
		t.Errorf("KubernetesCluster east after cluster register --install without helm: %v, want none", err)
	}

	kubetest.UseHelm(t)
	out, errOut, err = cli(t, registerArgs...)
	if err != nil {
		t.Fatalf("cluster register: %v\n%s\n%s", err, out, errOut)
	}
	if !containsAll(out, "KubernetesCluster east", "created", "Secret meshrelay-system/meshrelay-relay-token", "agent chart installed") {
		t.Errorf("cluster register printed:\n%s", out)
	}
	if _, err := getCR(t, mgmt.Client, apiv1alpha1.KindKubernetesCluster, "", "east"); err != nil {
		t.Errorf("KubernetesCluster east: %v", err)
	}
	var tok corev1.Secret
	if err := remote.Client.Get(t.Context(), client.ObjectKey{Namespace: "meshrelay-system", Name: "meshrelay-relay-token"}, &tok); err != nil ||
		string(tok.Data["token"]) != "cli-token" {
		t.Errorf("token Secret in the workload cluster: %v %q", err, tok.Data)
	}

	// Without --install it prints the helm command instead.
	out, _, err = cli(t, append([]string{"cluster", "register", "--token-file", filepath.Join(dir, "token"),
		"--relay-ca-file", filepath.Join(dir, "ca.crt"), "-o", "json"}, common...)...)
	if err != nil || !containsAll(out, `"helmCommand": "helm upgrade --install meshrelay-agent`, `"action": "unchanged"`) {
		t.Errorf("cluster register -o json: %v\n%s", err, out)
	}

	out, errOut, err = cli(t, append([]string{"cluster", "deregister", "--uninstall"}, common...)...)
	if err != nil {
		t.Fatalf("cluster deregister: %v\n%s\n%s", err, out, errOut)
	}
	if !containsAll(out, "KubernetesCluster east", "deleted", "agent release uninstalled") {
		t.Errorf("cluster deregister printed:\n%s", out)
	}
	if _, err := getCR(t, mgmt.Client, apiv1alpha1.KindKubernetesCluster, "", "east"); !apierrors.IsNotFound(err) {
		t.Errorf("KubernetesCluster east after deregister: %v", err)
	}
}
