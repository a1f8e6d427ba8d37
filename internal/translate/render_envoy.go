package translate

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
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
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

const (
	// envoyTLSMetadataKey selects an endpoint's transport socket: endpoints carry
	// {envoyTLSMetadataKey: sni} under envoyTransportSocketMatch and the cluster has one
	// transport_socket_match per SNI matching it.
	envoyTLSMetadataKey        = "meshrelay.io/tls"
	envoyTransportSocketMatch  = "envoy.transport_socket_match"
	envoyTLSTransportSocket    = "envoy.transport_sockets.tls"
	envoyHCMFilter             = "envoy.filters.network.http_connection_manager"
	envoyTCPProxyFilter        = "envoy.filters.network.tcp_proxy"
	envoyRouterFilter          = "envoy.filters.http.router"
	envoyTLSInspectorFilter    = "envoy.filters.listener.tls_inspector"
	envoyDefaultConnectTimeout = 5 * time.Second
	envoyDefaultRetryOn        = "5xx,connect-failure,reset"
	envoyDefaultListenAddress  = "0.0.0.0"
)

type envoyOut struct {
	kind, name string
	msg        envoyres.Message
	memoKey    string // set for upstream resources, to remember them once rendered
	// localities of a ClusterLoadAssignment encoded with the memo (encodeCLA), whose
	// encodings are reused; msg is then nil.
	localities []claLocality
}

// renderEnvoy renders a plan into Envoy xDS resources (Listeners, RouteConfigurations,
// Clusters, ClusterLoadAssignments and Secrets), each wrapped in an envelope and sorted by
// key. Every message passes its protoc-gen-validate rules; the first entry that cannot be
// rendered fails the whole rendering with an error naming it.
func renderEnvoy(p Plan) ([]snapshot.Resource, error) { return renderEnvoyMemo(p, nil, nil, nil) }

