package v1alpha1_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	apiv1alpha1 "github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
)

func TestKinds(t *testing.T) {
	want := []string{
		apiv1alpha1.KindFailoverPolicy, apiv1alpha1.KindFailoverScheme, apiv1alpha1.KindGateway,
		apiv1alpha1.KindKubernetesCluster, apiv1alpha1.KindOutlierDetectionPolicy, apiv1alpha1.KindRouteTable,
		apiv1alpha1.KindUpstream, apiv1alpha1.KindVirtualDestination,
	}
	if got := kubev1alpha1.Kinds(); !slices.Equal(got, want) {
		t.Fatalf("Kinds() = %v, want %v", got, want)
	}
	for _, kind := range want {
		o, err := kubev1alpha1.New(kind)
		if err != nil {
			t.Fatalf("New(%s): %v", kind, err)
		}
		if gvk := o.GetObjectKind().GroupVersionKind(); gvk != kubev1alpha1.GroupVersion.WithKind(kind) {
			t.Errorf("New(%s) has %v", kind, gvk)
		}
		l, err := kubev1alpha1.NewList(kind)
		if err != nil {
			t.Fatalf("NewList(%s): %v", kind, err)
		}
		if gvk := l.GetObjectKind().GroupVersionKind(); gvk.Kind != kind+"List" {
			t.Errorf("NewList(%s) has %v", kind, gvk)
		}
		if o.GetStatus() == nil {
			t.Errorf("%s: GetStatus() = nil", kind)
		}
	}
	if _, err := kubev1alpha1.New("Service"); !errors.Is(err, kubev1alpha1.ErrUnknownKind) {
		t.Errorf("New(Service) error = %v, want ErrUnknownKind", err)
	}
	if _, err := kubev1alpha1.FromObject(apiv1alpha1.Service{}); !errors.Is(err, kubev1alpha1.ErrUnknownKind) {
		t.Errorf("FromObject(Service) error = %v, want ErrUnknownKind", err)
	}
}

// TestConvertRoundTrip converts every seed resource to its custom resource and back: the
// result is the resource as meshrelay.io/v1alpha1, with the same metadata and spec.
func TestConvertRoundTrip(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "seeds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := resource.Parse("seeds.yaml", data)
	if len(errs) > 0 {
		t.Fatalf("parse: %v", errs)
	}
	for _, o := range objs {
		t.Run(o.Kind, func(t *testing.T) {
			typed, err := newAPIObject(o.Kind)
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Into(typed); err != nil {
				t.Fatalf("decode: %v", err)
			}
			cr, err := kubev1alpha1.FromObject(typed)
			if err != nil {
				t.Fatalf("FromObject: %v", err)
			}
			if cr.GetObjectKind().GroupVersionKind() != kubev1alpha1.GroupVersion.WithKind(o.Kind) ||
				cr.GetName() != o.Name || cr.GetNamespace() != o.Namespace {
				t.Errorf("custom resource %v %s/%s, want %s %s/%s", cr.GetObjectKind().GroupVersionKind(), cr.GetNamespace(), cr.GetName(), o.Kind, o.Namespace, o.Name)
			}
			cr.SetGeneration(3)
			cr.SetAnnotations(map[string]string{kubev1alpha1.AnnotationLastApplied: "{}", "team": "mesh"})
			back, err := kubev1alpha1.ToObject(cr)
			if err != nil {
				t.Fatalf("ToObject: %v", err)
			}
			js, err := json.Marshal(back)
			if err != nil {
				t.Fatal(err)
			}
			got, err := resource.Decode(js)
			if err != nil {
				t.Fatalf("converted resource rejected: %v", err)
			}
			want := withAPIVersionAndAnnotation(t, o.Raw)
			if string(got.Raw) != string(want) {
				t.Errorf("round trip changed the resource\n got %s\nwant %s", got.Raw, want)
			}
		})
	}
}

func newAPIObject(kind string) (any, error) {
	switch kind {
	case apiv1alpha1.KindKubernetesCluster:
		return &apiv1alpha1.KubernetesCluster{}, nil
	case apiv1alpha1.KindUpstream:
		return &apiv1alpha1.Upstream{}, nil
	case apiv1alpha1.KindFailoverScheme:
		return &apiv1alpha1.FailoverScheme{}, nil
	case apiv1alpha1.KindGateway:
		return &apiv1alpha1.Gateway{}, nil
	}
	return nil, errors.New("no api/v1alpha1 type for " + kind)
}

// withAPIVersionAndAnnotation returns the canonical JSON of a resource with apiVersion
// meshrelay.io/v1alpha1 and the annotation team=mesh.
func withAPIVersionAndAnnotation(t *testing.T, raw []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["apiVersion"] = apiv1alpha1.APIVersion
	m["metadata"].(map[string]any)["annotations"] = map[string]any{"team": "mesh"}
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	o, err := resource.Decode(js)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return o.Raw
}

// TestDeepCopy checks that a deep copy shares nothing with the original.
func TestDeepCopy(t *testing.T) {
	weight := 10
	rt := &kubev1alpha1.RouteTable{Spec: apiv1alpha1.RouteTableSpec{
		Hosts: []string{"a"},
		HTTP: []apiv1alpha1.HTTPRoute{{ForwardTo: apiv1alpha1.ForwardTo{Destinations: []apiv1alpha1.RouteDestination{
			{Ref: apiv1alpha1.DestinationRef{Name: "x"}, Weight: &weight},
		}}}},
	}}
	c := rt.DeepCopyObject().(*kubev1alpha1.RouteTable)
	*c.Spec.HTTP[0].ForwardTo.Destinations[0].Weight = 20
	c.Spec.Hosts[0] = "b"
	if weight != 10 || rt.Spec.Hosts[0] != "a" {
		t.Errorf("deep copy shares memory with the original")
	}
	gw := &kubev1alpha1.Gateway{Spec: apiv1alpha1.GatewaySpec{TCPGateway: &apiv1alpha1.TCPGateway{TCPHosts: []apiv1alpha1.TCPHost{
		{Name: "failover", Destination: apiv1alpha1.TCPDestination{ForwardSNIClusterName: &struct{}{}}},
	}}}}
	gc := gw.DeepCopy()
	if gc.Spec.TCPGateway == gw.Spec.TCPGateway || gc.Spec.TCPGateway.TCPHosts[0].Destination.ForwardSNIClusterName == nil {
		t.Errorf("gateway deep copy: %+v", gc.Spec.TCPGateway)
	}
}
