package istiotest_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/istiotest"
	"github.com/meshrelay/meshrelay/internal/kubetest"
)

// world is one cluster's own workload and the Istio objects that send to it locally and
// through a remote east-west gateway: blue's pod 10.1.0.5 on a node in r1/z1 behind
// service-blue; a pod-less EndpointSlice endpoint behind service-nopod; and the global host
// bluegreen.global with blue's pod and a remote gateway (192.0.2.10:15443, r2/z2).
const world = `
apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels: {topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: blue, namespace: default}
---
apiVersion: v1
kind: Pod
metadata:
  name: blue-0
  namespace: default
  labels: {app: bluegreen, text: blue, security.istio.io/tlsMode: istio}
spec:
  nodeName: node-1
  serviceAccountName: blue
  automountServiceAccountToken: false
  containers: [{name: blue, image: blue}]
status:
  phase: Running
  podIP: 10.1.0.5
  podIPs: [{ip: 10.1.0.5}]
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Service
metadata: {name: service-blue, namespace: default}
spec:
  selector: {app: bluegreen, text: blue}
  ports: [{name: color, port: 10000, targetPort: 10000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: service-blue-1
  namespace: default
  labels: {kubernetes.io/service-name: service-blue}
addressType: IPv4
ports: [{name: color, port: 10000, protocol: TCP}]
endpoints:
- addresses: [10.1.0.5]
  conditions: {ready: true}
  zone: z1
  nodeName: node-1
  targetRef: {kind: Pod, name: blue-0, namespace: default}
---
apiVersion: v1
kind: Service
metadata: {name: service-nopod, namespace: default}
spec:
  ports: [{name: color, port: 10000, targetPort: 10000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: service-nopod-1
  namespace: default
  labels: {kubernetes.io/service-name: service-nopod}
addressType: IPv4
ports: [{name: color, port: 10000, protocol: TCP}]
endpoints:
- addresses: [10.1.0.6]
  conditions: {ready: true}
  zone: z1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bluegreen-global, namespace: default}
spec:
  hosts: [bluegreen.global]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{name: http-10000, number: 10000, protocol: HTTP}]
  endpoints:
  - address: 10.1.0.5
    locality: r1/z1
  - address: 192.0.2.10
    ports: {http-10000: 15443}
    labels: {security.istio.io/tlsMode: istio}
    locality: r2/z2
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bluegreen-global, namespace: default}
spec:
  host: bluegreen.global
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 100}
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover: [{from: r1, to: r2}]
`

// remoteWorkload is green's workload in another network, selected by service-blue.
const remoteWorkload = `
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: green-remote, namespace: default}
spec:
  address: 192.0.2.20
  labels: {app: bluegreen, text: blue, security.istio.io/tlsMode: istio}
  ports: {color: 15443}
  locality: r2/z2
  network: net2
`

