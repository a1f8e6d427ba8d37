package istio_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/istiotest"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/sink"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/translate/translatetest"
)

// world is one translation case: the configuration and every cluster's input, and what the
// translator made of it.
type world struct {
	in  translate.Input
	res translate.Result
}

// translateCase translates internal/translate/testdata/<name> as the management server does.
func translateCase(t *testing.T, name string) world {
	t.Helper()
	in := translatetest.LoadCase(t, filepath.Join(kubetest.RepoRoot(t), "internal", "translate", "testdata", name))
	res := translate.Translate(in)
	if len(res.Errors) > 0 {
		t.Fatalf("translation errors: %v", res.Errors)
	}
	return world{in: in, res: res}
}

// cluster is one workload cluster brought up for istiod: a real API server with Istio's
// CRDs holding the cluster's own workloads and the Istio objects the agent applies, and an
// istiod reading it.
type cluster struct {
	name   string
	istiod *istiotest.Istiod
	// envoy are the meshrelay gateway's resources of the same output, by key.
	envoy map[string]snapshot.Resource
}

// startCluster brings up cluster c of w: its Services and EndpointSlices as a real cluster
// has them (each ready endpoint a Running Pod on a Node of its zone, labelled with its
// Service's selector and Istio's sidecar label), its Istio outputs applied by the agent's
// own Kubernetes sink, and an istiod with c as its cluster ID.
func startCluster(t *testing.T, w world, c string) *cluster {
	t.Helper()
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs(), kubetest.WithCRDPaths(kubetest.IstioCRDs(t)))
	istiotest.Apply(t, env, workloads(t, w.in, c))
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sink.NewKube(dyn, sink.KubeConfig{Cluster: c, MaxDeleteFraction: sink.DefaultMaxDeleteFraction, MinGuardedDeletions: sink.DefaultMinGuardedDeletions},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	out := &cluster{name: c, envoy: map[string]snapshot.Resource{}}
	var istio []snapshot.Resource
	for _, r := range w.res.Outputs[c] {
		if envoyres.IsKey(r.Key) {
			out.envoy[r.Key] = r
			continue
		}
		istio = append(istio, r)
	}
	if err := k.Apply(t.Context(), snapshot.New(1, 1, istio)); err != nil {
		t.Fatalf("agent's sink: apply cluster %s's output: %v", c, err)
	}
	out.istiod = istiotest.Start(t, env, istiotest.WithClusterID(c))
	return out
}

// workloads renders cluster c's input as the Kubernetes objects of a real cluster with
// Istio sidecars: the Services and EndpointSlices, and for every ready endpoint address a
// Running Pod on a Node of the endpoint's zone (region and zone labels from the
// KubernetesCluster), which is where istiod takes an endpoint's locality and tlsMode from.
func workloads(t *testing.T, in translate.Input, c string) string {
	t.Helper()
	kc := translate.Clusters(in.Config)[c]
	region, defaultZone := kc.Metadata.Labels[v1alpha1.LabelRegion], kc.Metadata.Labels[v1alpha1.LabelZone]
	var services []corev1.Service
	var endpointSlices []discoveryv1.EndpointSlice
	namespaces := map[string]bool{}
	for _, r := range in.Inputs[c].Sorted() {
		o, err := resource.FromResource(r)
		if err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case v1alpha1.KindService:
			var s corev1.Service
			mustDecode(t, o.Raw, &s)
			services = append(services, s)
		case v1alpha1.KindEndpointSlice:
			var es discoveryv1.EndpointSlice
			mustDecode(t, o.Raw, &es)
			endpointSlices = append(endpointSlices, es)
		default:
			continue
		}
		namespaces[o.Namespace] = true
	}
	var docs []any
	for _, ns := range sortedKeys(namespaces) {
		docs = append(docs, &corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	nodes := map[string]bool{}
	pods := map[string]bool{}
	for _, s := range services {
		s.TypeMeta = typeMeta("v1", "Service")
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
		for i := range s.Spec.Ports {
			s.Spec.Ports[i].NodePort = 0
		}
		docs = append(docs, s)
		for _, es := range endpointSlices {
			if es.Namespace != s.Namespace || es.Labels[discoveryv1.LabelServiceName] != s.Name {
				continue
			}
			es.TypeMeta = typeMeta("discovery.k8s.io/v1", "EndpointSlice")
			for i := range es.Endpoints {
				e := &es.Endpoints[i]
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				zone := defaultZone
				if e.Zone != nil && *e.Zone != "" {
					zone = *e.Zone
				}
				node := "node-" + orDefault(zone, "default")
				if !nodes[node] {
					nodes[node] = true
					labels := map[string]string{}
					if region != "" {
						labels[v1alpha1.LabelRegion] = region
					}
					if zone != "" {
						labels[v1alpha1.LabelZone] = zone
					}
					docs = append(docs, &corev1.Node{TypeMeta: typeMeta("v1", "Node"), ObjectMeta: metav1.ObjectMeta{Name: node, Labels: labels}})
				}
				e.NodeName = &node
				pod := fmt.Sprintf("%s-%d", s.Name, i)
				e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: s.Namespace}
				if pods[s.Namespace+"/"+pod] {
					continue
				}
				pods[s.Namespace+"/"+pod] = true
				labels := maps.Clone(s.Spec.Selector)
				if labels == nil {
					labels = map[string]string{}
				}
				labels["security.istio.io/tlsMode"] = "istio" // injected by Istio's sidecar injector
				docs = append(docs, &corev1.Pod{
					TypeMeta:   typeMeta("v1", "Pod"),
					ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: s.Namespace, Labels: labels},
					Spec:       corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: new(bool), Containers: []corev1.Container{{Name: "app", Image: "app"}}},
					Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: e.Addresses[0], PodIPs: []corev1.PodIP{{IP: e.Addresses[0]}},
						Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
				})
			}
			docs = append(docs, es)
		}
	}
	var b strings.Builder
	for _, d := range docs {
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteString("\n---\n")
	}
	return b.String()
}

func mustDecode(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
