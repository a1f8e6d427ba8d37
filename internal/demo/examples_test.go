package demo

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite examples/two-clusters from the demo's resources")

// ExamplePorts are the fixed ports of examples/two-clusters, which the README's "Running it
// by hand" uses: blue-pod on 10001, green-pod on 10002, local's HTTP gateway on 8080, remote's
// failover gateway on 15443.
var examplePorts = WorldPorts{Blue: 10001, Green: 10002, HTTP: 8080, Failover: 15443}

// TestExamplesAreTheDemoWorld keeps examples/two-clusters identical to what the demo runs (with
// the README's fixed ports), so the files a user copies are the ones the demo test proves.
// Regenerate with: go test ./internal/demo -run TestExamplesAreTheDemoWorld -update
func TestExamplesAreTheDemoWorld(t *testing.T) {
	root := filepath.Join("..", "..", "examples", "two-clusters")
	want := WorldFiles(examplePorts)
	for rel, content := range want {
		path := filepath.Join(root, rel)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (regenerate with -update)", err)
			continue
		}
		if string(got) != content {
			t.Errorf("%s differs from the demo's resources (regenerate with -update)", path)
		}
	}
	// No stray files: every file under examples/two-clusters is one the demo writes.
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if _, ok := want[filepath.ToSlash(rel)]; !ok && rel != "README.md" {
			t.Errorf("%s is not a file of the demo's world", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
