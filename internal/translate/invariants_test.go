package translate_test

// Properties every translation must have, checked on every case under testdata/ (whatever
// the cases are): determinism, independence from input order, incremental translation
// equal to translation from scratch, unregistered inputs ignored, registered clusters
// always answered, and bad input objects reported without breaking the rest.

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// invCase is one testdata case: configuration, inputs and mesh certificates.
type invCase struct {
	name string
	in   translate.Input
}

// invCases loads every directory of testdata/ that has config/ and inputs/.
func invCases(t *testing.T) []invCase {
	t.Helper()
	entries, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	var out []invCase
	for _, e := range entries {
		dir := filepath.Join("testdata", e.Name())
		if !e.IsDir() || !invIsDir(filepath.Join(dir, "config")) || !invIsDir(filepath.Join(dir, "inputs")) {
			continue
		}
		config, errs := resource.LoadPath(filepath.Join(dir, "config"))
		if len(errs) > 0 {
			t.Fatalf("config of %s: %v", e.Name(), errs)
		}
		inputs, errs := resource.LoadInputsDir(filepath.Join(dir, "inputs"))
		if len(errs) > 0 {
			t.Fatalf("inputs of %s: %v", e.Name(), errs)
		}
		certs := map[string]translate.ClusterCert{}
		for c := range translate.Clusters(config) {
			certs[c] = invCert(c, "1")
		}
		out = append(out, invCase{e.Name(), translate.Input{Config: config, Inputs: inputs, Certs: certs}})
	}
	if len(out) == 0 {
		t.Skip("no cases under testdata/")
	}
	return out
}

func invIsDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func invCert(cluster, gen string) translate.ClusterCert {
	return translate.ClusterCert{
		CertPEM: []byte("-----BEGIN CERTIFICATE-----\n" + cluster + "-" + gen + "\n-----END CERTIFICATE-----\n"),
		KeyPEM:  []byte("-----BEGIN PRIVATE KEY-----\n" + cluster + "-" + gen + "\n-----END PRIVATE KEY-----\n"),
		CAPEM:   []byte("-----BEGIN CERTIFICATE-----\nmesh-ca\n-----END CERTIFICATE-----\n"),
	}
}

// invClone copies an input so that it can be changed without touching the original.
func invClone(in translate.Input) translate.Input {
	return translate.Input{Config: slices.Clone(in.Config), Inputs: maps.Clone(in.Inputs), Certs: maps.Clone(in.Certs)}
}

// invSame fails unless a and b are byte-identical results.
func invSame(t *testing.T, what string, a, b translate.Result) {
	t.Helper()
	if d := invDiff(a, b); d != "" {
		t.Fatalf("%s: %s", what, d)
	}
}

func invDiff(a, b translate.Result) string {
	if !slices.Equal(slices.Sorted(maps.Keys(a.Outputs)), slices.Sorted(maps.Keys(b.Outputs))) {
		return fmt.Sprintf("clusters %v vs %v", slices.Sorted(maps.Keys(a.Outputs)), slices.Sorted(maps.Keys(b.Outputs)))
	}
	for c, ra := range a.Outputs {
		rb := b.Outputs[c]
		if len(ra) != len(rb) {
			return fmt.Sprintf("cluster %s: %d resources vs %d", c, len(ra), len(rb))
		}
		for i := range ra {
			if ra[i].Key != rb[i].Key || ra[i].Hash != rb[i].Hash || !bytes.Equal(ra[i].Body, rb[i].Body) {
				return fmt.Sprintf("cluster %s resource %d: %s %s vs %s %s", c, i, ra[i].Key, ra[i].Hash, rb[i].Key, rb[i].Hash)
			}
		}
	}
	if !slices.Equal(a.Errors, b.Errors) {
		return fmt.Sprintf("errors %q vs %q", a.Errors, b.Errors)
	}
	if len(a.Status) != len(b.Status) {
		return fmt.Sprintf("status %v vs %v", a.Status, b.Status)
	}
	for k, ma := range a.Status {
		if !slices.Equal(ma, b.Status[k]) {
			return fmt.Sprintf("status of %s: %q vs %q", k, ma, b.Status[k])
		}
	}
	return ""
}

