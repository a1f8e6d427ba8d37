// Package v1alpha1 holds the Go types of the resources users write (apiVersion
// meshrelay.io/v1alpha1) and of the Kubernetes-shaped objects agents discover. The field
// names follow the seeds so that YAML copied from them loads unchanged.
//
// The kubebuilder markers in these comments feed controller-gen (scripts/generate.sh): they
// generate zz_generated.deepcopy.go and the OpenAPI schemas of the CRDs in
// charts/meshrelay-server/crds, whose Kubernetes-facing types (api/kube/v1alpha1) reuse the
// spec types of this package.
//
// +kubebuilder:object:generate=true
package v1alpha1

// Group is the API group of meshrelay's own resources.
const Group = "meshrelay.io"

// APIVersion is the apiVersion of meshrelay's own resources.
const APIVersion = Group + "/v1alpha1"

// Kinds of meshrelay resources.
const (
	KindKubernetesCluster      = "KubernetesCluster"
	KindUpstream               = "Upstream"
	KindFailoverScheme         = "FailoverScheme"
	KindGateway                = "Gateway"
	KindRouteTable             = "RouteTable"
	KindVirtualDestination     = "VirtualDestination"
	KindFailoverPolicy         = "FailoverPolicy"
	KindOutlierDetectionPolicy = "OutlierDetectionPolicy"
)

// Kinds of discovered Kubernetes objects.
const (
	KindService       = "Service"
	KindEndpointSlice = "EndpointSlice"
)

// ObjectMeta is the subset of Kubernetes object metadata meshrelay reads.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// TypeMeta is an object's apiVersion and kind.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}
