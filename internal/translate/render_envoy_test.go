package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

const (
	envoyTestBlue   = "default-service-blue-10000"
	envoyTestGreen  = "default-service-green-10000"
	envoyTestCanary = "default-service-canary-10000"
	envoyTestCert   = "meshrelay-east-cert"
	envoyTestCA     = "meshrelay-ca"
)

// envoyTestPlan is the failover setup of seed 003 seen from cluster east: blue's priority 0
// is local, priority 1 is west's gateway reached over mTLS with SNI naming green; east's own
// gateway forwards by SNI to blue and green; an HTTP listener routes with every match kind.
func envoyTestPlan() Plan {
	mtls := &UpstreamTLS{SNI: envoyTestGreen, CertSecret: envoyTestCert, CASecret: envoyTestCA}
	return Plan{
		Cluster: "east",
		Upstreams: []UpstreamPlan{
			{
				Name: envoyTestBlue, Namespace: "default", Host: "service-blue.default.svc.cluster.local", Port: 10000,
				Priorities: [][]Endpoint{
					{
						{Address: "10.0.1.7", Port: 10000, Cluster: "east", Region: "us-east-1", Zone: "us-east-1b"},
						{Address: "10.0.0.9", Port: 10000, Cluster: "east", Region: "us-east-1", Zone: "us-east-1a"},
						{Address: "10.0.0.2", Port: 10000, Cluster: "east", Region: "us-east-1", Zone: "us-east-1a"},
					},
					{
						{Address: "203.0.113.10", Port: 15443, Cluster: "west", Region: "us-west-2", Zone: "us-west-2a", TLS: mtls},
						{Address: "203.0.113.11", Port: 15443, Cluster: "west", Region: "us-west-2", Zone: "us-west-2a", TLS: mtls},
					},
				},
				HealthChecks: []HealthCheck{{
					Timeout: time.Second, Interval: 2 * time.Second, UnhealthyThreshold: 3, HealthyThreshold: 2,
					Path: "/healthz", Host: "service-blue", ExpectedStatuses: []uint32{200, 204},
				}},
				Outlier:  &Outlier{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second},
				Failover: &FailoverPlan{Source: "FailoverScheme gloo-fed/failover-scheme"},
			},
			{Name: envoyTestCanary, Namespace: "default", Priorities: [][]Endpoint{{}}},
			{
				Name: envoyTestGreen, Namespace: "default", ConnectTimeout: 2 * time.Second,
				Priorities: [][]Endpoint{{{Address: "10.0.2.1", Port: 10000, Region: "us-east-1", Zone: "us-east-1a"}}},
			},
		},
		HTTPListeners: []HTTPListener{{
			Name: "http-gateway", Port: 8080,
			VirtualHosts: []VirtualHost{{Name: "shop", Domains: []string{"shop.example.com"}, Routes: []Route{
				{Name: "exact", Match: RouteMatch{Exact: "/healthz"}, Destinations: []WeightedDestination{{Cluster: envoyTestGreen}}},
				{
					Name: "header",
					Match: RouteMatch{Prefix: "/", Method: "GET", Headers: []HeaderMatch{
						{Name: "x-beta", Value: "yes"},
						{Name: "x-debug"},
						{Name: "x-user", Value: "^admin-.*$", Regex: true, Invert: true},
					}},
					Destinations: []WeightedDestination{{Cluster: envoyTestCanary, Weight: 1}},
				},
				{
					Name: "weighted", Match: RouteMatch{Prefix: "/api"},
					Destinations: []WeightedDestination{{Cluster: envoyTestBlue, Weight: 90}, {Cluster: envoyTestCanary, Weight: 10}},
					Timeout:      15 * time.Second,
					Retries:      &Retries{Attempts: 3, PerTryTimeout: 2 * time.Second},
				},
				{
					Name: "prefix", Match: RouteMatch{Prefix: "/"},
					Destinations: []WeightedDestination{{Cluster: envoyTestBlue, Weight: 100}, {Cluster: envoyTestCanary, Weight: 0}},
					Retries:      &Retries{Attempts: 1, RetryOn: "gateway-error"},
				},
			}}},
		}},
		TCPGateways: []TCPGateway{{
			Name: "failover-gateway", Address: "::", Port: 15443,
			Hosts: []TCPHost{{
				Name: "failover", CertSecret: envoyTestCert, CASecret: envoyTestCA,
				ForwardSNI: true, ServedNames: []string{envoyTestBlue, envoyTestGreen},
			}},
		}},
		Secrets: []SecretPlan{
			{Name: envoyTestCA, CAPEM: []byte("-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n")},
			{
				Name:    envoyTestCert,
				CertPEM: []byte("-----BEGIN CERTIFICATE-----\nZWFzdA==\n-----END CERTIFICATE-----\n"),
				KeyPEM:  []byte("-----BEGIN PRIVATE KEY-----\na2V5\n-----END PRIVATE KEY-----\n"),
			},
		},
	}
}

