package v1alpha1

// RouteTable holds HTTP routes for a set of hosts: matchers on path, headers and method
// forwarding to one or more weighted destinations (traffic shifting, canary), with retries
// and timeouts.
type RouteTable struct {
	TypeMeta `json:",inline"`
	// Metadata names the RouteTable.
	Metadata ObjectMeta `json:"metadata"`
	// Spec is the desired routing.
	Spec RouteTableSpec `json:"spec"`
}

// RouteTableSpec is the spec of a RouteTable.
type RouteTableSpec struct {
	// Hosts are the HTTP hosts (authorities) the routes serve, at least one; "*" matches
	// every host and "*.example.com" every subdomain.
	//
	// +kubebuilder:validation:MinItems=1
	Hosts []string `json:"hosts"`
	// Clusters are the workload clusters whose gateways serve the table. Empty means the
	// cluster the RouteTable came from or, when declared on the management server, every
	// cluster with an HTTP Gateway.
	Clusters []string `json:"clusters,omitempty"`
	// Gateway restricts the table to one Gateway (an empty namespace means the RouteTable's
	// namespace); nil means every HTTP Gateway of the clusters.
	Gateway *ObjectRef `json:"gateway,omitempty"`
	// HTTP are the routes, at least one, tried in order: the first that matches wins.
	//
	// +kubebuilder:validation:MinItems=1
	HTTP []HTTPRoute `json:"http"`
}

// HTTPRoute is one route.
type HTTPRoute struct {
	// Name names the route for status and metrics; unique within the table when set.
	Name string `json:"name,omitempty"`
	// Matchers select the requests of the route: a request matches if any matcher matches;
	// empty matches every request.
	Matchers []HTTPMatcher `json:"matchers,omitempty"`
	// ForwardTo says where matching requests go (required).
	ForwardTo ForwardTo `json:"forwardTo"`
	// Retries retries failed requests; nil means no retries.
	Retries *RetryPolicy `json:"retries,omitempty"`
	// Timeout bounds the whole request, retries included; unset means the gateway's default.
	Timeout Duration `json:"timeout,omitzero"`
}

// HTTPMatcher matches a request when all of its set parts match.
type HTTPMatcher struct {
	// URI matches the path; nil matches every path.
	URI *URIMatch `json:"uri,omitempty"`
	// Headers must all match.
	Headers []HeaderMatcher `json:"headers,omitempty"`
	// Method is the HTTP method (upper case, e.g. GET); empty matches every method.
	Method string `json:"method,omitempty"`
}

// URIMatch matches the request path. Exactly one field is set.
//
// +kubebuilder:validation:XValidation:rule="(has(self.prefix) ? 1 : 0) + (has(self.exact) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1",message="exactly one of prefix, exact, regex must be set"
type URIMatch struct {
	// Prefix matches paths that start with it; it must start with '/'.
	//
	// +kubebuilder:validation:Pattern=`^/`
	Prefix string `json:"prefix,omitempty"`
	// Exact matches this path only; it must start with '/'.
	//
	// +kubebuilder:validation:Pattern=`^/`
	Exact string `json:"exact,omitempty"`
	// Regex matches paths that fully match this RE2 regular expression.
	Regex string `json:"regex,omitempty"`
}

// HeaderMatcher matches one request header.
type HeaderMatcher struct {
	// Name is the header name (required).
	//
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Value is the value to match; empty matches any value of a present header.
	Value string `json:"value,omitempty"`
	// Regex makes Value an RE2 regular expression the whole value must match.
	Regex bool `json:"regex,omitempty"`
	// InvertMatch inverts the result: the matcher matches when the header does not.
	InvertMatch bool `json:"invertMatch,omitempty"`
}

// ForwardTo sends requests to destinations.
type ForwardTo struct {
	// Destinations are the destinations, at least one. Traffic is split by weight.
	//
	// +kubebuilder:validation:MinItems=1
	Destinations []RouteDestination `json:"destinations"`
}

// Destination kinds a route forwards to.
const (
	// DestinationKindUpstream is an Upstream (the default).
	DestinationKindUpstream = "UPSTREAM"
	// DestinationKindVirtualDestination is a VirtualDestination.
	DestinationKindVirtualDestination = "VIRTUAL_DESTINATION"
)

// RouteDestination is one destination of a route.
type RouteDestination struct {
	// Ref names the destination (name required).
	Ref DestinationRef `json:"ref"`
	// Kind is DestinationKindUpstream (empty means it) or DestinationKindVirtualDestination.
	//
	// +kubebuilder:validation:Enum=UPSTREAM;VIRTUAL_DESTINATION
	Kind string `json:"kind,omitempty"`
	// Port picks the destination's port; nil means its only port (an Upstream has one;
	// a VirtualDestination with several ports needs Port).
	Port *PortSelector `json:"port,omitempty"`
	// Weight is the destination's share of the route's traffic relative to the others,
	// at least 0. When no destination of a route has a weight the split is even; when some
	// do, an unset weight counts as 0, and the weights must sum to more than 0.
	//
	// +kubebuilder:validation:Minimum=0
	Weight *int `json:"weight,omitempty"`
}

// DestinationRef names a route destination.
type DestinationRef struct {
	// Name is the destination's metadata.name (required).
	//
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace is the destination's namespace; empty means the RouteTable's namespace.
	Namespace string `json:"namespace,omitempty"`
	// Cluster is the workload cluster of an Upstream destination; empty means the cluster
	// whose gateway serves the route.
	Cluster string `json:"cluster,omitempty"`
}

// PortSelector picks a port by number.
type PortSelector struct {
	// Number is the port, 1-65535.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Number int `json:"number"`
}

// RetryPolicy retries failed requests.
type RetryPolicy struct {
	// Attempts is the number of retries, at least 0; 0 disables retries.
	//
	// +kubebuilder:validation:Minimum=0
	Attempts int `json:"attempts,omitempty"`
	// PerTryTimeout bounds each try; unset means the route's timeout.
	PerTryTimeout Duration `json:"perTryTimeout,omitzero"`
	// RetryOn is Envoy's comma-separated list of retry conditions (e.g.
	// "5xx,connect-failure"); empty means the gateway's default conditions.
	RetryOn string `json:"retryOn,omitempty"`
}
