package translate_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// ptCases are the testdata cases (as TestGolden lists them).
var ptCases = []string{"seed003", "seed003-bluegreen", "vd-failover", "istio-multinetwork", "weighted", "missing-destination"}

// TestOutputsValid checks every golden case's output: Envoy resources decode and pass their
// validation rules, Istio specs survive a strict trip through Istio's own types, keys are
// unique and sorted, and every reference resolves within the cluster's output.
func TestOutputsValid(t *testing.T) {
	for _, name := range ptCases {
		t.Run(name, func(t *testing.T) {
			res := translate.Translate(loadCase(t, name))
			if len(res.Errors) > 0 {
				t.Fatalf("translation errors: %v", res.Errors)
			}
			for _, c := range ptKeys(res.Outputs) {
				if err := vtCheckOutput(res.Outputs[c]); err != nil {
					t.Errorf("cluster %s: %v", c, err)
				}
			}
			for _, e := range vtUnservedSNIs(res) {
				t.Error(e)
			}
		})
	}
}

// TestCheckOutputCatchesBreakage makes sure the checks above can fail: dropping any
// referenced resource, unsorting the keys or adding a field Istio does not know is caught.
func TestCheckOutputCatchesBreakage(t *testing.T) {
	rs := translate.Translate(loadCase(t, "seed003")).Outputs["local"]
	if err := vtCheckOutput(rs); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if envoyres.IsKey(r.Key) && !strings.HasPrefix(r.Key, envoyres.KindListener) {
			if vtCheckOutput(append(slices.Clone(rs[:i]), rs[i+1:]...)) == nil {
				t.Errorf("dropping %s went unnoticed", r.Key)
			}
		}
	}
	if vtCheckOutput(append(slices.Clone(rs[1:]), rs[0])) == nil {
		t.Error("unsorted keys went unnoticed")
	}
	if err := vtIstioRoundTrip("DestinationRule", []byte(`{"host":"a","bogus":1}`)); err == nil {
		t.Error("an unknown Istio field went unnoticed")
	}
}

// TestValidWithSecretsAndRemoteRoutes checks worlds beyond the golden cases: bring-your-own
// TLS Secrets and a route to another cluster's upstream. Valid inputs must give valid
// outputs in every cluster, no errors, no complaint about a Secret that exists, and every
// SNI sent to a remote gateway must be served there.
func TestValidWithSecretsAndRemoteRoutes(t *testing.T) {
	scheme := []string{ptCluster("c1", ""), ptCluster("c2", ""), ptScheme("s", "c1", "c2", "default-web-8080")}
	web := func(i int, extra ...string) []string {
		return append([]string{ptService("default", "web", 8080, fmt.Sprintf("10.%d.0.1", i))}, extra...)
	}
	for _, tc := range []struct {
		name, bug string
		config    []string
		inputs    map[string][]string
	}{
		{name: "gateway secret with ca.crt", config: scheme,
			inputs: map[string][]string{"c1": web(1), "c2": web(2, ptGateway("10.2.255.1", "gw"), ptSecret("gw", true))}},
		{name: "client secret with ca.crt", config: scheme,
			inputs: map[string][]string{"c1": web(1, ptSecret(translate.FailoverUpstreamSecret, true)), "c2": web(2, ptGateway("10.2.255.1", ""))}},
		{name: "gateway secret without ca.crt", config: scheme,
			bug:    "gateway secretRef Secret without ca.crt: plan sets CASecret \"\", renderer rejects it, the cluster's whole Envoy output is dropped",
			inputs: map[string][]string{"c1": web(1), "c2": web(2, ptGateway("10.2.255.1", "gw"), ptSecret("gw", false))}},
		{name: "client secret without ca.crt", config: scheme,
			bug:    "failover-upstream Secret without ca.crt: plan sets CASecret \"\", renderer rejects it, the primary cluster's whole Envoy output is dropped",
			inputs: map[string][]string{"c1": web(1, ptSecret(translate.FailoverUpstreamSecret, false)), "c2": web(2, ptGateway("10.2.255.1", ""))}},
		{name: "gateway secret named *-ca", config: scheme,
			bug:    "a bring-your-own Secret whose name ends in -ca is taken for the CA half of another Secret: the gateway host is dropped as if the Secret were missing",
			inputs: map[string][]string{"c1": web(1), "c2": web(2, ptGateway("10.2.255.1", "east-ca"), ptSecret("east-ca", true))}},
		{name: "route to another cluster's upstream",
			bug:    "a RouteTable destination in another cluster is sent there with SNI <upstream> but that cluster's gateway does not serve it (served names come from FailoverSchemes and VirtualDestinations only)",
			config: []string{ptCluster("c1", ""), ptCluster("c2", ""), ptRouteTable("rt", "web.example.com", []string{"c1"}, "default-web-8080", "c2/default-api-8080")},
			inputs: map[string][]string{"c1": web(1), "c2": {ptService("default", "api", 8080, "10.2.1.1"), ptGateway("10.2.255.1", "")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := translate.Translate(ptInput(t, tc.config, tc.inputs))
			var problems []string
			for _, e := range res.Errors {
				problems = append(problems, "error: "+e)
			}
			for k, msgs := range res.Status {
				for _, m := range msgs {
					if translate.IsNote(m) {
						continue // informational
					}
					problems = append(problems, fmt.Sprintf("status %s: %q", k, m))
				}
			}
			for _, c := range ptKeys(res.Outputs) {
				if err := vtCheckOutput(res.Outputs[c]); err != nil {
					problems = append(problems, fmt.Sprintf("cluster %s: %v", c, err))
				}
			}
			problems = append(problems, vtUnservedSNIs(res)...)
			if len(problems) == 0 {
				return
			}
			t.Fatalf("%s:\n%s", tc.bug, strings.Join(problems, "\n"))
		})
	}
}

// vtUnservedSNIs checks across clusters: every SNI a cluster originates mTLS with (towards a
// remote gateway) is served by a filter chain of another cluster's listener, else that
// gateway refuses the connection.
func vtUnservedSNIs(res translate.Result) []string {
	sent, served := map[string][]string{}, map[string][]string{}
	for _, c := range ptKeys(res.Outputs) {
		for _, r := range res.Outputs[c] {
			kind, msg, err := envoyres.Decode(r)
			if err != nil {
				continue
			}
			switch m := msg.(type) {
			case *clusterv3.Cluster:
				for _, tm := range m.GetTransportSocketMatches() {
					var up tlsv3.UpstreamTlsContext
					if tm.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up) == nil && up.GetSni() != "" {
						sent[up.GetSni()] = append(sent[up.GetSni()], c+" "+kind+" "+m.GetName())
					}
				}
			case *listenerv3.Listener:
				for _, fc := range m.GetFilterChains() {
					for _, sni := range fc.GetFilterChainMatch().GetServerNames() {
						served[sni] = append(served[sni], c)
					}
				}
			}
		}
	}
	var errs []string
	for _, sni := range ptKeys(sent) {
		for _, from := range sent[sni] {
			c, _, _ := strings.Cut(from, " ")
			if !slices.ContainsFunc(served[sni], func(s string) bool { return s != c }) {
				errs = append(errs, fmt.Sprintf("cluster %s sends SNI %q (%s) but no other cluster's gateway serves it (served by %v)", c, sni, from, served[sni]))
			}
		}
	}
	return errs
}

