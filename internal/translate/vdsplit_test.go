package translate_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/translate"
)

// assembledAndFull translates in incrementally with tr (assembling VirtualDestination
// upstreams from parts) and from scratch with assembling off (the full path), and returns
// both results.
func assembledAndFull(t *testing.T, tr *translate.Translator, in translate.Input) (assembled, full translate.Result) {
	t.Helper()
	translate.SetAssembly(true)
	assembled = tr.Translate(in)
	translate.SetAssembly(false)
	defer translate.SetAssembly(true)
	return assembled, translate.Translate(in)
}

// Assembling a VirtualDestination upstream from the cluster's own endpoints and the
// remembered others' part gives byte for byte what the full path gives, through random
// changes of the property world (regions, secrets, endpoints, gateways, the
// VirtualDestination and its FailoverPolicy coming and going).
func TestAssembledEqualsFullRandom(t *testing.T) {
	assembled := 0
	for seed := range uint64(6) {
		r := rand.New(rand.NewPCG(seed, 61))
		m := ptNewModel()
		m.vd = true
		tr := translate.NewTranslator()
		var history []string
		for step := range 80 {
			history = append(history, fmt.Sprintf("%d: %s", step, m.change(r)))
			got, want := assembledAndFull(t, tr, m.input(t))
			if d := ptDiff(want, got); d != "" {
				t.Fatalf("seed %d, after\n%s\nassembled differs from the full path: %s", seed, strings.Join(history, "\n"), d)
			}
			assembled += got.Work.VirtualDestinationsAssembled
		}
	}
	if assembled == 0 {
		t.Fatal("no upstream was assembled from a remembered others' part: the test does not test assembling")
	}
}

// churnWorld is n clusters in three regions, each with a failover gateway and service web
// selected by a VirtualDestination, with a FailoverPolicy when failover is set; web's
// endpoints are given (in zone z-a; "!" for not ready, "@" for no zone).
func churnWorld(t testing.TB, failover bool, web [][]string) translate.Input {
	var config []string
	inputs := map[string][]string{}
	for i, addrs := range web {
		c := fmt.Sprintf("c%02d", i)
		config = append(config, ptCluster(c, []string{"east", "west", "north"}[i%3]))
		var eps []string
		for _, a := range addrs {
			zone := ", zone: z-a"
			if strings.HasPrefix(a, "@") {
				a, zone = a[1:], ""
			}
			ready := !strings.HasPrefix(a, "!")
			eps = append(eps, fmt.Sprintf("{addresses: [%q], conditions: {ready: %t}%s}", strings.TrimPrefix(a, "!"), ready, zone))
		}
		svc := "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, labels: {app: web}}\nspec: {ports: [{name: p, port: 8080}]}"
		if len(eps) > 0 {
			svc += "\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\n" +
				"endpoints: [" + strings.Join(eps, ", ") + "]\nports: [{name: p, port: 8080}]"
		}
		inputs[c] = []string{svc, ptGateway(fmt.Sprintf("10.%d.255.1", i), "")}
	}
	config = append(config, ptVD("web", "{labels: {app: web}}"))
	if failover {
		config = append(config, ptFailoverPolicy("locality", "east", "west"))
	}
	return ptInput(t, config, inputs)
}

// Endpoint churn: one cluster's own endpoints change at a time. Each change is assembled
// in that cluster alone (O(own endpoints)) and equals the full path, also when an own
// endpoint takes an address another cluster's gateway has (the full path runs then).
func TestAssembledEqualsFullUnderChurn(t *testing.T) {
	for _, failover := range []bool{true, false} {
		t.Run(fmt.Sprintf("failover=%t", failover), func(t *testing.T) { testAssembledUnderChurn(t, failover) })
	}
}

