// Package gateway is meshrelay's data plane: an xDS client that implements a documented
// subset of Envoy's semantics (docs/gateway.md lists every honoured and ignored field).
//
// It subscribes over one state-of-the-world ADS stream to Listeners, RouteConfigurations,
// Clusters, ClusterLoadAssignments and Secrets, validates each response (ACK, or NACK keeping
// the previous configuration), and serves:
//
//   - HTTP listeners (HttpConnectionManager + RDS): virtual hosts, prefix / exact / regex
//     routes with header matchers, weighted clusters, timeouts and retries, proxied with
//     net/http over per-endpoint keep-alive pools;
//   - TCP listeners: TLS terminated with the filter chain chosen by SNI (client certificates
//     verified against the chain's CA), then bytes forwarded to the chain's tcp_proxy cluster.
//
// Clusters group endpoints by priority; all traffic goes to the highest priority that has a
// healthy, non-ejected endpoint (active HTTP health checks with Envoy's thresholds, outlier
// detection on consecutive 5xx), round robin within it. Endpoints selected by a
// transport_socket_match are reached over mutual TLS with SNI. Certificates come from SDS
// Secrets and rotate without cutting connections.
//
// The parts: xds.go (the ADS stream), xdstls.go (its mutual TLS: the agent of its own
// cluster only), store.go (per-type state, ACK/NACK decisions),
// spec_*.go (pure parsing of Envoy messages into immutable specs), clusters.go, upstream.go,
// health.go, outlier.go (endpoint state and load balancing), listeners.go, proxy_http.go,
// proxy_tcp.go (serving), tlsconf.go (TLS from secrets), status.go and metrics.go (admin).
package gateway
