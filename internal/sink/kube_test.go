package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// nowhere is a client of an address nothing listens on, for tests that do no I/O.
func nowhere(t *testing.T) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestKube(t *testing.T, cfg KubeConfig) *Kube {
	t.Helper()
	k, err := NewKube(nowhere(t), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func istioRes(kind, ns, name, spec string) snapshot.Resource {
	body := `{"apiVersion":"networking.istio.io/v1","kind":"` + kind + `","metadata":{"labels":{"app.kubernetes.io/managed-by":"meshrelay","meshrelay.io/cluster":"east"},"name":"` + name + `","namespace":"` + ns + `"},"spec":` + spec + `}`
	return snapshot.NewResource(kind+"/"+ns+"/"+name, []byte(body))
}

func TestKubeConfigValidate(t *testing.T) {
	bad := []KubeConfig{
		{},
		{Cluster: strings.Repeat("a", 64), MaxDeleteFraction: 0.5},
		{Cluster: "c", MaxDeleteFraction: -0.1},
		{Cluster: "c", MaxDeleteFraction: 1.5},
		{Cluster: "c", MaxDeleteFraction: 0.5, MinGuardedDeletions: -1},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (KubeConfig{Cluster: "c", MaxDeleteFraction: 1}).Validate(); err != nil {
		t.Error(err)
	}
	if _, err := NewKube(nil, KubeConfig{Cluster: "c"}, nil, nil); err == nil {
		t.Error("nil client accepted")
	}
}

func TestDesired(t *testing.T) {
	k := newTestKube(t, KubeConfig{Cluster: "west", MaxDeleteFraction: 0.5})
	se := istioRes("ServiceEntry", "web", "vd-reviews", `{"hosts":["reviews.global"]}`)
	envoy := snapshot.NewResource("EnvoyCluster//x", []byte(`{"apiVersion":"xds.meshrelay.io/v1","kind":"EnvoyCluster","metadata":{"name":"x"},"spec":{}}`))
	other := snapshot.NewResource("Gateway/gloo-system/gw", []byte(`{"apiVersion":"meshrelay.io/v1alpha1","kind":"Gateway","metadata":{"name":"gw","namespace":"gloo-system"},"spec":{}}`))
	sidecar := snapshot.NewResource("Sidecar/web/s", []byte(`{"apiVersion":"networking.istio.io/v1","kind":"Sidecar","metadata":{"name":"s","namespace":"web"},"spec":{}}`))
	want, err := k.desired(snapshot.New(1, 0, []snapshot.Resource{se, envoy, other, sidecar}))
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 1 {
		t.Fatalf("desired %d objects, want only the ServiceEntry", len(want))
	}
	w := want[objectID{"ServiceEntry", "web", "vd-reviews"}]
	if w == nil {
		t.Fatal("ServiceEntry missing")
	}
	if l := w.obj.GetLabels(); l[LabelManagedBy] != ManagedBy || l[LabelCluster] != "west" {
		t.Errorf("labels = %v; the sink's cluster must win", l)
	}
	if w.gvr.Resource != "serviceentries" || w.gvr.Group != IstioGroup || w.gvr.Version != "v1" {
		t.Errorf("gvr = %v", w.gvr)
	}
	if h := w.obj.GetAnnotations()[AnnotationAppliedHash]; h != w.hash || len(h) != 64 {
		t.Errorf("hash annotation %q, hash %q", h, w.hash)
	}
	// The hash covers the content: another spec, another hash; the same, the same.
	again, _ := k.desired(snapshot.New(2, 3, []snapshot.Resource{se}))
	if again[w.id].hash != w.hash {
		t.Error("hash changed with the version")
	}
	changed, _ := k.desired(snapshot.New(2, 0, []snapshot.Resource{istioRes("ServiceEntry", "web", "vd-reviews", `{"hosts":["other.global"]}`)}))
	if changed[w.id].hash == w.hash {
		t.Error("hash did not change with the spec")
	}

	dup := snapshot.NewResource("ServiceEntry/web/vd-reviews-2", []byte(strings.Replace(string(se.Body), "networking.istio.io/v1", "networking.istio.io/v1alpha3", 1)))
	if _, err := k.desired(snapshot.New(1, 0, []snapshot.Resource{se, dup})); err == nil || !strings.Contains(err.Error(), "same object") {
		t.Errorf("duplicate object: err = %v", err)
	}
	noNS := snapshot.NewResource("ServiceEntry//x", []byte(`{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{"name":"x"},"spec":{}}`))
	if _, err := k.desired(snapshot.New(1, 0, []snapshot.Resource{noNS})); err == nil {
		t.Error("object without namespace accepted")
	}
}

func TestSubset(t *testing.T) {
	var live map[string]any
	if err := json.Unmarshal([]byte(`{"a":1,"b":{"c":[{"d":2.5,"e":"x","extra":true}],"f":null},"g":"y"}`), &live); err != nil {
		t.Fatal(err)
	}
	live["n"] = int64(7) // the unstructured decoder gives int64
	tests := []struct {
		want string
		ok   bool
	}{
		{`{}`, true},
		{`{"a":1}`, true},
		{`{"a":2}`, false},
		{`{"b":{"c":[{"d":2.5}]}}`, true},
		{`{"b":{"c":[{"d":2.5},{"d":1}]}}`, false},
		{`{"b":{"c":[]}}`, false},
		{`{"b":{"f":null}}`, true},
		{`{"missing":1}`, false},
		{`{"g":"y","n":7}`, true},
		{`{"n":"7"}`, false},
	}
	for _, tt := range tests {
		var w map[string]any
		if err := json.Unmarshal([]byte(tt.want), &w); err != nil {
			t.Fatal(err)
		}
		if got := subset(w, live); got != tt.ok {
			t.Errorf("subset(%s) = %v, want %v", tt.want, got, tt.ok)
		}
	}
}

func TestInSync(t *testing.T) {
	k := newTestKube(t, KubeConfig{Cluster: "west", MaxDeleteFraction: 0.5})
	want, err := k.desired(snapshot.New(1, 0, []snapshot.Resource{istioRes("DestinationRule", "web", "r", `{"host":"r.web.svc.cluster.local","trafficPolicy":{"outlierDetection":{"consecutive5xxErrors":5}}}`)}))
	if err != nil {
		t.Fatal(err)
	}
	w := want[objectID{"DestinationRule", "web", "r"}]
	live := func(edit func(o *unstructured.Unstructured)) *unstructured.Unstructured {
		o := w.obj.DeepCopy()
		o.SetResourceVersion("5")
		o.SetLabels(map[string]string{LabelManagedBy: ManagedBy, LabelCluster: "west", "extra": "kept"})
		if edit != nil {
			edit(o)
		}
		return o
	}
	if !inSync(w, live(nil)) {
		t.Error("identical object not in sync")
	}
	if !inSync(w, live(func(o *unstructured.Unstructured) {
		_ = unstructured.SetNestedField(o.Object, "defaulted", "spec", "trafficPolicy", "extra")
	})) {
		t.Error("a field added by the server makes it out of sync")
	}
	for name, edit := range map[string]func(o *unstructured.Unstructured){
		"other hash": func(o *unstructured.Unstructured) { o.SetAnnotations(map[string]string{AnnotationAppliedHash: "x"}) },
		"edited spec": func(o *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(o.Object, int64(9), "spec", "trafficPolicy", "outlierDetection", "consecutive5xxErrors")
		},
		"label lost":   func(o *unstructured.Unstructured) { o.SetLabels(map[string]string{LabelManagedBy: ManagedBy}) },
		"being delete": func(o *unstructured.Unstructured) { now := metav1.Now(); o.SetDeletionTimestamp(&now) },
	} {
		if inSync(w, live(edit)) {
			t.Errorf("%s: in sync", name)
		}
	}
}

func TestGuardRule(t *testing.T) {
	tests := []struct {
		name        string
		fraction    float64
		min         int
		applied     bool
		lastEpoch   uint64
		epoch       uint64
		deletions   int
		owned       int
		wantRefused bool
	}{
		{"nothing to delete", 0.5, 2, true, 1, 1, 0, 10, false},
		{"half is allowed", 0.5, 2, true, 1, 1, 5, 10, false},
		{"more than half", 0.5, 2, true, 1, 1, 6, 10, true},
		{"all of a large set", 0.5, 2, true, 1, 1, 10, 10, true},
		{"below the minimum", 0.5, 2, true, 1, 1, 1, 1, false},
		{"at the minimum", 0.5, 2, true, 1, 1, 2, 2, true},
		{"newer epoch means it", 0.5, 2, true, 1, 2, 10, 10, false},
		{"older epoch does not", 0.5, 2, true, 2, 1, 10, 10, true},
		{"nothing applied yet: cannot tell", 0.5, 2, false, 0, 5, 10, 10, true},
		{"guard off", 1, 2, true, 1, 1, 10, 10, false},
		{"zero fraction", 0, 0, true, 1, 1, 1, 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newTestKube(t, KubeConfig{Cluster: "c", MaxDeleteFraction: tt.fraction, MinGuardedDeletions: tt.min})
			k.applied, k.appliedEpo = tt.applied, tt.lastEpoch
			err := k.guard(snapshot.New(7, tt.epoch, nil), stale(tt.deletions), tt.owned, false)
			if refused := err != nil; refused != tt.wantRefused {
				t.Fatalf("refused = %v (%v), want %v", refused, err, tt.wantRefused)
			}
			g := k.Guard()
			if g.Active != tt.wantRefused {
				t.Errorf("Guard().Active = %v", g.Active)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrDeletionGuard) {
				t.Errorf("error %v does not wrap ErrDeletionGuard", err)
			}
			counts := " " + itoa(tt.deletions) + " of the " + itoa(tt.owned) + " objects"
			if !strings.Contains(err.Error(), counts) || g.Deletions != tt.deletions || g.Owned != tt.owned || g.Refusals != 1 || g.Version != 7 {
				t.Errorf("error %q / status %+v do not name the counts", err, g)
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestRefusedClassification: the API server refusing one object is a refusal; its failures
// and the connection's are not (the output is then refused and sent again).
func TestRefusedClassification(t *testing.T) {
	gr := schema.GroupResource{Group: IstioGroup, Resource: "serviceentries"}
	tests := []struct {
		name    string
		err     error
		refused bool
	}{
		{"terminating namespace", apierrors.NewForbidden(gr, "x", errors.New("unable to create new content in namespace doomed because it is being terminated")), true},
		{"schema", apierrors.NewInvalid(schema.GroupKind{Group: IstioGroup, Kind: "ServiceEntry"}, "x", nil), true},
		{"missing kind", apierrors.NewNotFound(gr, ""), true},
		{"bad request", apierrors.NewBadRequest("no"), true},
		{"wrapped", fmt.Errorf("apply: %w", apierrors.NewForbidden(gr, "x", errors.New("denied"))), true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), false},
		{"internal error", apierrors.NewInternalError(errors.New("etcd")), false},
		{"throttled", apierrors.NewTooManyRequests("later", 1), false},
		{"unauthorized", apierrors.NewUnauthorized("token"), false},
		{"connection", errors.New("dial tcp 127.0.0.1:6443: connect: connection refused"), false},
	}
	for _, tt := range tests {
		if got := refused(tt.err); got != tt.refused {
			t.Errorf("%s: refused = %v, want %v", tt.name, got, tt.refused)
		}
	}
	nsMissing := apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "fresh")
	if !missingNamespace(nsMissing, "fresh") || missingNamespace(nsMissing, "other") || missingNamespace(apierrors.NewNotFound(gr, "fresh"), "fresh") {
		t.Error("missingNamespace misreads namespace NotFound errors")
	}
}

// A hold ends with an output that passes, not with the periodic resync of the last output
// that passed: the held-back output is still refused and must stay visible.
func TestGuardHoldOutlivesResync(t *testing.T) {
	k := newTestKube(t, KubeConfig{Cluster: "c", MaxDeleteFraction: 0.5, MinGuardedDeletions: 2})
	k.applied, k.appliedEpo = true, 1
	if err := k.guard(snapshot.New(8, 1, nil), stale(5), 6, false); err == nil {
		t.Fatal("5 of 6 deletions not held back")
	}
	if err := k.guard(snapshot.New(7, 1, nil), nil, 6, true); err != nil {
		t.Fatalf("resync of the last output refused: %v", err)
	}
	if g := k.Guard(); !g.Active {
		t.Fatalf("a resync released the hold: %+v", g)
	}
	if v := metricValue(t, k.m.guardActive); v != 1 {
		t.Errorf("meshrelay_sink_deletion_guard_active = %v after a resync, want 1", v)
	}
	if err := k.guard(snapshot.New(9, 1, nil), nil, 6, false); err != nil {
		t.Fatalf("an output keeping the objects: %v", err)
	}
	if g := k.Guard(); g.Active {
		t.Errorf("an output that passes did not release the hold: %+v", g)
	}
}

// stale names n owned objects that an output would delete.
func stale(n int) []objectID {
	var out []objectID
	for i := range n {
		out = append(out, objectID{"ServiceEntry", "web", string(rune('a' + i))})
	}
	return out
}
