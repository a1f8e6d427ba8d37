package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

const (
	hcmFilter        = "envoy.filters.network.http_connection_manager"
	tcpProxyFilter   = "envoy.filters.network.tcp_proxy"
	routerFilter     = "envoy.filters.http.router"
	tlsInspectorName = "envoy.filters.listener.tls_inspector"
	transportTLS     = "tls"
	transportRaw     = "raw_buffer"
)

type listenerKind string

const (
	kindHTTP listenerKind = "http"
	kindTCP  listenerKind = "tcp"
)

// listenerSpec is a parsed Listener.
type listenerSpec struct {
	name    string
	address string // host:port to bind
	kind    listenerKind
	// HTTP listeners: the RDS route configuration name, or inline routes.
	rdsName      string
	inlineRoutes *routeTable
	// TCP listeners: filter chains tried in order of specificity, then the default chain.
	chains       []*tcpChain
	defaultChain *tcpChain
}

// tcpChain is a filter chain ending in tcp_proxy.
type tcpChain struct {
	name               string
	serverNames        []string // exact names or "*.suffix" wildcards; empty matches any
	transportProtocol  string   // "", "tls" or "raw_buffer"
	tls                *downstreamTLS
	cluster            string
	maxConnectAttempts int
}

// sameSocket says whether two specs can share one bound socket.
func (l *listenerSpec) sameSocket(o *listenerSpec) bool {
	return o != nil && l.address == o.address && l.kind == o.kind
}

func parseListener(l *listenerv3.Listener) (*listenerSpec, error) {
	out := &listenerSpec{name: l.GetName()}
	if out.name == "" {
		return nil, errors.New("listener without a name")
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, errors.New("address: only socket_address is supported")
	}
	if sa.GetNamedPort() != "" || sa.GetResolverName() != "" || sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, errors.New("address: only tcp socket addresses with a port_value are supported")
	}
	out.address = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	if len(l.GetAdditionalAddresses()) > 0 || l.GetApiListener() != nil || l.GetInternalListener() != nil {
		return nil, errors.New("additional_addresses, api_listener and internal_listener are not supported")
	}
	for i, f := range l.GetListenerFilters() {
		if f.GetName() != tlsInspectorName {
			if a := f.GetTypedConfig(); a == nil || unpackTyped(a, &tlsinspectorv3.TlsInspector{}) != nil {
				return nil, fmt.Errorf("listener_filters[%d] %q: only tls_inspector is supported", i, f.GetName())
			}
		}
	}
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	if len(chains) == 0 {
		return nil, errors.New("listener has no filter chain")
	}
	if isHCM(chains[0]) {
		return out, parseHTTPListener(out, chains)
	}
	for i, fc := range l.GetFilterChains() {
		c, err := parseTCPChain(fc)
		if err != nil {
			return nil, fmt.Errorf("filter_chains[%d] %q: %w", i, fc.GetName(), err)
		}
		out.chains = append(out.chains, c)
	}
	if dc := l.GetDefaultFilterChain(); dc != nil {
		if dc.GetFilterChainMatch() != nil {
			return nil, errors.New("default_filter_chain must not have a filter_chain_match")
		}
		c, err := parseTCPChain(dc)
		if err != nil {
			return nil, fmt.Errorf("default_filter_chain: %w", err)
		}
		out.defaultChain = c
	}
	out.kind = kindTCP
	return out, nil
}

func isHCM(fc *listenerv3.FilterChain) bool {
	fs := fc.GetFilters()
	return len(fs) > 0 && fs[len(fs)-1].GetName() == hcmFilter
}

func parseHTTPListener(out *listenerSpec, chains []*listenerv3.FilterChain) error {
	if len(chains) != 1 {
		return errors.New("http listeners must have exactly one filter chain")
	}
	fc := chains[0]
	if fc.GetTransportSocket() != nil || fc.GetFilterChainMatch() != nil {
		return errors.New("http listeners: filter_chain_match and transport_socket (TLS) are not supported")
	}
	if len(fc.GetFilters()) != 1 {
		return errors.New("http listeners: the http_connection_manager must be the only network filter")
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := unpackTyped(fc.GetFilters()[0].GetTypedConfig(), hcm); err != nil {
		return fmt.Errorf("http_connection_manager: %w", err)
	}
	filters := hcm.GetHttpFilters()
	if len(filters) != 1 || filters[0].GetName() != routerFilter && unpackTyped(filters[0].GetTypedConfig(), &routerv3.Router{}) != nil {
		return errors.New("http_connection_manager: the router must be the only http filter")
	}
	switch rs := hcm.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		out.rdsName = rs.Rds.GetRouteConfigName()
		if out.rdsName == "" {
			return errors.New("http_connection_manager: rds without route_config_name")
		}
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := parseRouteTable(rs.RouteConfig)
		if err != nil {
			return fmt.Errorf("http_connection_manager.route_config: %w", err)
		}
		out.inlineRoutes = t
	default:
		return errors.New("http_connection_manager: only rds and route_config are supported")
	}
	out.kind = kindHTTP
	return nil
}