func envoyTestFatalf(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, args...)
	}
}

// envoyTestUnpack unpacks a typed config, failing the test if it is not an M.
func envoyTestUnpack[M proto.Message](t *testing.T, a interface{ UnmarshalTo(proto.Message) error }, m M) M {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("unpack %T: %v", m, err)
	}
	return m
}

func envoyTestCommonTLS(t *testing.T, c *tlsv3.CommonTlsContext) {
	t.Helper()
	sds := c.GetTlsCertificateSdsSecretConfigs()
	envoyTestFatalf(t, len(sds) == 1 && sds[0].GetName() == envoyTestCert && sds[0].GetSdsConfig().GetAds() != nil,
		"tls certificate sds = %v, want %s over ADS", sds, envoyTestCert)
	ca := c.GetValidationContextSdsSecretConfig()
	envoyTestFatalf(t, ca.GetName() == envoyTestCA && ca.GetSdsConfig().GetAds() != nil, "validation context sds = %v, want %s over ADS", ca, envoyTestCA)
}

func TestRenderEnvoy(t *testing.T) {
	res, err := renderEnvoy(envoyTestPlan())
	if err != nil {
		t.Fatalf("renderEnvoy: %v", err)
	}
	wantKeys := []string{
		"EnvoyCluster//" + envoyTestBlue, "EnvoyCluster//" + envoyTestCanary, "EnvoyCluster//" + envoyTestGreen,
		"EnvoyClusterLoadAssignment//" + envoyTestBlue, "EnvoyClusterLoadAssignment//" + envoyTestCanary, "EnvoyClusterLoadAssignment//" + envoyTestGreen,
		"EnvoyListener//failover-gateway", "EnvoyListener//http-gateway", "EnvoyRouteConfiguration//http-gateway",
		"EnvoySecret//" + envoyTestCA, "EnvoySecret//" + envoyTestCert,
	}
	var keys []string
	msgs := map[string]proto.Message{}
	for _, r := range res {
		keys = append(keys, r.Key)
		human, err := canonicalHuman(r)
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]any
		if err := json.Unmarshal(human, &env); err != nil {
			t.Fatalf("%s: body is not JSON: %v", r.Key, err)
		}
		kind, name, _ := strings.Cut(r.Key, "//")
		spec, _ := env["spec"].(map[string]any)
		meta, _ := env["metadata"].(map[string]any)
		if env["apiVersion"] != envoyres.APIVersion || env["kind"] != kind || meta["name"] != name || spec == nil || spec["@type"] != nil || len(env) != 4 {
			t.Errorf("%s: envelope = %s", r.Key, human)
		}
		gotKind, msg, err := envoyres.Decode(r)
		if err != nil || gotKind != kind {
			t.Fatalf("envoyres.Decode(%s) = %q, %v", r.Key, gotKind, err)
		}
		if err := msg.(envoyres.Message).ValidateAll(); err != nil {
			t.Errorf("%s: ValidateAll: %v", r.Key, err)
		}
		msgs[r.Key] = msg
	}
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("keys = %q\nwant %q", keys, wantKeys)
	}

	tests := []struct {
		key   string
		check func(t *testing.T, m proto.Message)
	}{
		{"EnvoyCluster//" + envoyTestBlue, func(t *testing.T, m proto.Message) {
			c := m.(*clusterv3.Cluster)
			envoyTestFatalf(t, c.GetType() == clusterv3.Cluster_EDS && c.GetEdsClusterConfig().GetEdsConfig().GetAds() != nil &&
				c.GetEdsClusterConfig().GetEdsConfig().GetResourceApiVersion() == corev3.ApiVersion_V3, "discovery = %v %v", c.GetType(), c.GetEdsClusterConfig())
			envoyTestFatalf(t, c.GetConnectTimeout().AsDuration() == 5*time.Second, "connect timeout = %v", c.GetConnectTimeout())
			envoyTestFatalf(t, c.GetLbPolicy() == clusterv3.Cluster_ROUND_ROBIN, "lb policy = %v", c.GetLbPolicy())
			p := c.GetCommonLbConfig().GetHealthyPanicThreshold()
			envoyTestFatalf(t, p != nil && p.GetValue() == 0, "healthy panic threshold = %v, want explicit 0", p)

			envoyTestFatalf(t, len(c.GetHealthChecks()) == 1, "health checks = %v", c.GetHealthChecks())
			hc := c.GetHealthChecks()[0]
			envoyTestFatalf(t, hc.GetTimeout().AsDuration() == time.Second && hc.GetInterval().AsDuration() == 2*time.Second &&
				hc.GetNoTrafficInterval().AsDuration() == 2*time.Second, "health check durations = %v", hc)
			envoyTestFatalf(t, hc.GetUnhealthyThreshold().GetValue() == 3 && hc.GetHealthyThreshold().GetValue() == 2, "thresholds = %v", hc)
			h := hc.GetHttpHealthCheck()
			envoyTestFatalf(t, h.GetPath() == "/healthz" && h.GetHost() == "service-blue", "http health check = %v", h)
			st := h.GetExpectedStatuses()
			envoyTestFatalf(t, len(st) == 2 && st[0].GetStart() == 200 && st[0].GetEnd() == 201 && st[1].GetStart() == 204 && st[1].GetEnd() == 205,
				"expected statuses = %v", st)

			od := c.GetOutlierDetection()
			envoyTestFatalf(t, od.GetConsecutive_5Xx().GetValue() == 5 && od.GetInterval().AsDuration() == 10*time.Second &&
				od.GetBaseEjectionTime().AsDuration() == 30*time.Second && od.GetMaxEjectionPercent().GetValue() == 100, "outlier detection = %v", od)

			tsm := c.GetTransportSocketMatches()
			envoyTestFatalf(t, len(tsm) == 1, "transport socket matches = %v", tsm)
			envoyTestFatalf(t, tsm[0].GetName() == "mtls-"+envoyTestGreen &&
				tsm[0].GetMatch().GetFields()["meshrelay.io/tls"].GetStringValue() == envoyTestGreen && len(tsm[0].GetMatch().GetFields()) == 1,
				"transport socket match = %v", tsm[0])
			ts := tsm[0].GetTransportSocket()
			envoyTestFatalf(t, ts.GetName() == "envoy.transport_sockets.tls", "transport socket name = %q", ts.GetName())
			up := envoyTestUnpack(t, ts.GetTypedConfig(), &tlsv3.UpstreamTlsContext{})
			envoyTestFatalf(t, up.GetSni() == envoyTestGreen, "sni = %q", up.GetSni())
			envoyTestCommonTLS(t, up.GetCommonTlsContext())
		}},
		{"EnvoyCluster//" + envoyTestGreen, func(t *testing.T, m proto.Message) {
			c := m.(*clusterv3.Cluster)
			envoyTestFatalf(t, c.GetConnectTimeout().AsDuration() == 2*time.Second, "connect timeout = %v", c.GetConnectTimeout())
			envoyTestFatalf(t, c.GetOutlierDetection() == nil && len(c.GetHealthChecks()) == 0 && len(c.GetTransportSocketMatches()) == 0,
				"unexpected outlier, health checks or tls: %v", c)
		}},
		{"EnvoyClusterLoadAssignment//" + envoyTestBlue, func(t *testing.T, m proto.Message) {
			cla := m.(*endpointv3.ClusterLoadAssignment)
			type group struct {
				prio         uint32
				region, zone string
				addrs        []string
				sni          string
			}
			want := []group{
				{0, "us-east-1", "us-east-1a", []string{"10.0.0.2:10000", "10.0.0.9:10000"}, ""},
				{0, "us-east-1", "us-east-1b", []string{"10.0.1.7:10000"}, ""},
				{1, "us-west-2", "us-west-2a", []string{"203.0.113.10:15443", "203.0.113.11:15443"}, envoyTestGreen},
			}
			envoyTestFatalf(t, cla.GetClusterName() == envoyTestBlue && len(cla.GetEndpoints()) == len(want), "load assignment = %v", cla)
			for i, w := range want {
				g := cla.GetEndpoints()[i]
				envoyTestFatalf(t, g.GetPriority() == w.prio && g.GetLocality().GetRegion() == w.region && g.GetLocality().GetZone() == w.zone,
					"group %d = priority %d locality %v, want %+v", i, g.GetPriority(), g.GetLocality(), w)
				var addrs []string
				for _, lb := range g.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					addrs = append(addrs, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
					sni := lb.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["meshrelay.io/tls"].GetStringValue()
					envoyTestFatalf(t, sni == w.sni, "group %d endpoint %s tls metadata = %q, want %q", i, sa.GetAddress(), sni, w.sni)
				}
				envoyTestFatalf(t, slices.Equal(addrs, w.addrs), "group %d endpoints = %v, want %v", i, addrs, w.addrs)
			}
		}},
		{"EnvoyClusterLoadAssignment//" + envoyTestCanary, func(t *testing.T, m proto.Message) {
			cla := m.(*endpointv3.ClusterLoadAssignment)
			envoyTestFatalf(t, cla.GetClusterName() == envoyTestCanary && len(cla.GetEndpoints()) == 0, "empty load assignment = %v", cla)
		}},
		{"EnvoyListener//http-gateway", func(t *testing.T, m proto.Message) {
			l := m.(*listenerv3.Listener)
			sa := l.GetAddress().GetSocketAddress()
			envoyTestFatalf(t, sa.GetAddress() == "0.0.0.0" && sa.GetPortValue() == 8080, "address = %v", sa)
			envoyTestFatalf(t, len(l.GetFilterChains()) == 1 && len(l.GetFilterChains()[0].GetFilters()) == 1, "filter chains = %v", l.GetFilterChains())
			f := l.GetFilterChains()[0].GetFilters()[0]
			envoyTestFatalf(t, f.GetName() == "envoy.filters.network.http_connection_manager", "filter = %q", f.GetName())
			hcm := envoyTestUnpack(t, f.GetTypedConfig(), &hcmv3.HttpConnectionManager{})
			envoyTestFatalf(t, hcm.GetStatPrefix() == "http-gateway" && hcm.GetRds().GetRouteConfigName() == "http-gateway" &&
				hcm.GetRds().GetConfigSource().GetAds() != nil, "hcm = %v", hcm)
			hf := hcm.GetHttpFilters()
			envoyTestFatalf(t, len(hf) == 1 && hf[0].GetName() == "envoy.filters.http.router" &&
				hf[0].GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "http filters = %v", hf)
		}},
		{"EnvoyRouteConfiguration//http-gateway", func(t *testing.T, m proto.Message) {
			rc := m.(*routev3.RouteConfiguration)
			envoyTestFatalf(t, len(rc.GetVirtualHosts()) == 1, "virtual hosts = %v", rc.GetVirtualHosts())
			vh := rc.GetVirtualHosts()[0]
			envoyTestFatalf(t, vh.GetName() == "shop" && slices.Equal(vh.GetDomains(), []string{"shop.example.com"}) && len(vh.GetRoutes()) == 4,
				"virtual host = %v", vh)
			exact, header, weighted, prefix := vh.GetRoutes()[0], vh.GetRoutes()[1], vh.GetRoutes()[2], vh.GetRoutes()[3]

			envoyTestFatalf(t, exact.GetMatch().GetPath() == "/healthz" && exact.GetRoute().GetCluster() == envoyTestGreen, "exact route = %v", exact)
			envoyTestFatalf(t, exact.GetRoute().GetRetryPolicy() == nil && exact.GetRoute().GetTimeout() == nil, "exact route has retries or timeout: %v", exact)

			hm := header.GetMatch().GetHeaders()
			envoyTestFatalf(t, header.GetMatch().GetPrefix() == "/" && len(hm) == 4 && header.GetRoute().GetCluster() == envoyTestCanary, "header route = %v", header)
			envoyTestFatalf(t, hm[0].GetName() == "x-beta" && hm[0].GetStringMatch().GetExact() == "yes" && !hm[0].GetInvertMatch(), "header 0 = %v", hm[0])
			envoyTestFatalf(t, hm[1].GetName() == "x-debug" && hm[1].GetPresentMatch(), "header 1 = %v", hm[1])
			envoyTestFatalf(t, hm[2].GetName() == "x-user" && hm[2].GetStringMatch().GetSafeRegex().GetRegex() == "^admin-.*$" && hm[2].GetInvertMatch(), "header 2 = %v", hm[2])
			envoyTestFatalf(t, hm[3].GetName() == ":method" && hm[3].GetStringMatch().GetExact() == "GET", "header 3 = %v", hm[3])

			envoyTestFatalf(t, weighted.GetMatch().GetPrefix() == "/api", "weighted match = %v", weighted.GetMatch())
			wa := weighted.GetRoute()
			wc := wa.GetWeightedClusters().GetClusters()
			envoyTestFatalf(t, len(wc) == 2 && wc[0].GetName() == envoyTestBlue && wc[0].GetWeight().GetValue() == 90 &&
				wc[1].GetName() == envoyTestCanary && wc[1].GetWeight().GetValue() == 10, "weighted clusters = %v", wc)
			envoyTestFatalf(t, wa.GetTimeout().AsDuration() == 15*time.Second, "timeout = %v", wa.GetTimeout())
			rp := wa.GetRetryPolicy()
			envoyTestFatalf(t, rp.GetRetryOn() == "5xx,connect-failure,reset" && rp.GetNumRetries().GetValue() == 3 &&
				rp.GetPerTryTimeout().AsDuration() == 2*time.Second, "retry policy = %v", rp)

			envoyTestFatalf(t, prefix.GetRoute().GetCluster() == envoyTestBlue, "zero weight not dropped: %v", prefix.GetRoute())
			envoyTestFatalf(t, prefix.GetRoute().GetRetryPolicy().GetRetryOn() == "gateway-error" && prefix.GetRoute().GetRetryPolicy().GetNumRetries().GetValue() == 1,
				"prefix retry policy = %v", prefix.GetRoute().GetRetryPolicy())
		}},
		{"EnvoyListener//failover-gateway", func(t *testing.T, m proto.Message) {
			l := m.(*listenerv3.Listener)
			sa := l.GetAddress().GetSocketAddress()
			envoyTestFatalf(t, sa.GetAddress() == "::" && sa.GetPortValue() == 15443, "address = %v", sa)
			lf := l.GetListenerFilters()
			envoyTestFatalf(t, len(lf) == 1 && lf[0].GetName() == "envoy.filters.listener.tls_inspector", "listener filters = %v", lf)
			envoyTestFatalf(t, l.GetDefaultFilterChain() == nil, "default filter chain = %v", l.GetDefaultFilterChain())
			fcs := l.GetFilterChains()
			envoyTestFatalf(t, len(fcs) == 2, "filter chains = %d, want 2", len(fcs))
			for i, name := range []string{envoyTestBlue, envoyTestGreen} {
				fc := fcs[i]
				envoyTestFatalf(t, slices.Equal(fc.GetFilterChainMatch().GetServerNames(), []string{name}), "chain %d server names = %v", i, fc.GetFilterChainMatch())
				dt := envoyTestUnpack(t, fc.GetTransportSocket().GetTypedConfig(), &tlsv3.DownstreamTlsContext{})
				envoyTestFatalf(t, dt.GetRequireClientCertificate().GetValue(), "chain %d does not require a client certificate", i)
				envoyTestCommonTLS(t, dt.GetCommonTlsContext())
				envoyTestFatalf(t, len(fc.GetFilters()) == 1 && fc.GetFilters()[0].GetName() == "envoy.filters.network.tcp_proxy", "chain %d filters = %v", i, fc.GetFilters())
				tp := envoyTestUnpack(t, fc.GetFilters()[0].GetTypedConfig(), &tcpproxyv3.TcpProxy{})
				envoyTestFatalf(t, tp.GetCluster() == name && tp.GetStatPrefix() != "", "chain %d tcp proxy = %v", i, tp)
			}
		}},
		{"EnvoySecret//" + envoyTestCert, func(t *testing.T, m proto.Message) {
			s := m.(*tlsv3.Secret)
			tc := s.GetTlsCertificate()
			envoyTestFatalf(t, strings.Contains(string(tc.GetCertificateChain().GetInlineBytes()), "ZWFzdA==") &&
				strings.Contains(string(tc.GetPrivateKey().GetInlineBytes()), "a2V5"), "tls certificate = %v", tc)
		}},
		{"EnvoySecret//" + envoyTestCA, func(t *testing.T, m proto.Message) {
			s := m.(*tlsv3.Secret)
			envoyTestFatalf(t, s.GetTlsCertificate() == nil && strings.Contains(string(s.GetValidationContext().GetTrustedCa().GetInlineBytes()), "Y2E="),
				"validation context = %v", s)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			m, ok := msgs[tt.key]
			if !ok {
				t.Fatalf("no resource %s", tt.key)
			}
			tt.check(t, m)
		})
	}
}

