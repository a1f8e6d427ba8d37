package v1alpha1

// FailoverPolicy turns on locality-ordered failover for the VirtualDestinations it selects:
// traffic stays in the client's zone, then region, while they have healthy endpoints, unless
// Config maps localities explicitly.
type FailoverPolicy struct {
	TypeMeta `json:",inline"`
	// Metadata names the FailoverPolicy.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired policy.
	Spec FailoverPolicySpec `json:"spec"`
}

// FailoverPolicySpec is the spec of a FailoverPolicy.
type FailoverPolicySpec struct {
	// ApplyToDestinations select the destinations the policy applies to, at least one.
	//
	// +kubebuilder:validation:MinItems=1
	ApplyToDestinations []DestinationSelector `json:"applyToDestinations"`
	// Config tunes the failover; empty means locality-ordered failover by region, then zone.
	Config FailoverConfig `json:"config,omitzero"`
}

// FailoverConfig tunes locality failover.
type FailoverConfig struct {
	// LocalityMappings replace the default order for the listed source localities.
	LocalityMappings []LocalityMapping `json:"localityMappings,omitempty"`
}

// LocalityMapping sends the traffic of clients in From, when their own locality has no
// healthy endpoint, to the localities in To, in order.
type LocalityMapping struct {
	// From is the clients' locality (region required).
	From Locality `json:"from"`
	// To are the failover localities in priority order, at least one (region required).
	//
	// +kubebuilder:validation:MinItems=1
	To []Locality `json:"to"`
}

// Locality is a region, or a zone of a region.
type Locality struct {
	// Region is the region (required).
	//
	// +kubebuilder:validation:MinLength=1
	Region string `json:"region"`
	// Zone is a zone of the region; empty means the whole region.
	Zone string `json:"zone,omitempty"`
}

// DefaultConsecutiveErrors is the consecutiveErrors of an OutlierDetectionPolicy that leaves
// it unset.
const DefaultConsecutiveErrors = 5

// OutlierDetectionPolicy ejects misbehaving endpoints of the VirtualDestinations it selects.
type OutlierDetectionPolicy struct {
	TypeMeta `json:",inline"`
	// Metadata names the OutlierDetectionPolicy.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired policy.
	Spec OutlierDetectionPolicySpec `json:"spec"`
}

// OutlierDetectionPolicySpec is the spec of an OutlierDetectionPolicy.
type OutlierDetectionPolicySpec struct {
	// ApplyToDestinations select the destinations the policy applies to, at least one.
	//
	// +kubebuilder:validation:MinItems=1
	ApplyToDestinations []DestinationSelector `json:"applyToDestinations"`
	// Config tunes the ejection; empty means the defaults.
	Config OutlierDetectionConfig `json:"config,omitzero"`
}

// OutlierDetectionConfig tunes outlier ejection.
type OutlierDetectionConfig struct {
	// ConsecutiveErrors is the number of consecutive errors (5xx answers, connection
	// failures) that eject an endpoint, at least 1; 0 (unset) means
	// DefaultConsecutiveErrors.
	//
	// +kubebuilder:validation:Minimum=0
	ConsecutiveErrors int `json:"consecutiveErrors,omitempty"`
	// Interval is the time between ejection sweeps; unset means Envoy's default, 10s.
	Interval Duration `json:"interval,omitzero"`
	// BaseEjectionTime is how long an endpoint stays ejected, multiplied by the number of
	// times it was ejected; unset means Envoy's default, 30s.
	BaseEjectionTime Duration `json:"baseEjectionTime,omitzero"`
	// MaxEjectionPercent caps the share of endpoints that may be ejected, 0-100; nil leaves
	// it to the translator (DESIGN §7: 100 on failover clusters, not Envoy's 10).
	//
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxEjectionPercent *int `json:"maxEjectionPercent,omitempty"`
}

// DestinationSelector selects the destinations of a policy.
type DestinationSelector struct {
	// Kind is the kind of destination selected: DestinationKindVirtualDestination (empty
	// means it), the only kind policies apply to.
	//
	// +kubebuilder:validation:Enum=VIRTUAL_DESTINATION
	Kind string `json:"kind,omitempty"`
	// Selector selects destinations of that kind.
	Selector ObjectSelector `json:"selector,omitzero"`
}

// ObjectSelector selects resources by labels, name and namespace; all set fields must
// match, and an empty selector selects every resource of the namespace.
type ObjectSelector struct {
	// Labels the resource must carry.
	Labels map[string]string `json:"labels,omitempty"`
	// Name is the resource's name.
	Name string `json:"name,omitempty"`
	// Namespace is the resource's namespace; empty means the policy's namespace.
	Namespace string `json:"namespace,omitempty"`
}
