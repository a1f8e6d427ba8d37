package v1alpha1

// VirtualDestination gives one global hostname and set of ports to a service that runs in
// many clusters, selected by labels or name; a policy written once for it applies to every
// cluster it selects (seed 004).
type VirtualDestination struct {
	TypeMeta `json:",inline"`
	// Metadata names the VirtualDestination.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired VirtualDestination.
	Spec VirtualDestinationSpec `json:"spec"`
}

// VirtualDestinationSpec is the spec of a VirtualDestination.
type VirtualDestinationSpec struct {
	// Hosts are the global DNS names, at least one (e.g. reviews.global).
	//
	// +kubebuilder:validation:MinItems=1
	Hosts []string `json:"hosts"`
	// Ports are the ports clients use, at least one, each number at most once.
	//
	// +kubebuilder:validation:MinItems=1
	Ports []VirtualDestinationPort `json:"ports"`
	// Services select the backing services in every cluster, at least one selector; a
	// service selected by any selector backs the VirtualDestination.
	//
	// +kubebuilder:validation:MinItems=1
	Services []ServiceSelector `json:"services"`
}

// Protocols of a VirtualDestination port.
const (
	ProtocolHTTP  = "HTTP"
	ProtocolHTTP2 = "HTTP2"
	ProtocolGRPC  = "GRPC"
	ProtocolTCP   = "TCP"
	ProtocolTLS   = "TLS"
)

// VirtualDestinationPort is one port of a VirtualDestination.
type VirtualDestinationPort struct {
	// Number is the port clients use, 1-65535 (required).
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Number int `json:"number"`
	// Protocol is one of ProtocolHTTP (empty means it), ProtocolHTTP2, ProtocolGRPC,
	// ProtocolTCP and ProtocolTLS.
	//
	// +kubebuilder:validation:Enum=HTTP;HTTP2;GRPC;TCP;TLS
	Protocol string `json:"protocol,omitempty"`
	// TargetPort is the port of the backing services; nil means Number.
	TargetPort *TargetPort `json:"targetPort,omitempty"`
}

// TargetPort is a backing service's port, by number or by name. Exactly one field is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.number) != has(self.name)",message="exactly one of number, name must be set"
type TargetPort struct {
	// Number is the service port number, 1-65535.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Number int `json:"number,omitempty"`
	// Name is the service port name.
	Name string `json:"name,omitempty"`
}

// ServiceSelector selects services. At least one of Labels and Name is set; all set fields
// must match.
//
// +kubebuilder:validation:XValidation:rule="has(self.labels) || has(self.name)",message="at least one of labels, name must be set"
type ServiceSelector struct {
	// Labels the service must carry.
	Labels map[string]string `json:"labels,omitempty"`
	// Name is the service's name.
	Name string `json:"name,omitempty"`
	// Namespace is the service's namespace; empty means every namespace.
	Namespace string `json:"namespace,omitempty"`
	// Cluster is the workload cluster; empty means every cluster.
	Cluster string `json:"cluster,omitempty"`
}
