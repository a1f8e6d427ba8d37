package v1alpha1

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	apiv1alpha1 "github.com/meshrelay/meshrelay/api/v1alpha1"
)

// Object is a meshrelay custom resource: a pointer to one of the kinds of this package.
//
// +kubebuilder:object:generate=false
type Object interface {
	metav1.Object
	runtime.Object
	// GetStatus returns the resource's status, for the management server to fill in.
	GetStatus() *Status
}

// ObjectList is a list of one kind of meshrelay custom resource.
//
// +kubebuilder:object:generate=false
type ObjectList interface {
	metav1.ListInterface
	runtime.Object
}

// AnnotationLastApplied is kubectl's copy of the last applied object. ToObject drops it: it
// repeats the object and would make the same resource differ by how it was applied.
const AnnotationLastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// ErrUnknownKind is returned for a kind or type that is not a meshrelay custom resource.
var ErrUnknownKind = errors.New("not a meshrelay custom resource kind")

type kindInfo struct {
	newObject func() Object
	newList   func() ObjectList
}

var kinds = map[string]kindInfo{
	apiv1alpha1.KindKubernetesCluster: {func() Object { return &KubernetesCluster{} }, func() ObjectList { return &KubernetesClusterList{} }},
	apiv1alpha1.KindUpstream:          {func() Object { return &Upstream{} }, func() ObjectList { return &UpstreamList{} }},
	apiv1alpha1.KindFailoverScheme:    {func() Object { return &FailoverScheme{} }, func() ObjectList { return &FailoverSchemeList{} }},
	apiv1alpha1.KindGateway:           {func() Object { return &Gateway{} }, func() ObjectList { return &GatewayList{} }},
	apiv1alpha1.KindRouteTable:        {func() Object { return &RouteTable{} }, func() ObjectList { return &RouteTableList{} }},
	apiv1alpha1.KindVirtualDestination: {func() Object { return &VirtualDestination{} },
		func() ObjectList { return &VirtualDestinationList{} }},
	apiv1alpha1.KindFailoverPolicy: {func() Object { return &FailoverPolicy{} }, func() ObjectList { return &FailoverPolicyList{} }},
	apiv1alpha1.KindOutlierDetectionPolicy: {func() Object { return &OutlierDetectionPolicy{} },
		func() ObjectList { return &OutlierDetectionPolicyList{} }},
}

// Kinds lists the kinds of meshrelay's custom resources, sorted.
func Kinds() []string { return slices.Sorted(maps.Keys(kinds)) }

// New returns an empty custom resource of a kind, with its apiVersion and kind set.
func New(kind string) (Object, error) {
	k, ok := kinds[kind]
	if !ok {
		return nil, fmt.Errorf("new %q: %w", kind, ErrUnknownKind)
	}
	o := k.newObject()
	o.GetObjectKind().SetGroupVersionKind(GroupVersion.WithKind(kind))
	return o, nil
}

// NewList returns an empty list of a kind, with its apiVersion and kind set.
func NewList(kind string) (ObjectList, error) {
	k, ok := kinds[kind]
	if !ok {
		return nil, fmt.Errorf("new list of %q: %w", kind, ErrUnknownKind)
	}
	l := k.newList()
	l.GetObjectKind().SetGroupVersionKind(GroupVersion.WithKind(kind + "List"))
	return l, nil
}

// GetStatus implements Object.
func (o *KubernetesCluster) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *Upstream) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *FailoverScheme) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *Gateway) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *RouteTable) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *VirtualDestination) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *FailoverPolicy) GetStatus() *Status { return &o.Status }

// GetStatus implements Object.
func (o *OutlierDetectionPolicy) GetStatus() *Status { return &o.Status }

var (
	_ Object = (*KubernetesCluster)(nil)
	_ Object = (*Upstream)(nil)
	_ Object = (*FailoverScheme)(nil)
	_ Object = (*Gateway)(nil)
	_ Object = (*RouteTable)(nil)
	_ Object = (*VirtualDestination)(nil)
	_ Object = (*FailoverPolicy)(nil)
	_ Object = (*OutlierDetectionPolicy)(nil)
)

