package translate

import "time"

// Plan is everything one workload cluster's output must contain, decided but not yet
// rendered. The translator builds a Plan per cluster from the configuration and every
// cluster's inputs; two renderers turn it into Envoy xDS resources (render_envoy.go) and
// Istio-shaped resources (render_istio.go). Every slice is sorted by name so that rendering
// is deterministic.
type Plan struct {
	Cluster string
	// Upstreams become Envoy Clusters + ClusterLoadAssignments and Istio DestinationRules.
	Upstreams []UpstreamPlan
	// HTTPListeners become Envoy Listeners with an HTTP connection manager and a
	// RouteConfiguration, and Istio VirtualServices.
	HTTPListeners []HTTPListener
	// TCPGateways become Envoy Listeners that terminate mTLS and forward by SNI.
	TCPGateways []TCPGateway
	// ServiceEntries make hosts of other clusters (VirtualDestinations) resolvable in this
	// cluster (Istio ServiceEntry).
	ServiceEntries []ServiceEntryPlan
	// Secrets are TLS material referenced by name from upstream TLS and TCP gateways
	// (Envoy SDS Secrets).
	Secrets []SecretPlan
}

// UpstreamPlan is one destination: an Envoy cluster.
type UpstreamPlan struct {
	// Name is the Envoy cluster name, e.g. "default-service-blue-10000" or
	// "vd.reviews-global-9080".
	Name string
	// Namespace is where Istio-shaped resources for it are written.
	Namespace string
	// Host is the hostname Istio resources target (service FQDN or VirtualDestination host).
	Host string
	// Port is the service port (for Istio port-level settings); 0 when unknown.
	Port uint32
	// ConnectTimeout defaults to 5s when zero.
	ConnectTimeout time.Duration
	// Priorities holds the endpoints by priority: index 0 is tried first; traffic goes to
	// the highest priority (lowest index) that has healthy endpoints.
	Priorities [][]Endpoint
	// HealthChecks are active HTTP health checks.
	HealthChecks []HealthCheck
	// Outlier is passive outlier detection; nil for none.
	Outlier *Outlier
	// Failover is set when the priorities come from a FailoverScheme or a FailoverPolicy,
	// for the Istio DestinationRule's localityLbSetting and for status.
	Failover *FailoverPlan
	// Service is set for an upstream discovered from a Kubernetes Service of this cluster:
	// Istio adds the endpoints that are not the Service's own pods (a FailoverScheme's
	// remote gateways) as WorkloadEntries its selector selects.
	Service *ServiceRef
	// Remote is set for an upstream of another cluster that this cluster routes to (a
	// RouteTable destination): Istio makes its host resolvable with a ServiceEntry.
	Remote bool
}

// ServiceRef is the Kubernetes Service an upstream was discovered from.
type ServiceRef struct {
	Name string
	// Selector selects the Service's pods (and WorkloadEntries) in the upstream's namespace.
	Selector map[string]string
	// PortName is the name of the Service port (WorkloadEntry ports are keyed by it).
	PortName string
}

// FailoverPlan says where an upstream's priorities come from.
type FailoverPlan struct {
	// Source names the FailoverScheme or FailoverPolicy ("FailoverScheme gloo-fed/failover-scheme").
	Source string
}

// Endpoint is one address of an upstream.
type Endpoint struct {
	Address string
	Port    uint32
	// Cluster is the workload cluster the endpoint (or the gateway in front of it) is in.
	Cluster string
	// Region and Zone locate the endpoint (Envoy locality).
	Region, Zone string
	// Network is the Istio network of the endpoint's cluster (its KubernetesCluster's
	// topology.istio.io/network label, else the cluster name).
	Network string
	// Priority is the endpoint's index in its upstream's Priorities, carried by Istio
	// ServiceEntry endpoints and WorkloadEntries (see istioFailoverPriority); 0 elsewhere.
	Priority int
	// TLS, when set, is used for connections to this endpoint: it is a remote cluster's
	// gateway reached over mTLS with SNI naming the remote upstream.
	TLS *UpstreamTLS
}

// UpstreamTLS originates mutual TLS towards a remote gateway.
type UpstreamTLS struct {
	// SNI is the remote upstream's name; the gateway forwards by it.
	SNI string
	// CertSecret names the Secret with this cluster's client certificate and key.
	CertSecret string
	// CASecret names the Secret with the CA that signed the remote gateway's certificate.
	CASecret string
}

