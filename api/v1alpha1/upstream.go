package v1alpha1

// Upstream is a destination in one workload cluster. Discovery makes one per service port,
// named "<namespace>-<service>-<port>" (e.g. default-service-blue-10000); users may also
// declare them. An Upstream whose spec sets neither kube nor static is valid: it adds
// settings (health checks, outlier detection, timeouts) to the discovered Upstream of the
// same name, like the seed's `kubectl patch upstream … healthChecks`.
type Upstream struct {
	TypeMeta `json:",inline"`
	// Metadata names the Upstream.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired Upstream.
	Spec UpstreamSpec `json:"spec"`
}

// UpstreamSpec is the spec of an Upstream. At most one of Kube and Static is set.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.kube) && has(self.static))",message="at most one of kube, static may be set"
type UpstreamSpec struct {
	// Kube points the Upstream at a Kubernetes (or universal-mode) Service port.
	Kube *KubeUpstream `json:"kube,omitempty"`
	// Static points the Upstream at fixed host:port addresses.
	Static *StaticUpstream `json:"static,omitempty"`
	// HealthChecks are the active health checks of the Upstream's endpoints, with Envoy's
	// meaning of interval, timeout and thresholds.
	HealthChecks []HealthCheck `json:"healthChecks,omitempty"`
	// OutlierDetection ejects endpoints that return errors (passive health checking).
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// ConnectTimeout bounds the time to open a connection to an endpoint; unset means the
	// gateway's default.
	ConnectTimeout Duration `json:"connectTimeout,omitzero"`
	// Cluster is the workload cluster the Upstream belongs to when it is declared on the
	// management server; it is empty when the Upstream arrives from a cluster's own
	// discovery (the cluster is then the one that reported it).
	Cluster string `json:"cluster,omitempty"`
}

// KubeUpstream selects the endpoints of one Service port.
type KubeUpstream struct {
	// ServiceName is the Service's name (required).
	//
	// +kubebuilder:validation:MinLength=1
	ServiceName string `json:"serviceName"`
	// ServiceNamespace is the Service's namespace; empty means the Upstream's namespace.
	ServiceNamespace string `json:"serviceNamespace,omitempty"`
	// ServicePort is the Service port, 1-65535 (required).
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ServicePort int `json:"servicePort"`
	// Selector narrows the Service's endpoints to pods with these labels.
	Selector map[string]string `json:"selector,omitempty"`
}

// StaticUpstream is a fixed list of addresses.
type StaticUpstream struct {
	// Hosts are the addresses (at least one).
	//
	// +kubebuilder:validation:MinItems=1
	Hosts []StaticHost `json:"hosts"`
	// UseTLS makes the gateway speak TLS to the hosts.
	UseTLS bool `json:"useTls,omitempty"`
}

// StaticHost is one address of a static Upstream.
type StaticHost struct {
	// Addr is an IP address or DNS name (required).
	//
	// +kubebuilder:validation:MinLength=1
	Addr string `json:"addr"`
	// Port is the port, 1-65535 (required).
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int `json:"port"`
}

// DefaultHealthThreshold is the healthy and unhealthy threshold of a health check that
// leaves them unset.
const DefaultHealthThreshold = 1

// HealthCheck is one active health check, with Envoy's semantics: every Interval the
// gateway sends a request that must answer within Timeout; UnhealthyThreshold consecutive
// failures mark the endpoint unhealthy, HealthyThreshold consecutive successes healthy again.
type HealthCheck struct {
	// Timeout is how long to wait for an answer (required, > 0).
	//
	// +required
	Timeout Duration `json:"timeout,omitzero"`
	// Interval is the time between checks (required, > 0).
	//
	// +required
	Interval Duration `json:"interval,omitzero"`
	// UnhealthyThreshold is the number of consecutive failures that mark an endpoint
	// unhealthy, at least 1; 0 (unset) means DefaultHealthThreshold.
	//
	// +kubebuilder:validation:Minimum=0
	UnhealthyThreshold int `json:"unhealthyThreshold,omitempty"`
	// HealthyThreshold is the number of consecutive successes that mark an endpoint healthy
	// again, at least 1; 0 (unset) means DefaultHealthThreshold.
	//
	// +kubebuilder:validation:Minimum=0
	HealthyThreshold int `json:"healthyThreshold,omitempty"`
	// NoTrafficInterval is the interval used while the Upstream has no traffic; unset means
	// Interval.
	NoTrafficInterval Duration `json:"noTrafficInterval,omitzero"`
	// HTTPHealthCheck makes it an HTTP check (required: the only kind the gateway runs).
	//
	// +required
	HTTPHealthCheck *HTTPHealthCheck `json:"httpHealthCheck,omitempty"`
}

// HTTPHealthCheck is an HTTP GET health check.
type HTTPHealthCheck struct {
	// Path is the request path; it must start with '/' (required).
	//
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`
	// Host is the Host header of the request; empty means the Upstream's name.
	Host string `json:"host,omitempty"`
	// ExpectedStatuses are the HTTP statuses (100-599) that count as healthy; empty means
	// 200 only, as in Envoy.
	//
	// +kubebuilder:validation:items:Minimum=100
	// +kubebuilder:validation:items:Maximum=599
	ExpectedStatuses []int `json:"expectedStatuses,omitempty"`
}

// OutlierDetection ejects endpoints that keep failing from the load-balancing pool.
type OutlierDetection struct {
	// Consecutive5xx is the number of consecutive 5xx answers (or connection failures) that
	// eject an endpoint, at least 1; 0 (unset) means Envoy's default, 5.
	//
	// +kubebuilder:validation:Minimum=0
	Consecutive5xx int `json:"consecutive5xx,omitempty"`
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