// renderEnvoyMemo renders like renderEnvoy, reusing the resources of plan elements rendered
// before from exactly the same element and references (memo may be nil; upstreamKeys are
// the memo keys of p.Upstreams, nil without a memo; splits are the VirtualDestination
// upstreams assembled from parts, by name, nil for none).
func renderEnvoyMemo(p Plan, memo *renderMemo, upstreamKeys []string, splits map[string]*vdUpstream) ([]snapshot.Resource, error) {
	r := envoyRenderer{secrets: map[string]bool{}, clusters: map[string]bool{}}
	for _, s := range p.Secrets {
		r.secrets[s.Name] = true
	}
	for _, u := range p.Upstreams {
		r.clusters[u.Name] = true
	}
	var outs []envoyOut
	fail := func(kind, name string, err error) error {
		return fmt.Errorf("%s %q: %w: %w", kind, name, envoyres.ErrInvalid, err)
	}
	// A rendering depends on its plan element and on which names it may reference: the
	// memo keys of listeners and gateways cover the plan's cluster and secret names, those
	// of upstreams its secret names (upstreamKeys do).
	var refsKey string
	if memo != nil {
		refsKey = namesKey(r.clusters, r.secrets)
	}
	elemKey := func(kind string, v any) string {
		if memo == nil {
			return ""
		}
		if k := memo.key(v); k != "" {
			return kind + "|" + k + "|" + refsKey
		}
		return ""
	}
	var reused []snapshot.Resource
	hit := func(key string) bool {
		rs, ok := memo.get(key)
		reused = append(reused, rs...)
		return ok
	}
	for i, u := range p.Upstreams {
		key := ""
		if upstreamKeys != nil {
			key = upstreamKeys[i]
		}
		if hit(key) {
			continue
		}
		c, localities, err := r.upstream(u, splits[u.Name], memo)
		if err != nil {
			return nil, fail(envoyres.KindCluster, u.Name, err)
		}
		cla := envoyOut{envoyres.KindClusterLoadAssignment, u.Name, nil, key, localities}
		if memo == nil || len(localities) == 0 {
			cla.msg, cla.localities = claMessage(u.Name, localities), nil
		}
		outs = append(outs, envoyOut{envoyres.KindCluster, u.Name, c, key, nil}, cla)
	}
	for _, l := range p.HTTPListeners {
		key := elemKey("http", l)
		if hit(key) {
			continue
		}
		lis, rc, err := r.httpListener(l)
		if err != nil {
			return nil, fail(envoyres.KindListener, l.Name, err)
		}
		outs = append(outs, envoyOut{envoyres.KindListener, l.Name, lis, key, nil}, envoyOut{envoyres.KindRouteConfiguration, l.Name, rc, key, nil})
	}
	for _, g := range p.TCPGateways {
		key := elemKey("tcp", g)
		if hit(key) {
			continue
		}
		lis, err := r.tcpGateway(g)
		if err != nil {
			return nil, fail(envoyres.KindListener, g.Name, err)
		}
		outs = append(outs, envoyOut{envoyres.KindListener, g.Name, lis, key, nil})
	}
	for _, s := range p.Secrets {
		key := elemKey("secret", s)
		if hit(key) {
			continue
		}
		sec, err := envoySecret(s)
		if err != nil {
			return nil, fail(envoyres.KindSecret, s.Name, err)
		}
		outs = append(outs, envoyOut{envoyres.KindSecret, s.Name, sec, key, nil})
	}

	res := make([]snapshot.Resource, 0, len(outs)+len(reused))
	seen := make(map[string]bool, len(outs)+len(reused))
	for _, rr := range reused {
		if seen[rr.Key] {
			return nil, fmt.Errorf("%s: %w: duplicate name", rr.Key, envoyres.ErrInvalid)
		}
		seen[rr.Key] = true
		res = append(res, rr)
	}
	rendered := map[string][]snapshot.Resource{} // by memo key
	for _, o := range outs {
		key := envoyres.Key(o.kind, o.name)
		if seen[key] {
			return nil, fail(o.kind, o.name, errors.New("duplicate name"))
		}
		seen[key] = true
		var rr snapshot.Resource
		if o.localities != nil {
			// The big ClusterLoadAssignments (a locality per cluster of a VirtualDestination)
			// change one locality at a time: render, encode and validate only what changed.
			enc, err := memo.encodeCLA(o.name, o.localities)
			if err != nil {
				return nil, fail(o.kind, o.name, err)
			}
			if rr, err = envoyres.EncodeEncoded(o.kind, o.name, enc); err != nil {
				return nil, err
			}
		} else {
			if err := o.msg.ValidateAll(); err != nil {
				return nil, fail(o.kind, o.name, err)
			}
			var err error
			if rr, err = envoyres.Encode(o.kind, o.name, o.msg); err != nil {
				return nil, err
			}
		}
		res = append(res, rr)
		if o.memoKey != "" {
			rendered[o.memoKey] = append(rendered[o.memoKey], rr)
		}
	}
	for k, rs := range rendered {
		memo.put(k, rs...)
	}
	slices.SortFunc(res, func(a, b snapshot.Resource) int { return cmp.Compare(a.Key, b.Key) })
	return res, nil
}

// envoyRenderer renders one plan. secrets and clusters are the names the plan renders; a
// reference to any other name fails the rendering: a dangling SDS name would keep a listener
// or cluster warming, a dangling cluster name would refuse the traffic.
type envoyRenderer struct {
	secrets, clusters map[string]bool
}

func (r envoyRenderer) needCluster(name string) error {
	if !r.clusters[name] {
		return fmt.Errorf("unknown cluster %q", name)
	}
	return nil
}

// envoyADS is the config source of every dynamic reference: the ADS stream itself.
func envoyADS() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// envoyAny validates m (protoc-gen-validate does not look inside Any) and packs it.
func envoyAny(m envoyres.Message) (*anypb.Any, error) {
	if err := m.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

func envoyTLSSocket(ctx envoyres.Message) (*corev3.TransportSocket, error) {
	a, err := envoyAny(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: envoyTLSTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

// commonTLS presents the certificate of certSecret and verifies the peer against the
// CA of caSecret, both fetched over SDS.
func (r envoyRenderer) commonTLS(certSecret, caSecret string) (*tlsv3.CommonTlsContext, error) {
	if !r.secrets[certSecret] {
		return nil, fmt.Errorf("tls needs a certificate secret: unknown secret %q", certSecret)
	}
	ctx := &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: certSecret, SdsConfig: envoyADS()}},
	}
	if caSecret == "" {
		return ctx, nil // a client that does not verify the server (bring-your-own secret without ca.crt)
	}
	if !r.secrets[caSecret] {
		return nil, fmt.Errorf("tls validation needs a ca secret: unknown secret %q", caSecret)
	}
	ctx.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
		ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: caSecret, SdsConfig: envoyADS()},
	}
	return ctx, nil
}

func envoySocketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// envoyListenAddress is a listener's bind address: an IP ("0.0.0.0" when empty, "::" for
// all IPv6) and a port in 1-65535 (Envoy would take 0 as "any free port").
func envoyListenAddress(addr string, port uint32) (*corev3.Address, error) {
	if addr == "" {
		addr = envoyDefaultListenAddress
	}
	if _, err := netip.ParseAddr(addr); err != nil {
		return nil, fmt.Errorf("bind address %q is not an ip address", addr)
	}
	if port == 0 || port > 65535 {
		return nil, fmt.Errorf("bind port %d is not in 1-65535", port)
	}
	return envoySocketAddress(addr, port), nil
}

func envoyDuration(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

func envoySecret(s SecretPlan) (*tlsv3.Secret, error) {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	switch {
	case len(s.CertPEM) > 0:
		if len(s.KeyPEM) == 0 {
			return nil, errors.New("certificate without private key")
		}
		return &tlsv3.Secret{Name: s.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(s.CertPEM),
			PrivateKey:       inline(s.KeyPEM),
		}}}, nil
	case len(s.CAPEM) > 0:
		return &tlsv3.Secret{Name: s.Name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(s.CAPEM),
		}}}, nil
	}
	return nil, errors.New("secret has neither a certificate nor a ca")
}

func envoyTCPProxy(statPrefix, cluster string) (*listenerv3.Filter, error) {
	a, err := envoyAny(&tcpproxyv3.TcpProxy{StatPrefix: statPrefix, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: envoyTCPProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// tcpGateway renders a listener that terminates mTLS (client certificates required)
// and forwards: a ForwardSNI host gets one filter chain per served name, matching that SNI
// and forwarding to the upstream of that name; a plain host gets a chain without an SNI
// match forwarding to its Cluster (at most one per gateway). Without a plain host there is
// no default chain, so an SNI naming no served upstream is refused.
func (r envoyRenderer) tcpGateway(g TCPGateway) (*listenerv3.Listener, error) {
	addr, err := envoyListenAddress(g.Address, g.Port)
	if err != nil {
		return nil, err
	}
	inspector, err := envoyAny(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return nil, err
	}
	lis := &listenerv3.Listener{
		Name:    g.Name,
		Address: addr,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       envoyTLSInspectorFilter,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: inspector},
		}},
	}
	served := map[string]string{} // SNI → host that serves it; "" → the plain host
	aliased := false
	for _, h := range g.Hosts {
		common, err := r.commonTLS(h.CertSecret, h.CASecret)
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", h.Name, err)
		}
		type chain struct{ name, sni, cluster string }
		var chains []chain
		if h.ForwardSNI {
			for _, n := range h.ServedNames {
				chains = append(chains, chain{h.Name + "/" + n, n, n})
			}
			// Istio's SNI form, so that Istio sidecars of other clusters can use this
			// gateway as their east-west gateway (the first forwarding host serves them).
			if !aliased {
				aliased = true
				for _, sni := range slices.Sorted(maps.Keys(g.SNIAliases)) {
					chains = append(chains, chain{h.Name + "/" + sni, sni, g.SNIAliases[sni]})
				}
			}
		} else {
			chains = []chain{{h.Name, "", h.Cluster}}
		}
		for _, c := range chains {
			if err := r.needCluster(c.cluster); err != nil {
				return nil, fmt.Errorf("host %q: %w", h.Name, err)
			}
			if prev, dup := served[c.sni]; dup {
				return nil, fmt.Errorf("host %q: server name %q already served by host %q", h.Name, c.sni, prev)
			}
			served[c.sni] = h.Name
			ts, err := envoyTLSSocket(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: common})
			if err != nil {
				return nil, fmt.Errorf("host %q: %w", h.Name, err)
			}
			proxy, err := envoyTCPProxy(c.cluster, c.cluster)
			if err != nil {
				return nil, fmt.Errorf("host %q: %w", h.Name, err)
			}
			fc := &listenerv3.FilterChain{Name: c.name, TransportSocket: ts, Filters: []*listenerv3.Filter{proxy}}
			if c.sni != "" {
				fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{c.sni}}
			}
			lis.FilterChains = append(lis.FilterChains, fc)
		}
	}
	if len(lis.FilterChains) == 0 {
		return nil, errors.New("gateway serves no upstream")
	}
	return lis, nil
}

