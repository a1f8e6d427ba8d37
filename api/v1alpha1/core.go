package v1alpha1

// Service is the subset of a Kubernetes v1 Service that discovery reads.
//
// +kubebuilder:object:generate=false
type Service struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     ServiceSpec `json:"spec"`
	// Status is read for status.loadBalancer.ingress only.
	Status *ServiceStatus `json:"status,omitempty"`
}

// ServiceStatus is the subset of a Service's status that discovery reads.
//
// +kubebuilder:object:generate=false
type ServiceStatus struct {
	LoadBalancer LoadBalancerStatus `json:"loadBalancer"`
}

// LoadBalancerStatus lists the addresses a cloud load balancer of a Service has.
//
// +kubebuilder:object:generate=false
type LoadBalancerStatus struct {
	Ingress []LoadBalancerIngress `json:"ingress,omitempty"`
}

// LoadBalancerIngress is one address of a load balancer: an IP or a hostname.
//
// +kubebuilder:object:generate=false
type LoadBalancerIngress struct {
	IP       string `json:"ip,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// ServiceSpec is the subset of a Service's spec that discovery reads.
//
// +kubebuilder:object:generate=false
type ServiceSpec struct {
	Type      string            `json:"type,omitempty"`
	ClusterIP string            `json:"clusterIP,omitempty"`
	Selector  map[string]string `json:"selector,omitempty"`
	Ports     []ServicePort     `json:"ports,omitempty"`
}

// ServicePort is one port of a Service.
//
// +kubebuilder:object:generate=false
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	Port       int32  `json:"port"`
	TargetPort any    `json:"targetPort,omitempty"`
	NodePort   int32  `json:"nodePort,omitempty"`
}

// LabelServiceName is the EndpointSlice label naming its Service.
const LabelServiceName = "kubernetes.io/service-name"

// EndpointSlice is the subset of a discovery.k8s.io/v1 EndpointSlice that discovery reads.
//
// +kubebuilder:object:generate=false
type EndpointSlice struct {
	TypeMeta    `json:",inline"`
	Metadata    ObjectMeta     `json:"metadata"`
	AddressType string         `json:"addressType,omitempty"`
	Endpoints   []Endpoint     `json:"endpoints,omitempty"`
	Ports       []EndpointPort `json:"ports,omitempty"`
}

// Endpoint is one endpoint of an EndpointSlice.
//
// +kubebuilder:object:generate=false
type Endpoint struct {
	Addresses  []string           `json:"addresses"`
	Conditions EndpointConditions `json:"conditions,omitempty"`
	Zone       string             `json:"zone,omitempty"`
	NodeName   string             `json:"nodeName,omitempty"`
	Hostname   string             `json:"hostname,omitempty"`
	// TargetRef and other fields are accepted and ignored.
	TargetRef map[string]any `json:"targetRef,omitempty"`
	Hints     map[string]any `json:"hints,omitempty"`
}

// EndpointConditions are an endpoint's conditions; a nil Ready means ready, as in Kubernetes.
//
// +kubebuilder:object:generate=false
type EndpointConditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

// IsReady reports whether the endpoint is ready (unset counts as ready).
func (e Endpoint) IsReady() bool { return e.Conditions.Ready == nil || *e.Conditions.Ready }

// EndpointPort is one port of an EndpointSlice.
//
// +kubebuilder:object:generate=false
type EndpointPort struct {
	Name        string `json:"name,omitempty"`
	Port        int32  `json:"port"`
	Protocol    string `json:"protocol,omitempty"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Secret is the subset of a Kubernetes v1 Secret that meshrelay reads: TLS material
// (type kubernetes.io/tls, keys tls.crt, tls.key and optionally ca.crt), as the seeds'
// `glooctl create secret tls` makes.
//
// +kubebuilder:object:generate=false
type Secret struct {
	TypeMeta   `json:",inline"`
	Metadata   ObjectMeta        `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
}

// KindSecret is the kind of a Kubernetes Secret.
const KindSecret = "Secret"

// Value returns a key of the secret from data or stringData.
func (s Secret) Value(key string) []byte {
	if v, ok := s.StringData[key]; ok {
		return []byte(v)
	}
	return s.Data[key]
}

// Labels of a KubernetesCluster that place it.
const (
	LabelRegion = "topology.kubernetes.io/region"
	LabelZone   = "topology.kubernetes.io/zone"
	// LabelNetwork names the cluster's Istio network (Istio's own label, as on the
	// istio-system namespace); the cluster's name when absent. A cluster's east-west
	// gateway requests a view of this network only (ISTIO_META_REQUESTED_NETWORK_VIEW).
	LabelNetwork = "topology.istio.io/network"
)
