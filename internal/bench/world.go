// Package bench is the shared kit of meshrelay's benchmarks (cmd/meshrelay-bench; one
// sub-package per family: translatebench, relaybench, failoverbench, gatewaybench, and sim,
// the simulated agents): the generated world (world.go), the child processes and what is read
// from them (procs.go), latency distributions (stats.go), and the machine and the JSON report
// (report.go). Go benchmarks in bench/ reuse the same generators.
package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"

	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// WorldOptions shape a generated world.
type WorldOptions struct {
	Clusters int
	// Services per cluster (each with one port and two ready endpoints).
	Services int
	// VirtualDestinations select services present in every cluster.
	VirtualDestinations int
	// Routes per cluster in a RouteTable created in that cluster.
	Routes int
}

// World is a generated configuration and the clusters' inputs.
type World struct {
	Config []resource.Object
	Inputs map[string]*snapshot.Snapshot
	Names  []string
}

// ClusterName is the name of generated cluster i.
func ClusterName(i int) string { return fmt.Sprintf("c%03d", i) }

func MustParse(docs string) []resource.Object {
	objs, errs := resource.Parse("generated", []byte(docs))
	if len(errs) > 0 {
		panic(fmt.Sprintf("generated YAML does not parse: %v", errs[0]))
	}
	return objs
}

// NewWorld generates a world: every cluster has o.Services services, an east-west gateway
// exposed by a Service, and a RouteTable; half the clusters are in us-east, half in
// us-west; VirtualDestinations with a FailoverPolicy span every cluster.
func NewWorld(o WorldOptions) *World {
	w := &World{Inputs: map[string]*snapshot.Snapshot{}}
	var cfg strings.Builder
	for i := range o.Clusters {
		name := ClusterName(i)
		w.Names = append(w.Names, name)
		region := "us-east"
		if i%2 == 1 {
			region = "us-west"
		}
		fmt.Fprintf(&cfg, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n  labels: {topology.kubernetes.io/region: %s}\n---\n", name, region)
	}
	for v := range o.VirtualDestinations {
		fmt.Fprintf(&cfg, `apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata: {name: global-%[1]d, namespace: bench, labels: {failover: "true"}}
spec:
  hosts: [svc-%[1]d.global]
  ports: [{number: 8080}]
  services: [{labels: {app: svc-%[1]d}}]
---
`, v)
	}
	if o.VirtualDestinations > 0 {
		cfg.WriteString(`apiVersion: meshrelay.io/v1alpha1
kind: FailoverPolicy
metadata: {name: locality, namespace: bench}
spec:
  applyToDestinations: [{selector: {labels: {failover: "true"}}}]
  config:
    localityMappings:
    - {from: {region: us-east}, to: [{region: us-west}]}
    - {from: {region: us-west}, to: [{region: us-east}]}
`)
	}
	w.Config = MustParse(cfg.String())
	for i, name := range w.Names {
		w.Inputs[name] = snapshot.New(1, 0, ClusterInput(i, o, 0))
	}
	return w
}

// ClusterInput generates the input of cluster i; gen varies endpoint addresses so a new
// generation is a change.
func ClusterInput(i int, o WorldOptions, gen int) []snapshot.Resource {
	var b strings.Builder
	for s := range o.Services {
		fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata: {name: svc-%[1]d, namespace: bench, labels: {app: svc-%[1]d}}
spec:
  ports: [{name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-%[1]d-1, namespace: bench, labels: {kubernetes.io/service-name: svc-%[1]d}}
addressType: IPv4
endpoints:
- addresses: ["10.%[2]d.%[3]d.%[4]d"]
  zone: z-a
- addresses: ["10.%[2]d.%[3]d.%[5]d"]
  zone: z-b
ports: [{name: http, port: 8080}]
---
`, s, i%250, s/100, (s%100)*2+gen%2, (s%100)*2+1)
	}
	b.WriteString(EastWestGatewayYAML(fmt.Sprintf("10.%d.255.1", i%250)))
	if o.Routes > 0 {
		b.WriteString("apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: routes, namespace: bench}\nspec:\n  hosts: [\"*\"]\n  http:\n")
		for r := range min(o.Routes, o.Services) {
			fmt.Fprintf(&b, "  - matchers: [{uri: {prefix: /svc-%[1]d}}]\n    forwardTo: {destinations: [{ref: {name: bench-svc-%[1]d-8080}}]}\n", r)
		}
	}
	objs := MustParse(b.String())
	rs := make([]snapshot.Resource, len(objs))
	for k, o := range objs {
		rs[k] = o.Resource()
	}
	return rs
}

// Flags registers the world's flags (`translate`) with their defaults.
func (o *WorldOptions) Flags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Clusters, "clusters", 100, "number of clusters")
	fs.IntVar(&o.Services, "services", 1000, "services per cluster")
	fs.IntVar(&o.VirtualDestinations, "virtual-destinations", 10, "virtual destinations spanning every cluster")
	fs.IntVar(&o.Routes, "routes", 10, "routes per cluster")
}

// IPAt returns base + off as a dotted IPv4 address.
func IPAt(base string, off uint32) string {
	b := binary.BigEndian.Uint32(net.ParseIP(base).To4())
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, b+off)
	return ip.String()
}

// EastWestGatewayYAML is a cluster's east-west gateway (a tcpGateway forwarding by SNI on
// 15443) and the Service and EndpointSlice that expose it at ip.
func EastWestGatewayYAML(ip string) string {
	return fmt.Sprintf(`apiVersion: meshrelay.io/v1alpha1
kind: Gateway
metadata: {name: east-west, namespace: gloo-system}
spec:
  bindPort: 15443
  tcpGateway:
    tcpHosts: [{name: mesh, destination: {forwardSniClusterName: {}}}]
---
apiVersion: v1
kind: Service
metadata: {name: east-west, namespace: gloo-system}
spec:
  ports: [{name: tls, port: 15443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: east-west-1, namespace: gloo-system, labels: {kubernetes.io/service-name: east-west}}
addressType: IPv4
endpoints: [{addresses: ["%s"]}]
ports: [{name: tls, port: 15443}]
---
`, ip)
}
