package e2e

import (
	"fmt"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshrelay/meshrelay/internal/kubetest"
)

// kubeCluster is a workload cluster played by an envtest API server with Istio's CRDs.
type kubeCluster struct {
	env *kubetest.Env
	cs  kubernetes.Interface
	dyn dynamic.Interface
}

func startKubeCluster(t *testing.T) *kubeCluster {
	t.Helper()
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs(), kubetest.WithCRDPaths(kubetest.IstioCRDs(t)))
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// A cluster with Istio has istio-system, where the agent chart's cacerts Role lives.
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &kubeCluster{env: env, cs: cs, dyn: dyn}
}

var serviceEntries = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"}

// createService creates a Service with one port named http and an EndpointSlice with one
// ready endpoint, in the default namespace.
func (c *kubeCluster) createService(t *testing.T, name, ip string, port int32) {
	t.Helper()
	ctx := t.Context()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Name: "http", Port: port}}}}
	if _, err := c.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service %s: %v", name, err)
	}
	ready := true
	portName := "http"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-abc", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
	if _, err := c.cs.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create EndpointSlice %s: %v", es.Name, err)
	}
}

// deleteService deletes a Service and its EndpointSlice (when still there).
func (c *kubeCluster) deleteService(t *testing.T, name string) {
	t.Helper()
	ctx := t.Context()
	if err := c.cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, name+"-abc", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete EndpointSlice %s-abc: %v", name, err)
	}
	if err := c.cs.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete Service %s: %v", name, err)
	}
}

// deleteSlices deletes the default namespace's EndpointSlices that selector selects, in one
// request.
func (c *kubeCluster) deleteSlices(t *testing.T, selector string) {
	t.Helper()
	if err := c.cs.DiscoveryV1().EndpointSlices("default").DeleteCollection(t.Context(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector}); err != nil {
		t.Fatalf("delete EndpointSlices %s: %v", selector, err)
	}
}

// createHandMade creates the ServiceEntry default/hand-made as a user would.
func (c *kubeCluster) createHandMade(t *testing.T) {
	t.Helper()
	o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
		"metadata": map[string]any{"name": "hand-made", "namespace": "default"},
		"spec":     map[string]any{"hosts": []any{"example.com"}, "resolution": "DNS", "ports": []any{map[string]any{"number": int64(443), "name": "https", "protocol": "TLS"}}}}}
	if _, err := c.dyn.Resource(serviceEntries).Namespace("default").Create(t.Context(), o, metav1.CreateOptions{FieldManager: "kubectl-create"}); err != nil {
		t.Fatalf("create hand-made ServiceEntry: %v", err)
	}
}

// serviceEntries returns the ServiceEntries of the default namespace by name.
func (c *kubeCluster) serviceEntries(t *testing.T) (map[string]*unstructured.Unstructured, error) {
	list, err := c.dyn.Resource(serviceEntries).Namespace("default").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		out[list.Items[i].GetName()] = &list.Items[i]
	}
	return out, nil
}

// versions returns name → resourceVersion of the default namespace's ServiceEntries.
func (c *kubeCluster) versions(t *testing.T) map[string]string {
	t.Helper()
	ses, err := c.serviceEntries(t)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for n, o := range ses {
		out[n] = o.GetResourceVersion()
	}
	return out
}

// startKubeAgent starts an agent in Kubernetes mode against kubeconfig.
func (h *harness) startKubeAgent(cluster string, s *server, kubeconfig string, extra ...string) *agent {
	h.t.Helper()
	return h.startKubeReplica(cluster, cluster, s, kubeconfig, extra...)
}

// startKubeReplica starts an agent of cluster in Kubernetes mode against kubeconfig, with
// the state directory and log of replica name.
func (h *harness) startKubeReplica(cluster, name string, s *server, kubeconfig string, extra ...string) *agent {
	h.t.Helper()
	a := &agent{cluster: cluster, state: filepath.Join(h.dir, name, "state"), admin: h.addr()}
	a.args = append([]string{"agent", "--kubernetes", "--kubeconfig", kubeconfig, "--cluster", cluster, "--relay-address", s.relay,
		"--token-file", h.token, "--relay-ca-file", filepath.Join(s.dataDir, "relay-ca.crt"), "--state-dir", a.state,
		"--admin-address", a.admin, "--xds-address", "127.0.0.1:0", "--max-backoff", "1s", "--log-level", "debug"}, extra...)
	a.p = h.start("agent-"+name, a.args...)
	return a
}

// kubeAgentStatus is what the Kubernetes tests read of an agent's /status.
type kubeAgentStatus struct {
	Connected     bool   `json:"connected"`
	OutputVersion uint64 `json:"outputVersion"`
	InputHash     string `json:"inputHash"`
	Leader        *struct {
		Identity string `json:"identity"`
		Leading  bool   `json:"leading"`
		Holder   string `json:"holder"`
	} `json:"leaderElection"`
	KubeSink *struct {
		OwnedObjects  int      `json:"ownedObjects"`
		Applies       uint64   `json:"applies"`
		Deletes       uint64   `json:"deletes"`
		LastError     string   `json:"lastError"`
		Conflicts     []string `json:"conflicts"`
		DeletionGuard struct {
			Active    bool   `json:"active"`
			Refusals  uint64 `json:"refusals"`
			Deletions int    `json:"deletions"`
			Owned     int    `json:"owned"`
			Message   string `json:"message"`
		} `json:"deletionGuard"`
	} `json:"kubeSink"`
}

func kubeStatus(a *agent) (kubeAgentStatus, error) {
	var st kubeAgentStatus
	if err := getJSON(a.admin, "/status", &st); err != nil {
		return st, err
	}
	if st.KubeSink == nil {
		return st, fmt.Errorf("agent %s /status has no kubeSink", a.cluster)
	}
	return st, nil
}
