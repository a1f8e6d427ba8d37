package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Istio's own validation (istio.io/istio/pkg/config/validation) cannot be imported without
// pulling in all of istio.io/istio, so istioCheckRules below re-checks the handful of its
// rules this renderer could plausibly break. Every spec also round-trips through Istio's
// types with unknown fields refused.

// istioTestPlan has an upstream with outlier detection and locality failover, one with
// mTLS gateway endpoints, a plain one, an HTTP listener with prefix, exact, header, regex
// and weighted routes, and a service entry with endpoints in two zones.
func istioTestPlan() Plan {
	return Plan{
		Cluster: "east",
		Upstreams: []UpstreamPlan{
			{
				Name: "default-service-blue-10000", Namespace: "default", Host: "service-blue.default.svc.cluster.local", Port: 10000,
				Priorities:   [][]Endpoint{{{Address: "10.0.0.9", Port: 8080, Cluster: "east", Region: "us-east", Zone: "zone-a"}}},
				HealthChecks: []HealthCheck{{Timeout: time.Second, Interval: 5 * time.Second, UnhealthyThreshold: 2, HealthyThreshold: 1, Path: "/healthz"}},
			},
			{
				Name: "vd.Reviews_Global", Namespace: "bookinfo", Host: "reviews.global", Port: 9080,
				Priorities: [][]Endpoint{
					{{Address: "10.0.1.1", Port: 9080, Cluster: "east", Region: "us-east", Zone: "zone-a"}},
					{{Address: "10.2.1.1", Port: 9080, Cluster: "west", Region: "us-west", Zone: "zone-c"}},
				},
				Outlier:  &Outlier{Consecutive5xx: 3, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second},
				Failover: &FailoverPlan{Source: "FailoverPolicy bookinfo/reviews"},
			},
			{
				Name: "default-service-red-10000", Namespace: "default", Host: "service-red.default.svc.cluster.local", Port: 10000,
				Service: &ServiceRef{Name: "service-red", Selector: map[string]string{"app": "red"}, PortName: "http"},
				Priorities: [][]Endpoint{
					{{Address: "10.0.0.7", Port: 8080, Cluster: "east", Region: "us-east", Zone: "zone-a", Network: "east"}},
					{{Address: "192.0.2.30", Port: 15443, Cluster: "west", Region: "us-west", Zone: "zone-c", Network: "west-net", TLS: &UpstreamTLS{SNI: "default-service-pink-10000", CertSecret: "meshrelay-client-east", CASecret: "meshrelay-ca"}}},
				},
				Outlier:  &Outlier{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100},
				Failover: &FailoverPlan{Source: "FailoverScheme gloo-fed/red"},
			},
			{
				Name: "vd.ratings-global-9080", Host: "ratings.global", Port: 9080,
				Priorities: [][]Endpoint{
					{{Address: "10.0.2.1", Port: 9080, Cluster: "east", Region: "us-east", Zone: "zone-a"}},
					{
						{Address: "192.0.2.10", Port: 15443, Cluster: "west", Region: "us-west", TLS: &UpstreamTLS{SNI: "bookinfo-ratings-9080", CertSecret: "meshrelay-client-east", CASecret: "meshrelay-ca"}},
						{Address: "192.0.2.20", Port: 15443, Cluster: "south", Region: "us-south", TLS: &UpstreamTLS{SNI: "other-sni", CertSecret: "other-secret"}},
					},
				},
			},
		},
		HTTPListeners: []HTTPListener{{
			Name: "gateway-http", Address: "0.0.0.0", Port: 8080, Namespace: "gateways",
			VirtualHosts: []VirtualHost{{
				Name: "Shop", Domains: []string{"shop.example.com", "www.shop.example.com"},
				Routes: []Route{
					{
						Name:  "reviews-canary",
						Match: RouteMatch{Prefix: "/reviews", Headers: []HeaderMatch{{Name: "X-Canary", Value: "true"}}},
						Destinations: []WeightedDestination{
							{Cluster: "vd.reviews-global-9080", Host: "reviews.global", Port: 9080, Weight: 90},
							{Cluster: "vd.reviews-v2-global-9080", Host: "reviews-v2.global", Port: 9080, Weight: 10},
						},
						Timeout: 15 * time.Second,
						Retries: &Retries{Attempts: 3, PerTryTimeout: 2 * time.Second, RetryOn: "5xx,connect-failure"},
					},
					{
						Name:         "healthz",
						Match:        RouteMatch{Exact: "/healthz"},
						Destinations: []WeightedDestination{{Cluster: "default-service-blue-10000", Host: "service-blue.default.svc.cluster.local", Weight: 100}},
					},
					{
						Name: "api",
						Match: RouteMatch{Regex: "^/api/v[0-9]+/.*", Method: "GET", Headers: []HeaderMatch{
							{Name: "x-debug", Invert: true},
							{Name: "x-user", Value: "^(alice|bob)$", Regex: true},
						}},
						Destinations: []WeightedDestination{{Cluster: "vd.ratings-global-9080", Host: "ratings.global", Port: 9080}},
					},
					{
						Name:         "catch-all",
						Destinations: []WeightedDestination{{Cluster: "default-service-blue-10000", Host: "service-blue.default.svc.cluster.local", Port: 10000}},
					},
				},
			}},
		}},
		TCPGateways: []TCPGateway{{Name: "gloo-system-failover-gateway", Address: "0.0.0.0", Port: 15443, Hosts: []TCPHost{{Name: "sni", CertSecret: "gw", CASecret: "ca", ForwardSNI: true}},
			Namespace: "gloo-system", Selector: map[string]string{"istio": "eastwestgateway"}, IstioHosts: []string{"reviews.global"}}},
		ServiceEntries: []ServiceEntryPlan{{
			Name: "vd-reviews-global", Namespace: "bookinfo", Hosts: []string{"reviews.global"},
			Ports: []ServicePort{{Number: 9080, Name: "http-9080"}}, SplitOwn: true, // a VirtualDestination's
			Endpoints: []Endpoint{
				{Address: "10.2.1.1", Port: 9080, Cluster: "west", Region: "us-west", Zone: "zone-c"},
				{Address: "10.0.1.2", Port: 9080, Cluster: "east", Region: "us-east", Zone: "zone-b"},
				{Address: "10.0.1.1", Port: 9080, Cluster: "east", Region: "us-east", Zone: "zone-a"},
				{Address: "10.3.1.1", Port: 9080, Cluster: "north", Zone: "zone-x"},
			},
			Upstream: "vd.reviews-global-9080",
		}},
		Secrets: []SecretPlan{{Name: "meshrelay-client-east", CertPEM: []byte("cert"), KeyPEM: []byte("key"), CAPEM: []byte("ca")}},
	}
}

