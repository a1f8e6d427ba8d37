package translate_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/translate"
)

func TestZZProbe(t *testing.T) {
	base := []string{ptCluster("c1", "east"), ptCluster("c2", "west"), ptCluster("c3", "west")}
	inputs := map[string][]string{
		"c1": {ptService("default", "web", 8080, "10.1.0.1")},
		"c2": {ptService("default", "web", 8080, "10.2.0.1"), ptGateway("10.2.255.1")},
		"c3": {ptService("default", "web", 8080, "10.3.0.1"), ptGateway("10.3.255.1")},
	}
	for _, pair := range [][]string{
		{ptPatch("default-web-8080", "c1", "/a"), strings.Replace(ptPatch("default-web-8080", "c1", "/b"), "gloo-system", "other", 1)},
		{ptScheme("s1", "c1", "c2", "default-web-8080"), ptScheme("s2", "c1", "c3", "default-web-8080")},
		{ptVD("web", "{labels: {app: web}}"), ptFailoverPolicy("p1", "east", "west"), ptFailoverPolicy("p2", "east", "north")},
	} {
		in := ptInput(t, append(append([]string{}, base...), pair...), inputs)
		want := translate.Translate(in)
		for seed := range uint64(6) {
			if d := ptDiff(want, translate.Translate(shuffled(rand.New(rand.NewPCG(seed, 4)), in))); d != "" {
				fmt.Printf("%s\n  seed %d: %s\n", strings.Split(pair[len(pair)-1], "\n")[1], seed, d)
				break
			}
		}
	}
	// stale status
	cfg := append(append([]string{}, base...), ptScheme("s1", "c1", "c2", "default-web-8080"))
	tr := translate.NewTranslator()
	in1 := ptInput(t, append(append([]string{}, cfg...), ptPatch("default-ghost-8080", "c2", "/x")), inputs)
	r1 := tr.Translate(in1)
	fmt.Printf("with patch status: %q recomputed %v\n", r1.Status, r1.Recomputed)
	in2 := ptInput(t, cfg, inputs)
	r2 := tr.Translate(in2)
	fmt.Printf("without patch status inc: %q recomputed %v\nfresh: %q\n", r2.Status, r2.Recomputed, translate.Translate(in2).Status)
}
