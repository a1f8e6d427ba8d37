package e2e

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// failoverGatewayConfig declares, on the server, cluster kube-a's failover gateway on 15443
// (seed 003's failover-gateway).
const failoverGatewayConfig = `apiVersion: meshrelay.io/v1alpha1
kind: Gateway
metadata: {name: failover-gateway, namespace: gloo-system}
spec:
  cluster: kube-a
  bindAddress: "::"
  bindPort: 15443
  tcpGateway:
    tcpHosts:
    - name: failover
      destination: {forwardSniClusterName: {}}
`

// createFailoverService creates seed 003's failover Service in gloo-system — a LoadBalancer
// on 15443 with nodePort 32000 — and an EndpointSlice with one ready gateway pod at podIP.
func (c *kubeCluster) createFailoverService(t *testing.T, podIP string) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gloo-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "failover", Namespace: "gloo-system", Labels: map[string]string{"app": "gloo"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"gateway-proxy": "live"},
			Ports: []corev1.ServicePort{{Name: "failover", Port: 15443, TargetPort: intstr.FromInt32(15443), NodePort: 32000, Protocol: corev1.ProtocolTCP}}}}
	if _, err := c.cs.CoreV1().Services("gloo-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service gloo-system/failover: %v", err)
	}
	ready, name, port := true, "failover", int32(15443)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "failover-abc", Namespace: "gloo-system", Labels: map[string]string{discoveryv1.LabelServiceName: "failover"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{podIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	if _, err := c.cs.DiscoveryV1().EndpointSlices("gloo-system").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create EndpointSlice gloo-system/failover-abc: %v", err)
	}
}

// setLoadBalancerIngress writes the failover Service's status.loadBalancer.ingress as a
// cloud controller would (the status subresource).
func (c *kubeCluster) setLoadBalancerIngress(t *testing.T, ips ...string) {
	t.Helper()
	svc, err := c.cs.CoreV1().Services("gloo-system").Get(t.Context(), "failover", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = nil
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	if _, err := c.cs.CoreV1().Services("gloo-system").UpdateStatus(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status of Service gloo-system/failover: %v", err)
	}
}

// createNode creates a node with an ExternalIP, as a kubelet would report it.
func (c *kubeCluster) createNode(t *testing.T, name, externalIP string) {
	t.Helper()
	n, err := c.cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.0.1"}, {Type: corev1.NodeExternalIP, Address: externalIP}}
	if _, err := c.cs.CoreV1().Nodes().UpdateStatus(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status of node %s: %v", name, err)
	}
}

// serviceEntryEndpoints returns "address:port" of each endpoint of ServiceEntry default/name.
func (c *kubeCluster) serviceEntryEndpoints(t *testing.T, name string) ([]string, error) {
	ses, err := c.serviceEntries(t)
	if err != nil {
		return nil, err
	}
	se := ses[name]
	if se == nil {
		return nil, fmt.Errorf("no ServiceEntry %s among %v", name, keysOfMap(ses))
	}
	eps, _, _ := unstructured.NestedSlice(se.Object, "spec", "endpoints")
	var out []string
	for _, e := range eps {
		m, _ := e.(map[string]any)
		addr, _ := m["address"].(string)
		ports, _ := m["ports"].(map[string]any)
		for _, p := range ports {
			addr += fmt.Sprintf(":%v", p)
		}
		out = append(out, addr)
	}
	slices.Sort(out)
	return out, nil
}

// TestKubeFailoverGatewayLoadBalancerAddress (issue 12, case 9): cluster kube-a's failover
// gateway is exposed, as in seed 003, by a LoadBalancer Service (nodePort 32000) in front of
// one gateway pod. Cluster kube-b reaches kube-a's services through that gateway: its
// ServiceEntry must name the load balancer's IP with the Service port (taken from
// status.loadBalancer.ingress, written to the status subresource of a real API server), not
// the gateway pod's IP, which other clusters cannot reach. Without a load balancer IP it
// falls back to a node's ExternalIP with the nodePort. kube-a's agent /status and the
// server's resource status say which address was chosen and why.
func TestKubeFailoverGatewayLoadBalancerAddress(t *testing.T) {
	const podIP, lbIP, nodeIP = "10.1.9.9", "203.0.113.7", "198.51.100.4"
	h := newHarness(t)
	clusterA, clusterB := startKubeCluster(t), startKubeCluster(t)
	s := h.startServer("server", []string{"kube-a", "kube-b"})
	writeFile(t, filepath.Join(s.config, "failover-gateway.yaml"), failoverGatewayConfig)

	clusterA.createFailoverService(t, podIP)
	clusterA.setLoadBalancerIngress(t, lbIP)
	clusterA.createService(t, "service-blue", "10.1.0.10", 8080)
	a := h.startKubeAgent("kube-a", s, clusterA.env.Kubeconfig)
	h.startKubeAgent("kube-b", s, clusterB.env.Kubeconfig)

	want := []string{lbIP + ":15443"}
	poll.Eventually(t, 60*time.Second, "kube-b reaches service-blue at kube-a's load balancer", func() error {
		eps, err := clusterB.serviceEntryEndpoints(t, "vd-service-blue")
		if err != nil {
			return err
		}
		if !slices.Equal(eps, want) {
			return fmt.Errorf("endpoints %v, want %v (the gateway pod is %s)", eps, want, podIP)
		}
		return nil
	})

	var st struct {
		ExternalReach []struct {
			Service   string   `json:"service"`
			Port      int32    `json:"port"`
			Addresses []string `json:"addresses"`
			Source    string   `json:"source"`
		} `json:"externalReach"`
	}
	if err := getJSON(a.admin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	if len(st.ExternalReach) != 1 || st.ExternalReach[0].Service != "gloo-system/failover" || !slices.Equal(st.ExternalReach[0].Addresses, want) ||
		st.ExternalReach[0].Source != "status.loadBalancer.ingress" {
		t.Errorf("agent kube-a /status externalReach = %+v, want gloo-system/failover at %v from status.loadBalancer.ingress", st.ExternalReach, want)
	}
	var ss struct {
		ResourceStatus map[string][]string `json:"resourceStatus"`
	}
	if err := getJSON(s.admin, "/status", &ss); err != nil {
		t.Fatal(err)
	}
	gw := strings.Join(ss.ResourceStatus[`Gateway "gloo-system/failover-gateway"`], "; ")
	if !strings.Contains(gw, "other clusters reach it at "+lbIP+":15443: status.loadBalancer.ingress of Service gloo-system/failover") {
		t.Errorf("server status of the gateway %q does not say where it is reached and why", gw)
	}

	// The load balancer loses its IP; a node with an ExternalIP exists: the nodePort on it.
	clusterA.createNode(t, "node-1", nodeIP)
	clusterA.setLoadBalancerIngress(t)
	want = []string{nodeIP + ":32000"}
	poll.Eventually(t, 60*time.Second, "kube-b reaches service-blue at kube-a's node port", func() error {
		eps, err := clusterB.serviceEntryEndpoints(t, "vd-service-blue")
		if err != nil {
			return err
		}
		if !slices.Equal(eps, want) {
			return fmt.Errorf("endpoints %v, want %v", eps, want)
		}
		return nil
	})
}