func istioRender(t *testing.T, p Plan) []snapshot.Resource {
	t.Helper()
	rs, err := renderIstio(p)
	if err != nil {
		t.Fatalf("renderIstio: %v", err)
	}
	return rs
}

// istioDecoded is a rendered resource taken apart: envelope plus typed spec.
type istioDecoded struct {
	obj  istioObject
	spec proto.Message
}

func istioSpecType(kind string) proto.Message {
	switch kind {
	case istioKindDestinationRule:
		return &networking.DestinationRule{}
	case istioKindVirtualService:
		return &networking.VirtualService{}
	case istioKindServiceEntry:
		return &networking.ServiceEntry{}
	case istioKindWorkloadEntry:
		return &networking.WorkloadEntry{}
	case istioKindGateway:
		return &networking.Gateway{}
	}
	return nil
}

func istioDecode(t *testing.T, r snapshot.Resource) istioDecoded {
	t.Helper()
	var obj istioObject
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("%s: decode envelope: %v", r.Key, err)
	}
	spec := istioSpecType(obj.Kind)
	if spec == nil {
		t.Fatalf("%s: unexpected kind %q", r.Key, obj.Kind)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(obj.Spec, spec); err != nil {
		t.Fatalf("%s: spec does not decode as Istio %s: %v", r.Key, obj.Kind, err)
	}
	return istioDecoded{obj: obj, spec: spec}
}

func istioByKey(t *testing.T, rs []snapshot.Resource) map[string]istioDecoded {
	t.Helper()
	m := map[string]istioDecoded{}
	for _, r := range rs {
		m[r.Key] = istioDecode(t, r)
	}
	return m
}

// istioCanonical is the form snapshot.NewResource stores JSON in.
func istioCanonical(t *testing.T, b []byte) []byte {
	t.Helper()
	var c, out bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		t.Fatalf("compact %s: %v", b, err)
	}
	json.HTMLEscape(&out, c.Bytes())
	return out.Bytes()
}