func parseTCPChain(fc *listenerv3.FilterChain) (*tcpChain, error) {
	c := &tcpChain{name: fc.GetName(), maxConnectAttempts: 1}
	if m := fc.GetFilterChainMatch(); m != nil {
		if m.GetDestinationPort() != nil || len(m.GetPrefixRanges()) > 0 || len(m.GetDirectSourcePrefixRanges()) > 0 ||
			len(m.GetSourcePrefixRanges()) > 0 || len(m.GetSourcePorts()) > 0 || len(m.GetApplicationProtocols()) > 0 ||
			m.GetSourceType() != listenerv3.FilterChainMatch_ANY || m.GetAddressSuffix() != "" || m.GetSuffixLen() != nil {
			return nil, errors.New("filter_chain_match: only server_names and transport_protocol are supported")
		}
		for _, n := range m.GetServerNames() {
			n = strings.ToLower(n)
			if strings.Contains(strings.TrimPrefix(n, "*"), "*") {
				return nil, fmt.Errorf("server name %q: only a leading * wildcard is supported", n)
			}
			c.serverNames = append(c.serverNames, n)
		}
		c.transportProtocol = m.GetTransportProtocol()
		if c.transportProtocol != "" && c.transportProtocol != transportTLS && c.transportProtocol != transportRaw {
			return nil, fmt.Errorf("transport_protocol %q: want tls or raw_buffer", c.transportProtocol)
		}
	}
	var err error
	if c.tls, err = parseDownstreamSocket(fc.GetTransportSocket()); err != nil {
		return nil, fmt.Errorf("transport_socket: %w", err)
	}
	if c.tls == nil && (len(c.serverNames) > 0 || c.transportProtocol == transportTLS) {
		return nil, errors.New("server_names and transport_protocol tls need a tls transport_socket (tls passthrough is not supported)")
	}
	fs := fc.GetFilters()
	if len(fs) != 1 {
		return nil, errors.New("tcp filter chains must have exactly one network filter: tcp_proxy")
	}
	tp := &tcpproxyv3.TcpProxy{}
	if err := unpackTyped(fs[0].GetTypedConfig(), tp); err != nil {
		return nil, fmt.Errorf("network filter %q: only tcp_proxy and http_connection_manager are supported: %w", fs[0].GetName(), err)
	}
	cl, ok := tp.GetClusterSpecifier().(*tcpproxyv3.TcpProxy_Cluster)
	if !ok || cl.Cluster == "" {
		return nil, errors.New("tcp_proxy: only a single cluster is supported")
	}
	c.cluster = cl.Cluster
	if n := tp.GetMaxConnectAttempts(); n != nil {
		c.maxConnectAttempts = max(1, int(n.GetValue()))
	}
	return c, nil
}

// selectChain returns the filter chain for a connection: with TLS, the chain whose
// server_names match the SNI (exact before the longest wildcard), then a TLS chain without
// server_names; plaintext connections take a chain without TLS. Then the default chain.
func (l *listenerSpec) selectChain(sni string, isTLS bool) *tcpChain {
	sni = strings.ToLower(sni)
	var wildcard, catchAll *tcpChain
	wildLen := 0
	for _, c := range l.chains {
		if !c.accepts(isTLS) {
			continue
		}
		if len(c.serverNames) == 0 {
			if catchAll == nil {
				catchAll = c
			}
			continue
		}
		if sni == "" {
			continue
		}
		for _, n := range c.serverNames {
			if n == sni {
				return c
			}
			if strings.HasPrefix(n, "*") && strings.HasSuffix(sni, n[1:]) && len(n) > wildLen {
				wildcard, wildLen = c, len(n)
			}
		}
	}
	if wildcard != nil {
		return wildcard
	}
	if catchAll != nil {
		return catchAll
	}
	if l.defaultChain != nil && l.defaultChain.accepts(isTLS) {
		return l.defaultChain
	}
	return nil
}

func (c *tcpChain) accepts(isTLS bool) bool {
	switch c.transportProtocol {
	case transportTLS:
		if !isTLS {
			return false
		}
	case transportRaw:
		if isTLS {
			return false
		}
	}
	return (c.tls != nil) == isTLS
}
