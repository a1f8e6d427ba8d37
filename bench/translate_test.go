// Package bench holds Go benchmarks of meshrelay (`go test -bench . ./bench`); the
// `meshrelay-bench …` commands measure the same worlds and print a table with JSON.
package bench

import (
	"testing"

	ib "github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/translatebench"
	"github.com/meshrelay/meshrelay/internal/translate"
)

func world(b *testing.B, clusters, services int) (*ib.World, translate.Input) {
	b.Helper()
	o := ib.WorldOptions{Clusters: clusters, Services: services, VirtualDestinations: 10, Routes: 10}
	w := ib.NewWorld(o)
	in := translate.Input{Config: w.Config, Inputs: w.Inputs, Certs: map[string]translate.ClusterCert{}}
	for _, c := range w.Names {
		in.Certs[c] = translate.ClusterCert{CertPEM: []byte("c"), KeyPEM: []byte("k"), CAPEM: []byte("ca")}
	}
	return w, in
}

// BenchmarkTranslateFull is a translation from scratch of 20 clusters × 500 services.
func BenchmarkTranslateFull(b *testing.B) {
	_, in := world(b, 20, 500)
	for b.Loop() {
		translate.NewTranslator().Translate(in)
	}
}

// BenchmarkTranslatePrivateChange changes one cluster's private endpoints and translates
// incrementally (only that cluster is recomputed).
func BenchmarkTranslatePrivateChange(b *testing.B) {
	w, in := world(b, 20, 500)
	o := ib.WorldOptions{Clusters: 20, Services: 500, VirtualDestinations: 10, Routes: 10}
	tr := translate.NewTranslator()
	tr.Translate(in)
	a, c := in, in
	a.Inputs = w.Inputs
	c.Inputs = translatebench.ChangeEndpoints(w, 0, o, o.Services-1)
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			tr.Translate(c)
		} else {
			tr.Translate(a)
		}
		i++
	}
}
