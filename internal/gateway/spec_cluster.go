package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	transportSocketMatchKey = "envoy.transport_socket_match"
	defaultConnectTimeout   = 5 * time.Second
)

// clusterSpec is a parsed Cluster.
type clusterSpec struct {
	name string
	// edsName is the ClusterLoadAssignment to subscribe to (EDS clusters), "" for STATIC.
	edsName string
	// static is the inline load assignment of a STATIC cluster.
	static         *loadAssignment
	connectTimeout time.Duration
	healthCheck    *healthCheckSpec
	outlier        *outlierSpec
	tlsMatches     []tlsMatch
	defaultTLS     *upstreamTLS
}

// tlsMatch is a transport_socket_match: endpoints whose transport socket match metadata
// contains every field of match use tls (nil: plaintext).
type tlsMatch struct {
	name  string
	match map[string]*structpb.Value
	tls   *upstreamTLS
}

// endpointTLS returns the TLS for an endpoint with the given match metadata: the first
// transport_socket_match whose fields all equal the endpoint's, else the cluster's
// transport_socket.
func (c *clusterSpec) endpointTLS(md *structpb.Struct) *upstreamTLS {
	for _, m := range c.tlsMatches {
		ok := true
		for k, v := range m.match {
			if got, has := md.GetFields()[k]; !has || !proto.Equal(got, v) {
				ok = false
				break
			}
		}
		if ok {
			return m.tls
		}
	}
	return c.defaultTLS
}

// healthCheckSpec is an active HTTP health check.
type healthCheckSpec struct {
	timeout            time.Duration
	interval           time.Duration
	unhealthyInterval  time.Duration
	initialJitter      time.Duration
	intervalJitter     time.Duration
	jitterPercent      uint32
	unhealthyThreshold int
	healthyThreshold   int
	path               string
	host               string
	method             string
	expected           [][2]int64 // [start, end) status ranges
}

func (h *healthCheckSpec) expects(code int) bool {
	if len(h.expected) == 0 {
		return code == 200
	}
	for _, r := range h.expected {
		if int64(code) >= r[0] && int64(code) < r[1] {
			return true
		}
	}
	return false
}

// outlierSpec is outlier detection by consecutive 5xx (and local-origin failures).
type outlierSpec struct {
	consecutive5xx     int
	enforcing          uint32 // percent
	interval           time.Duration
	baseEjection       time.Duration
	maxEjection        time.Duration
	maxEjectionPercent uint32
	alwaysEjectOne     bool
	// unejectOnHealthy un-ejects a host when active health checking marks it healthy.
	unejectOnHealthy bool
}

// loadAssignment is a parsed ClusterLoadAssignment.
type loadAssignment struct {
	endpoints []endpointSpec
}

type endpointSpec struct {
	address  string // host:port
	priority int
	// match is the endpoint's envoy.transport_socket_match metadata.
	match *structpb.Struct
	// edsHealthy is false when EDS says UNHEALTHY, DRAINING or TIMEOUT.
	edsHealthy bool
}

func durOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func parseCluster(c *clusterv3.Cluster) (*clusterSpec, error) {
	out := &clusterSpec{name: c.GetName(), connectTimeout: durOr(c.GetConnectTimeout(), defaultConnectTimeout)}
	if out.name == "" {
		return nil, errors.New("cluster without a name")
	}
	if out.connectTimeout <= 0 {
		return nil, errors.New("connect_timeout must be positive")
	}
	switch c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type, nil:
	default:
		return nil, errors.New("cluster_type extensions are not supported")
	}
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		out.edsName = c.GetEdsClusterConfig().GetServiceName()
		if out.edsName == "" {
			out.edsName = out.name
		}
	case clusterv3.Cluster_STATIC:
		la, err := parseLoadAssignment(c.GetLoadAssignment())
		if err != nil {
			return nil, fmt.Errorf("load_assignment: %w", err)
		}
		out.static = la
	default:
		return nil, fmt.Errorf("discovery type %v is not supported (EDS and STATIC are)", c.GetType())
	}
	switch n := len(c.GetHealthChecks()); {
	case n > 1:
		return nil, errors.New("at most one health check is supported")
	case n == 1:
		hc, err := parseHealthCheck(c.GetHealthChecks()[0])
		if err != nil {
			return nil, fmt.Errorf("health_checks[0]: %w", err)
		}
		out.healthCheck = hc
	}
	if od := c.GetOutlierDetection(); od != nil {
		out.outlier = parseOutlier(od)
	}
	var err error
	if out.defaultTLS, err = parseUpstreamSocket(c.GetTransportSocket()); err != nil {
		return nil, fmt.Errorf("transport_socket: %w", err)
	}
	for i, m := range c.GetTransportSocketMatches() {
		t, err := parseUpstreamSocket(m.GetTransportSocket())
		if err != nil {
			return nil, fmt.Errorf("transport_socket_matches[%d] %q: %w", i, m.GetName(), err)
		}
		out.tlsMatches = append(out.tlsMatches, tlsMatch{name: m.GetName(), match: m.GetMatch().GetFields(), tls: t})
	}
	return out, nil
}

