package istiotest

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// transportSocketMatch is the endpoint metadata filter that transport socket matches read;
// istiod puts an endpoint's security.istio.io/tlsMode there under the key "tlsMode".
const transportSocketMatch = "envoy.transport_socket_match"

// Endpoint is one endpoint of a cluster, flattened from its ClusterLoadAssignment.
type Endpoint struct {
	Address string
	Port    uint32
	// Priority is the endpoint's locality group priority: 0 is used first, then 1, and so on.
	Priority     uint32
	Region, Zone string
	// TLSMode is the endpoint's "tlsMode" in metadata envoy.transport_socket_match: "istio"
	// for an mTLS-capable endpoint, "disabled" or "" otherwise.
	TLSMode string
	// Weight is the endpoint's load-balancing weight (0 when unset).
	Weight uint32
}

func (e Endpoint) String() string {
	return fmt.Sprintf("%s:%d priority=%d locality=%s/%s tlsMode=%s weight=%d", e.Address, e.Port, e.Priority, e.Region, e.Zone, e.TLSMode, e.Weight)
}

// Endpoints returns the endpoints istiod gave for cluster (its EDS service name), in
// istiod's order; none when the cluster has no load assignment.
func (c *Config) Endpoints(cluster string) []Endpoint {
	var out []Endpoint
	for _, group := range c.LoadAssignments[cluster].GetEndpoints() {
		for _, lb := range group.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			e := Endpoint{
				Address:  sa.GetAddress(),
				Port:     sa.GetPortValue(),
				Priority: group.GetPriority(),
				Region:   group.GetLocality().GetRegion(),
				Zone:     group.GetLocality().GetZone(),
				TLSMode:  lb.GetMetadata().GetFilterMetadata()[transportSocketMatch].GetFields()["tlsMode"].GetStringValue(),
				Weight:   lb.GetLoadBalancingWeight().GetValue(),
			}
			if sa == nil {
				e.Address = "(not a socket address: " + lb.GetEndpoint().GetAddress().String() + ")"
			}
			out = append(out, e)
		}
	}
	return out
}

// TLS is one upstream TLS transport socket of a cluster.
type TLS struct {
	// Match is the criteria of the transport socket match that carries it, e.g.
	// {"tlsMode": "istio"}: it applies to the endpoints whose envoy.transport_socket_match
	// metadata has these values. Nil for the cluster's own transport_socket, which applies to
	// every endpoint.
	Match map[string]string
	// Name is the transport socket match's name ("" for the cluster's own).
	Name string
	// SNI is the server name the upstream TLS context sends.
	SNI string
	// ALPN are the protocols it offers (istiod's mTLS: istio-peer-exchange, istio).
	ALPN []string
}

func (t TLS) String() string {
	if t.Match == nil {
		return fmt.Sprintf("transport_socket sni=%s alpn=%v", t.SNI, t.ALPN)
	}
	return fmt.Sprintf("transport_socket_match %q %v sni=%s alpn=%v", t.Name, t.Match, t.SNI, t.ALPN)
}

// ClusterTLS returns the TLS transport sockets of cluster: its own transport_socket if that
// is TLS, then each transport_socket_match whose socket is TLS (those with plain sockets,
// e.g. istiod's "tlsMode-disabled", are left out). None for a cluster without TLS or that
// does not exist.
func (c *Config) ClusterTLS(cluster string) ([]TLS, error) {
	cl := c.Clusters[cluster]
	var out []TLS
	if ts := cl.GetTransportSocket(); ts != nil {
		tc, err := upstreamTLS(ts)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: transport_socket: %w", cluster, err)
		}
		if tc != nil {
			out = append(out, TLS{SNI: tc.GetSni(), ALPN: tc.GetCommonTlsContext().GetAlpnProtocols()})
		}
	}
	for _, m := range cl.GetTransportSocketMatches() {
		tc, err := upstreamTLS(m.GetTransportSocket())
		if err != nil {
			return nil, fmt.Errorf("cluster %s: transport_socket_match %q: %w", cluster, m.GetName(), err)
		}
		if tc == nil {
			continue
		}
		match := map[string]string{}
		for k, v := range m.GetMatch().GetFields() {
			match[k] = v.GetStringValue()
		}
		out = append(out, TLS{Match: match, Name: m.GetName(), SNI: tc.GetSni(), ALPN: tc.GetCommonTlsContext().GetAlpnProtocols()})
	}
	return out, nil
}

