package gateway

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestParseRejectsWhatIsNotHonoured(t *testing.T) {
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"strict dns cluster", func() error {
			_, err := parseCluster(&clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}})
			return err
		}, "not supported"},
		{"tcp health check", func() error {
			_, err := parseCluster(&clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				HealthChecks: []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(time.Second),
					HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}}}})
			return err
		}, "only http_health_check"},
		{"redirect route", func() error {
			_, err := parseRoute(&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}}}, nil)
			return err
		}, "only route and direct_response"},
		{"query parameter match", func() error {
			_, err := parseRouteMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				QueryParameters: []*routev3.QueryParameterMatcher{{Name: "q"}}})
			return err
		}, "query_parameters"},
		{"secret with garbage pem", func() error {
			_, err := parseSecret(&tlsv3.Secret{Name: "s", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "y"}}}}})
			return err
		}, "tls_certificate"},
		{"secret from a file", func() error {
			_, err := parseSecret(&tlsv3.Secret{Name: "s", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ca.pem"}}}}})
			return err
		}, "inline"},
		{"san matching", func() error {
			_, err := parseSecret(&tlsv3.Secret{Name: "s", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{}}}}})
			return err
		}, "subject alt name"},
		{"http filter other than the router", func() error {
			hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.cors"}},
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r"}}})
			_, err := parseListener(&listenerv3.Listener{Name: "l", Address: addr("127.0.0.1", 80), FilterChains: []*listenerv3.FilterChain{{
				Filters: []*listenerv3.Filter{{Name: hcmFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}})
			return err
		}, "router must be the only http filter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func addr(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func TestClusterDefaultsAndTransportSocketMatch(t *testing.T) {
	c, err := parseCluster(&clusterv3.Cluster{
		Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		OutlierDetection: &clusterv3.OutlierDetection{},
		TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{
			{Name: "plain", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("raw")}},
				TransportSocket: &corev3.TransportSocket{Name: rawTransportSocket}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.edsName != "c" || c.connectTimeout != 5*time.Second {
		t.Errorf("eds name %q connect timeout %v", c.edsName, c.connectTimeout)
	}
	od := c.outlier
	if od.consecutive5xx != 5 || od.baseEjection != 30*time.Second || od.interval != 10*time.Second || od.maxEjectionPercent != 10 || od.enforcing != 100 {
		t.Errorf("outlier defaults %+v, want Envoy's (5, 30s, 10s, 10%%, 100%%)", od)
	}
	od2 := parseOutlier(&clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(100)})
	if od2.maxEjectionPercent != 100 {
		t.Errorf("max ejection %d", od2.maxEjectionPercent)
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewStringValue("raw"), "other": structpb.NewBoolValue(true)}}
	if got := c.endpointTLS(md); got != nil {
		t.Errorf("raw_buffer match gave tls %+v", got)
	}
}

func TestSelectChainBySNI(t *testing.T) {
	tlsCtx := &downstreamTLS{}
	l := &listenerSpec{chains: []*tcpChain{
		{name: "a", serverNames: []string{"svc-a"}, tls: tlsCtx},
		{name: "wild", serverNames: []string{"*.example.com"}, tls: tlsCtx},
		{name: "wilder", serverNames: []string{"*.eu.example.com"}, tls: tlsCtx},
		{name: "plain"},
	}}
	for _, tc := range []struct {
		sni   string
		isTLS bool
		want  string
	}{
		{"svc-a", true, "a"}, {"SVC-A", true, "a"}, {"x.example.com", true, "wild"}, {"x.eu.example.com", true, "wilder"},
		{"svc-b", true, ""}, {"", true, ""}, {"", false, "plain"},
	} {
		got := l.selectChain(tc.sni, tc.isTLS)
		if name := func() string {
			if got == nil {
				return ""
			}
			return got.name
		}(); name != tc.want {
			t.Errorf("sni %q tls %v: chain %q, want %q", tc.sni, tc.isTLS, name, tc.want)
		}
	}
}