// httpListener renders a listener whose HTTP connection manager fetches its routes over
// RDS (route configuration of the same name) and the route configuration itself.
func (r envoyRenderer) httpListener(l HTTPListener) (*listenerv3.Listener, *routev3.RouteConfiguration, error) {
	addr, err := envoyListenAddress(l.Address, l.Port)
	if err != nil {
		return nil, nil, err
	}
	router, err := envoyAny(&routerv3.Router{})
	if err != nil {
		return nil, nil, err
	}
	hcm, err := envoyAny(&hcmv3.HttpConnectionManager{
		StatPrefix: l.Name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    envoyADS(),
			RouteConfigName: l.Name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: envoyRouterFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, nil, err
	}
	lis := &listenerv3.Listener{
		Name:    l.Name,
		Address: addr,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       envoyHCMFilter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}
	rc := &routev3.RouteConfiguration{Name: l.Name}
	for _, vh := range l.VirtualHosts {
		v := &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains}
		for i, rt := range vh.Routes {
			route, err := r.route(rt)
			if err != nil {
				return nil, nil, fmt.Errorf("virtual host %q route %d (%q): %w", vh.Name, i, rt.Name, err)
			}
			v.Routes = append(v.Routes, route)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	return lis, rc, nil
}

// route renders one route: a path match (prefix "/" when none is set), header matches (the
// method as ":method"), then one cluster or weighted clusters, timeout and retries.
func (r envoyRenderer) route(rt Route) (*routev3.Route, error) {
	mt, m := rt.Match, &routev3.RouteMatch{}
	if len(slices.DeleteFunc([]string{mt.Prefix, mt.Exact, mt.Regex}, func(s string) bool { return s == "" })) > 1 {
		return nil, errors.New("match sets more than one of prefix, exact and regex")
	}
	switch {
	case mt.Regex != "":
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: mt.Regex}}
	case mt.Exact != "":
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: mt.Exact}
	default:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: cmp.Or(mt.Prefix, "/")}
	}
	for _, h := range mt.Headers {
		hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
		switch {
		case h.Value == "":
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		case h.Regex:
			hm.HeaderMatchSpecifier = envoyStringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Value}}})
		default:
			hm.HeaderMatchSpecifier = envoyStringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value}})
		}
		m.Headers = append(m.Headers, hm)
	}
	if mt.Method != "" {
		m.Headers = append(m.Headers, &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: envoyStringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: mt.Method}})})
	}

	if len(rt.Destinations) == 0 {
		return nil, errors.New("no destination")
	}
	kept := rt.Destinations
	if len(kept) > 1 {
		kept = slices.DeleteFunc(slices.Clone(kept), func(d WeightedDestination) bool { return d.Weight == 0 })
		if len(kept) == 0 {
			kept = rt.Destinations[:1] // all weights zero: the first destination takes all traffic
		}
	}
	for _, d := range kept {
		if err := r.needCluster(d.Cluster); err != nil {
			return nil, err
		}
	}
	action := &routev3.RouteAction{Timeout: envoyDuration(rt.Timeout)}
	if len(kept) == 1 {
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: kept[0].Cluster}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, d := range kept {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: d.Cluster, Weight: wrapperspb.UInt32(d.Weight)})
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if re := rt.Retries; re != nil {
		action.RetryPolicy = &routev3.RetryPolicy{
			RetryOn:       cmp.Or(re.RetryOn, envoyDefaultRetryOn),
			NumRetries:    wrapperspb.UInt32(re.Attempts),
			PerTryTimeout: envoyDuration(re.PerTryTimeout),
		}
	}
	return &routev3.Route{Name: rt.Name, Match: m, Action: &routev3.Route_Route{Route: action}}, nil
}