var istioDNS1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func TestIstioResourcesRoundTripThroughIstioTypes(t *testing.T) {
	p := istioTestPlan()
	rs := istioRender(t, p)
	wantKeys := []string{
		"DestinationRule/bookinfo/vd.reviews-global",
		"DestinationRule/default/default-service-red-10000",
		"Gateway/gloo-system/failover-gateway",
		"ServiceEntry/bookinfo/vd-reviews-global",
		"ServiceEntry/bookinfo/vd-reviews-global-local",
		"VirtualService/gateways/gateway-http-shop",
		"WorkloadEntry/default/default-service-red-10000-west-0",
	}
	var keys []string
	for _, r := range rs {
		keys = append(keys, r.Key)
	}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("keys = %q, want %q", keys, wantKeys)
	}
	for _, r := range rs {
		d := istioDecode(t, r)
		o := d.obj
		if o.APIVersion != "networking.istio.io/v1" {
			t.Errorf("%s: apiVersion %q", r.Key, o.APIVersion)
		}
		if got := resource.Key(o.Kind, o.Metadata.Namespace, o.Metadata.Name); got != r.Key {
			t.Errorf("key %s does not match envelope %s", r.Key, got)
		}
		if len(o.Metadata.Name) > 253 || !istioDNS1123Subdomain.MatchString(o.Metadata.Name) {
			t.Errorf("%s: name %q is not a DNS-1123 subdomain", r.Key, o.Metadata.Name)
		}
		wantLabels := map[string]string{"app.kubernetes.io/managed-by": "meshrelay", "meshrelay.io/cluster": "east"}
		if !reflect.DeepEqual(o.Metadata.Labels, wantLabels) {
			t.Errorf("%s: labels %v, want %v", r.Key, o.Metadata.Labels, wantLabels)
		}
		if r.Hash != snapshot.HashBytes(r.Body) {
			t.Errorf("%s: hash does not match body", r.Key)
		}
		// The stored spec is exactly what Istio's types produce from it.
		again, err := protojson.Marshal(d.spec)
		if err != nil {
			t.Fatalf("%s: re-marshal: %v", r.Key, err)
		}
		if got, want := istioCanonical(t, again), istioCanonical(t, o.Spec); !bytes.Equal(got, want) {
			t.Errorf("%s: spec does not round-trip:\n got %s\nwant %s", r.Key, got, want)
		}
		// And so is the whole body: the envelope adds nothing Istio's types would drop.
		var env map[string]json.RawMessage
		if err := json.Unmarshal(r.Body, &env); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(env["spec"], istioCanonical(t, again)) {
			t.Errorf("%s: body spec %s differs from canonical %s", r.Key, env["spec"], istioCanonical(t, again))
		}
		for _, err := range istioCheckRules(d.spec) {
			t.Errorf("%s: Istio would reject: %v", r.Key, err)
		}
	}
}

func TestIstioDestinationRuleOutlierAndFailover(t *testing.T) {
	m := istioByKey(t, istioRender(t, istioTestPlan()))
	d, ok := m["DestinationRule/bookinfo/vd.reviews-global"]
	if !ok {
		t.Fatalf("no DestinationRule for vd.Reviews_Global; have %v", istioKeys(m))
	}
	dr := d.spec.(*networking.DestinationRule)
	if dr.Host != "reviews.global" {
		t.Errorf("host %q", dr.Host)
	}
	od := dr.GetTrafficPolicy().GetOutlierDetection()
	if od == nil {
		t.Fatal("no outlierDetection")
	}
	if got := od.GetConsecutive_5XxErrors().GetValue(); got != 3 || od.Consecutive_5XxErrors == nil {
		t.Errorf("consecutive5xxErrors = %v, want 3", od.Consecutive_5XxErrors)
	}
	if od.MaxEjectionPercent != 100 {
		t.Errorf("maxEjectionPercent = %d, want 100 when unset", od.MaxEjectionPercent)
	}
	if od.Interval.AsDuration() != 10*time.Second || od.BaseEjectionTime.AsDuration() != 30*time.Second {
		t.Errorf("interval %v baseEjectionTime %v", od.Interval.AsDuration(), od.BaseEjectionTime.AsDuration())
	}
	lb := dr.GetTrafficPolicy().GetLoadBalancer().GetLocalityLbSetting()
	if !lb.GetEnabled().GetValue() {
		t.Error("localityLbSetting not enabled")
	}
	if got, want := lb.GetFailoverPriority(), []string{"failover.meshrelay.io/priority-1="}; !reflect.DeepEqual(got, want) || len(lb.GetFailover()) > 0 {
		t.Errorf("failoverPriority = %v failover = %v, want %v and no region failover", got, lb.GetFailover(), want)
	}
	if dr.TrafficPolicy.Tls != nil {
		t.Errorf("tls set without TLS endpoints: %v", dr.TrafficPolicy.Tls)
	}
	// The JSON uses Istio's camelCase names.
	for _, field := range []string{`"consecutive5xxErrors":3`, `"maxEjectionPercent":100`, `"localityLbSetting":`, `"baseEjectionTime":"30s"`} {
		if !bytes.Contains(d.obj.Spec, []byte(field)) {
			t.Errorf("spec %s lacks %s", d.obj.Spec, field)
		}
	}
}