// ToObject converts a custom resource to its api/v1alpha1 resource, a pointer such as
// *apiv1alpha1.Upstream: apiVersion meshrelay.io/v1alpha1, the kind, the name, namespace,
// labels and annotations (less AnnotationLastApplied), and a deep copy of the spec. The
// status stays behind, and so does the generation, for which api/v1alpha1 has no field:
// read it from the custom resource (GetGeneration) when writing Status.ObservedGeneration.
func ToObject(cr Object) (any, error) {
	tm := func(kind string) apiv1alpha1.TypeMeta {
		return apiv1alpha1.TypeMeta{APIVersion: apiv1alpha1.APIVersion, Kind: kind}
	}
	m := toMeta(cr)
	switch o := cr.(type) {
	case *KubernetesCluster:
		return &apiv1alpha1.KubernetesCluster{TypeMeta: tm(apiv1alpha1.KindKubernetesCluster), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *Upstream:
		return &apiv1alpha1.Upstream{TypeMeta: tm(apiv1alpha1.KindUpstream), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *FailoverScheme:
		return &apiv1alpha1.FailoverScheme{TypeMeta: tm(apiv1alpha1.KindFailoverScheme), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *Gateway:
		return &apiv1alpha1.Gateway{TypeMeta: tm(apiv1alpha1.KindGateway), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *RouteTable:
		return &apiv1alpha1.RouteTable{TypeMeta: tm(apiv1alpha1.KindRouteTable), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *VirtualDestination:
		return &apiv1alpha1.VirtualDestination{TypeMeta: tm(apiv1alpha1.KindVirtualDestination), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *FailoverPolicy:
		return &apiv1alpha1.FailoverPolicy{TypeMeta: tm(apiv1alpha1.KindFailoverPolicy), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	case *OutlierDetectionPolicy:
		return &apiv1alpha1.OutlierDetectionPolicy{TypeMeta: tm(apiv1alpha1.KindOutlierDetectionPolicy), Metadata: m, Spec: *o.Spec.DeepCopy()}, nil
	default:
		return nil, fmt.Errorf("convert %T: %w", cr, ErrUnknownKind)
	}
}

// FromObject converts an api/v1alpha1 resource (a pointer such as *apiv1alpha1.Upstream,
// or the value) to its custom resource: apiVersion meshrelay.io/v1alpha1 whatever the
// resource's own apiVersion (the seeds' apiVersions convert too), its kind, name,
// namespace, labels and annotations, and a deep copy of the spec. A KubernetesCluster's
// namespace is dropped: the custom resource is cluster-scoped.
func FromObject(obj any) (Object, error) {
	var cr Object
	var m apiv1alpha1.ObjectMeta
	switch o := deref(obj).(type) {
	case apiv1alpha1.KubernetesCluster:
		m = o.Metadata
		m.Namespace = ""
		cr = &KubernetesCluster{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.Upstream:
		m, cr = o.Metadata, &Upstream{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.FailoverScheme:
		m, cr = o.Metadata, &FailoverScheme{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.Gateway:
		m, cr = o.Metadata, &Gateway{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.RouteTable:
		m, cr = o.Metadata, &RouteTable{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.VirtualDestination:
		m, cr = o.Metadata, &VirtualDestination{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.FailoverPolicy:
		m, cr = o.Metadata, &FailoverPolicy{Spec: *o.Spec.DeepCopy()}
	case apiv1alpha1.OutlierDetectionPolicy:
		m, cr = o.Metadata, &OutlierDetectionPolicy{Spec: *o.Spec.DeepCopy()}
	default:
		return nil, fmt.Errorf("convert %T: %w", obj, ErrUnknownKind)
	}
	kind := kindOf(cr)
	cr.GetObjectKind().SetGroupVersionKind(GroupVersion.WithKind(kind))
	cr.SetName(m.Name)
	cr.SetNamespace(m.Namespace)
	cr.SetLabels(maps.Clone(m.Labels))
	cr.SetAnnotations(maps.Clone(m.Annotations))
	return cr, nil
}

// deref turns a pointer to an api/v1alpha1 resource into its value; nil pointers and other
// values are returned unchanged (and rejected by FromObject).
func deref(obj any) any {
	switch o := obj.(type) {
	case *apiv1alpha1.KubernetesCluster:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.Upstream:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.FailoverScheme:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.Gateway:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.RouteTable:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.VirtualDestination:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.FailoverPolicy:
		if o != nil {
			return *o
		}
	case *apiv1alpha1.OutlierDetectionPolicy:
		if o != nil {
			return *o
		}
	}
	return obj
}

// kindOf returns the kind of a custom resource of this package.
func kindOf(cr Object) string {
	switch cr.(type) {
	case *KubernetesCluster:
		return apiv1alpha1.KindKubernetesCluster
	case *Upstream:
		return apiv1alpha1.KindUpstream
	case *FailoverScheme:
		return apiv1alpha1.KindFailoverScheme
	case *Gateway:
		return apiv1alpha1.KindGateway
	case *RouteTable:
		return apiv1alpha1.KindRouteTable
	case *VirtualDestination:
		return apiv1alpha1.KindVirtualDestination
	case *FailoverPolicy:
		return apiv1alpha1.KindFailoverPolicy
	case *OutlierDetectionPolicy:
		return apiv1alpha1.KindOutlierDetectionPolicy
	}
	return ""
}

func toMeta(cr Object) apiv1alpha1.ObjectMeta {
	ann := maps.Clone(cr.GetAnnotations())
	delete(ann, AnnotationLastApplied)
	if len(ann) == 0 {
		ann = nil
	}
	labels := maps.Clone(cr.GetLabels())
	if len(labels) == 0 {
		labels = nil
	}
	return apiv1alpha1.ObjectMeta{Name: cr.GetName(), Namespace: cr.GetNamespace(), Labels: labels, Annotations: ann}
}
