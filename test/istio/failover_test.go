package istio_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/istiotest"
)

// Seed 003 plus a VirtualDestination bluegreen.global over blue (local) and green (remote),
// as issue 13 found it broken: local's sidecars must reach green through remote's failover
// gateway with Istio mutual TLS, the FailoverScheme must fail service-blue over to green,
// and remote's gateway must take both SNIs to green.
func TestIstioSeed003(t *testing.T) {
	w := translateCase(t, "seed003-bluegreen")
	const blue, green, gateway = "10.0.1.10", "10.0.2.20", "10.0.2.100" // remote's failover gateway: its pod's address (no load balancer)

	t.Run("local sidecar", func(t *testing.T) {
		c := startCluster(t, w, "local")
		c.istiod.Eventually(t, sidecar("local", "default", "local", "", ""), func(cfg *istiotest.Config) error {
			const primary = "outbound|10000||service-blue.default.svc.cluster.local"
			const global = "outbound|10000||bluegreen.global"
			return all(
				// The FailoverScheme: blue first, green through remote's gateway next.
				endpointsAre(cfg, primary, ep{blue, 10000, 0, true}, ep{gateway, 15443, 1, true}),
				mtlsOnlyWhereLabelled(cfg, primary, "outbound_.10000_._.service-blue.default.svc.cluster.local"),
				// The VirtualDestination without a FailoverPolicy: both, one priority.
				endpointsAre(cfg, global, ep{blue, 10000, 0, true}, ep{gateway, 15443, 0, true}),
				mtlsOnlyWhereLabelled(cfg, global, "outbound_.10000_._.bluegreen.global"),
			)
		})
	})

	t.Run("remote east-west gateway", func(t *testing.T) {
		c := startCluster(t, w, "remote")
		gw := eastWest("remote", "gloo-system", "remote", map[string]string{"gateway-proxy": "live", "gateway-proxy-id": "gateway-proxy"})
		c.istiod.Eventually(t, gw, func(cfg *istiotest.Config) error {
			return all(
				// local's sidecars ask for service-blue; green stands in for it here.
				gatewayForwards(cfg, 10000, "service-blue.default.svc.cluster.local", ep{green, 10000, 0, true}),
				// bluegreen.global: remote's own green only — never back to another cluster.
				gatewayForwards(cfg, 10000, "bluegreen.global", ep{green, 10000, 0, true}),
			)
		})
	})
}

// Three clusters in two regions, each its own network with an east-west gateway, one
// VirtualDestination with a FailoverPolicy (us-east <-> us-west) and outlier detection, and
// in east-1 a RouteTable that splits testers' traffic 90/10 between the VirtualDestination
// and west-1's ratings. Per cluster, the sidecars use their own pods first, the same
// region's other cluster next, the other region last — each remote cluster through its
// east-west gateway with Istio mutual TLS — and each gateway forwards only to its own pods.
func TestIstioMultiNetworkFailover(t *testing.T) {
	w := translateCase(t, "istio-multinetwork")
	gateways := map[string]string{"east-1": "192.0.2.1", "east-2": "192.0.2.2", "west-1": "192.0.2.3"}
	// own pods, then remote clusters by priority
	cases := []struct {
		cluster, region, zone string
		own                   []string
		remote                map[string]uint32 // cluster -> priority
	}{
		{"east-1", "us-east", "us-east-1a", []string{"10.1.0.11", "10.1.0.12"}, map[string]uint32{"east-2": 1, "west-1": 2}},
		{"east-2", "us-east", "us-east-2a", []string{"10.2.0.11", "10.2.0.12"}, map[string]uint32{"east-1": 1, "west-1": 2}},
		{"west-1", "us-west", "us-west-1a", []string{"10.3.0.11", "10.3.0.12"}, map[string]uint32{"east-1": 1, "east-2": 1}},
	}
	const reviews = "outbound|9080||reviews.global"
	for _, tc := range cases {
		t.Run(tc.cluster, func(t *testing.T) {
			c := startCluster(t, w, tc.cluster)
			network := "net-" + tc.cluster
			var want, own []ep
			for _, a := range tc.own {
				want = append(want, ep{a, 9080, 0, true})
				own = append(own, ep{a, 9080, 0, true})
			}
			for r, prio := range tc.remote {
				want = append(want, ep{gateways[r], 15443, prio, true})
			}
			c.istiod.Eventually(t, sidecar(tc.cluster, "bookinfo", network, tc.region, tc.zone), func(cfg *istiotest.Config) error {
				errs := []error{
					endpointsAre(cfg, reviews, want...),
					mtlsOnlyWhereLabelled(cfg, reviews, "outbound_.9080_._.reviews.global"),
				}
				if tc.cluster == "east-1" {
					// The RouteTable's remote destination: west-1's ratings through west-1's gateway.
					const ratings = "outbound|9080||ratings.bookinfo.svc.cluster.local"
					errs = append(errs,
						endpointsAre(cfg, ratings, ep{gateways["west-1"], 15443, 0, true}),
						mtlsOnlyWhereLabelled(cfg, ratings, "outbound_.9080_._.ratings.bookinfo.svc.cluster.local"),
						sameRoutes(cfg, c, "9080", "reviews.global"),
					)
				}
				return all(errs...)
			})
			c.istiod.Eventually(t, eastWest(tc.cluster, "istio-system", network, map[string]string{"istio": "eastwestgateway"}), func(cfg *istiotest.Config) error {
				errs := []error{gatewayForwards(cfg, 9080, "reviews.global", own...)}
				if tc.cluster == "west-1" {
					errs = append(errs, gatewayForwards(cfg, 9080, "ratings.bookinfo.svc.cluster.local", ep{"10.3.0.21", 9080, 0, true}))
				}
				return all(errs...)
			})
		})
	}
}