// invFingerprint identifies a result's outputs.
func invFingerprint(r translate.Result) string {
	var b strings.Builder
	for _, c := range slices.Sorted(maps.Keys(r.Outputs)) {
		fmt.Fprintf(&b, "%s=%s;", c, snapshot.New(0, 0, r.Outputs[c]).Hash)
	}
	return b.String()
}

func invClusterNames(in translate.Input) []string {
	return slices.Sorted(maps.Keys(translate.Clusters(in.Config)))
}

func TestInvariantEveryRegisteredClusterAnswered(t *testing.T) {
	for _, tc := range invCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			names := invClusterNames(tc.in)
			res := translate.Translate(tc.in)
			if got := slices.Sorted(maps.Keys(res.Outputs)); !slices.Equal(got, names) {
				t.Errorf("outputs for %v, want exactly the registered clusters %v", got, names)
			}
			for c, rs := range res.Outputs {
				if !slices.IsSortedFunc(rs, func(a, b snapshot.Resource) int { return strings.Compare(a.Key, b.Key) }) {
					t.Errorf("cluster %s: resources not sorted by key", c)
				}
				for _, r := range rs {
					if r.Hash != snapshot.HashBytes(r.Body) {
						t.Errorf("cluster %s: %s: hash does not match body", c, r.Key)
					}
				}
				if snapshot.New(0, 0, rs).Len() != len(rs) {
					t.Errorf("cluster %s: duplicate keys in output", c)
				}
			}
		})
	}
}

func TestInvariantDeterministic(t *testing.T) {
	for _, tc := range invCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			want := translate.Translate(tc.in)
			invSame(t, "second translation", want, translate.Translate(tc.in))

			rng := rand.New(rand.NewPCG(3, 5))
			for i := range 10 {
				in := invClone(tc.in)
				rng.Shuffle(len(in.Config), func(i, j int) { in.Config[i], in.Config[j] = in.Config[j], in.Config[i] })
				for c, s := range in.Inputs {
					rs := s.Sorted()
					rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
					in.Inputs[c] = snapshot.New(s.Version+uint64(i), 0, rs)
				}
				invSame(t, fmt.Sprintf("shuffle %d", i), want, translate.Translate(in))
			}
		})
	}
}

// A Translator reuses the outputs of clusters whose digest did not change. Whatever
// sequence of changes it sees, each result must equal a translation from scratch: a digest
// that misses something a plan reads shows up here as a stale output.
func TestInvariantIncrementalEqualsFromScratch(t *testing.T) {
	for _, tc := range invCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			baseline := translate.Translate(tc.in)
			names := invClusterNames(tc.in)
			var others []int // indexes of config objects that are not clusters
			for i, o := range tc.in.Config {
				if o.Kind != v1alpha1.KindKubernetesCluster {
					others = append(others, i)
				}
			}
			rng := rand.New(rand.NewPCG(11, 13))
			tr := translate.NewTranslator()
			cur := invClone(tc.in)
			var recomputed int
			seen := map[string]bool{} // fingerprints of the results, to see that steps change things
			for step := range 200 {
				op := rng.IntN(8)
				c := names[rng.IntN(len(names))]
				switch op {
				case 0: // drop one resource of a cluster's input
					if s := cur.Inputs[c]; s.Len() > 0 {
						rs := s.Sorted()
						i := rng.IntN(len(rs))
						cur.Inputs[c] = snapshot.New(s.Version+1, 0, slices.Delete(rs, i, i+1))
					}
				case 1: // restore a cluster's input
					if s, ok := tc.in.Inputs[c]; ok {
						cur.Inputs[c] = s
					}
				case 2: // the cluster has not reported
					delete(cur.Inputs, c)
				case 3: // drop a configuration object
					if len(others) > 0 {
						drop := tc.in.Config[others[rng.IntN(len(others))]].Key()
						cur.Config = slices.DeleteFunc(cur.Config, func(o resource.Object) bool { return o.Key() == drop })
					}
				case 4: // restore the configuration
					cur.Config = slices.Clone(tc.in.Config)
				case 5: // rotate a cluster's mesh certificate
					cur.Certs[c] = invCert(c, fmt.Sprint(step))
				case 6: // unregister a cluster
					cur.Config = slices.DeleteFunc(cur.Config, func(o resource.Object) bool {
						return o.Kind == v1alpha1.KindKubernetesCluster && o.Name == c
					})
				case 7: // back to the original everything
					cur = invClone(tc.in)
				}
				got := tr.Translate(cur)
				recomputed += len(got.Recomputed)
				seen[invFingerprint(got)] = true
				if d := invDiff(got, translate.Translate(cur)); d != "" {
					t.Fatalf("step %d (op %d on %s): incremental result differs from scratch: %s", step, op, c, d)
				}
				if op == 7 {
					invSame(t, fmt.Sprintf("step %d: back to the original", step), baseline, got)
				}
			}
			if len(seen) < 3 {
				t.Errorf("only %d distinct results in 200 steps: the changes do not exercise the translator", len(seen))
			}
			t.Logf("%d distinct results; %d of %d cluster outputs recomputed", len(seen), recomputed, 200*len(names))
			// Unchanged input: nothing is recomputed.
			tr.Translate(tc.in)
			if again := tr.Translate(tc.in); len(again.Recomputed) != 0 {
				t.Errorf("same input twice: recomputed %v", again.Recomputed)
			}
		})
	}
}