// vtEnvoy is one cluster's Envoy resources by kind, then name.
type vtEnvoy map[string]map[string]proto.Message

// vtCheckOutput checks one cluster's output and returns every problem found, joined.
func vtCheckOutput(rs []snapshot.Resource) error {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	env := vtEnvoy{}
	for i, r := range rs {
		if i > 0 && rs[i-1].Key >= r.Key {
			fail("keys not unique and sorted: %q then %q", rs[i-1].Key, r.Key)
		}
		human, err := translate.CanonicalHuman(r)
		if err != nil {
			fail("%v", err)
			continue
		}
		var head struct {
			APIVersion, Kind string
			Spec             json.RawMessage
		}
		if err := json.Unmarshal(human, &head); err != nil {
			fail("%s: body is not an object: %v", r.Key, err)
			continue
		}
		switch {
		case envoyres.IsKind(head.Kind):
			kind, msg, err := envoyres.Decode(r)
			if err != nil {
				fail("%v", err)
				continue
			}
			if err := msg.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				fail("%s: %v", r.Key, err)
			}
			if env[kind] == nil {
				env[kind] = map[string]proto.Message{}
			}
			env[kind][strings.TrimPrefix(r.Key, kind+"//")] = msg
		case head.APIVersion == "networking.istio.io/v1":
			if err := vtIstioRoundTrip(head.Kind, head.Spec); err != nil {
				fail("%s: %v", r.Key, err)
			}
		default:
			fail("%s: unexpected apiVersion %q kind %q", r.Key, head.APIVersion, head.Kind)
		}
	}
	for _, e := range env.references() {
		fail("%s", e)
	}
	if err := env.consistent(); err != nil {
		fail("go-control-plane Consistent(): %v", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n\t"))
	}
	return nil
}

