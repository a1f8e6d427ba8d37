package sim

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// The relay benchmarks' world: N clusters, each with M services (Service + EndpointSlice
// with two ready endpoints, like bench.ClusterInput) and an east-west gateway; the first
// ExportPercent of the services carry the label ExportLabel, and one VirtualDestination
// per exported service selects it in every cluster, so every cluster's output holds an
// Envoy cluster with an endpoint per cluster for each exported service.

// ExportLabel marks the services a VirtualDestination of the relay benchmark selects.
const ExportLabel = "bench.meshrelay.io/exported"

// MarkerPrefix starts the unique hosts the benchmarks put in route tables; the simulated
// agents look for it in what they apply.
const MarkerPrefix = "bmk-"

// RelayWorld shapes the relay benchmarks' world.
type RelayWorld struct {
	Clusters int `json:"clusters"`
	// Services per cluster.
	Services int `json:"servicesPerCluster"`
	// ExportPercent of the services (the first ones) carry ExportLabel and are selected by
	// a VirtualDestination each.
	ExportPercent int `json:"exportedPercent"`
}

// exported reports whether service s of a cluster is selected by a VirtualDestination.
func (w RelayWorld) exported(s int) bool { return s*100 < w.ExportPercent*w.Services }

// RelayConfig returns the config-dir YAML registering the clusters (half in us-east, half
// in us-west) and the VirtualDestinations of the exported services.
func (w RelayWorld) RelayConfig() string {
	n, m := w.Clusters, w.Services
	var b strings.Builder
	for i := range n {
		region := "us-east"
		if i%2 == 1 {
			region = "us-west"
		}
		fmt.Fprintf(&b, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n  labels: {topology.kubernetes.io/region: %s}\n---\n", bench.ClusterName(i), region)
	}
	for s := range m {
		if !w.exported(s) {
			continue
		}
		fmt.Fprintf(&b, `apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata: {name: exported-svc-%[1]d, namespace: bench}
spec:
  hosts: [svc-%[1]d.global]
  ports: [{number: 8080}]
  services: [{labels: {app: svc-%[1]d, %[2]s: "true"}}]
---
`, s, ExportLabel)
	}
	return b.String()
}

// endpointIP is the address of endpoint e (0 or 1) of service s in cluster i; gen > 0
// gives endpoint 0 a churned address.
func endpointIP(i, s, e, gen int) string {
	if e == 0 && gen > 0 {
		return bench.IPAt("100.64.0.0", uint32(i%4096)*1024+uint32(gen%1024))
	}
	return bench.IPAt("10.0.0.0", uint32(i%8192)*2048+uint32((s*2+e)%2048))
}

// serviceDocs is the YAML of service s of cluster i with endpoint generation gen.
func (w RelayWorld) serviceDocs(i, s, gen int) string {
	label := ""
	if w.exported(s) {
		label = ", " + ExportLabel + `: "true"`
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: svc-%[1]d, namespace: bench, labels: {app: svc-%[1]d%[2]s}}
spec:
  ports: [{name: http, port: 8080}]
---
%[3]s`, s, label, endpointSliceDoc(i, s, gen))
}

func endpointSliceDoc(i, s, gen int) string {
	return fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-%[1]d-1, namespace: bench, labels: {kubernetes.io/service-name: svc-%[1]d}}
addressType: IPv4
endpoints:
- addresses: ["%[2]s"]
  zone: z-a
- addresses: ["%[3]s"]
  zone: z-b
ports: [{name: http, port: 8080}]
---
`, s, endpointIP(i, s, 0, gen), endpointIP(i, s, 1, gen))
}

// ClusterInput returns the discovered objects of cluster i.
func (w RelayWorld) ClusterInput(i int) []resource.Object {
	var b strings.Builder
	for s := range w.Services {
		b.WriteString(w.serviceDocs(i, s, 0))
	}
	b.WriteString(bench.EastWestGatewayYAML(bench.IPAt("172.16.0.0", uint32(i))))
	return bench.MustParse(b.String())
}

// ChurnedEndpointSlice returns the EndpointSlice of service s of cluster i whose first
// endpoint moved to the address of generation gen (> 0).
func ChurnedEndpointSlice(i, s, gen int) resource.Object {
	return bench.MustParse(endpointSliceDoc(i, s, gen))[0]
}

// MarkerHost is the unique host of change id (e.g. "p3" → "bmk-p3.bench").
func MarkerHost(id string) string { return MarkerPrefix + id + ".bench" }

// MarkerRouteTable is a RouteTable named name whose only host is the marker of id; with
// clusters empty it applies to every cluster, otherwise to those clusters only. Its route
// goes to svc-0, which every cluster has, so the change needs no other resource.
func MarkerRouteTable(name, id string, clusters ...string) string {
	cl := ""
	if len(clusters) > 0 {
		cl = "\n  clusters: [" + strings.Join(clusters, ", ") + "]"
	}
	return fmt.Sprintf(`apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata: {name: %s, namespace: bench}
spec:
  hosts: [%s]%s
  http:
  - matchers: [{uri: {prefix: /}}]
    forwardTo: {destinations: [{ref: {name: bench-svc-0-8080}}]}
`, name, MarkerHost(id), cl)
}

// Flags registers the world's flags with their defaults: --agents (one cluster each) and the
// clusters' shape (ServiceFlags).
func (w *RelayWorld) Flags(fs *pflag.FlagSet) {
	fs.IntVar(&w.Clusters, "agents", 100, "number of simulated agents (one cluster each)")
	w.ServiceFlags(fs)
}

// ServiceFlags registers the flags of a cluster's shape: --services-per-cluster and
// --exported-percent.
func (w *RelayWorld) ServiceFlags(fs *pflag.FlagSet) {
	fs.IntVar(&w.Services, "services-per-cluster", 10, "services per cluster (Service + EndpointSlice with two endpoints)")
	fs.IntVar(&w.ExportPercent, "exported-percent", 10, "percentage of each cluster's services selected by a VirtualDestination")
}
