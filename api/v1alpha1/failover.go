package v1alpha1

// FailoverScheme makes traffic to a primary Upstream fail over, in priority order, to
// Upstreams in other clusters (seed 003). In the primary's cluster it becomes one cluster
// whose priority 0 is the primary's endpoints and whose priority N is the failover gateways
// of the clusters of failover group N.
type FailoverScheme struct {
	TypeMeta `json:",inline"`
	// Metadata names the FailoverScheme.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired failover.
	Spec FailoverSchemeSpec `json:"spec"`
}

// FailoverSchemeSpec is the spec of a FailoverScheme.
type FailoverSchemeSpec struct {
	// Primary is the Upstream that takes traffic while it has healthy endpoints. ClusterName
	// and Name are required; an empty Namespace means the FailoverScheme's namespace.
	Primary ClusterObjectRef `json:"primary"`
	// FailoverGroups are the failover targets in priority order (at least one): group 0 is
	// priority 1, group 1 priority 2, and so on.
	//
	// +kubebuilder:validation:MinItems=1
	FailoverGroups []FailoverGroup `json:"failoverGroups"`
}

// FailoverGroup is one priority level of failover targets.
type FailoverGroup struct {
	// PriorityGroup are the targets of this priority (at least one); traffic is balanced
	// over all of them.
	//
	// +kubebuilder:validation:MinItems=1
	PriorityGroup []FailoverTarget `json:"priorityGroup"`
}

// FailoverTarget is a set of Upstreams in one workload cluster.
type FailoverTarget struct {
	// Cluster is the workload cluster of the Upstreams (required).
	//
	// +kubebuilder:validation:MinLength=1
	Cluster string `json:"cluster"`
	// Upstreams are the target Upstreams (at least one); an empty namespace means the
	// FailoverScheme's namespace. None of them may be the primary.
	//
	// +kubebuilder:validation:MinItems=1
	Upstreams []ObjectRef `json:"upstreams"`
}
