package v1alpha1

// DefaultBindAddress is the bindAddress of a Gateway that leaves it unset: every IPv4 and
// IPv6 address.
const DefaultBindAddress = "::"

// Gateway is a listener of the gateways of a workload cluster: an HTTP listener serving
// RouteTables, or a TCP listener such as the failover gateway of seed 003, which terminates
// mTLS and forwards by SNI to the local Upstream of that name.
type Gateway struct {
	TypeMeta `json:",inline"`
	// Metadata names the Gateway.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired listener.
	Spec GatewaySpec `json:"spec"`
}

// GatewaySpec is the spec of a Gateway. Exactly one of HTTPGateway and TCPGateway is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.httpGateway) != has(self.tcpGateway)",message="exactly one of httpGateway, tcpGateway must be set"
type GatewaySpec struct {
	// BindAddress is the IP address to listen on; empty means DefaultBindAddress.
	BindAddress string `json:"bindAddress,omitempty"`
	// BindPort is the port to listen on, 1-65535 (required).
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	BindPort int `json:"bindPort"`
	// HTTPGateway makes it an HTTP listener.
	HTTPGateway *HTTPGateway `json:"httpGateway,omitempty"`
	// TCPGateway makes it a TCP listener.
	TCPGateway *TCPGateway `json:"tcpGateway,omitempty"`
	// Cluster is the workload cluster whose gateways get this listener when the Gateway is
	// declared on the management server; empty when it arrives from a cluster's own
	// resources (the cluster is then the one that reported it).
	Cluster string `json:"cluster,omitempty"`
	// ProxyNames are the gateway proxies (by name) that get this listener; empty means
	// every gateway proxy of the cluster.
	ProxyNames []string `json:"proxyNames,omitempty"`
}

// HTTPGateway is an HTTP listener. Its object may be empty.
type HTTPGateway struct {
	// RouteTables are the RouteTables this listener serves (an empty namespace means the
	// Gateway's namespace); empty means every RouteTable whose spec.gateway is unset or
	// names this Gateway.
	RouteTables []ObjectRef `json:"routeTables,omitempty"`
}

// TCPGateway is a TCP listener.
type TCPGateway struct {
	// TCPHosts are the listener's filter chains (at least one), chosen by SNI.
	//
	// +kubebuilder:validation:MinItems=1
	TCPHosts []TCPHost `json:"tcpHosts"`
}

// TCPHost is one filter chain of a TCP listener.
type TCPHost struct {
	// Name names the host (required).
	//
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// SSLConfig makes the listener terminate TLS; nil means plain TCP.
	SSLConfig *SSLConfig `json:"sslConfig,omitempty"`
	// Destination says where the connections go (required).
	Destination TCPDestination `json:"destination"`
}

// SSLConfig is the TLS a TCP host terminates.
type SSLConfig struct {
	// SecretRef names the TLS Secret with the certificate, key and (for mTLS) the root CA;
	// an empty namespace means the Gateway's namespace; nil means the certificate the
	// management server issues to the cluster (DESIGN §7).
	SecretRef *ObjectRef `json:"secretRef,omitempty"`
	// SNIDomains restricts the host to these SNI names; empty matches every name.
	SNIDomains []string `json:"sniDomains,omitempty"`
}

// TCPDestination is where a TCP host forwards. Exactly one field is set.
//
// +kubebuilder:validation:XValidation:rule="has(self.forwardSniClusterName) != has(self.single)",message="exactly one of forwardSniClusterName, single must be set"
type TCPDestination struct {
	// ForwardSNIClusterName forwards each connection to the local Upstream named by its SNI
	// (the failover gateway). Its presence is what matters: write `forwardSniClusterName: {}`.
	//
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	ForwardSNIClusterName *struct{} `json:"forwardSniClusterName,omitempty"`
	// Single forwards every connection to one Upstream.
	Single *SingleDestination `json:"single,omitempty"`
}

// SingleDestination is one Upstream a TCP host forwards to.
type SingleDestination struct {
	// Upstream names the Upstream (name required; an empty namespace means the Gateway's
	// namespace).
	Upstream ObjectRef `json:"upstream"`
}
