// Package translatebench is `meshrelay-bench translate`: full and incremental translation of
// a generated world (bench.NewWorld), in this process.
package translatebench

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// Report is the result of `meshrelay-bench translate`.
type Report struct {
	Options        bench.WorldOptions `json:"options"`
	Resources      int                `json:"outputResources"`
	OutputBytes    int                `json:"outputBytes"`
	FullSeconds    float64            `json:"fullTranslationSeconds"`
	NoopSeconds    float64            `json:"unchangedTranslationSeconds"`
	NoopRecomputed int                `json:"unchangedRecomputedClusters"`
	// One cluster's own change (its endpoints of services no one exports elsewhere).
	LocalSeconds    float64 `json:"localChangeSeconds"`
	LocalRecomputed int     `json:"localChangeRecomputedClusters"`
	// A change to an endpoint of a service exported by a VirtualDestination, in a cluster
	// with a gateway: the other clusters reach the service through the gateway, so they
	// read nothing of the change.
	ExportedSeconds    float64 `json:"exportedChangeSeconds"`
	ExportedRecomputed int     `json:"exportedChangeRecomputedClusters"`
	ExportedVDPlanned  int     `json:"exportedChangeVirtualDestinationsPlanned"`
	// A change every cluster sees: the address of the gateway through which every cluster
	// reaches one cluster's exported services.
	GlobalSeconds    float64 `json:"globalChangeSeconds"`
	GlobalRecomputed int     `json:"globalChangeRecomputedClusters"`
	// A RouteTable added for every cluster (a config change every cluster reads).
	RouteSeconds    float64 `json:"routeTableChangeSeconds"`
	RouteRecomputed int     `json:"routeTableChangeRecomputedClusters"`
	// VirtualDestination upstreams built anew by each change (translate.Work), in the order
	// private, exported, route table.
	LocalVDPlanned  int     `json:"localChangeVirtualDestinationsPlanned"`
	GlobalVDPlanned int     `json:"globalChangeVirtualDestinationsPlanned"`
	RouteVDPlanned  int     `json:"routeTableChangeVirtualDestinationsPlanned"`
	HeapMiB         float64 `json:"heapAfterMiB"`
	Errors          int     `json:"translationErrors"`
	GoVersion       string  `json:"goVersion"`
	CPUs            int     `json:"cpus"`
}

// Run measures full and incremental translation of a generated world.
func Run(o bench.WorldOptions) Report {
	w := bench.NewWorld(o)
	tr := translate.NewTranslator()
	in := translate.Input{Config: w.Config, Inputs: w.Inputs, Certs: map[string]translate.ClusterCert{}}
	for _, c := range w.Names {
		in.Certs[c] = translate.ClusterCert{CertPEM: []byte("cert of " + c), KeyPEM: []byte("key of " + c), CAPEM: []byte("mesh ca")}
	}
	rep := Report{Options: o, GoVersion: runtime.Version(), CPUs: runtime.NumCPU()}

	t0 := time.Now()
	res := tr.Translate(in)
	rep.FullSeconds = time.Since(t0).Seconds()
	rep.Errors = len(res.Errors)
	for _, rs := range res.Outputs {
		rep.Resources += len(rs)
		for _, r := range rs {
			rep.OutputBytes += len(r.Body)
		}
	}

	t0 = time.Now()
	res = tr.Translate(in)
	rep.NoopSeconds, rep.NoopRecomputed = time.Since(t0).Seconds(), len(res.Recomputed)

	// Local change: cluster 0 gets a new generation of endpoints for services that are not
	// selected by any VirtualDestination... every service is svc-N; VDs select svc-0..V-1,
	// so change only the endpoints of the last service.
	local := ChangeEndpoints(w, 0, o, o.Services-1)
	in.Inputs = local
	t0 = time.Now()
	res = tr.Translate(in)
	rep.LocalSeconds, rep.LocalRecomputed, rep.LocalVDPlanned = time.Since(t0).Seconds(), len(res.Recomputed), res.Work.VirtualDestinationsPlanned

	if o.VirtualDestinations > 0 && o.Clusters > 1 {
		// Exported change: an endpoint of svc-0 (exported by a VirtualDestination) in
		// cluster 1, behind its gateway.
		in.Inputs = changeEndpointsIn(local, w, 1, o, 0)
		t0 = time.Now()
		res = tr.Translate(in)
		rep.ExportedSeconds, rep.ExportedRecomputed, rep.ExportedVDPlanned = time.Since(t0).Seconds(), len(res.Recomputed), res.Work.VirtualDestinationsPlanned
		// Global change: cluster 1's gateway moves; every cluster reaches svc-0..V-1 of
		// cluster 1 through it.
		in.Inputs = changeGatewayIn(in.Inputs, w, 1)
		t0 = time.Now()
		res = tr.Translate(in)
		rep.GlobalSeconds, rep.GlobalRecomputed, rep.GlobalVDPlanned = time.Since(t0).Seconds(), len(res.Recomputed), res.Work.VirtualDestinationsPlanned
	}

	// Route table change: a RouteTable every cluster reads (like relay's marker change).
	in.Config = append(slices.Clone(in.Config), bench.MustParse(`apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata: {name: bench-marker, namespace: bench}
spec:
  hosts: [marker.bench]
  http:
  - matchers: [{uri: {prefix: /}}]
    forwardTo: {destinations: [{ref: {name: bench-svc-0-8080}}]}
`)...)
	t0 = time.Now()
	res = tr.Translate(in)
	rep.RouteSeconds, rep.RouteRecomputed, rep.RouteVDPlanned = time.Since(t0).Seconds(), len(res.Recomputed), res.Work.VirtualDestinationsPlanned
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	rep.HeapMiB = float64(ms.HeapAlloc) / (1 << 20)
	runtime.KeepAlive(tr)
	return rep
}