// A FailoverScheme primary discovered from a Service: its remote gateway becomes a
// WorkloadEntry the Service selects (priority label, Istio mutual TLS, the remote network,
// every Service port mapped to the gateway's port), and its DestinationRule carries no TLS.
func TestIstioFailoverSchemeWorkloadEntry(t *testing.T) {
	m := istioByKey(t, istioRender(t, istioTestPlan()))
	d, ok := m["WorkloadEntry/default/default-service-red-10000-west-0"]
	if !ok {
		t.Fatalf("no WorkloadEntry for the remote gateway; have %v", istioKeys(m))
	}
	we := d.spec.(*networking.WorkloadEntry)
	wantLabels := map[string]string{"app": "red", "security.istio.io/tlsMode": "istio", "meshrelay.io/cluster": "west", "failover.meshrelay.io/priority-1": "true"}
	if we.Address != "192.0.2.30" || !reflect.DeepEqual(we.Ports, map[string]uint32{"http": 15443}) || !reflect.DeepEqual(we.Labels, wantLabels) ||
		we.Network != "west-net" || we.Locality != "us-west/zone-c" {
		t.Errorf("workload entry %v, want 192.0.2.30 ports {http: 15443} labels %v network west-net locality us-west/zone-c", we, wantLabels)
	}
	dr := m["DestinationRule/default/default-service-red-10000"].spec.(*networking.DestinationRule)
	if dr.TrafficPolicy.Tls != nil {
		t.Errorf("tls %v: Istio's automatic mutual TLS must decide per endpoint", dr.TrafficPolicy.Tls)
	}
	if got := dr.GetTrafficPolicy().GetLoadBalancer().GetLocalityLbSetting().GetFailoverPriority(); !reflect.DeepEqual(got, []string{"failover.meshrelay.io/priority-1="}) {
		t.Errorf("failoverPriority %v", got)
	}
	gw := m["Gateway/gloo-system/failover-gateway"].spec.(*networking.Gateway)
	srv := gw.GetServers()
	if len(srv) != 1 || srv[0].GetPort().GetNumber() != 15443 || srv[0].GetTls().GetMode() != networking.ServerTLSSettings_AUTO_PASSTHROUGH ||
		!reflect.DeepEqual(srv[0].GetHosts(), []string{"reviews.global"}) || !reflect.DeepEqual(gw.Selector, map[string]string{"istio": "eastwestgateway"}) {
		t.Errorf("east-west gateway %v", gw)
	}
}

// istioFailoverPriority's labels give each endpoint its plan priority under istiod's rule:
// the priority is (number of labels) minus the index of the first label not matched.
func TestIstioFailoverPriorityEncoding(t *testing.T) {
	for n := 1; n <= 4; n++ {
		labels := istioFailoverPriority(n)
		for k := 0; k <= n; k++ {
			ep := istioEndpointLabels(Endpoint{Cluster: "x", Priority: k})
			prio := 0
			for j, l := range labels {
				key, want, _ := strings.Cut(l, "=")
				if ep[key] != want {
					prio = n - j
					break
				}
			}
			if prio != k {
				t.Errorf("n=%d: endpoint of priority %d gets priority %d from %v", n, k, prio, labels)
			}
		}
	}
}

func TestIstioNoDestinationRuleWithoutPolicy(t *testing.T) {
	plain := UpstreamPlan{Name: "default-service-blue-10000", Namespace: "default", Host: "service-blue.default.svc.cluster.local",
		Priorities: [][]Endpoint{{{Address: "10.0.0.9", Port: 8080}}}}
	healthOnly := plain
	healthOnly.Name = "default-service-green-10000"
	healthOnly.HealthChecks = []HealthCheck{{Timeout: time.Second, Interval: time.Second, Path: "/"}}
	healthOnly.ConnectTimeout = 2 * time.Second
	noFrom := plain
	noFrom.Name = "default-service-red-10000"
	noFrom.Failover = &FailoverPlan{Source: "FailoverScheme gloo-fed/red"} // explicit priorities only
	rs := istioRender(t, Plan{Cluster: "east", Upstreams: []UpstreamPlan{plain, healthOnly, noFrom}})
	if len(rs) != 0 {
		t.Fatalf("want no resources, got %v", istioResourceKeys(rs))
	}
	// The full plan's plain upstream has no DestinationRule either.
	for _, r := range istioRender(t, istioTestPlan()) {
		if strings.Contains(r.Key, "service-blue") {
			t.Errorf("plain upstream rendered %s", r.Key)
		}
	}
}

func TestIstioEnvoyOnlyPartsRenderNothing(t *testing.T) {
	p := istioTestPlan()
	// A TCP gateway is an Istio east-west gateway only when its pods and hosts are known.
	gw := p.TCPGateways[0]
	gw.Selector = nil
	rs := istioRender(t, Plan{Cluster: p.Cluster, TCPGateways: []TCPGateway{gw}, Secrets: p.Secrets})
	if len(rs) != 0 {
		t.Fatalf("secrets and a TCP gateway without pods rendered %v", istioResourceKeys(rs))
	}
	gw = p.TCPGateways[0]
	gw.IstioHosts = nil
	if rs := istioRender(t, Plan{Cluster: p.Cluster, TCPGateways: []TCPGateway{gw}}); len(rs) != 0 {
		t.Fatalf("a TCP gateway serving no Istio host rendered %v", istioResourceKeys(rs))
	}
	if rs, err := renderIstio(Plan{}); err != nil || len(rs) != 0 {
		t.Fatalf("empty plan: %v, %v", rs, err)
	}
}