func envoyStringMatch(sm *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
	return &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
}

// upstream renders an upstream into an EDS cluster and the localities of its load
// assignment (claMessage renders it; with a memo, encodeCLA encodes only the localities
// it does not remember). An upstream assembled from its cluster's own endpoints and a
// remembered others' part (split, vdsplit.go) renders only its own endpoints anew.
func (r envoyRenderer) upstream(u UpstreamPlan, split *vdUpstream, memo *renderMemo) (*clusterv3.Cluster, []claLocality, error) {
	c := &clusterv3.Cluster{
		Name:                 u.Name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: envoyADS()},
		ConnectTimeout:       durationpb.New(cmp.Or(u.ConnectTimeout, envoyDefaultConnectTimeout)),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		// Never panic-route to endpoints known to be bad while a healthy priority exists.
		CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
	}
	for i, hc := range u.HealthChecks {
		h, err := envoyHealthCheck(hc)
		if err != nil {
			return nil, nil, fmt.Errorf("health check %d: %w", i, err)
		}
		c.HealthChecks = append(c.HealthChecks, h)
	}
	if o := u.Outlier; o != nil {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Interval:           envoyDuration(o.Interval),
			BaseEjectionTime:   envoyDuration(o.BaseEjectionTime),
			MaxEjectionPercent: wrapperspb.UInt32(cmp.Or(o.MaxEjectionPercent, 100)),
		}
		if o.Consecutive5xx > 0 {
			c.OutlierDetection.Consecutive_5Xx = wrapperspb.UInt32(o.Consecutive5xx)
		}
	}

	var localities []claLocality
	tlsBySNI := map[string]UpstreamTLS{}
	prios := u.Priorities
	var others []claLocality // the others' part of an assembled upstream, rendered once
	if split.assembled(u) && memo != nil {
		off := split.off()
		if oc := split.others.renderedCLA(off, u.Name, memo); oc.err == nil {
			if split.others.failover || len(split.own) == 0 {
				others, prios = oc.localities, u.Priorities[:off]
				maps.Copy(tlsBySNI, oc.tlsBySNI)
			} else if own, err := claLocalities(0, split.own, map[string]UpstreamTLS{}); err == nil {
				// One priority: the own endpoints' localities go among the others'.
				if merged, ok := mergeLocalities(own, oc); ok {
					others, prios = merged, nil
					maps.Copy(tlsBySNI, oc.tlsBySNI)
				}
			}
		}
	}
	last := -1 // last non-empty priority; empty ones before it keep their index
	for prio, eps := range prios {
		if len(eps) > 0 {
			last = prio
		}
	}
	for prio, eps := range prios[:last+1] {
		ls, err := claLocalities(prio, eps, tlsBySNI)
		if err != nil {
			return nil, nil, err
		}
		localities = append(localities, ls...)
	}
	localities = append(localities, others...)

	for _, sni := range slices.Sorted(maps.Keys(tlsBySNI)) {
		t := tlsBySNI[sni]
		common, err := r.commonTLS(t.CertSecret, t.CASecret)
		if err != nil {
			return nil, nil, fmt.Errorf("sni %q: %w", sni, err)
		}
		ts, err := envoyTLSSocket(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})
		if err != nil {
			return nil, nil, fmt.Errorf("sni %q: %w", sni, err)
		}
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: "mtls-" + sni, Match: envoyTLSMatch(sni), TransportSocket: ts,
		})
	}
	return c, localities, nil
}

// claLocality is one locality of a load assignment: a priority and its endpoints, sorted,
// all of one region and zone (none for an empty priority), or its encoding (frag, as
// encodeCLA appends it) when it was encoded before.
type claLocality struct {
	prio int
	eps  []Endpoint
	frag []byte
}

