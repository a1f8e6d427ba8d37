package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// kubeWait bounds how long a test waits for the API server and the informers.
const kubeWait = 30 * time.Second

// equivalenceManifests are Services and EndpointSlices written with the fields discovery
// reports, including those the API server would otherwise default (type, protocol,
// targetPort) or allocate (clusterIP, nodePort), so that the same YAML can be fed to Dir and
// created in an API server.
const equivalenceManifests = `
apiVersion: v1
kind: Service
metadata:
  name: service-blue
  namespace: web
  labels: {app: bluegreen, text: blue}
spec:
  type: ClusterIP
  clusterIP: 10.0.0.50
  selector: {app: bluegreen, text: blue}
  ports:
  - {name: color, port: 10000, protocol: TCP, targetPort: 10000}
  - {name: admin, port: 9901, protocol: TCP, targetPort: admin}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: service-blue-x1
  namespace: web
  labels: {kubernetes.io/service-name: service-blue}
addressType: IPv4
endpoints:
- addresses: ["10.1.1.10"]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-a
  zone: zone-a
- addresses: ["10.1.1.11"]
  conditions: {ready: false}
  zone: zone-b
  hostname: blue-2
ports:
- {name: color, port: 10000, protocol: TCP}
- {name: admin, port: 9901, protocol: TCP, appProtocol: http}
---
apiVersion: v1
kind: Service
metadata:
  name: failover
  namespace: gloo-system
  labels: {app: gloo}
  annotations: {meshrelay.io/failover-address: "203.0.113.10:15443"}
spec:
  type: LoadBalancer
  clusterIP: 10.0.0.60
  selector: {gateway-proxy: live}
  ports:
  - {name: failover, port: 15443, protocol: TCP, targetPort: 15443, nodePort: 32000}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: failover-x1
  namespace: gloo-system
  labels: {kubernetes.io/service-name: failover, app: gloo}
addressType: IPv4
endpoints:
- addresses: ["10.1.2.100"]
  conditions: {ready: true}
ports:
- {name: failover, port: 15443, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: web
spec:
  type: ClusterIP
  clusterIP: None
  ports:
  - {port: 5432, protocol: TCP, targetPort: 5432}
`

// startKube starts an API server for the test and returns a clientset of it.
func startKube(t *testing.T) kubernetes.Interface {
	t.Helper()
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs())
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// kubeRun runs a Kube source until the test ends.
type kubeRun struct {
	k     *Kube
	emits chan []resource.Object
}

func startKubeSource(t *testing.T, cs kubernetes.Interface, cfg KubeConfig) *kubeRun {
	t.Helper()
	k, err := NewKube(cs, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &kubeRun{k: k, emits: make(chan []resource.Object, 1000)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx, func(o []resource.Object) { r.emits <- o }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start: %v", err)
			}
		case <-time.After(kubeWait):
			t.Error("Start did not return after cancel")
		}
	})
	return r
}

// until returns the first emit for which ok holds, failing after kubeWait.
func (r *kubeRun) until(t *testing.T, what string, ok func([]resource.Object) bool) []resource.Object {
	t.Helper()
	deadline := time.After(kubeWait)
	var last []resource.Object
	for {
		select {
		case o := <-r.emits:
			if ok(o) {
				return o
			}
			last = o
		case <-deadline:
			t.Fatalf("no emit with %s; last: %s", what, keys(last))
			return nil
		}
	}
}

// createManifests creates the Services and EndpointSlices of a multi-document YAML, with
// their namespaces; edit may change each object before it is created.
func createManifests(t *testing.T, cs kubernetes.Interface, manifests string, edit func(obj any)) {
	t.Helper()
	ctx := t.Context()
	nss := map[string]bool{}
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var head struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		if ns := head.Metadata.Namespace; !nss[ns] {
			nss[ns] = true
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create namespace %s: %v", ns, err)
			}
		}
		switch head.Kind {
		case "Service":
			var s corev1.Service
			if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil {
				t.Fatal(err)
			}
			if edit != nil {
				edit(&s)
			}
			if _, err := cs.CoreV1().Services(s.Namespace).Create(ctx, &s, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create Service %s/%s: %v", s.Namespace, s.Name, err)
			}
		case "EndpointSlice":
			var es discoveryv1.EndpointSlice
			if err := yaml.UnmarshalStrict([]byte(doc), &es); err != nil {
				t.Fatal(err)
			}
			if edit != nil {
				edit(&es)
			}
			if _, err := cs.DiscoveryV1().EndpointSlices(es.Namespace).Create(ctx, &es, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create EndpointSlice %s/%s: %v", es.Namespace, es.Name, err)
			}
		default:
			t.Fatalf("unexpected kind %q", head.Kind)
		}
	}
}

func inputSnapshot(objs []resource.Object) []byte {
	rs := make([]snapshot.Resource, len(objs))
	for i, o := range objs {
		rs[i] = o.Resource()
	}
	b, err := json.Marshal(snapshot.New(1, 0, rs))
	if err != nil {
		panic(err)
	}
	return b
}

