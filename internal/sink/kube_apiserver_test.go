package sink

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

type istioCluster struct {
	dyn dynamic.Interface
	cs  kubernetes.Interface
}

// startIstio starts an API server with Istio's CRDs and the given namespaces.
func startIstio(t *testing.T, namespaces ...string) *istioCluster {
	t.Helper()
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs(), kubetest.WithCRDPaths(kubetest.IstioCRDs(t)))
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &istioCluster{dyn: dyn, cs: cs}
}

func gvr(kind string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: IstioGroup, Version: "v1", Resource: istioResources[kind]}
}

// objects returns "Kind/ns/name" → resourceVersion of every Istio object of the four kinds.
func (c *istioCluster) objects(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for kind := range istioResources {
		list, err := c.dyn.Resource(gvr(kind)).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range list.Items {
			out[kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	return out
}

func (c *istioCluster) get(t *testing.T, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	o, err := c.dyn.Resource(gvr(kind)).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", kind, ns, name, err)
	}
	return o
}

// handMade creates an object the way a user would (kubectl create: an Update manager).
func (c *istioCluster) handMade(t *testing.T, kind, ns, name string, labels map[string]string, spec map[string]any) {
	t.Helper()
	o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "networking.istio.io/v1", "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec}}
	o.SetLabels(labels)
	if _, err := c.dyn.Resource(gvr(kind)).Namespace(ns).Create(t.Context(), o, metav1.CreateOptions{FieldManager: "kubectl-create"}); err != nil {
		t.Fatalf("create hand-made %s %s/%s: %v", kind, ns, name, err)
	}
}

const (
	specSE = `{"hosts":["reviews.global"],"location":"MESH_INTERNAL","ports":[{"name":"http-9080","number":9080,"protocol":"HTTP"}],"resolution":"STATIC","endpoints":[{"address":"10.0.1.10","ports":{"http-9080":9080},"locality":"us-east/zone-a"}]}`
	specDR = `{"host":"reviews.global","trafficPolicy":{"outlierDetection":{"consecutive5xxErrors":2,"interval":"5s","baseEjectionTime":"30s","maxEjectionPercent":100}}}`
	specVS = `{"hosts":["*"],"gateways":["ingress"],"http":[{"match":[{"uri":{"prefix":"/"}}],"route":[{"destination":{"host":"reviews.global","port":{"number":9080}},"weight":100}],"timeout":"5s"}]}`
	specGW = `{"selector":{"istio":"ingressgateway"},"servers":[{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}`
)

func out(version, epoch uint64, rs ...snapshot.Resource) *snapshot.Snapshot {
	return snapshot.New(version, epoch, rs)
}

func newKube(t *testing.T, c *istioCluster, cluster string, reg prometheus.Registerer) *Kube {
	t.Helper()
	k, err := NewKube(c.dyn, KubeConfig{Cluster: cluster, MaxDeleteFraction: DefaultMaxDeleteFraction, MinGuardedDeletions: DefaultMinGuardedDeletions}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writes(k *Kube) (applies, deletes uint64) { s := k.Status(); return s.Applies, s.Deletes }

func sameVersions(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for key, rv := range before {
		if after[key] != rv {
			t.Errorf("%s: %s resourceVersion %s → %q", what, key, rv, after[key])
		}
	}
	for key := range after {
		if _, ok := before[key]; !ok {
			t.Errorf("%s: %s appeared", what, key)
		}
	}
}

// TestKubeSinkLifecycle applies, re-applies, restarts, changes and prunes against a real API
// server with Istio's CRDs, next to hand-made objects that must never be touched.
func TestKubeSinkLifecycle(t *testing.T) {
	c := startIstio(t, "bookinfo", "istio-system")
	ctx := t.Context()

	// Hand-made objects: one plain, one carrying the sink's labels (not created by it), and one
	// whose name the output will claim.
	c.handMade(t, "ServiceEntry", "bookinfo", "hand-made", nil, map[string]any{"hosts": []any{"example.com"}, "resolution": "DNS"})
	c.handMade(t, "ServiceEntry", "bookinfo", "labelled", map[string]string{LabelManagedBy: ManagedBy, LabelCluster: "east"},
		map[string]any{"hosts": []any{"labelled.example.com"}, "resolution": "DNS"})
	c.handMade(t, "DestinationRule", "bookinfo", "claimed", nil, map[string]any{"host": "claimed.example.com"})
	hand := func() map[string]string {
		all := c.objects(t)
		return map[string]string{"ServiceEntry/bookinfo/hand-made": all["ServiceEntry/bookinfo/hand-made"],
			"ServiceEntry/bookinfo/labelled": all["ServiceEntry/bookinfo/labelled"], "DestinationRule/bookinfo/claimed": all["DestinationRule/bookinfo/claimed"]}
	}
	handBefore := hand()

	reg := prometheus.NewRegistry()
	k := newKube(t, c, "east", reg)
	se := istioRes("ServiceEntry", "bookinfo", "vd-reviews", specSE)
	dr := istioRes("DestinationRule", "bookinfo", "vd-reviews-9080", specDR)
	vs := istioRes("VirtualService", "bookinfo", "ingress-reviews", specVS)
	gw := istioRes("Gateway", "istio-system", "ingress", specGW)
	envoy := snapshot.NewResource("EnvoyCluster//x", []byte(`{"apiVersion":"xds.meshrelay.io/v1","kind":"EnvoyCluster","metadata":{"name":"x"},"spec":{}}`))
	v1 := out(1, 1, se, dr, vs, gw, envoy)

	t.Run("first apply creates every Istio object", func(t *testing.T) {
		if err := k.Apply(ctx, v1); err != nil {
			t.Fatal(err)
		}
		if a, d := writes(k); a != 4 || d != 0 {
			t.Fatalf("writes: %d applies, %d deletes; want 4, 0", a, d)
		}
		o := c.get(t, "ServiceEntry", "bookinfo", "vd-reviews")
		if l := o.GetLabels(); l[LabelManagedBy] != ManagedBy || l[LabelCluster] != "east" {
			t.Errorf("labels %v", l)
		}
		var managers []string
		for _, mf := range o.GetManagedFields() {
			managers = append(managers, mf.Manager+"/"+string(mf.Operation))
		}
		if len(managers) != 1 || managers[0] != FieldManager+"/Apply" {
			t.Errorf("managedFields managers %v, want only %s/Apply", managers, FieldManager)
		}
		if hosts, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "hosts"); len(hosts) != 1 || hosts[0] != "reviews.global" {
			t.Errorf("spec.hosts %v", hosts)
		}
		if st := k.Status(); st.OwnedObjects != 4 || st.AppliedVersion != 1 || st.LastError != "" {
			t.Errorf("status %+v", st)
		}
		if v := metricValue(t, k.m.writes.WithLabelValues("apply")); v != 4 {
			t.Errorf("meshrelay_sink_writes_total{operation=apply} = %v", v)
		}
	})

	before := c.objects(t)
	t.Run("re-applying the same output writes nothing", func(t *testing.T) {
		if err := k.Apply(ctx, v1.WithVersion(2, 1)); err != nil {
			t.Fatal(err)
		}
		if a, d := writes(k); a != 4 || d != 0 {
			t.Errorf("writes: %d applies, %d deletes; want still 4, 0", a, d)
		}
		sameVersions(t, "re-apply", before, c.objects(t))
	})

	t.Run("a new sink (agent restart) writes nothing", func(t *testing.T) {
		k2 := newKube(t, c, "east", prometheus.NewRegistry())
		if err := k2.Apply(ctx, v1); err != nil {
			t.Fatal(err)
		}
		if a, d := writes(k2); a != 0 || d != 0 {
			t.Errorf("writes after restart: %d applies, %d deletes", a, d)
		}
		if k2.Status().OwnedObjects != 4 {
			t.Errorf("restarted sink owns %d objects", k2.Status().OwnedObjects)
		}
		sameVersions(t, "restart", before, c.objects(t))
	})

	t.Run("change one, drop one: one apply, one delete", func(t *testing.T) {
		dr2 := istioRes("DestinationRule", "bookinfo", "vd-reviews-9080", strings.Replace(specDR, `"consecutive5xxErrors":2`, `"consecutive5xxErrors":3`, 1))
		if err := k.Apply(ctx, out(3, 1, se, dr2, gw)); err != nil {
			t.Fatal(err)
		}
		if a, d := writes(k); a != 5 || d != 1 {
			t.Errorf("writes: %d applies, %d deletes; want 5, 1", a, d)
		}
		after := c.objects(t)
		if _, ok := after["VirtualService/bookinfo/ingress-reviews"]; ok {
			t.Error("dropped VirtualService still there")
		}
		if n, _, _ := unstructured.NestedInt64(c.get(t, "DestinationRule", "bookinfo", "vd-reviews-9080").Object, "spec", "trafficPolicy", "outlierDetection", "consecutive5xxErrors"); n != 3 {
			t.Errorf("consecutive5xxErrors = %d, want 3", n)
		}
		if after["ServiceEntry/bookinfo/vd-reviews"] != before["ServiceEntry/bookinfo/vd-reviews"] {
			t.Error("unchanged ServiceEntry was written")
		}
	})

	t.Run("a field removed from the output is removed from the object", func(t *testing.T) {
		noTimeout := istioRes("Gateway", "istio-system", "ingress", `{"selector":{"istio":"ingressgateway"},"servers":[{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}`)
		withSel := istioRes("Gateway", "istio-system", "ingress", `{"selector":{"istio":"ingressgateway","extra":"x"},"servers":[{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}`)
		if err := k.Apply(ctx, out(4, 1, se, istioRes("DestinationRule", "bookinfo", "vd-reviews-9080", specDR), withSel)); err != nil {
			t.Fatal(err)
		}
		if err := k.Apply(ctx, out(5, 1, se, istioRes("DestinationRule", "bookinfo", "vd-reviews-9080", specDR), noTimeout)); err != nil {
			t.Fatal(err)
		}
		sel, _, _ := unstructured.NestedStringMap(c.get(t, "Gateway", "istio-system", "ingress").Object, "spec", "selector")
		if _, ok := sel["extra"]; ok || sel["istio"] != "ingressgateway" {
			t.Errorf("selector %v, want the extra key gone", sel)
		}
	})

	t.Run("an output naming a hand-made object leaves it alone", func(t *testing.T) {
		claim := istioRes("DestinationRule", "bookinfo", "claimed", specDR)
		a0, _ := writes(k)
		if err := k.Apply(ctx, out(6, 1, se, istioRes("DestinationRule", "bookinfo", "vd-reviews-9080", specDR), gw, claim)); err != nil {
			t.Fatalf("a name conflict fails the step: %v", err)
		}
		if a, _ := writes(k); a != a0 { // everything else is unchanged; the claimed one is skipped
			t.Errorf("%d applies, want none", a-a0)
		}
		if st := k.Status(); len(st.Conflicts) != 1 || st.Conflicts[0] != "DestinationRule/bookinfo/claimed" || st.LastError != "" {
			t.Errorf("status %+v", st)
		}
		if v := metricValue(t, k.m.conflicts); v != 1 {
			t.Errorf("meshrelay_sink_unowned_conflicts = %v", v)
		}
	})

	t.Run("the guard holds back a mass deletion and reports it", func(t *testing.T) {
		if err := k.Apply(ctx, out(7, 1, se, dr, vs, gw)); err != nil { // 4 owned again
			t.Fatal(err)
		}
		pre := c.objects(t)
		a0, d0 := writes(k)
		// A changed ServiceEntry with the drop: a held-back step writes nothing at all.
		se2 := istioRes("ServiceEntry", "bookinfo", "vd-reviews", strings.Replace(specSE, "10.0.1.10", "10.0.1.11", 1))
		err := k.Apply(ctx, out(8, 1, se2))
		if !errors.Is(err, ErrDeletionGuard) || !strings.Contains(err.Error(), "delete 3 of the 4 objects") {
			t.Fatalf("err = %v, want a deletion guard refusal naming 3 of 4", err)
		}
		if a, d := writes(k); a != a0 || d != d0 {
			t.Errorf("%d applies, %d deletions despite the guard", a-a0, d-d0)
		}
		sameVersions(t, "guarded", pre, c.objects(t))
		g := k.Guard()
		if !g.Active || g.Deletions != 3 || g.Owned != 4 || g.Version != 8 || len(g.Objects) != 3 || g.Refusals != 1 {
			t.Errorf("guard %+v", g)
		}
		if v := metricValue(t, k.m.guardActive); v != 1 {
			t.Errorf("meshrelay_sink_deletion_guard_active = %v", v)
		}
		if v := metricValue(t, k.m.refused); v != 3 {
			t.Errorf("meshrelay_sink_deletions_refused_total = %v", v)
		}
		if mfs, err := reg.Gather(); err != nil {
			t.Error(err)
		} else {
			n := 0
			for _, mf := range mfs {
				if mf.GetName() == "meshrelay_sink_deletion_guard_active" || mf.GetName() == "meshrelay_sink_deletions_refused_total" {
					n++
				}
			}
			if n != 2 {
				t.Errorf("%d guard metrics registered, want 2", n)
			}
		}

		// The same drop in the same epoch stays held back; a newer epoch means it.
		if err := k.Apply(ctx, out(9, 1, se)); !errors.Is(err, ErrDeletionGuard) {
			t.Fatalf("second refusal: %v", err)
		}
		if err := k.Apply(ctx, out(10, 2, se)); err != nil {
			t.Fatalf("newer epoch: %v", err)
		}
		if _, d := writes(k); d != d0+3 {
			t.Errorf("%d deletions after the newer epoch, want 3", d-d0)
		}
		if g := k.Guard(); g.Active || g.Refusals != 2 {
			t.Errorf("guard after release %+v", g)
		}
		if v := metricValue(t, k.m.guardActive); v != 0 {
			t.Errorf("meshrelay_sink_deletion_guard_active = %v after release", v)
		}
	})

	sameVersions(t, "hand-made objects", handBefore, hand())
}

// TestKubeSinkRepairsDrift deletes and edits owned objects by hand; the resync puts them
// back, and otherwise writes nothing.
func TestKubeSinkRepairsDrift(t *testing.T) {
	c := startIstio(t, "bookinfo")
	k, err := NewKube(c.dyn, KubeConfig{Cluster: "east", MaxDeleteFraction: 0.5, Resync: 100 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- k.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	if err := k.Apply(t.Context(), out(1, 0, istioRes("ServiceEntry", "bookinfo", "a", specSE), istioRes("DestinationRule", "bookinfo", "b", specDR))); err != nil {
		t.Fatal(err)
	}
	if err := c.dyn.Resource(gvr("ServiceEntry")).Namespace("bookinfo").Delete(t.Context(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	dr := c.get(t, "DestinationRule", "bookinfo", "b")
	_ = unstructured.SetNestedField(dr.Object, "edited.example.com", "spec", "host")
	if _, err := c.dyn.Resource(gvr("DestinationRule")).Namespace("bookinfo").Update(t.Context(), dr, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		objs := c.objects(t)
		host, _, _ := unstructured.NestedString(c.get(t, "DestinationRule", "bookinfo", "b").Object, "spec", "host")
		if _, ok := objs["ServiceEntry/bookinfo/a"]; ok && host == "reviews.global" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drift not repaired: objects %v, host %q", objs, host)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a0, _ := writes(k)
	before := c.objects(t)
	time.Sleep(500 * time.Millisecond) // several resyncs
	if a, _ := writes(k); a != a0 {
		t.Errorf("%d writes while in sync", a-a0)
	}
	sameVersions(t, "resync", before, c.objects(t))
}

// TestKubeSinkAcceptsTranslatedOutputs applies the Istio resources that translation makes of
// every translate test case: Istio's own CRD schema accepts them, and a second pass writes
// nothing.
func TestKubeSinkAcceptsTranslatedOutputs(t *testing.T) {
	cases, err := filepath.Glob(filepath.Join("..", "translate", "testdata", "*", "config"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no translate test cases: %v", err)
	}
	type item struct {
		name    string
		cluster string
		snap    *snapshot.Snapshot
	}
	var items []item
	var nss []string
	for _, cfgDir := range cases {
		dir := filepath.Dir(cfgDir)
		config, errs := resource.LoadPath(cfgDir)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", cfgDir, errs)
		}
		inputs, errs := resource.LoadInputsDir(filepath.Join(dir, "inputs"))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", dir, errs)
		}
		res := translate.Translate(translate.Input{Config: config, Inputs: inputs})
		clusters := make([]string, 0, len(res.Outputs))
		for c := range res.Outputs {
			clusters = append(clusters, c)
		}
		sort.Strings(clusters)
		for _, cluster := range clusters {
			// Clusters of one case make objects of the same names; each output goes to
			// namespaces of its own, as it would go to a cluster of its own.
			prefix := fmt.Sprintf("c%d-", len(items))
			var rs []snapshot.Resource
			seen := map[string]bool{}
			for _, r := range res.Outputs[cluster] {
				o := &unstructured.Unstructured{}
				if err := o.UnmarshalJSON(r.Body); err != nil || o.GetAPIVersion() != "networking.istio.io/v1" {
					continue
				}
				o.SetNamespace(prefix + o.GetNamespace())
				if !seen[o.GetNamespace()] {
					seen[o.GetNamespace()] = true
					nss = append(nss, o.GetNamespace())
				}
				b, err := o.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, snapshot.NewResource(resource.Key(o.GetKind(), o.GetNamespace(), o.GetName()), b))
			}
			items = append(items, item{filepath.Base(dir), cluster, snapshot.New(1, 0, rs)})
		}
	}
	c := startIstio(t, nss...)
	total := 0
	for _, it := range items {
		// One sink per case and cluster, as one agent per cluster would run.
		k := newKube(t, c, fmt.Sprintf("%s-%s", it.name, it.cluster), nil)
		if err := k.Apply(t.Context(), it.snap); err != nil {
			t.Errorf("%s/%s: %v", it.name, it.cluster, err)
			continue
		}
		a, _ := writes(k)
		total += int(a)
		if err := k.Apply(t.Context(), it.snap); err != nil {
			t.Errorf("%s/%s again: %v", it.name, it.cluster, err)
		}
		if a2, _ := writes(k); a2 != a {
			t.Errorf("%s/%s: the second apply wrote %d objects: the API server changes what translation writes", it.name, it.cluster, a2-a)
		}
	}
	if total == 0 {
		t.Fatal("translation produced no Istio resources to apply")
	}
	t.Logf("applied %d translated Istio objects of %d outputs", total, len(items))
}

// TestKubeSinkSchemaRejection: an object Istio's schema refuses is a refusal naming it, and
// the rest of the output is applied.
func TestKubeSinkSchemaRejection(t *testing.T) {
	c := startIstio(t, "bookinfo")
	k := newKube(t, c, "east", nil)
	bad := istioRes("ServiceEntry", "bookinfo", "bad", `{"hosts":["x.global"],"resolution":"NOT-A-RESOLUTION"}`)
	err := k.Apply(t.Context(), out(1, 0, bad, istioRes("DestinationRule", "bookinfo", "good", specDR)))
	var re *RefusedError
	if !errors.As(err, &re) || len(re.Refusals) != 1 || re.Refusals[0].Key != "ServiceEntry/bookinfo/bad" || !strings.Contains(err.Error(), "bookinfo/bad") {
		t.Fatalf("err = %v, want a refusal of ServiceEntry/bookinfo/bad", err)
	}
	if _, ok := c.objects(t)["DestinationRule/bookinfo/good"]; !ok {
		t.Error("the valid object was not applied")
	}
}

// TestKubeSinkPerObject: an output needing a namespace that does not exist gets it, created
// labelled as meshrelay's; an object in a Terminating namespace is refused while the rest is
// applied and the output counts as applied (the next epoch-less step's deletions are judged
// against it); a stale object is deleted beside the refused one, and nothing is deleted
// because a sibling was refused.
func TestKubeSinkPerObject(t *testing.T) {
	c := startIstio(t, "bookinfo", "doomed")
	ctx := t.Context()
	if err := c.cs.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	k := newKube(t, c, "east", nil)

	// Version 1: bookinfo and a new namespace fresh; all applied.
	v1 := out(1, 0, istioRes("DestinationRule", "bookinfo", "a", specDR), istioRes("DestinationRule", "bookinfo", "b", specDR),
		istioRes("ServiceEntry", "fresh", "vd-reviews", specSE))
	if err := k.Apply(ctx, v1); err != nil {
		t.Fatalf("version 1: %v", err)
	}
	ns, err := c.cs.CoreV1().Namespaces().Get(ctx, "fresh", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("namespace fresh: %v", err)
	}
	if ns.Labels[LabelManagedBy] != ManagedBy || ns.Labels[LabelCluster] != "east" {
		t.Errorf("namespace fresh labels %v", ns.Labels)
	}

	// Version 2: an object in Terminating doomed (refused), b dropped (deleted), a and the
	// fresh one kept.
	v2 := out(2, 0, istioRes("DestinationRule", "bookinfo", "a", specDR), istioRes("ServiceEntry", "fresh", "vd-reviews", specSE),
		istioRes("ServiceEntry", "doomed", "vd-reviews", specSE))
	err = k.Apply(ctx, v2)
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("version 2: %v, want a RefusedError", err)
	}
	if len(re.Refusals) != 1 || re.Refusals[0].Key != "ServiceEntry/doomed/vd-reviews" || !strings.Contains(re.Refusals[0].Reason, "being terminated") {
		t.Fatalf("refusals %+v", re.Refusals)
	}
	if got := re.ObjectRefusals(); len(got) != 1 || got["ServiceEntry/doomed/vd-reviews"] == "" {
		t.Errorf("ObjectRefusals() = %v", got)
	}
	objs := c.objects(t)
	for _, want := range []string{"DestinationRule/bookinfo/a", "ServiceEntry/fresh/vd-reviews"} {
		if _, ok := objs[want]; !ok {
			t.Errorf("%s missing after version 2: %v", want, objs)
		}
	}
	if _, ok := objs["DestinationRule/bookinfo/b"]; ok {
		t.Error("stale DestinationRule/bookinfo/b not deleted beside the refused object")
	}
	st := k.Status()
	if st.LastError != "" || st.AppliedVersion != 2 || len(st.Refused) != 1 || st.OwnedObjects != 2 {
		t.Errorf("status %+v", st)
	}

	// The refusal clears once the output no longer holds the object.
	if err := k.Apply(ctx, out(3, 0, istioRes("DestinationRule", "bookinfo", "a", specDR), istioRes("ServiceEntry", "fresh", "vd-reviews", specSE))); err != nil {
		t.Fatalf("version 3: %v", err)
	}
	if st := k.Status(); len(st.Refused) != 0 {
		t.Errorf("refusals after version 3: %+v", st.Refused)
	}
}

// metricValue reads a counter or gauge.
func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}