// claLocalities sorts the endpoints of priority prio into its localities, checking each
// endpoint and collecting the TLS settings of the endpoints by SNI (which must agree
// across the upstream's endpoints). An empty priority is one empty locality.
func claLocalities(prio int, eps []Endpoint, tlsBySNI map[string]UpstreamTLS) ([]claLocality, error) {
	eps = slices.Clone(eps)
	slices.SortStableFunc(eps, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	if len(eps) == 0 { // keep priorities contiguous, as Envoy asks
		return []claLocality{{prio: prio}}, nil
	}
	var out []claLocality
	start := 0
	for i, e := range eps {
		if e.Address == "" || e.Port == 0 || e.Port > 65535 {
			return nil, fmt.Errorf("priority %d: endpoint %q port %d: needs an address and a port in 1-65535", prio, e.Address, e.Port)
		}
		if t := e.TLS; t != nil {
			if prev, ok := tlsBySNI[t.SNI]; t.SNI == "" || ok && prev != *t {
				return nil, fmt.Errorf("priority %d: endpoint %s:%d: tls needs an sni whose secrets agree across endpoints", prio, e.Address, e.Port)
			}
			tlsBySNI[t.SNI] = *t
		}
		if i+1 == len(eps) || eps[i+1].Region != e.Region || eps[i+1].Zone != e.Zone {
			out = append(out, claLocality{prio: prio, eps: eps[start : i+1]})
			start = i + 1
		}
	}
	return out, nil
}

// message renders the locality.
func (l claLocality) message() *endpointv3.LocalityLbEndpoints {
	g := &endpointv3.LocalityLbEndpoints{Priority: uint32(l.prio)}
	if len(l.eps) == 0 {
		return g
	}
	g.Locality = &corev3.Locality{Region: l.eps[0].Region, Zone: l.eps[0].Zone}
	for _, e := range l.eps {
		lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: envoySocketAddress(e.Address, e.Port)}}}
		if t := e.TLS; t != nil {
			lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{envoyTransportSocketMatch: envoyTLSMatch(t.SNI)}}
		}
		g.LbEndpoints = append(g.LbEndpoints, lb)
	}
	return g
}

// key names everything the locality's message is built from, unambiguously (every string
// is length-prefixed).
func (l claLocality) key() string {
	b := binary.AppendUvarint(make([]byte, 0, 16+len(l.eps)*32), uint64(l.prio))
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	for _, e := range l.eps {
		str(e.Region)
		str(e.Zone)
		str(e.Address)
		b = binary.AppendUvarint(b, uint64(e.Port))
		if e.TLS != nil {
			b = append(b, 1)
			str(e.TLS.SNI)
		} else {
			b = append(b, 0)
		}
	}
	return string(b)
}

// claMessage is the load assignment named name with these localities.
func claMessage(name string, localities []claLocality) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, l := range localities {
		cla.Endpoints = append(cla.Endpoints, l.message())
	}
	return cla
}

func envoyTLSMatch(sni string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{envoyTLSMetadataKey: structpb.NewStringValue(sni)}}
}

// envoyHealthCheck is an active HTTP health check; Envoy checks at interval also while the
// cluster takes no traffic, so that a failover priority is known healthy before it is used.
func envoyHealthCheck(h HealthCheck) (*corev3.HealthCheck, error) {
	hh := &corev3.HealthCheck_HttpHealthCheck{Path: h.Path, Host: h.Host}
	for _, s := range h.ExpectedStatuses {
		if s < 100 || s > 599 {
			return nil, fmt.Errorf("expected status %d is not in 100-599", s)
		}
		hh.ExpectedStatuses = append(hh.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
	}
	return &corev3.HealthCheck{
		Timeout:            durationpb.New(h.Timeout),
		Interval:           durationpb.New(h.Interval),
		NoTrafficInterval:  durationpb.New(h.Interval),
		UnhealthyThreshold: wrapperspb.UInt32(h.UnhealthyThreshold),
		HealthyThreshold:   wrapperspb.UInt32(h.HealthyThreshold),
		HealthChecker:      &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hh},
	}, nil
}
