// Package istio_test proves meshrelay's Istio outputs where they are consumed: a real istiod
// (pilot-discovery, built by scripts/istio-tools.sh) reads a real API server holding a
// cluster's own workloads and the Istio objects the agent's sink applied, and the tests
// read over ADS what istiod gives that cluster's sidecars and east-west gateway.
package istio_test

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meshrelay/meshrelay/internal/istiotest"
)

// ep is an endpoint as a test expects istiod to give it.
type ep struct {
	addr string
	port uint32
	prio uint32
	// mtls says the endpoint is reached with Istio mutual TLS (tlsMode istio).
	mtls bool
}

func (e ep) String() string {
	return fmt.Sprintf("%s:%d prio %d mtls %v", e.addr, e.port, e.prio, e.mtls)
}

// endpointsAre checks the endpoints of an outbound cluster, in any order.
func endpointsAre(cfg *istiotest.Config, cluster string, want ...ep) error {
	var got []ep
	for _, e := range cfg.Endpoints(cluster) {
		got = append(got, ep{e.Address, e.Port, e.Priority, e.TLSMode == "istio"})
	}
	key := func(a, b ep) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(got, key)
	slices.SortFunc(want, key)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: endpoints %v, want %v", cluster, got, want)
	}
	return nil
}

// mtlsOnlyWhereLabelled checks that a cluster originates TLS only through a transport
// socket match on tlsMode=istio — Istio mutual TLS with the SNI the remote east-west
// gateway routes by — and has no TLS for the whole cluster.
func mtlsOnlyWhereLabelled(cfg *istiotest.Config, cluster, sni string) error {
	tlss, err := cfg.ClusterTLS(cluster)
	if err != nil {
		return err
	}
	found := false
	for _, tls := range tlss {
		switch {
		case tls.Match == nil:
			return fmt.Errorf("%s: TLS for every endpoint (SNI %q); want it only on endpoints labelled tlsMode=istio", cluster, tls.SNI)
		case tls.Match["tlsMode"] == "istio":
			if tls.SNI != sni {
				return fmt.Errorf("%s: Istio mutual TLS with SNI %q, want %q", cluster, tls.SNI, sni)
			}
			if !slices.Contains(tls.ALPN, "istio") {
				return fmt.Errorf("%s: Istio mutual TLS offers ALPN %v; east-west gateways want \"istio\"", cluster, tls.ALPN)
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s: no transport socket match for tlsMode=istio (TLS %+v)", cluster, tlss)
	}
	return nil
}

// gatewayForwards checks that an east-west gateway's AUTO_PASSTHROUGH listener on 15443
// takes the SNI outbound_.<port>_._.<host> to the cluster of the same name, whose endpoints
// are exactly want: the cluster's own workloads, never another cluster's gateway.
func gatewayForwards(cfg *istiotest.Config, port uint32, host string, want ...ep) error {
	sni := fmt.Sprintf("outbound_.%d_._.%s", port, host)
	chains, err := cfg.FilterChains("0.0.0.0_15443")
	if err != nil {
		return err
	}
	for _, c := range chains {
		if !slices.Contains(c.ServerNames, sni) {
			continue
		}
		if c.Cluster != sni {
			return fmt.Errorf("listener 0.0.0.0_15443: SNI %s goes to cluster %q, want %q", sni, c.Cluster, sni)
		}
		return endpointsAre(cfg, sni, want...)
	}
	return fmt.Errorf("listener 0.0.0.0_15443: no filter chain for SNI %s", sni)
}

func all(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// sidecar is a client workload of cluster c in namespace ns, in the given locality.
func sidecar(c, ns, network, region, zone string) istiotest.Proxy {
	p := istiotest.Sidecar(ns, "client-0")
	p.Labels = map[string]string{"app": "client"}
	p.ClusterID, p.Network, p.Region, p.Zone = c, network, region, zone
	return p
}

// eastWest is cluster c's east-west gateway as Istio's multi-network samples deploy it: it
// requests a view of its own network only.
func eastWest(c, ns, network string, labels map[string]string) istiotest.Proxy {
	p := istiotest.Router(ns, "eastwest-0", labels)
	p.ClusterID, p.Network, p.RequestedNetworkView = c, network, []string{network}
	return p
}