// eastWestGateway is Istio's multi-network east-west gateway configuration.
const eastWestGateway = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.global"]
`

const (
	blueCluster   = "outbound|10000||service-blue.default.svc.cluster.local"
	nopodCluster  = "outbound|10000||service-nopod.default.svc.cluster.local"
	globalCluster = "outbound|10000||bluegreen.global"
	globalSNI     = "outbound_.10000_._.bluegreen.global"
)

func startIstio(t *testing.T, opts ...istiotest.Option) (*kubetest.Env, *istiotest.Istiod) {
	t.Helper()
	env := kubetest.Start(t, kubetest.WithoutMeshrelayCRDs(), kubetest.WithCRDPaths(kubetest.IstioCRDs(t)))
	return env, istiotest.Start(t, env, opts...)
}

func sidecar() istiotest.Proxy {
	p := istiotest.Sidecar("default", "client-0")
	p.Labels = map[string]string{"app": "client"}
	p.Region, p.Zone = "r1", "z1"
	return p
}

// TestIstiod reads what a real istiod gives a sidecar and an east-west gateway for a local
// service and a global host with a remote gateway endpoint.
func TestIstiod(t *testing.T) {
	env, istiod := startIstio(t)
	istiotest.Apply(t, env, world)

	istiod.Eventually(t, sidecar(), func(c *istiotest.Config) error {
		// The local service: blue's pod, with the locality of its node and the tlsMode of its
		// label.
		if err := wantEndpoints(c, blueCluster, "10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode=istio weight=1"); err != nil {
			return err
		}
		// The global host: blue's pod first (the proxy's locality), then the remote gateway
		// in r2, with mTLS towards the gateway only.
		if err := wantEndpoints(c, globalCluster,
			"10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode= weight=1",
			"192.0.2.10:15443 priority=1 locality=r2/z2 tlsMode=istio weight=1"); err != nil {
			return err
		}
		tls, err := c.ClusterTLS(globalCluster)
		if err != nil {
			return err
		}
		if len(tls) != 1 || tls[0].Match == nil || tls[0].Match["tlsMode"] != "istio" || tls[0].SNI != globalSNI || !slices.Contains(tls[0].ALPN, "istio") {
			return fmt.Errorf("cluster %s: TLS %v, want one transport socket match tlsMode=istio with SNI %s and ALPN istio", globalCluster, tls, globalSNI)
		}
		if od := c.Clusters[globalCluster].GetOutlierDetection(); od.GetConsecutive_5Xx().GetValue() != 2 {
			return fmt.Errorf("cluster %s: outlier detection %v, want consecutive 5xx 2", globalCluster, od)
		}
		return nil
	})

	t.Run("endpoint without pod", func(t *testing.T) {
		// An EndpointSlice endpoint without a Pod gets neither the slice's zone nor a tlsMode.
		istiod.Eventually(t, sidecar(), func(c *istiotest.Config) error {
			return wantEndpoints(c, nopodCluster, "10.1.0.6:10000 priority=0 locality=/ tlsMode= weight=1")
		})
	})

	istiotest.Apply(t, env, remoteWorkload)
	t.Run("workload entry selected by service", func(t *testing.T) {
		istiod.Eventually(t, sidecar(), func(c *istiotest.Config) error {
			return wantEndpoints(c, blueCluster,
				"10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode=istio weight=1",
				"192.0.2.20:15443 priority=0 locality=r2/z2 tlsMode=istio weight=1")
		})
	})

	t.Run("requested network view", func(t *testing.T) {
		// A proxy that asks for net1's view does not see the net2 workload entry; the same
		// proxy without the view does.
		gw := istiotest.Router("istio-system", "eastwest-0", map[string]string{"istio": "eastwestgateway"})
		istiod.Eventually(t, gw, func(c *istiotest.Config) error {
			return wantEndpoints(c, blueCluster,
				"10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode=istio weight=1",
				"192.0.2.20:15443 priority=0 locality=r2/z2 tlsMode=istio weight=1")
		})
		gw.Network, gw.RequestedNetworkView = "net1", []string{"net1"}
		istiod.Eventually(t, gw, func(c *istiotest.Config) error {
			return wantEndpoints(c, blueCluster, "10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode=istio weight=1")
		})
	})

	t.Run("east-west gateway", func(t *testing.T) {
		istiotest.Apply(t, env, eastWestGateway)
		gw := istiotest.Router("istio-system", "eastwest-0", map[string]string{"istio": "eastwestgateway"})
		gw.Region, gw.Zone = "r1", "z1"
		istiod.Eventually(t, gw, func(c *istiotest.Config) error {
			chains, err := c.FilterChains("0.0.0.0_15443")
			if err != nil {
				return err
			}
			i := slices.IndexFunc(chains, func(fc istiotest.FilterChain) bool { return slices.Contains(fc.ServerNames, globalSNI) })
			if i < 0 {
				return fmt.Errorf("listener 0.0.0.0_15443: no filter chain for server name %s in %v", globalSNI, chains)
			}
			if chains[i].Cluster != globalSNI {
				return fmt.Errorf("listener 0.0.0.0_15443: chain for %s goes to cluster %q, want %q", globalSNI, chains[i].Cluster, globalSNI)
			}
			// The chain takes only clients that offer Istio's ALPN, as sidecars do.
			if !slices.Contains(chains[i].ApplicationProtocols, "istio") {
				return fmt.Errorf("listener 0.0.0.0_15443: chain for %s matches ALPN %v, want istio among them", globalSNI, chains[i].ApplicationProtocols)
			}
			// The gateway passes the TLS through: no TLS of its own towards the endpoints,
			// and only the endpoints that take mTLS (tlsMode istio): not 10.1.0.5, whose
			// ServiceEntry endpoint has no tlsMode label.
			if tls, err := c.ClusterTLS(globalSNI); err != nil || len(tls) > 0 {
				return fmt.Errorf("cluster %s: TLS %v (%v), want none", globalSNI, tls, err)
			}
			return wantEndpoints(c, globalSNI, "192.0.2.10:15443 priority=1 locality=r2/z2 tlsMode=istio weight=1")
		})
	})
}

// TestIstiodNetworks reads what istiod gives proxies when it knows the networks and their
// gateways (meshNetworks): a gateway proxy asking for net1's view sees no net2 endpoint, and
// a sidecar in net1 reaches net2's workload through net2's gateway.
func TestIstiodNetworks(t *testing.T) {
	env, istiod := startIstio(t, istiotest.WithMeshNetworks(`
networks:
  net1:
    endpoints: [{fromRegistry: Kubernetes}]
    gateways: [{address: 192.0.2.1, port: 15443}]
  net2:
    endpoints: [{fromCidr: 192.0.2.16/28}]
    gateways: [{address: 192.0.2.10, port: 15443}]
`))
	istiotest.Apply(t, env, world)
	istiotest.Apply(t, env, remoteWorkload)

	t.Run("requested network view", func(t *testing.T) {
		gw := istiotest.Router("istio-system", "eastwest-0", map[string]string{"istio": "eastwestgateway"})
		gw.Network, gw.RequestedNetworkView = "net1", []string{"net1"}
		istiod.Eventually(t, gw, func(c *istiotest.Config) error {
			return wantEndpoints(c, blueCluster, "10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode=istio weight=1")
		})
	})

	t.Run("sidecar through the remote network's gateway", func(t *testing.T) {
		p := sidecar()
		p.Network = "net1"
		istiod.Eventually(t, p, func(c *istiotest.Config) error {
			return wantEndpoints(c, blueCluster,
				"10.1.0.5:10000 priority=0 locality=r1/z1 tlsMode=istio weight=1",
				"192.0.2.10:15443 priority=0 locality=r2/z2 tlsMode=istio weight=1")
		})
	})
}

// wantEndpoints checks cluster's endpoints, in any order.
func wantEndpoints(c *istiotest.Config, cluster string, want ...string) error {
	if c.Clusters[cluster] == nil {
		return fmt.Errorf("no cluster %s", cluster)
	}
	var got []string
	for _, e := range c.Endpoints(cluster) {
		got = append(got, e.String())
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		return fmt.Errorf("cluster %s: endpoints\n  %q\nwant\n  %q", cluster, got, want)
	}
	return nil
}
