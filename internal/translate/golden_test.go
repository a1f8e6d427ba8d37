package translate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

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