// vtIstioRoundTrip decodes a spec strictly into Istio's type for kind, re-encodes it and
// compares the two after normalisation: a field Istio does not know fails the decode, a
// value Istio would write differently fails the comparison.
func vtIstioRoundTrip(kind string, spec []byte) error {
	var m proto.Message
	switch kind {
	case "ServiceEntry":
		m = &networking.ServiceEntry{}
	case "DestinationRule":
		m = &networking.DestinationRule{}
	case "VirtualService":
		m = &networking.VirtualService{}
	case "WorkloadEntry":
		m = &networking.WorkloadEntry{}
	case "Gateway":
		m = &networking.Gateway{}
	default:
		return fmt.Errorf("unexpected istio kind %q", kind)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(spec, m); err != nil {
		return fmt.Errorf("spec does not decode into %T: %w", m, err)
	}
	again, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	if a, b := vtNormJSON(spec), vtNormJSON(again); a != b {
		return fmt.Errorf("spec changes through %T:\n\tstored: %s\n\tistio:  %s", m, a, b)
	}
	return nil
}

// vtNormJSON puts JSON in encoding/json's form: compact, keys sorted, numbers verbatim.
func vtNormJSON(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "invalid JSON: " + err.Error()
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func (o vtEnvoy) has(kind, name string) bool { _, ok := o[kind][name]; return ok }

// references lists the references of one cluster's Envoy output that do not resolve in it:
// clusters without load assignment (and back), route and tcp_proxy clusters, RDS names, SDS
// secret names of upstream and downstream TLS.
func (o vtEnvoy) references() []string {
	var errs []string
	need := func(from, kind, name string) {
		if !o.has(kind, name) {
			errs = append(errs, fmt.Sprintf("%s references %s %q, which is not in the output", from, kind, name))
		}
	}
	needTLS := func(from string, common *tlsv3.CommonTlsContext) {
		for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
			need(from, envoyres.KindSecret, s.GetName())
		}
		if s := common.GetValidationContextSdsSecretConfig(); s != nil {
			need(from, envoyres.KindSecret, s.GetName())
		}
		if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
			need(from, envoyres.KindSecret, s.GetName())
		}
	}
	socket := func(from string, ts *corev3.TransportSocket) {
		if ts == nil {
			return
		}
		m, err := anypb.UnmarshalNew(ts.GetTypedConfig(), proto.UnmarshalOptions{})
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: transport socket: %v", from, err))
			return
		}
		switch tc := m.(type) {
		case *tlsv3.UpstreamTlsContext:
			needTLS(from, tc.GetCommonTlsContext())
		case *tlsv3.DownstreamTlsContext:
			needTLS(from, tc.GetCommonTlsContext())
		}
	}
	routes := func(from string, rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				a := r.GetRoute()
				if c := a.GetCluster(); c != "" {
					need(from, envoyres.KindCluster, c)
				}
				for _, w := range a.GetWeightedClusters().GetClusters() {
					need(from, envoyres.KindCluster, w.GetName())
				}
			}
		}
	}
	for _, name := range ptKeys(o[envoyres.KindCluster]) {
		c := o[envoyres.KindCluster][name].(*clusterv3.Cluster)
		from := "cluster " + name
		need(from, envoyres.KindClusterLoadAssignment, cmp.Or(c.GetEdsClusterConfig().GetServiceName(), name))
		socket(from, c.GetTransportSocket())
		for _, m := range c.GetTransportSocketMatches() {
			socket(from, m.GetTransportSocket())
		}
	}
	for _, name := range ptKeys(o[envoyres.KindClusterLoadAssignment]) {
		need("load assignment "+name, envoyres.KindCluster, name)
	}
	for _, name := range ptKeys(o[envoyres.KindRouteConfiguration]) {
		routes("route configuration "+name, o[envoyres.KindRouteConfiguration][name].(*routev3.RouteConfiguration))
	}
	for _, name := range ptKeys(o[envoyres.KindListener]) {
		l := o[envoyres.KindListener][name].(*listenerv3.Listener)
		from := "listener " + name
		for _, fc := range l.GetFilterChains() {
			socket(from, fc.GetTransportSocket())
			for _, f := range fc.GetFilters() {
				m, err := anypb.UnmarshalNew(f.GetTypedConfig(), proto.UnmarshalOptions{})
				if err != nil {
					errs = append(errs, fmt.Sprintf("%s: filter %s: %v", from, f.GetName(), err))
					continue
				}
				switch fm := m.(type) {
				case *hcmv3.HttpConnectionManager:
					if rds := fm.GetRds(); rds != nil {
						need(from, envoyres.KindRouteConfiguration, rds.GetRouteConfigName())
					}
					routes(from, fm.GetRouteConfig())
				case *tcpproxyv3.TcpProxy:
					need(from, envoyres.KindCluster, fm.GetCluster())
				}
			}
		}
	}
	return errs
}

// consistent runs go-control-plane's own Consistent() on the output as one xDS snapshot.
func (o vtEnvoy) consistent() error {
	byType := map[resourcev3.Type][]types.Resource{}
	for kind, msgs := range o {
		for _, name := range ptKeys(msgs) {
			url := envoyres.TypeURL(kind)
			byType[url] = append(byType[url], msgs[name].(types.Resource))
		}
	}
	s, err := cachev3.NewSnapshot("1", byType)
	if err != nil {
		return err
	}
	return s.Consistent()
}

func ptKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