// ChangeEndpoints returns the inputs with one service's endpoint moved in one cluster.
func ChangeEndpoints(w *bench.World, cluster int, o bench.WorldOptions, service int) map[string]*snapshot.Snapshot {
	return changeEndpointsIn(w.Inputs, w, cluster, o, service)
}

// changeEndpointsIn replaces one service's endpoint in one cluster's input.
func changeEndpointsIn(inputs map[string]*snapshot.Snapshot, w *bench.World, cluster int, o bench.WorldOptions, service int) map[string]*snapshot.Snapshot {
	out := make(map[string]*snapshot.Snapshot, len(inputs))
	for k, v := range inputs {
		out[k] = v
	}
	name := w.Names[cluster]
	old := inputs[name]
	fresh := bench.ClusterInput(cluster, o, 1) // generation 1 moves the first endpoint of every service
	m := make(map[string]snapshot.Resource, len(old.Resources))
	for k, r := range old.Resources {
		m[k] = r
	}
	key := fmt.Sprintf("EndpointSlice/bench/svc-%d-1", service)
	for _, r := range fresh {
		if r.Key == key {
			m[key] = r
		}
	}
	out[name] = snapshot.FromMap(old.Version+1, 0, m)
	return out
}

// changeGatewayIn moves the address of one cluster's east-west gateway.
func changeGatewayIn(inputs map[string]*snapshot.Snapshot, w *bench.World, cluster int) map[string]*snapshot.Snapshot {
	out := maps.Clone(inputs)
	name := w.Names[cluster]
	old := inputs[name]
	m := maps.Clone(old.Resources)
	for _, o := range bench.MustParse(bench.EastWestGatewayYAML(fmt.Sprintf("10.%d.254.1", cluster%250))) {
		if r := o.Resource(); r.Key == "EndpointSlice/gloo-system/east-west-1" {
			m[r.Key] = r
		}
	}
	out[name] = snapshot.FromMap(old.Version+1, 0, m)
	return out
}

// Print writes the report as a table.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "world\t%d clusters × %d services, %d virtual destinations, %d routes/cluster\t\n", r.Options.Clusters, r.Options.Services, r.Options.VirtualDestinations, r.Options.Routes)
	fmt.Fprintf(tw, "output\t%d resources, %.1f MiB, %d errors\t\n", r.Resources, float64(r.OutputBytes)/(1<<20), r.Errors)
	fmt.Fprintf(tw, "full translation\t%.3f s\t\n", r.FullSeconds)
	fmt.Fprintf(tw, "nothing changed\t%.3f s (%d clusters recomputed)\t\n", r.NoopSeconds, r.NoopRecomputed)
	fmt.Fprintf(tw, "one cluster's private change\t%.3f s (%d clusters recomputed, %d virtual destination upstreams planned)\t\n", r.LocalSeconds, r.LocalRecomputed, r.LocalVDPlanned)
	fmt.Fprintf(tw, "exported service change behind a gateway\t%.3f s (%d clusters recomputed, %d virtual destination upstreams planned)\t\n", r.ExportedSeconds, r.ExportedRecomputed, r.ExportedVDPlanned)
	fmt.Fprintf(tw, "gateway address change, every cluster\t%.3f s (%d clusters recomputed, %d virtual destination upstreams planned)\t\n", r.GlobalSeconds, r.GlobalRecomputed, r.GlobalVDPlanned)
	fmt.Fprintf(tw, "route table change, every cluster\t%.3f s (%d clusters recomputed, %d virtual destination upstreams planned)\t\n", r.RouteSeconds, r.RouteRecomputed, r.RouteVDPlanned)
	fmt.Fprintf(tw, "heap after\t%.0f MiB\t\n", r.HeapMiB)
	tw.Flush()
}