// TestKubeMatchesDir feeds the same Services and EndpointSlices to Dir (as YAML) and to Kube
// (created in a real API server) and requires byte-identical input snapshots. One endpoint
// names no zone in the API server: Kube takes it from its node's topology label, as the YAML
// states it.
func TestKubeMatchesDir(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "objects.yaml"), equivalenceManifests)
	fromDir := start(t, dir, WithResync(0)).next(t)
	if len(fromDir) != 5 {
		t.Fatalf("Dir read %d objects: %s", len(fromDir), keys(fromDir))
	}

	cs := startKube(t)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{"topology.kubernetes.io/zone": "zone-a"}}}
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createManifests(t, cs, equivalenceManifests, func(obj any) {
		if es, ok := obj.(*discoveryv1.EndpointSlice); ok && es.Name == "service-blue-x1" {
			es.Endpoints[0].Zone = nil // the node says it
		}
	})
	r := startKubeSource(t, cs, KubeConfig{Namespaces: []string{"web", "gloo-system"}})
	fromKube := r.until(t, "5 objects", func(o []resource.Object) bool { return len(o) == 5 })

	want, got := inputSnapshot(fromDir), inputSnapshot(fromKube)
	if !bytes.Equal(want, got) {
		for i := range fromDir {
			if !bytes.Equal(fromDir[i].Raw, fromKube[i].Raw) {
				t.Errorf("%s:\n dir  %s\n kube %s", fromDir[i].Key(), fromDir[i].Raw, fromKube[i].Raw)
			}
		}
		t.Fatalf("input snapshots differ:\n dir  %s\n kube %s", want, got)
	}
	if errs := r.k.Errors(); len(errs) > 0 {
		t.Errorf("Errors() = %v", errs)
	}
}

// TestKubeFollowsChanges covers the initial emit of an all-namespace source, changes to
// services, slices and node zones, readiness, and slices that belong to no Service.
func TestKubeFollowsChanges(t *testing.T) {
	cs := startKube(t)
	ctx := t.Context()
	r := startKubeSource(t, cs, KubeConfig{Debounce: 20 * time.Millisecond})
	first := r.until(t, "the API server's own Service", func(o []resource.Object) bool { return true })
	if _, ok := find(first, "Service/default/kubernetes"); !ok {
		t.Fatalf("initial emit %s lacks Service/default/kubernetes", keys(first))
	}

	createManifests(t, cs, equivalenceManifests, nil)
	r.until(t, "the created objects", func(o []resource.Object) bool {
		_, svc := find(o, "Service/web/db")
		_, es := find(o, "EndpointSlice/gloo-system/failover-x1")
		return svc && es
	})

	// A node gains a zone: the endpoint on it that names none takes it.
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	es, err := cs.DiscoveryV1().EndpointSlices("gloo-system").Get(ctx, "failover-x1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.Endpoints[0].NodeName = ptrTo("node-b")
	if _, err := cs.DiscoveryV1().EndpointSlices("gloo-system").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sliceHas := func(sub string) func([]resource.Object) bool {
		return func(o []resource.Object) bool {
			s, ok := find(o, "EndpointSlice/gloo-system/failover-x1")
			return ok && strings.Contains(string(s.Raw), sub)
		}
	}
	r.until(t, "nodeName node-b", sliceHas(`"nodeName":"node-b"}`))
	n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels = map[string]string{"topology.kubernetes.io/zone": "zone-c"}
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.until(t, "zone-c from the node", sliceHas(`"nodeName":"node-b","zone":"zone-c"`))

	// Readiness changes are reported.
	es, err = cs.DiscoveryV1().EndpointSlices("gloo-system").Get(ctx, "failover-x1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.Endpoints[0].Conditions.Ready = ptrTo(false)
	if _, err := cs.DiscoveryV1().EndpointSlices("gloo-system").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.until(t, "ready false", sliceHas(`"conditions":{"ready":false}`))

	// A slice without the service-name label belongs to no Service: not reported.
	orphan := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: "web"}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.9.9.9"}}}}
	if _, err := cs.DiscoveryV1().EndpointSlices("web").Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Deleting a Service removes it; the orphan never shows.
	if err := cs.CoreV1().Services("web").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got := r.until(t, "Service/web/db gone", func(o []resource.Object) bool { _, ok := find(o, "Service/web/db"); return !ok })
	if _, ok := find(got, "EndpointSlice/web/orphan"); ok {
		t.Errorf("orphan slice reported: %s", keys(got))
	}
	if errs := r.k.Errors(); len(errs) > 0 {
		t.Errorf("Errors() = %v", errs)
	}
}

// TestKubeDebouncesBursts creates many Services at once and expects far fewer emits.
func TestKubeDebouncesBursts(t *testing.T) {
	cs := startKube(t)
	ctx := t.Context()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "burst"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := startKubeSource(t, cs, KubeConfig{Namespaces: []string{"burst"}, Debounce: 200 * time.Millisecond})
	if o := r.until(t, "the initial empty set", func([]resource.Object) bool { return true }); len(o) != 0 {
		t.Fatalf("initial emit %s, want none", keys(o))
	}
	const n = 30
	for i := range n {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i), Namespace: "burst"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
		if _, err := cs.CoreV1().Services("burst").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	emits := 1
	r.until(t, fmt.Sprintf("%d services", n), func(o []resource.Object) bool { emits++; return len(o) == n })
	if emits > n/3 {
		t.Errorf("%d emits for %d changes: the burst was not debounced", emits, n)
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestKubeStopsItsGoroutines: every informer goroutine Start begins ends before it returns.
func TestKubeStopsItsGoroutines(t *testing.T) {
	cs := startKube(t)
	if _, err := cs.CoreV1().Namespaces().Get(t.Context(), "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err) // opens the client's connections before the goroutine baseline
	}
	baseline := goleak.IgnoreCurrent()
	k, err := NewKube(cs, KubeConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	emitted := make(chan struct{}, 100)
	go func() { done <- k.Start(ctx, func([]resource.Object) { emitted <- struct{}{} }) }()
	select {
	case <-emitted:
	case <-time.After(kubeWait):
		t.Fatal("no initial emit")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := goleak.Find(baseline,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
	); err != nil {
		t.Error(err)
	}
}