func parseHealthCheck(h *corev3.HealthCheck) (*healthCheckSpec, error) {
	hh := h.GetHttpHealthCheck()
	if hh == nil {
		return nil, errors.New("only http_health_check is supported")
	}
	out := &healthCheckSpec{
		timeout:            h.GetTimeout().AsDuration(),
		interval:           h.GetInterval().AsDuration(),
		unhealthyInterval:  durOr(h.GetUnhealthyInterval(), 0),
		initialJitter:      durOr(h.GetInitialJitter(), 0),
		intervalJitter:     durOr(h.GetIntervalJitter(), 0),
		jitterPercent:      h.GetIntervalJitterPercent(),
		unhealthyThreshold: max(1, int(h.GetUnhealthyThreshold().GetValue())),
		healthyThreshold:   max(1, int(h.GetHealthyThreshold().GetValue())),
		path:               hh.GetPath(),
		host:               hh.GetHost(),
		method:             "GET",
	}
	if out.timeout <= 0 || out.interval <= 0 {
		return nil, errors.New("timeout and interval must be positive")
	}
	if out.path == "" {
		return nil, errors.New("http_health_check.path is required")
	}
	if m := hh.GetMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED {
		if m == corev3.RequestMethod_CONNECT {
			return nil, errors.New("http_health_check.method CONNECT is not supported")
		}
		out.method = m.String()
	}
	for _, r := range hh.GetExpectedStatuses() {
		if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
			return nil, fmt.Errorf("expected status range [%d, %d) is not within [100, 600)", r.GetStart(), r.GetEnd())
		}
		out.expected = append(out.expected, [2]int64{r.GetStart(), r.GetEnd()})
	}
	return out, nil
}

func parseOutlier(od *clusterv3.OutlierDetection) *outlierSpec {
	val := func(w interface{ GetValue() uint32 }, def uint32, set bool) uint32 {
		if !set {
			return def
		}
		return w.GetValue()
	}
	base := durOr(od.GetBaseEjectionTime(), 30*time.Second)
	return &outlierSpec{
		consecutive5xx:     int(val(od.GetConsecutive_5Xx(), 5, od.GetConsecutive_5Xx() != nil)),
		enforcing:          min(100, val(od.GetEnforcingConsecutive_5Xx(), 100, od.GetEnforcingConsecutive_5Xx() != nil)),
		interval:           max(durOr(od.GetInterval(), 10*time.Second), time.Millisecond),
		baseEjection:       base,
		maxEjection:        max(durOr(od.GetMaxEjectionTime(), 300*time.Second), base),
		maxEjectionPercent: min(100, val(od.GetMaxEjectionPercent(), 10, od.GetMaxEjectionPercent() != nil)),
		alwaysEjectOne:     od.GetAlwaysEjectOneHost().GetValue(),
		unejectOnHealthy:   od.GetSuccessfulActiveHealthCheckUnejectHost() == nil || od.GetSuccessfulActiveHealthCheckUnejectHost().GetValue(),
	}
}

func parseLoadAssignment(cla *endpointv3.ClusterLoadAssignment) (*loadAssignment, error) {
	out := &loadAssignment{}
	if cla == nil {
		return out, nil
	}
	for i, group := range cla.GetEndpoints() {
		for j, lb := range group.GetLbEndpoints() {
			ep := lb.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: only endpoint (not endpoint_name) is supported", i, j)
			}
			addr, err := socketAddress(ep.GetAddress())
			if err == nil && ep.GetAddress().GetSocketAddress().GetPortValue() == 0 {
				err = errors.New("endpoint port must be in 1-65535")
			}
			if err != nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: %w", i, j, err)
			}
			hs := lb.GetHealthStatus()
			out.endpoints = append(out.endpoints, endpointSpec{
				address:    addr,
				priority:   int(group.GetPriority()),
				match:      lb.GetMetadata().GetFilterMetadata()[transportSocketMatchKey],
				edsHealthy: hs != corev3.HealthStatus_UNHEALTHY && hs != corev3.HealthStatus_DRAINING && hs != corev3.HealthStatus_TIMEOUT,
			})
		}
	}
	return out, nil
}

// socketAddress returns host:port of a socket address with a port value.
func socketAddress(a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", errors.New("only socket_address addresses are supported")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", errors.New("only tcp socket addresses are supported")
	}
	if sa.GetResolverName() != "" || sa.GetNamedPort() != "" {
		return "", errors.New("resolver_name and named_port are not supported")
	}
	if sa.GetAddress() == "" {
		return "", errors.New("socket address without an address")
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)), nil
}