func TestRenderEnvoyDeterministic(t *testing.T) {
	first, err := renderEnvoy(envoyTestPlan())
	if err != nil {
		t.Fatalf("renderEnvoy: %v", err)
	}
	// The same plan, and the same plan with endpoints listed in another order, render the
	// same bytes.
	shuffled := envoyTestPlan()
	slices.Reverse(shuffled.Upstreams[0].Priorities[0])
	slices.Reverse(shuffled.Upstreams[0].Priorities[1])
	for _, p := range []Plan{envoyTestPlan(), shuffled} {
		again, err := renderEnvoy(p)
		if err != nil {
			t.Fatalf("renderEnvoy: %v", err)
		}
		if len(again) != len(first) {
			t.Fatalf("rendered %d resources, then %d", len(first), len(again))
		}
		for i := range first {
			if first[i].Key != again[i].Key || first[i].Hash != again[i].Hash || !bytes.Equal(first[i].Body, again[i].Body) {
				t.Errorf("resource %d differs:\n%s %s\n%s %s", i, first[i].Key, first[i].Body, again[i].Key, again[i].Body)
			}
		}
	}
}

func TestRenderEnvoyPriorityGap(t *testing.T) {
	p := Plan{Upstreams: []UpstreamPlan{{Name: "gap", Priorities: [][]Endpoint{
		{}, {{Address: "10.0.0.1", Port: 80, Region: "r", Zone: "z"}}, {},
	}}}}
	res, err := renderEnvoy(p)
	if err != nil {
		t.Fatalf("renderEnvoy: %v", err)
	}
	_, m, err := envoyres.Decode(res[1])
	if err != nil {
		t.Fatalf("envoyres.Decode(%s): %v", res[1].Key, err)
	}
	eps := m.(*endpointv3.ClusterLoadAssignment).GetEndpoints()
	if len(eps) != 2 || eps[0].GetPriority() != 0 || len(eps[0].GetLbEndpoints()) != 0 ||
		eps[1].GetPriority() != 1 || len(eps[1].GetLbEndpoints()) != 1 {
		t.Fatalf("endpoints = %v, want an empty priority 0 then priority 1 and no trailing empty priority", eps)
	}
}

func TestRenderEnvoyInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(p *Plan)
		want   []string // substrings of the error
	}{
		{"listener port 0", func(p *Plan) { p.HTTPListeners[0].Port = 0 }, []string{`EnvoyListener "http-gateway"`, "port 0"}},
		{"listener address not ip", func(p *Plan) { p.TCPGateways[0].Address = "gateway.local" }, []string{`EnvoyListener "failover-gateway"`, "gateway.local"}},
		{"health check timeout 0", func(p *Plan) { p.Upstreams[0].HealthChecks[0].Timeout = 0 }, []string{`EnvoyCluster "` + envoyTestBlue + `"`, "Timeout"}},
		{"health check path empty", func(p *Plan) { p.Upstreams[0].HealthChecks[0].Path = "" }, []string{`EnvoyCluster "` + envoyTestBlue + `"`, "Path"}},
		{"expected status out of range", func(p *Plan) { p.Upstreams[0].HealthChecks[0].ExpectedStatuses = []uint32{700} }, []string{envoyTestBlue, "700"}},
		{"max ejection percent over 100", func(p *Plan) { p.Upstreams[0].Outlier.MaxEjectionPercent = 101 }, []string{envoyTestBlue, "MaxEjectionPercent"}},
		{"tls without sni", func(p *Plan) {
			p.Upstreams[0].Priorities[1][0].TLS = &UpstreamTLS{CertSecret: envoyTestCert, CASecret: envoyTestCA}
		}, []string{envoyTestBlue, "sni"}},
		{"tls with unknown secret", func(p *Plan) {
			p.Upstreams[0].Priorities[1][0].TLS = &UpstreamTLS{SNI: "x", CertSecret: "nope", CASecret: envoyTestCA}
		}, []string{envoyTestBlue, `unknown secret "nope"`}},
		{"endpoint port 0", func(p *Plan) { p.Upstreams[2].Priorities[0][0].Port = 0 }, []string{envoyTestGreen, "port 0"}},
		{"route to unknown cluster", func(p *Plan) {
			p.HTTPListeners[0].VirtualHosts[0].Routes[2].Destinations[1].Cluster = "ghost"
		}, []string{`EnvoyListener "http-gateway"`, `route 2 ("weighted")`, `unknown cluster "ghost"`}},
		{"route without destination", func(p *Plan) { p.HTTPListeners[0].VirtualHosts[0].Routes[0].Destinations = nil }, []string{"http-gateway", `"exact"`, "no destination"}},
		{"two path matches", func(p *Plan) { p.HTTPListeners[0].VirtualHosts[0].Routes[0].Match.Prefix = "/" }, []string{"http-gateway", "more than one"}},
		{"virtual host without domains", func(p *Plan) { p.HTTPListeners[0].VirtualHosts[0].Domains = nil }, []string{`EnvoyRouteConfiguration "http-gateway"`, "Domains"}},
		{"gateway serves unknown upstream", func(p *Plan) { p.TCPGateways[0].Hosts[0].ServedNames[1] = "ghost" }, []string{"failover-gateway", `unknown cluster "ghost"`}},
		{"gateway serves nothing", func(p *Plan) { p.TCPGateways[0].Hosts[0].ServedNames = nil }, []string{"failover-gateway", "no upstream"}},
		{"gateway serves a name twice", func(p *Plan) {
			h := p.TCPGateways[0].Hosts[0]
			h.Name, h.ServedNames = "again", []string{envoyTestGreen}
			p.TCPGateways[0].Hosts = append(p.TCPGateways[0].Hosts, h)
		}, []string{"failover-gateway", "already served"}},
		{"listener names collide", func(p *Plan) { p.TCPGateways[0].Name = "http-gateway" }, []string{`EnvoyListener "http-gateway"`, "duplicate"}},
		{"secret without material", func(p *Plan) { p.Secrets[0].CAPEM = nil }, []string{`EnvoySecret "` + envoyTestCA + `"`}},
		{"certificate without key", func(p *Plan) { p.Secrets[1].KeyPEM = nil }, []string{`EnvoySecret "` + envoyTestCert + `"`, "private key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := envoyTestPlan()
			tt.mutate(&p)
			res, err := renderEnvoy(p)
			if err == nil {
				t.Fatalf("renderEnvoy succeeded with %d resources, want an error", len(res))
			}
			if !errors.Is(err, envoyres.ErrInvalid) {
				t.Errorf("error %v does not wrap envoyres.ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeEnvoyRejects(t *testing.T) {
	res, err := renderEnvoy(envoyTestPlan())
	if err != nil {
		t.Fatalf("renderEnvoy: %v", err)
	}
	// The JSON envelope, the form of previous versions (envoyres_test has the binary form).
	cluster := res[0] // EnvoyCluster//default-service-blue-10000
	js, err := envoyres.JSON(cluster)
	if err != nil {
		t.Fatal(err)
	}
	cluster = snapshot.NewResource(cluster.Key, js)
	replace := func(old, new string) snapshot.Resource {
		return snapshot.NewResource(cluster.Key, []byte(strings.Replace(string(cluster.Body), old, new, 1)))
	}
	tests := []struct {
		name     string
		r        snapshot.Resource
		notEnvoy bool
	}{
		{"not json", snapshot.NewResource(cluster.Key, []byte("{")), false},
		{"other apiVersion", replace(envoyres.APIVersion, "networking.istio.io/v1"), true},
		{"other kind", snapshot.NewResource("ServiceEntry/east/web", []byte(`{"apiVersion":"xds.meshrelay.io/v1","kind":"ServiceEntry"}`)), true},
		{"kind and spec disagree", replace(`"kind":"EnvoyCluster"`, `"kind":"EnvoySecret"`), false},
		{"key and name disagree", snapshot.NewResource("EnvoyCluster//other", cluster.Body), false},
		{"unknown spec field", replace(`"spec":{`, `"spec":{"bogus":1,`), false},
		{"invalid spec", replace(`"connectTimeout":"5s"`, `"connectTimeout":"0s"`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, m, err := envoyres.Decode(tt.r)
			if err == nil {
				t.Fatalf("envoyres.Decode = %q, %v; want an error", kind, m)
			}
			if errors.Is(err, envoyres.ErrNotEnvoy) != tt.notEnvoy {
				t.Errorf("errors.Is(%v, envoyres.ErrNotEnvoy) = %v, want %v", err, !tt.notEnvoy, tt.notEnvoy)
			}
			if !strings.Contains(err.Error(), tt.r.Key) {
				t.Errorf("error %q does not name %s", err, tt.r.Key)
			}
			if tt.name == "invalid spec" && !errors.Is(err, envoyres.ErrInvalid) {
				t.Errorf("error %v does not wrap envoyres.ErrInvalid", err)
			}
		})
	}
}

// canonicalHuman checks that r's body is canonical and returns its human form
// (envoyres.JSON). An Envoy resource's body is binary and encodes again to the same bytes;
// any other body, and every human form, is JSON that NewResource would not rewrite.
func canonicalHuman(r snapshot.Resource) ([]byte, error) {
	if envoyres.IsKey(r.Key) {
		if !r.Binary() {
			return nil, fmt.Errorf("%s: body is not binary", r.Key)
		}
		kind, msg, err := envoyres.Decode(r)
		if err != nil {
			return nil, err
		}
		again, err := envoyres.Encode(kind, strings.TrimPrefix(r.Key, kind+"//"), msg.(envoyres.Message))
		if err != nil || again.Hash != r.Hash || !bytes.Equal(again.Body, r.Body) {
			return nil, fmt.Errorf("%s: body is not canonical (decoded and encoded again it changes; %v)", r.Key, err)
		}
	} else if again := snapshot.NewResource(r.Key, r.Body); again.Hash != r.Hash || !bytes.Equal(again.Body, r.Body) {
		return nil, fmt.Errorf("%s: body is not canonical (NewResource would rewrite it)", r.Key)
	}
	human, err := envoyres.JSON(r)
	if err != nil {
		return nil, err
	}
	if again := snapshot.NewResource(r.Key, human); !bytes.Equal(again.Body, human) {
		return nil, fmt.Errorf("%s: human form is not canonical (NewResource would rewrite it)", r.Key)
	}
	return human, nil
}

// CanonicalHuman is canonicalHuman for the external tests.
var CanonicalHuman = canonicalHuman

// With a memo, a ClusterLoadAssignment is assembled from the remembered encodings of its
// localities; the bytes equal the deterministic marshal of the whole message (what
// renderEnvoy without a memo gives), also after one locality changed, when only that
// locality is encoded again.
func TestAssembledCLAEqualsMarshal(t *testing.T) {
	plan := func(changed string) Plan {
		p := envoyTestPlan()
		mtls := &UpstreamTLS{SNI: envoyTestGreen, CertSecret: envoyTestCert, CASecret: envoyTestCA}
		var remote []Endpoint
		for i := range 60 {
			addr := fmt.Sprintf("198.51.100.%d", i)
			if i == 17 {
				addr = changed
			}
			remote = append(remote, Endpoint{Address: addr, Port: 15443, Region: fmt.Sprintf("r%02d", i/2), Zone: fmt.Sprintf("z%d", i%3), TLS: mtls})
		}
		blue := &p.Upstreams[0]
		blue.Priorities = append(blue.Priorities, nil, remote) // an empty priority between
		return p
	}
	memo := newRenderMemo()
	localities := 0
	for i, changed := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.2"} {
		p := plan(changed)
		want, err := renderEnvoy(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := renderEnvoyMemo(p, memo, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("render %d: %d resources, want %d", i, len(got), len(want))
		}
		for j := range want {
			if got[j].Key != want[j].Key || got[j].Hash != want[j].Hash || !bytes.Equal(got[j].Body, want[j].Body) {
				t.Fatalf("render %d: %s assembled differs from the marshalled message", i, want[j].Key)
			}
		}
		// The first render encodes every locality, the second none, the third the one
		// that changed.
		wantNew := []int{memo.localities.len() - localities, 0, 1}[i]
		if i == 0 && wantNew < 60 {
			t.Fatalf("first render remembered %d localities, want at least 60", wantNew)
		}
		if n := memo.localities.len() - localities; n != wantNew {
			t.Fatalf("render %d encoded %d localities, want %d", i, n, wantNew)
		}
		localities = memo.localities.len()
	}
}

// BenchmarkRenderBigCLA renders a cluster's upstream whose load assignment has a locality
// per gateway of 1,000 clusters after one endpoint changed: every locality encoded
// (no memo) or only the changed one (memo).
func BenchmarkRenderBigCLA(b *testing.B) {
	mtls := &UpstreamTLS{SNI: "vd-web-8080", CertSecret: envoyTestCert, CASecret: envoyTestCA}
	var remote []Endpoint
	for i := range 1000 {
		remote = append(remote, Endpoint{Address: fmt.Sprintf("10.%d.%d.1", i/256, i%256), Port: 15443, Region: fmt.Sprintf("c%04d", i), TLS: mtls})
	}
	plan := func(n int) Plan {
		local := []Endpoint{{Address: fmt.Sprintf("10.200.0.%d", n%250+1), Port: 8080, Region: "local"}}
		return Plan{Cluster: "local", Secrets: envoyTestPlan().Secrets,
			Upstreams: []UpstreamPlan{{Name: "vd-web-8080", Priorities: [][]Endpoint{local, remote}}}}
	}
	for _, withMemo := range []bool{false, true} {
		b.Run(fmt.Sprintf("memo=%v", withMemo), func(b *testing.B) {
			var memo *renderMemo
			if withMemo {
				memo = newRenderMemo()
			}
			n := 0
			for b.Loop() {
				n++
				if _, err := renderEnvoyMemo(plan(n), memo, nil, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
