package translate_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// testCerts are fixed stand-ins for the mesh identities the server issues; the translator
// only places the bytes, so fixed text keeps the golden files stable.
func testCerts(clusters ...string) map[string]translate.ClusterCert {
	out := map[string]translate.ClusterCert{}
	for _, c := range clusters {
		out[c] = translate.ClusterCert{
			CertPEM: []byte("-----BEGIN CERTIFICATE-----\n" + c + "-identity\n-----END CERTIFICATE-----\n"),
			KeyPEM:  []byte("-----BEGIN PRIVATE KEY-----\n" + c + "-key\n-----END PRIVATE KEY-----\n"),
			CAPEM:   []byte("-----BEGIN CERTIFICATE-----\nmesh-ca\n-----END CERTIFICATE-----\n"),
		}
	}
	return out
}

// loadCase reads testdata/<name>/config and testdata/<name>/inputs/<cluster>/.
func loadCase(t *testing.T, name string) translate.Input {
	t.Helper()
	dir := filepath.Join("testdata", name)
	config, errs := resource.LoadPath(filepath.Join(dir, "config"))
	if len(errs) > 0 {
		t.Fatalf("config of %s: %v", name, errs)
	}
	inputs, errs := resource.LoadInputsDir(filepath.Join(dir, "inputs"))
	if len(errs) > 0 {
		t.Fatalf("inputs of %s: %v", name, errs)
	}
	var clusters []string
	for c := range translate.Clusters(config) {
		clusters = append(clusters, c)
	}
	return translate.Input{Config: config, Inputs: inputs, Certs: testCerts(clusters...)}
}

// dump renders a result as YAML, cluster by cluster, then the status.
func dump(t *testing.T, res translate.Result) []byte {
	t.Helper()
	var b bytes.Buffer
	var clusters []string
	for c := range res.Outputs {
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	for _, c := range clusters {
		fmt.Fprintf(&b, "# ===== cluster %s: %d resources\n", c, len(res.Outputs[c]))
		for _, r := range res.Outputs[c] {
			y, err := yaml.JSONToYAML(r.Body)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "---\n# %s\n%s", r.Key, y)
		}
	}
	fmt.Fprintf(&b, "# ===== status\n")
	var keys []string
	for k := range res.Status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, m := range res.Status[k] {
			fmt.Fprintf(&b, "# %s: %s\n", k, m)
		}
	}
	for _, e := range res.Errors {
		fmt.Fprintf(&b, "# error: %s\n", e)
	}
	return b.Bytes()
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
		t.Fatalf("output differs from %s (review, then regenerate with -update):\n%s", path, firstDiff(string(want), string(got)))
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, w, g)
		}
	}
	return "(no difference)"
}

func TestGolden(t *testing.T) {
	for _, name := range []string{"seed003", "vd-failover", "weighted", "missing-destination"} {
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
