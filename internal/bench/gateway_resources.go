package bench

import (
	"fmt"
	"net"
	"strconv"
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

// The Envoy resources of seed 003 as the translator renders them (names and shapes of
// internal/translate/testdata/seed003.golden.yaml), with loopback addresses. They repeat
// the builders of internal/gateway/gatewaytest, which take a testing.TB and so cannot run
// in the meshrelay binary.

// Names the translator gives seed 003's resources.
const (
	seedBlueCluster  = "default-service-blue-10000"
	seedGreenCluster = "default-service-green-10000" // also the SNI of the failover hop
	seedProxy        = "gloo-system-gateway-proxy"
	seedFailoverGW   = "gloo-system-failover-gateway"
	seedIdentity     = "meshrelay-mesh-identity"
	seedMeshCA       = "meshrelay-mesh-ca"
	seedTLSKey       = "meshrelay.io/tls"
)

// gwHealthCheck is the active HTTP health check of the primary's cluster.
type gwHealthCheck struct {
	Interval, Timeout  time.Duration
	Unhealthy, Healthy uint32
}

// packer packs messages into Any, keeping the first error.
type packer struct{ err error }

func (p *packer) any(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("pack %T: %w", m, err)
	}
	return a
}

func (p *packer) address(hostport string) *corev3.Address {
	h, ps, err := net.SplitHostPort(hostport)
	port, perr := strconv.ParseUint(ps, 10, 16)
	if err == nil {
		err = perr
	}
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("address %q: %w", hostport, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func meshTLS() *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: seedIdentity, SdsConfig: adsSource()}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: seedMeshCA, SdsConfig: adsSource()},
		},
	}
}

func tlsMatch(sni string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{seedTLSKey: structpb.NewStringValue(sni)}}
}

// httpGateway is the gateway-proxy listener on addr, routing / to cluster.
func (p *packer) httpGateway(name, addr, cluster string) (*listenerv3.Listener, *routev3.RouteConfiguration) {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource(), RouteConfigName: name}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: p.any(&routerv3.Router{})}}},
	}
	l := &listenerv3.Listener{Name: name, Address: p.address(addr), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: p.any(hcm)}}},
	}}}
	route := &routev3.Route{Name: "default-0", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
	rc := &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "gloo-system-default", Domains: []string{"*"}, Routes: []*routev3.Route{route}}}}
	return l, rc
}

// edsCluster is an EDS cluster shaped like the translator's (round robin, panic threshold
// 0, 5 s connect timeout).
func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CommonLbConfig:       &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
	}
}

// failoverCluster is the primary's cluster after the FailoverScheme: the health check, the
// translator's outlier detection and mutual TLS to the endpoints whose SNI metadata is sni.
func (p *packer) failoverCluster(name string, hc gwHealthCheck, sni string) *clusterv3.Cluster {
	c := edsCluster(name)
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(hc.Timeout), Interval: durationpb.New(hc.Interval), NoTrafficInterval: durationpb.New(hc.Interval),
		UnhealthyThreshold: wrapperspb.UInt32(hc.Unhealthy), HealthyThreshold: wrapperspb.UInt32(hc.Healthy),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/health"}},
	}}
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(5), Interval: durationpb.New(10 * time.Second),
		BaseEjectionTime: durationpb.New(30 * time.Second), MaxEjectionPercent: wrapperspb.UInt32(100),
	}
	up := &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: meshTLS()}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name: "mtls-" + sni, Match: tlsMatch(sni),
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: p.any(up)}},
	}}
	return c
}

// gwEndpoint is an endpoint of a load assignment, reached over mTLS when sni is set.
type gwEndpoint struct{ addr, sni string }

// loadAssignment lists endpoints by priority (index 0 first).
func (p *packer) loadAssignment(cluster string, priorities ...[]gwEndpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for prio, eps := range priorities {
		g := &endpointv3.LocalityLbEndpoints{Priority: uint32(prio), Locality: &corev3.Locality{}}
		for _, e := range eps {
			lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: p.address(e.addr)}}}
			if e.sni != "" {
				lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.transport_socket_match": tlsMatch(e.sni)}}
			}
			g.LbEndpoints = append(g.LbEndpoints, lb)
		}
		cla.Endpoints = append(cla.Endpoints, g)
	}
	return cla
}

// failoverGateway is the remote cluster's TCP listener: it terminates mTLS (client
// certificates of the mesh CA required) and forwards the SNI name to the cluster of that
// name.
func (p *packer) failoverGateway(addr, sni string) *listenerv3.Listener {
	ds := &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: meshTLS()}
	proxy := &tcpproxyv3.TcpProxy{StatPrefix: sni, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: sni}}
	return &listenerv3.Listener{
		Name: seedFailoverGW, Address: p.address(addr),
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: p.any(&tlsinspectorv3.TlsInspector{})}}},
		FilterChains: []*listenerv3.FilterChain{{
			Name:             "failover/" + sni,
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{sni}},
			TransportSocket:  &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: p.any(ds)}},
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: p.any(proxy)}}},
		}},
	}
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// meshSecrets are a cluster's mesh identity and the mesh CA, as the translator names them.
func meshSecrets(certPEM, keyPEM, caPEM []byte) []*tlsv3.Secret {
	return []*tlsv3.Secret{
		{Name: seedIdentity, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(certPEM), PrivateKey: inlineBytes(keyPEM)}}},
		{Name: seedMeshCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(caPEM)}}},
	}
}
