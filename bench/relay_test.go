package bench

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	ib "github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// relayWorld builds the relay benchmark's world in memory: MESHRELAY_BENCH_CLUSTERS
// clusters (default 200) × 10 services, 10% exported.
func relayWorld(b *testing.B) (sim.RelayWorld, translate.Input) {
	b.Helper()
	n := 200
	if v, err := strconv.Atoi(os.Getenv("MESHRELAY_BENCH_CLUSTERS")); err == nil && v > 0 {
		n = v
	}
	w := sim.RelayWorld{Clusters: n, Services: 10, ExportPercent: 10}
	cfg, errs := resource.Parse("bench", []byte(w.RelayConfig()))
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	in := translate.Input{Config: cfg, Inputs: map[string]*snapshot.Snapshot{}, Certs: map[string]translate.ClusterCert{}}
	for i := range n {
		objs := w.ClusterInput(i)
		rs := make([]snapshot.Resource, len(objs))
		for k, o := range objs {
			rs[k] = o.Resource()
		}
		c := ib.ClusterName(i)
		in.Inputs[c] = snapshot.New(1, 0, rs)
		in.Certs[c] = translate.ClusterCert{CertPEM: []byte("c"), KeyPEM: []byte("k"), CAPEM: []byte("ca")}
	}
	return w, in
}

func withConfig(b *testing.B, in translate.Input, yaml string) translate.Input {
	b.Helper()
	objs, errs := resource.Parse("bench", []byte(yaml))
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	in.Config = append(append([]resource.Object(nil), in.Config...), objs...)
	return in
}

// BenchmarkRelayMarkerTranslate is what `meshrelay-bench relay` measures as propagation's
// translation: a RouteTable for every cluster gets a new host (every cluster recomputed).
// Profile it with -cpuprofile to see what bounds propagation at scale.
func BenchmarkRelayMarkerTranslate(b *testing.B) {
	_, in := relayWorld(b)
	tr := translate.NewTranslator()
	tr.Translate(withConfig(b, in, sim.MarkerRouteTable("bench-marker", "p0")))
	k := 0
	for b.Loop() {
		k++
		res := tr.Translate(withConfig(b, in, sim.MarkerRouteTable("bench-marker", fmt.Sprintf("p%d", k))))
		if len(res.Recomputed) != len(in.Inputs) {
			b.Fatalf("recomputed %d clusters, want %d", len(res.Recomputed), len(in.Inputs))
		}
	}
}

// BenchmarkRelayOneClusterTranslate is the one-cluster change: a RouteTable of one
// cluster gets a new host (one cluster recomputed; the rest is the fixed cost).
func BenchmarkRelayOneClusterTranslate(b *testing.B) {
	_, in := relayWorld(b)
	tr := translate.NewTranslator()
	tr.Translate(withConfig(b, in, sim.MarkerRouteTable("bench-one", "o0", ib.ClusterName(0))))
	k := 0
	for b.Loop() {
		k++
		res := tr.Translate(withConfig(b, in, sim.MarkerRouteTable("bench-one", fmt.Sprintf("o%d", k), ib.ClusterName(0))))
		if len(res.Recomputed) != 1 {
			b.Fatalf("recomputed %d clusters, want 1", len(res.Recomputed))
		}
	}
}
