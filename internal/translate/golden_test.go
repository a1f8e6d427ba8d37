package translate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/translate/translatetest"
)

// loadCase reads testdata/<name>.
func loadCase(t *testing.T, name string) translate.Input {
	t.Helper()
	return translatetest.LoadCase(t, filepath.Join("testdata", name))
}

// dump renders a result as YAML, cluster by cluster, then the status.
func dump(t *testing.T, res translate.Result) []byte {
	t.Helper()
	b, err := translatetest.Dump(res.Outputs, res.Status, res.Errors)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden.yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/translate -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s (review, then regenerate with -update):\n%s", path, translatetest.FirstDiff(string(want), string(got)))
	}
}

func TestGolden(t *testing.T) {
	for _, name := range ptCases {
		t.Run(name, func(t *testing.T) {
			in := loadCase(t, name)
			res := translate.Translate(in)
			if len(res.Errors) > 0 {
				t.Fatalf("translation errors: %v", res.Errors)
			}
			golden(t, name, dump(t, res))
		})
	}
}

// On Istio a FailoverScheme adds the primary's remote gateways as WorkloadEntries its
// Service selects; another Service whose selector is part of the primary's selects them too,
// and the scheme's status says so.
func TestFailoverSchemeNotesServicesSelectingItsWorkloadEntries(t *testing.T) {
	in := loadCase(t, "seed003")
	wide := snapshot.NewResource(resource.Key("Service", "default", "bluegreen"),
		[]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"bluegreen","namespace":"default"},"spec":{"selector":{"app":"bluegreen"},"ports":[{"name":"color","port":10000}]}}`))
	local := in.Inputs["local"]
	in.Inputs["local"] = snapshot.New(local.Version+1, local.Epoch, append(local.Sorted(), wide))
	res := translate.Translate(in)
	var notes []string
	for _, msgs := range res.Status {
		for _, m := range msgs {
			if strings.Contains(m, "also selects the WorkloadEntries") {
				notes = append(notes, m)
			}
		}
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "Service default/bluegreen") {
		t.Fatalf("notes about Services selecting the WorkloadEntries: %q, want one naming default/bluegreen", notes)
	}
	// Without it, no such note.
	for _, msgs := range translate.Translate(loadCase(t, "seed003")).Status {
		for _, m := range msgs {
			if strings.Contains(m, "also selects the WorkloadEntries") {
				t.Fatalf("unexpected note %q", m)
			}
		}
	}
}