// HealthCheck is an active HTTP health check with Envoy's semantics.
type HealthCheck struct {
	Timeout            time.Duration
	Interval           time.Duration
	UnhealthyThreshold uint32
	HealthyThreshold   uint32
	Path               string
	Host               string
	ExpectedStatuses   []uint32
}

// Outlier is passive outlier detection: consecutive 5xx eject an endpoint for a base time.
type Outlier struct {
	Consecutive5xx     uint32
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionPercent uint32
}

// HTTPListener is an HTTP gateway listener with its routes.
type HTTPListener struct {
	Name    string // listener and route configuration name
	Address string
	Port    uint32
	// Namespace is where the Istio VirtualService for it is written.
	Namespace    string
	VirtualHosts []VirtualHost
}

// VirtualHost groups routes by domain.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []Route
}

// Route matches requests and forwards them to weighted upstreams.
type Route struct {
	Name         string
	Match        RouteMatch
	Destinations []WeightedDestination
	Timeout      time.Duration
	Retries      *Retries
}

// RouteMatch is one of prefix, exact or regex on the path, plus header matches.
type RouteMatch struct {
	Prefix, Exact, Regex string
	Headers              []HeaderMatch
	Method               string
}

// HeaderMatch matches one header by exact value or regex; an empty value means present.
type HeaderMatch struct {
	Name   string
	Value  string
	Regex  bool
	Invert bool
}

// WeightedDestination is an upstream (Envoy cluster name) with a weight.
type WeightedDestination struct {
	Cluster string
	// Host is the Istio destination host of the upstream.
	Host   string
	Port   uint32
	Weight uint32
}

// Retries is a route's retry policy.
type Retries struct {
	Attempts      uint32
	PerTryTimeout time.Duration
	RetryOn       string
}

// TCPGateway is a listener that terminates mTLS and forwards by SNI to local upstreams. On
// Istio it is the cluster's east-west gateway: an Istio Gateway in AUTO_PASSTHROUGH mode
// on the same port, selecting the pods behind the Service that exposes it.
type TCPGateway struct {
	Name    string
	Address string
	Port    uint32
	Hosts   []TCPHost
	// Namespace is the gateway's namespace (where its pods and Service are).
	Namespace string
	// Selector selects the gateway's pods: the selector of the Service that exposes it;
	// nil when no such Service is known (no Istio Gateway is rendered then).
	Selector map[string]string
	// IstioHosts are the hosts other clusters' sidecars reach through this gateway
	// (SNI outbound_.<port>_._.<host>), sorted.
	IstioHosts []string
	// SNIAliases route Istio's SNI form to a local upstream (SNI -> Envoy cluster name), so
	// that Istio sidecars of other clusters can use this gateway as their east-west gateway.
	SNIAliases map[string]string
}

// TCPHost is one filter chain of a TCP gateway.
type TCPHost struct {
	Name string
	// CertSecret names the Secret with the gateway's serving certificate and key.
	CertSecret string
	// CASecret names the Secret with the CA that client certificates must chain to.
	CASecret string
	// ForwardSNI forwards to the local upstream named by the SNI (forwardSniClusterName);
	// ServedNames lists the upstreams that may be named, anything else is refused.
	ForwardSNI  bool
	ServedNames []string
	// Cluster is the single upstream to forward to when ForwardSNI is false.
	Cluster string
}

// ServiceEntryPlan is a host of other clusters made resolvable here.
type ServiceEntryPlan struct {
	Name      string
	Namespace string
	Hosts     []string
	Ports     []ServicePort
	Endpoints []Endpoint
	// Upstream is the Envoy cluster that serves the host.
	Upstream string
	// ExportTo restricts which namespaces see the entry (Istio exportTo); nil for all.
	ExportTo []string
	// SplitOwn renders the cluster's own endpoints as a second entry of the same hosts,
	// named <Name>-local (splitOwnEndpoints), as a VirtualDestination's entry is.
	SplitOwn bool
}

// ServicePort is a named port with its protocol.
type ServicePort struct {
	Number   uint32
	Name     string
	Protocol string
}

// SecretPlan is TLS material: a certificate chain and key, and/or a validation CA.
type SecretPlan struct {
	Name    string
	CertPEM []byte
	KeyPEM  []byte
	CAPEM   []byte
}