func TestInvariantUnregisteredInputIgnored(t *testing.T) {
	for _, tc := range invCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			want := translate.Translate(tc.in)
			in := invClone(tc.in)
			for c, s := range tc.in.Inputs {
				in.Inputs["ghost-"+c] = s // a copy under a name nobody registered
			}
			in.Inputs["ghost"] = snapshot.New(1, 0, []snapshot.Resource{snapshot.NewResource("Service/x/y", []byte("not json"))})
			got := translate.Translate(in)
			invSame(t, "with unregistered inputs", want, got)
		})
	}
}

func TestInvariantClusterWithoutInputGetsOutput(t *testing.T) {
	for _, tc := range invCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range invClusterNames(tc.in) {
				in := invClone(tc.in)
				delete(in.Inputs, c)
				res := translate.Translate(in)
				if _, ok := res.Outputs[c]; !ok {
					t.Errorf("cluster %s without input has no output", c)
				}
			}
			in := invClone(tc.in)
			in.Inputs = nil
			if res := translate.Translate(in); len(res.Outputs) != len(invClusterNames(tc.in)) {
				t.Errorf("no inputs at all: outputs for %d clusters, want %d", len(res.Outputs), len(invClusterNames(tc.in)))
			}
		})
	}
}

// An input object that does not decode is reported, names its cluster, and changes nothing
// else.
func TestInvariantBadInputObjectIsolated(t *testing.T) {
	bad := []snapshot.Resource{
		snapshot.NewResource("Service/shop/garbage", []byte("this is not json")),
		snapshot.NewResource("Service/shop/broken", []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"broken","namespace":"shop"},"spec":{"ports":"nope"}}`)),
		snapshot.NewResource("EndpointSlice/shop/broken-1", []byte(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"broken-1","namespace":"shop","labels":{"kubernetes.io/service-name":"broken"}},"endpoints":{"a":1}}`)),
	}
	for _, tc := range invCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			want := translate.Translate(tc.in)
			c := invClusterNames(tc.in)[0]
			in := invClone(tc.in)
			in.Inputs[c] = snapshot.New(9, 0, append(in.Inputs[c].Sorted(), bad...))
			got := translate.Translate(in)
			for _, r := range bad {
				found := false
				for _, e := range got.Errors {
					if strings.Contains(e, c) && (strings.Contains(e, r.Key) || strings.Contains(e, r.Key[strings.LastIndex(r.Key, "/")+1:])) {
						found = true
					}
				}
				for k, msgs := range got.Status {
					if strings.Contains(k, r.Key[strings.LastIndex(r.Key, "/")+1:]) && len(msgs) > 0 {
						found = true
					}
				}
				if !found {
					t.Errorf("%s in cluster %s is not reported: errors %q status %v", r.Key, c, got.Errors, got.Status)
				}
			}
			got.Errors, got.Status = want.Errors, want.Status
			invSame(t, "outputs with bad objects added", want, got)
		})
	}
}
