package v1alpha1

// KubernetesCluster registers a workload cluster with the management server. An agent may
// register only if the KubernetesCluster of its name exists.
type KubernetesCluster struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta            `json:"metadata"`
	Spec     KubernetesClusterSpec `json:"spec"`
}

// KubernetesClusterSpec is the spec of a KubernetesCluster.
type KubernetesClusterSpec struct {
	// ClusterDomain is the cluster's DNS suffix, "cluster.local" when empty.
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// SkipWarming excludes the cluster from safe mode: translation does not wait for its
	// input snapshot.
	SkipWarming bool `json:"skipWarming,omitempty"`
}
