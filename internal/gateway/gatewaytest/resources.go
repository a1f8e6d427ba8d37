package gatewaytest

import (
	"net"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TLSMetadataKey is the endpoint metadata key the translator matches transport sockets by.
const TLSMetadataKey = "meshrelay.io/tls"

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

// Any packs m, failing the test on error.
func Any(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatalf("pack %T: %v", m, err)
	}
	return a
}

// SocketAddress returns an Envoy address for "host:port".
func SocketAddress(t testing.TB, hostport string) *corev3.Address {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("address %q: %v", hostport, err)
	}
	port, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		t.Fatalf("address %q: %v", hostport, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// HTTPListener is an HTTP listener on addr whose routes come over RDS under its name.
func HTTPListener(t testing.TB, name, addr string) *listenerv3.Listener {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: name}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: Any(t, &routerv3.Router{})}}},
	}
	return &listenerv3.Listener{Name: name, Address: SocketAddress(t, addr), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: Any(t, hcm)}}},
	}}}
}

// RouteConfig is a route configuration with one virtual host for every domain.
func RouteConfig(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
}

// PrefixRoute forwards a path prefix to a cluster.
func PrefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{Name: prefix, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

// WeightedRoute forwards a path prefix to clusters by weight.
func WeightedRoute(prefix string, clusters []string, weights []uint32) *routev3.Route {
	wc := &routev3.WeightedCluster{}
	for i, c := range clusters {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(weights[i])})
	}
	return &routev3.Route{Name: prefix, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}}}
}

// HealthCheck is an active HTTP health check.
type HealthCheck struct {
	Interval, Timeout  time.Duration
	Unhealthy, Healthy uint32
	Path               string
}

// Outlier is outlier detection by consecutive 5xx.
type Outlier struct {
	Consecutive5xx         uint32
	Interval, BaseEjection time.Duration
	MaxEjectionPercent     uint32
}

// UpstreamTLS is mutual TLS to the endpoints whose SNI metadata is SNI.
type UpstreamTLS struct {
	SNI, CertSecret, CASecret string
}

// ClusterOptions configure Cluster.
type ClusterOptions struct {
	HealthCheck    *HealthCheck
	Outlier        *Outlier
	TLS            []UpstreamTLS
	ConnectTimeout time.Duration
}

// Cluster is an EDS cluster shaped like the translator's: round robin, panic threshold 0,
// health checks, outlier detection and one transport_socket_match per SNI.
func Cluster(t testing.TB, name string, o ClusterOptions) *clusterv3.Cluster {
	t.Helper()
	ct := o.ConnectTimeout
	if ct == 0 {
		ct = 2 * time.Second
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		ConnectTimeout:       durationpb.New(ct),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CommonLbConfig:       &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
	}
	if h := o.HealthCheck; h != nil {
		c.HealthChecks = []*corev3.HealthCheck{{
			Timeout: durationpb.New(h.Timeout), Interval: durationpb.New(h.Interval), NoTrafficInterval: durationpb.New(h.Interval),
			UnhealthyThreshold: wrapperspb.UInt32(h.Unhealthy), HealthyThreshold: wrapperspb.UInt32(h.Healthy),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: h.Path}},
		}}
	}
	if od := o.Outlier; od != nil {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx: wrapperspb.UInt32(od.Consecutive5xx), Interval: durationpb.New(od.Interval),
			BaseEjectionTime: durationpb.New(od.BaseEjection), MaxEjectionPercent: wrapperspb.UInt32(od.MaxEjectionPercent),
		}
	}
	for _, u := range o.TLS {
		ctx := &tlsv3.UpstreamTlsContext{Sni: u.SNI, CommonTlsContext: commonTLS(u.CertSecret, u.CASecret)}
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: "mtls-" + u.SNI, Match: tlsMatch(u.SNI),
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: Any(t, ctx)}},
		})
	}
	return c
}

func tlsMatch(sni string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{TLSMetadataKey: structpb.NewStringValue(sni)}}
}

func commonTLS(certSecret, caSecret string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: certSecret, SdsConfig: ads()}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: caSecret, SdsConfig: ads()},
		},
	}
}

// Endpoint is an endpoint of a load assignment; one with an SNI is reached over the
// cluster's transport socket matching it.
type Endpoint struct {
	Addr string
	SNI  string
}

// LoadAssignment lists endpoints by priority (index 0 first).
func LoadAssignment(t testing.TB, cluster string, priorities ...[]Endpoint) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for prio, eps := range priorities {
		g := &endpointv3.LocalityLbEndpoints{Priority: uint32(prio), Locality: &corev3.Locality{}}
		for _, e := range eps {
			lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: SocketAddress(t, e.Addr)}}}
			if e.SNI != "" {
				lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.transport_socket_match": tlsMatch(e.SNI)}}
			}
			g.LbEndpoints = append(g.LbEndpoints, lb)
		}
		cla.Endpoints = append(cla.Endpoints, g)
	}
	return cla
}

// TCPGateway is a listener that terminates mTLS (client certificates required, verified
// against caSecret) and forwards each served SNI name to the cluster of that name.
func TCPGateway(t testing.TB, name, addr, certSecret, caSecret string, served ...string) *listenerv3.Listener {
	t.Helper()
	l := &listenerv3.Listener{Name: name, Address: SocketAddress(t, addr), ListenerFilters: []*listenerv3.ListenerFilter{{
		Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: Any(t, &tlsinspectorv3.TlsInspector{})},
	}}}
	for _, sni := range served {
		ds := &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: commonTLS(certSecret, caSecret)}
		proxy := &tcpproxyv3.TcpProxy{StatPrefix: sni, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: sni}}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             name + "/" + sni,
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{sni}},
			TransportSocket:  &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: Any(t, ds)}},
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: Any(t, proxy)}}},
		})
	}
	return l
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// CertSecret is an SDS secret with a certificate chain and its key.
func CertSecret(name string, certPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM),
	}}}
}

// CASecret is an SDS secret with trusted CAs.
func CASecret(name string, caPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(caPEM)}}}
}