func TestIstioVirtualServiceRoutes(t *testing.T) {
	m := istioByKey(t, istioRender(t, istioTestPlan()))
	d, ok := m["VirtualService/gateways/gateway-http-shop"]
	if !ok {
		t.Fatalf("no VirtualService; have %v", istioKeys(m))
	}
	vs := d.spec.(*networking.VirtualService)
	if !reflect.DeepEqual(vs.Hosts, []string{"shop.example.com", "www.shop.example.com"}) {
		t.Errorf("hosts %v", vs.Hosts)
	}
	if len(vs.Http) != 4 {
		t.Fatalf("%d http routes, want 4 in plan order", len(vs.Http))
	}
	var names []string
	for _, r := range vs.Http {
		names = append(names, r.Name)
	}
	if !reflect.DeepEqual(names, []string{"reviews-canary", "healthz", "api", "catch-all"}) {
		t.Errorf("route order %v", names)
	}

	canary := vs.Http[0]
	if len(canary.Match) != 1 || canary.Match[0].GetUri().GetPrefix() != "/reviews" {
		t.Errorf("canary match %v", canary.Match)
	}
	if h := canary.Match[0].GetHeaders()["x-canary"]; h.GetExact() != "true" {
		t.Errorf("canary header match %v (header names are lowercased)", canary.Match[0].GetHeaders())
	}
	if len(canary.Route) != 2 || canary.Route[0].Weight != 90 || canary.Route[1].Weight != 10 {
		t.Fatalf("canary weights %v, want 90/10", canary.Route)
	}
	if canary.Route[0].Destination.Host != "reviews.global" || canary.Route[0].Destination.GetPort().GetNumber() != 9080 ||
		canary.Route[1].Destination.Host != "reviews-v2.global" {
		t.Errorf("canary destinations %v", canary.Route)
	}
	if canary.Timeout.AsDuration() != 15*time.Second {
		t.Errorf("timeout %v", canary.Timeout.AsDuration())
	}
	rt := canary.GetRetries()
	if rt.GetAttempts() != 3 || rt.GetPerTryTimeout().AsDuration() != 2*time.Second || rt.GetRetryOn() != "5xx,connect-failure" {
		t.Errorf("retries %v", rt)
	}

	healthz := vs.Http[1]
	if healthz.Match[0].GetUri().GetExact() != "/healthz" {
		t.Errorf("healthz match %v", healthz.Match)
	}
	if len(healthz.Route) != 1 || healthz.Route[0].Weight != 0 || healthz.Route[0].Destination.Port != nil {
		t.Errorf("single destination keeps no weight and no zero port: %v", healthz.Route)
	}
	if healthz.Timeout != nil || healthz.Retries != nil {
		t.Errorf("healthz timeout %v retries %v, want unset", healthz.Timeout, healthz.Retries)
	}

	api := vs.Http[2].Match[0]
	if api.GetUri().GetRegex() != "^/api/v[0-9]+/.*" || api.GetMethod().GetExact() != "GET" {
		t.Errorf("api match %v", api)
	}
	if h, ok := api.GetWithoutHeaders()["x-debug"]; !ok || h.GetMatchType() != nil {
		t.Errorf("inverted presence match should be withoutHeaders {x-debug: {}}: %v", api.GetWithoutHeaders())
	}
	if _, ok := api.GetHeaders()["x-debug"]; ok {
		t.Error("inverted header also in headers")
	}
	if api.GetHeaders()["x-user"].GetRegex() != "^(alice|bob)$" {
		t.Errorf("regex header %v", api.GetHeaders())
	}

	if all := vs.Http[3]; all.Match != nil {
		t.Errorf("catch-all has match %v", all.Match)
	}
	for _, field := range []string{`"withoutHeaders":{"x-debug":{}}`, `"perTryTimeout":"2s"`, `"retryOn":"5xx,connect-failure"`, `"weight":90`} {
		if !bytes.Contains(d.obj.Spec, []byte(field)) {
			t.Errorf("spec %s lacks %s", d.obj.Spec, field)
		}
	}
}

