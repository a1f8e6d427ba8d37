package v1alpha1

// ObjectRef names a resource by name and namespace. Where a reference leaves the namespace
// empty, the field that holds it says which namespace it means.
type ObjectRef struct {
	// Name is the referenced resource's metadata.name.
	//
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace is the referenced resource's metadata.namespace.
	Namespace string `json:"namespace,omitempty"`
}

// ClusterObjectRef names a resource in one workload cluster, as Gloo Federation's primary
// of a FailoverScheme does.
type ClusterObjectRef struct {
	// ClusterName is the workload cluster (a KubernetesCluster name) the resource lives in.
	//
	// +kubebuilder:validation:MinLength=1
	ClusterName string `json:"clusterName"`
	// Name is the resource's metadata.name.
	//
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace is the resource's metadata.namespace.
	Namespace string `json:"namespace,omitempty"`
}
