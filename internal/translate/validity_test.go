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

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// goldenCases are the testdata cases (as TestGolden lists them).
var goldenCases = []string{"seed003", "vd-failover", "weighted", "missing-destination"}

// TestOutputsValid checks every golden case's output: Envoy resources decode and pass their
// validation rules, Istio specs survive a strict trip through Istio's own types, keys are
// unique and sorted, and every reference resolves within the cluster's output.
func TestOutputsValid(t *testing.T) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			res := translate.Translate(loadCase(t, name))
			if len(res.Errors) > 0 {
				t.Fatalf("translation errors: %v", res.Errors)
			}
			for _, c := range sortedKeys(res.Outputs) {
				if err := checkOutput(res.Outputs[c]); err != nil {
					t.Errorf("cluster %s: %v", c, err)
				}
			}
			for _, e := range unservedSNIs(t, res) {
				t.Error(e)
			}
		})
	}
}

// TestCheckOutputCatchesBreakage makes sure the checks above can fail: dropping any
// referenced resource, unsorting the keys or adding a field Istio does not know is caught.
func TestCheckOutputCatchesBreakage(t *testing.T) {
	rs := translate.Translate(loadCase(t, "seed003")).Outputs["local"]
	if err := checkOutput(rs); err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if strings.HasPrefix(r.Key, "Envoy") && !strings.HasPrefix(r.Key, translate.KindEnvoyListener) {
			if checkOutput(append(slices.Clone(rs[:i]), rs[i+1:]...)) == nil {
				t.Errorf("dropping %s went unnoticed", r.Key)
			}
		}
	}
	if checkOutput(append(slices.Clone(rs[1:]), rs[0])) == nil {
		t.Error("unsorted keys went unnoticed")
	}
	if err := istioRoundTrip("DestinationRule", []byte(`{"host":"a","bogus":1}`)); err == nil {
		t.Error("an unknown Istio field went unnoticed")
	}
}