func TestIstioServiceEntry(t *testing.T) {
	p := istioTestPlan()
	before := istioTestPlan()
	m := istioByKey(t, istioRender(t, p))
	if !reflect.DeepEqual(p, before) {
		t.Fatal("renderIstio modified its plan")
	}
	// The cluster's own endpoints and the other clusters' are two entries of the same
	// hosts, which istiod merges (test/istio checks that against a real istiod).
	type ep struct{ addr, locality, cluster string }
	endpoints := func(key string) []ep {
		d, ok := m[key]
		if !ok {
			t.Fatalf("no %s; have %v", key, istioKeys(m))
		}
		se := d.spec.(*networking.ServiceEntry)
		if se.Location != networking.ServiceEntry_MESH_INTERNAL || se.Resolution != networking.ServiceEntry_STATIC {
			t.Errorf("%s: location %v resolution %v", key, se.Location, se.Resolution)
		}
		if !reflect.DeepEqual(se.Hosts, []string{"reviews.global"}) {
			t.Errorf("%s: hosts %v", key, se.Hosts)
		}
		if len(se.Ports) != 1 || se.Ports[0].Number != 9080 || se.Ports[0].Name != "http-9080" || se.Ports[0].Protocol != "HTTP" {
			t.Errorf("%s: ports %v, want [{9080 http-9080 HTTP}]", key, se.Ports)
		}
		var got []ep
		for _, e := range se.Endpoints {
			got = append(got, ep{e.Address, e.Locality, e.Labels["meshrelay.io/cluster"]})
			if !reflect.DeepEqual(e.Ports, map[string]uint32{"http-9080": 9080}) {
				t.Errorf("%s: %s: ports %v", key, e.Address, e.Ports)
			}
		}
		return got
	}
	own := []ep{
		{"10.0.1.1", "us-east/zone-a", "east"},
		{"10.0.1.2", "us-east/zone-b", "east"},
	}
	others := []ep{
		{"10.2.1.1", "us-west/zone-c", "west"},
		{"10.3.1.1", "", "north"}, // a zone without a region cannot be expressed
	}
	if got := endpoints("ServiceEntry/bookinfo/vd-reviews-global-local"); !reflect.DeepEqual(got, own) {
		t.Errorf("own endpoints %v, want %v", got, own)
	}
	if got := endpoints("ServiceEntry/bookinfo/vd-reviews-global"); !reflect.DeepEqual(got, others) {
		t.Errorf("other clusters' endpoints %v, want %v", got, others)
	}
}

func TestIstioServiceEntryPortDefaults(t *testing.T) {
	se := istioServiceEntry("east", ServiceEntryPlan{Name: "x", Hosts: []string{"x.global"},
		Ports:     []ServicePort{{Number: 80}, {Number: 9090, Name: "GRPC_Web", Protocol: "grpc"}},
		Endpoints: []Endpoint{{Address: "10.0.0.1", Port: 8080, Region: "eu"}}})
	if se.Ports[0].Name != "http-80" || se.Ports[0].Protocol != "HTTP" {
		t.Errorf("unnamed port %v", se.Ports[0])
	}
	if se.Ports[1].Name != "grpc-web" || se.Ports[1].Protocol != "GRPC" {
		t.Errorf("named port %v", se.Ports[1])
	}
	e := se.Endpoints[0]
	if e.Locality != "eu" || !reflect.DeepEqual(e.Labels, map[string]string{"security.istio.io/tlsMode": "istio"}) || !reflect.DeepEqual(e.Ports, map[string]uint32{"http-80": 8080}) {
		t.Errorf("endpoint %v", e)
	}
	if errs := istioCheckRules(se); len(errs) > 0 {
		t.Errorf("Istio would reject: %v", errs)
	}
}

func TestIstioDeterministic(t *testing.T) {
	a := istioRender(t, istioTestPlan())
	for range 20 {
		b := istioRender(t, istioTestPlan())
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("two renders differ:\n%s\n%s", istioDump(a), istioDump(b))
		}
	}
	// Plan order does not matter either: reversing the plan's slices gives the same output.
	p := istioTestPlan()
	p.Upstreams = istioReversed(p.Upstreams)
	p.ServiceEntries[0].Endpoints = istioReversed(p.ServiceEntries[0].Endpoints)
	if b := istioRender(t, p); !reflect.DeepEqual(a, b) {
		t.Fatalf("reordered plan renders differently:\n%s\n%s", istioDump(a), istioDump(b))
	}
}