// upstreamTLS returns ts's upstream TLS context; nil when ts is not an upstream TLS socket.
func upstreamTLS(ts *corev3.TransportSocket) (*tlsv3.UpstreamTlsContext, error) {
	a := ts.GetTypedConfig()
	if a == nil || !a.MessageIs((*tlsv3.UpstreamTlsContext)(nil)) {
		return nil, nil
	}
	return unmarshal[*tlsv3.UpstreamTlsContext](a)
}

// FilterChain is one filter chain of a listener.
type FilterChain struct {
	Name string
	// ServerNames are the SNI server names the chain matches (filter_chain_match.server_names).
	ServerNames []string
	// ApplicationProtocols are the ALPN protocols it matches, one of which a client must
	// offer (filter_chain_match.application_protocols; none: any).
	ApplicationProtocols []string
	// Cluster is where the chain's TCP proxy sends connections ("" without a TCP proxy or
	// with weighted clusters).
	Cluster string
	// Filters are the names of the chain's network filters, in order.
	Filters []string
	// Default says the chain is the listener's default_filter_chain.
	Default bool
}

func (f FilterChain) String() string {
	return fmt.Sprintf("chain %q server_names=%v alpn=%v cluster=%q filters=%v default=%t", f.Name, f.ServerNames, f.ApplicationProtocols, f.Cluster, f.Filters, f.Default)
}

// FilterChains returns the filter chains of listener, the default one last; none when the
// listener does not exist.
func (c *Config) FilterChains(listener string) ([]FilterChain, error) {
	l := c.Listeners[listener]
	var out []FilterChain
	chains := slices.Clip(l.GetFilterChains())
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains, dc)
	}
	for i, fc := range chains {
		chain := FilterChain{
			Name:                 fc.GetName(),
			ServerNames:          fc.GetFilterChainMatch().GetServerNames(),
			ApplicationProtocols: fc.GetFilterChainMatch().GetApplicationProtocols(),
			Default:              i == len(l.GetFilterChains()),
		}
		for _, f := range fc.GetFilters() {
			chain.Filters = append(chain.Filters, f.GetName())
			if a := f.GetTypedConfig(); a != nil && a.MessageIs((*tcpv3.TcpProxy)(nil)) {
				tp, err := unmarshal[*tcpv3.TcpProxy](a)
				if err != nil {
					return nil, fmt.Errorf("listener %s: chain %q: %w", listener, fc.GetName(), err)
				}
				chain.Cluster = tp.GetCluster()
			}
		}
		out = append(out, chain)
	}
	return out, nil
}

// Summary describes c for failure messages: each cluster with its type, TLS and endpoints,
// then each listener with its filter chains' server names and TCP clusters.
func (c *Config) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy %s: %d clusters, %d listeners, %d routes\n", c.Proxy, len(c.Clusters), len(c.Listeners), len(c.Routes))
	for _, name := range sortedKeys(c.Clusters) {
		cl := c.Clusters[name]
		fmt.Fprintf(&b, "cluster %s (%s)\n", name, clusterType(cl))
		tls, err := c.ClusterTLS(name)
		if err != nil {
			fmt.Fprintf(&b, "  tls: %v\n", err)
		}
		for _, t := range tls {
			fmt.Fprintf(&b, "  %s\n", t)
		}
		service := cl.GetEdsClusterConfig().GetServiceName()
		if service == "" {
			service = name
		}
		for _, e := range c.Endpoints(service) {
			fmt.Fprintf(&b, "  endpoint %s\n", e)
		}
	}
	for _, name := range sortedKeys(c.Listeners) {
		fmt.Fprintf(&b, "listener %s\n", name)
		chains, err := c.FilterChains(name)
		if err != nil {
			fmt.Fprintf(&b, "  %v\n", err)
		}
		for _, fc := range chains {
			if len(fc.ServerNames) > 0 || fc.Cluster != "" {
				fmt.Fprintf(&b, "  %s\n", fc)
			}
		}
	}
	return b.String()
}

func clusterType(cl *clusterv3.Cluster) string {
	if ct := cl.GetClusterType(); ct != nil {
		return ct.GetName()
	}
	return cl.GetType().String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