// unservedSNIs checks across clusters: every SNI a cluster originates mTLS with (towards a
// remote gateway) is served by a filter chain of another cluster's listener, else that
// gateway refuses the connection.
func unservedSNIs(t *testing.T, res translate.Result) []string {
	t.Helper()
	sent, served := map[string][]string{}, map[string][]string{}
	for _, c := range sortedKeys(res.Outputs) {
		for _, r := range res.Outputs[c] {
			kind, msg, err := translate.DecodeEnvoy(r)
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
	for _, sni := range sortedKeys(sent) {
		for _, from := range sent[sni] {
			c, _, _ := strings.Cut(from, " ")
			if !slices.ContainsFunc(served[sni], func(s string) bool { return s != c }) {
				errs = append(errs, fmt.Sprintf("cluster %s sends SNI %q (%s) but no other cluster's gateway serves it (served by %v)", c, sni, from, served[sni]))
			}
		}
	}
	return errs
}

// envoyOutput is one cluster's Envoy resources by kind, then name.
type envoyOutput map[string]map[string]proto.Message

// checkOutput checks one cluster's output and returns every problem found, joined.
func checkOutput(rs []snapshot.Resource) error {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	env := envoyOutput{}
	for i, r := range rs {
		if i > 0 && rs[i-1].Key >= r.Key {
			fail("keys not unique and sorted: %q then %q", rs[i-1].Key, r.Key)
		}
		var head struct{ APIVersion, Kind string }
		var spec struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err := json.Unmarshal(r.Body, &head); err != nil || json.Unmarshal(r.Body, &spec) != nil {
			fail("%s: body is not an object: %v", r.Key, err)
			continue
		}
		switch {
		case strings.HasPrefix(head.Kind, "Envoy"):
			kind, msg, err := translate.DecodeEnvoy(r)
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
			if err := istioRoundTrip(head.Kind, spec.Spec); err != nil {
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

// istioRoundTrip decodes a spec strictly into Istio's type for kind, re-encodes it and
// compares the two after normalisation: a field Istio does not know fails the decode, a
// value Istio would write differently fails the comparison.
func istioRoundTrip(kind string, spec []byte) error {
	var m proto.Message
	switch kind {
	case "ServiceEntry":
		m = &networking.ServiceEntry{}
	case "DestinationRule":
		m = &networking.DestinationRule{}
	case "VirtualService":
		m = &networking.VirtualService{}
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
	if a, b := normJSON(spec), normJSON(again); a != b {
		return fmt.Errorf("spec changes through %T:\n\tstored: %s\n\tistio:  %s", m, a, b)
	}
	return nil
}

// normJSON puts JSON in encoding/json's form: compact, keys sorted, numbers verbatim.
func normJSON(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "invalid JSON: " + err.Error()
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func (o envoyOutput) has(kind, name string) bool { _, ok := o[kind][name]; return ok }

// references lists the references of one cluster's Envoy output that do not resolve in it:
// clusters without load assignment (and back), route and tcp_proxy clusters, RDS names, SDS
// secret names of upstream and downstream TLS.
func (o envoyOutput) references() []string {
	var errs []string
	need := func(from, kind, name string) {
		if !o.has(kind, name) {
			errs = append(errs, fmt.Sprintf("%s references %s %q, which is not in the output", from, kind, name))
		}
	}
	needTLS := func(from string, common *tlsv3.CommonTlsContext) {
		for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
			need(from, translate.KindEnvoySecret, s.GetName())
		}
		if s := common.GetValidationContextSdsSecretConfig(); s != nil {
			need(from, translate.KindEnvoySecret, s.GetName())
		}
		if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
			need(from, translate.KindEnvoySecret, s.GetName())
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
					need(from, translate.KindEnvoyCluster, c)
				}
				for _, w := range a.GetWeightedClusters().GetClusters() {
					need(from, translate.KindEnvoyCluster, w.GetName())
				}
			}
		}
	}
	for _, name := range sortedKeys(o[translate.KindEnvoyCluster]) {
		c := o[translate.KindEnvoyCluster][name].(*clusterv3.Cluster)
		from := "cluster " + name
		need(from, translate.KindEnvoyClusterLoadAssignment, cmp.Or(c.GetEdsClusterConfig().GetServiceName(), name))
		socket(from, c.GetTransportSocket())
		for _, m := range c.GetTransportSocketMatches() {
			socket(from, m.GetTransportSocket())
		}
	}
	for _, name := range sortedKeys(o[translate.KindEnvoyClusterLoadAssignment]) {
		need("load assignment "+name, translate.KindEnvoyCluster, name)
	}
	for _, name := range sortedKeys(o[translate.KindEnvoyRouteConfiguration]) {
		routes("route configuration "+name, o[translate.KindEnvoyRouteConfiguration][name].(*routev3.RouteConfiguration))
	}
	for _, name := range sortedKeys(o[translate.KindEnvoyListener]) {
		l := o[translate.KindEnvoyListener][name].(*listenerv3.Listener)
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
						need(from, translate.KindEnvoyRouteConfiguration, rds.GetRouteConfigName())
					}
					routes(from, fm.GetRouteConfig())
				case *tcpproxyv3.TcpProxy:
					need(from, translate.KindEnvoyCluster, fm.GetCluster())
				}
			}
		}
	}
	return errs
}

// consistent runs go-control-plane's own Consistent() on the output as one xDS snapshot.
func (o envoyOutput) consistent() error {
	byType := map[resourcev3.Type][]types.Resource{}
	for kind, msgs := range o {
		for _, name := range sortedKeys(msgs) {
			url := translate.EnvoyTypeURL(kind)
			byType[url] = append(byType[url], msgs[name].(types.Resource))
		}
	}
	s, err := cachev3.NewSnapshot("1", byType)
	if err != nil {
		return err
	}
	return s.Consistent()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