func TestIstioNames(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"vd.Reviews_Global", "vd.reviews-global"},
		{"vd.reviews-global-9080", "vd.reviews-global-9080"},
		{"Default/Service Blue:10000", "default-service-blue-10000"},
		{"_leading.and.trailing_", "leading.and.trailing"},
		{"a..b", "a.b"},
		{"a.-b-.c", "a.b.c"},
		{"Ünïcode", "n-code"},
		{"___", ""},
		{strings.Repeat("a", 300), strings.Repeat("a", 253)},
		{strings.Repeat("a", 252) + "-b", strings.Repeat("a", 252)},
	} {
		if got := istioName(tc.in); got != tc.want {
			t.Errorf("istioName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIstioNameCollisionsGetAHash(t *testing.T) {
	up := func(name string) UpstreamPlan {
		return UpstreamPlan{Name: name, Namespace: "bookinfo", Host: "reviews.global", Outlier: &Outlier{Consecutive5xx: 5}}
	}
	vh := VirtualHost{Name: "c", Domains: []string{"c.example.com"}, Routes: []Route{{Name: "r", Destinations: []WeightedDestination{{Host: "reviews.global"}}}}}
	p := Plan{
		Cluster:   "east",
		Upstreams: []UpstreamPlan{up("vd.Reviews_Global"), up("vd.reviews-global"), up("VD.reviews.global"), up("___")},
		HTTPListeners: []HTTPListener{
			{Name: "a-b", VirtualHosts: []VirtualHost{vh}},
			{Name: "a", VirtualHosts: []VirtualHost{{Name: "b-c", Domains: vh.Domains, Routes: vh.Routes}}},
		},
	}
	rs := istioRender(t, p)
	names := map[string]string{} // want → name
	for _, r := range rs {
		d := istioDecode(t, r)
		n := d.obj.Metadata.Name
		if len(n) > 253 || !istioDNS1123Subdomain.MatchString(n) {
			t.Errorf("%s: name %q is not a DNS-1123 subdomain", r.Key, n)
		}
		names[r.Key] = n
	}
	if len(rs) != 6 {
		t.Fatalf("want 6 distinct resources, got %v", istioResourceKeys(rs))
	}
	hashed := regexp.MustCompile(`^vd\.reviews-global-[0-9a-f]{8}$`)
	// The name that was valid as written keeps it; the one sanitised into it gets a hash.
	if _, ok := names["DestinationRule/bookinfo/vd.reviews-global"]; !ok {
		t.Errorf("vd.reviews-global lost its name: %v", istioResourceKeys(rs))
	}
	var nHashed int
	for k, n := range names {
		if hashed.MatchString(n) {
			nHashed++
		}
		if strings.HasPrefix(k, "DestinationRule/bookinfo/meshrelay-") {
			nHashed += 10
		}
	}
	if nHashed != 11 {
		t.Errorf("want one hashed vd.reviews-global and one hashed empty name, got %v", istioResourceKeys(rs))
	}
	// Two virtual hosts whose joined names are equal both get a hash: neither is preferred.
	var vsNames []string
	for k := range names {
		if strings.HasPrefix(k, "VirtualService/") {
			vsNames = append(vsNames, k)
		}
	}
	for _, k := range vsNames {
		if !regexp.MustCompile(`^VirtualService/default/a-b-c-[0-9a-f]{8}$`).MatchString(k) {
			t.Errorf("virtual service key %s", k)
		}
	}
	// Names do not depend on plan order.
	q := p
	q.Upstreams = istioReversed(p.Upstreams)
	q.HTTPListeners = istioReversed(p.HTTPListeners)
	if rs2 := istioRender(t, q); !reflect.DeepEqual(rs, rs2) {
		t.Errorf("names depend on plan order:\n%v\n%v", istioResourceKeys(rs), istioResourceKeys(rs2))
	}
}

func TestIstioRejectsBadPlans(t *testing.T) {
	dest := []WeightedDestination{{Host: "a.global"}}
	vs := func(r Route) Plan {
		return Plan{HTTPListeners: []HTTPListener{{Name: "l", VirtualHosts: []VirtualHost{{Name: "v", Domains: []string{"a"}, Routes: []Route{r}}}}}}
	}
	for name, p := range map[string]Plan{
		"duplicate upstream": {Upstreams: []UpstreamPlan{
			{Name: "u", Outlier: &Outlier{}}, {Name: "u", Outlier: &Outlier{}},
		}},
		"ejection over 100":     {Upstreams: []UpstreamPlan{{Name: "u", Outlier: &Outlier{MaxEjectionPercent: 101}}}},
		"bad namespace":         {Upstreams: []UpstreamPlan{{Name: "u", Namespace: "Bad_NS", Outlier: &Outlier{}}}},
		"route without dests":   vs(Route{Name: "r"}),
		"prefix and exact":      vs(Route{Name: "r", Match: RouteMatch{Prefix: "/", Exact: "/x"}, Destinations: dest}),
		"header twice":          vs(Route{Name: "r", Match: RouteMatch{Headers: []HeaderMatch{{Name: "X", Value: "1"}, {Name: "x", Value: "2"}}}, Destinations: dest}),
		"header without a name": vs(Route{Name: "r", Match: RouteMatch{Headers: []HeaderMatch{{Value: "1"}}}, Destinations: dest}),
	} {
		if rs, err := renderIstio(p); err == nil {
			t.Errorf("%s: no error, rendered %v", name, istioResourceKeys(rs))
		}
	}
}

func TestIstioDurationsHaveMillisecondPrecision(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "<nil>"},
		{-time.Second, "<nil>"},
		{time.Nanosecond, "0.001s"},
		{1500 * time.Microsecond, "0.002s"},
		{2500 * time.Millisecond, "2.500s"},
	} {
		got := "<nil>"
		if d := istioDuration(tc.in); d != nil {
			b, err := protojson.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			got = strings.Trim(string(b), `"`)
		}
		if got != tc.want {
			t.Errorf("istioDuration(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// istioCheckRules re-checks rules of Istio's validation (pilot's config/validation) that a
// renderer could break: durations of at least 1ms in whole milliseconds, percentages,
// locality failover between distinct regions, header names, route weights, ServiceEntry
// port names and static endpoint addresses.
func istioCheckRules(m proto.Message) []error {
	var errs []error
	dur := func(what string, d interface{ AsDuration() time.Duration }) {
		if reflect.ValueOf(d).IsNil() {
			return
		}
		if v := d.AsDuration(); v < time.Millisecond || v%time.Millisecond != 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be at least 1ms and whole milliseconds", what, v))
		}
	}
	header := regexp.MustCompile(`^[-_a-z0-9]+$`)
	switch s := m.(type) {
	case *networking.DestinationRule:
		if s.Host == "" {
			errs = append(errs, fmt.Errorf("host is required"))
		}
		tp := s.TrafficPolicy
		if tp == nil || (tp.OutlierDetection == nil && tp.LoadBalancer == nil && tp.Tls == nil) {
			errs = append(errs, fmt.Errorf("traffic policy must have at least one field"))
		}
		if od := tp.GetOutlierDetection(); od != nil {
			dur("outlier interval", od.Interval)
			dur("outlier baseEjectionTime", od.BaseEjectionTime)
			if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
				errs = append(errs, fmt.Errorf("maxEjectionPercent %d", od.MaxEjectionPercent))
			}
		}
		lb := tp.GetLoadBalancer().GetLocalityLbSetting()
		if len(lb.GetFailover()) > 0 && tp.GetOutlierDetection() == nil {
			errs = append(errs, fmt.Errorf("outlier detection policy must be provided for failover"))
		}
		for _, f := range lb.GetFailover() {
			if f.From == f.To || strings.ContainsAny(f.From+f.To, "/*") {
				errs = append(errs, fmt.Errorf("failover %s → %s", f.From, f.To))
			}
		}
		if tls := tp.GetTls(); tls != nil && tls.Mode == networking.ClientTLSSettings_MUTUAL && tls.CredentialName == "" &&
			(tls.ClientCertificate == "" || tls.PrivateKey == "") {
			errs = append(errs, fmt.Errorf("MUTUAL tls needs a credentialName or a client certificate and key"))
		}
	case *networking.VirtualService:
		if len(s.Hosts) == 0 {
			errs = append(errs, fmt.Errorf("virtual service must have at least one host"))
		}
		for _, r := range s.Http {
			dur("timeout", r.Timeout)
			if r.Retries != nil {
				dur("perTryTimeout", r.Retries.PerTryTimeout)
				if r.Retries.Attempts < 0 {
					errs = append(errs, fmt.Errorf("negative retry attempts"))
				}
			}
			if len(r.Route) == 0 {
				errs = append(errs, fmt.Errorf("route %s: no destinations", r.Name))
			}
			var total int32
			for _, d := range r.Route {
				if d.Destination.GetHost() == "" || d.Weight < 0 {
					errs = append(errs, fmt.Errorf("route %s: destination %v", r.Name, d))
				}
				total += d.Weight
			}
			if len(r.Route) > 1 && total == 0 {
				errs = append(errs, fmt.Errorf("route %s: weights sum to 0", r.Name))
			}
			for _, mr := range r.Match {
				for _, hs := range []map[string]*networking.StringMatch{mr.Headers, mr.WithoutHeaders} {
					for name, sm := range hs {
						if !header.MatchString(name) || sm == nil {
							errs = append(errs, fmt.Errorf("header match %q", name))
						}
					}
				}
			}
		}
	case *networking.ServiceEntry:
		if len(s.Hosts) == 0 {
			errs = append(errs, fmt.Errorf("service entry must have at least one host"))
		}
		label := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
		ports := map[string]bool{}
		for _, p := range s.Ports {
			if !label.MatchString(p.Name) || len(p.Name) > 63 || ports[p.Name] || p.Number == 0 || p.Number > 65535 {
				errs = append(errs, fmt.Errorf("port %v", p))
			}
			ports[p.Name] = true
		}
		for _, e := range s.Endpoints {
			if _, err := netip.ParseAddr(e.Address); err != nil {
				errs = append(errs, fmt.Errorf("static endpoint address %q is not an IP", e.Address))
			}
			for name := range e.Ports {
				if !ports[name] {
					errs = append(errs, fmt.Errorf("endpoint %s: port %q is not a service port", e.Address, name))
				}
			}
		}
	}
	return errs
}

func istioKeys(m map[string]istioDecoded) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

func istioResourceKeys(rs []snapshot.Resource) []string {
	var keys []string
	for _, r := range rs {
		keys = append(keys, r.Key)
	}
	return keys
}

func istioDump(rs []snapshot.Resource) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%s %s\n", r.Key, r.Body)
	}
	return b.String()
}

func istioReversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}