func testAssembledUnderChurn(t *testing.T, failover bool) {
	const n = 12
	web := make([][]string, n)
	for i := range web {
		web[i] = []string{fmt.Sprintf("10.%d.0.1", i)}
	}
	tr := translate.NewTranslator()
	if got, want := assembledAndFull(t, tr, churnWorld(t, failover, web)); ptDiff(want, got) != "" {
		t.Fatalf("first translation: %s", ptDiff(want, got))
	}
	r := rand.New(rand.NewPCG(7, 7))
	assembled := 0
	for step := range 80 {
		i := r.IntN(n)
		what := ""
		switch r.IntN(7) {
		case 0:
			web[i] = nil
			what = "no endpoints"
		case 1:
			web[i] = []string{fmt.Sprintf("10.%d.255.1", (i+1)%n)} // another cluster's gateway address
			what = "an endpoint at another cluster's gateway address"
		case 2:
			web[i] = []string{fmt.Sprintf("10.%d.0.%d", i, step+2), fmt.Sprintf("!10.%d.1.%d", i, step+2)}
			what = "a ready and a not ready endpoint"
		case 3:
			web[i] = []string{fmt.Sprintf("@10.%d.0.%d", i, step+2)}
			what = "an endpoint without a zone, in its region's gateways' locality"
		default:
			web[i] = []string{fmt.Sprintf("10.%d.0.%d", i, step+2), fmt.Sprintf("10.%d.1.%d", i, step+2)}
			what = "two endpoints"
		}
		got, want := assembledAndFull(t, tr, churnWorld(t, failover, web))
		if d := ptDiff(want, got); d != "" {
			t.Fatalf("step %d, c%02d %s: assembled differs from the full path: %s", step, i, what, d)
		}
		if len(got.Recomputed) > 1 || len(got.Recomputed) == 1 && got.Recomputed[0] != fmt.Sprintf("c%02d", i) {
			t.Fatalf("step %d: recomputed %v, want c%02d at most", step, got.Recomputed, i)
		}
		if what == "two endpoints" && got.Work.VirtualDestinationsAssembled != 1 {
			t.Fatalf("step %d, c%02d %s: %d upstreams assembled from a remembered others' part (planned %d), want 1",
				step, i, what, got.Work.VirtualDestinationsAssembled, got.Work.VirtualDestinationsPlanned)
		}
		assembled += got.Work.VirtualDestinationsAssembled
	}
	if assembled == 0 {
		t.Fatal("nothing assembled")
	}
}

// BenchmarkOwnEndpointChurn: 1,000 clusters behind gateways share a VirtualDestination,
// with a FailoverPolicy or without; each iteration changes the own endpoints of 100 of them, as a
// round of endpoint churn does, and translates.
func BenchmarkOwnEndpointChurn(b *testing.B) {
	for _, mode := range []string{"assembled", "full"} {
		for _, failover := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/failover=%t", mode, failover), func(b *testing.B) {
				translate.SetAssembly(mode == "assembled")
				defer translate.SetAssembly(true)
				t := &testing.T{}
				const n = 1000
				web := make([][]string, n)
				for i := range web {
					web[i] = []string{fmt.Sprintf("10.%d.%d.1", i/250, i%250)}
				}
				tr := translate.NewTranslator()
				tr.Translate(churnWorld(t, failover, web))
				b.ResetTimer()
				for it := range b.N {
					b.StopTimer()
					for k := range 100 {
						i := (it*100 + k) % n
						web[i] = []string{fmt.Sprintf("10.%d.%d.%d", i/250, i%250, 2+it%200)}
					}
					in := churnWorld(t, failover, web)
					b.StartTimer()
					tr.Translate(in)
				}
			})
		}
	}
}

// A cluster without its mesh identity cannot reach the other clusters' gateways: their
// endpoints are left out, and its status says so once per upstream, naming how many and a
// few of them, not once per endpoint (which took quadratic time and thousands of messages at
// a thousand clusters).
func TestMissingIdentityIsOneMessagePerUpstream(t *testing.T) {
	const n = 30
	web := make([][]string, n)
	for i := range web {
		web[i] = []string{fmt.Sprintf("10.%d.0.1", i)}
	}
	in := churnWorld(t, false, web)
	delete(in.Certs, "c07")
	res := translate.Translate(in)
	var msgs, all []string
	for k, m := range res.Status {
		if strings.Contains(k, "c07") {
			all = append(all, m...)
			for _, msg := range m {
				if strings.HasPrefix(msg, "upstream ") {
					msgs = append(msgs, msg)
				}
			}
		}
	}
	if len(msgs) != 1 {
		t.Fatalf("c07's status: %d messages about upstreams, want 1:\n%s", len(msgs), strings.Join(all, "\n"))
	}
	want := fmt.Sprintf("%d endpoints (10.0.255.1:", n-1)
	if !strings.Contains(msgs[0], want) || !strings.Contains(msgs[0], fmt.Sprintf("and %d more)", n-1-3)) || !strings.Contains(msgs[0], "cluster c07 does not have") {
		t.Errorf("c07's status %q does not say %q…, three of them and how many more", msgs[0], want)
	}
	for k, m := range res.Status {
		if !strings.Contains(k, "c07") && len(m) > 0 && strings.Contains(strings.Join(m, " "), "does not have") {
			t.Errorf("%s has a message about missing secrets: %v", k, m)
		}
	}
	for _, r := range res.Outputs["c07"] {
		// Istio's sidecars reach the gateways with Istio's own identity: only Envoy's
		// upstreams leave them out.
		if strings.HasPrefix(r.Key, "Envoy") && strings.Contains(string(r.Body), "10.1.255.1") {
			t.Errorf("c07's output %s still holds another cluster's gateway 10.1.255.1", r.Key)
		}
	}
}
