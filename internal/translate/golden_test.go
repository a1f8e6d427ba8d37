package translate_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/translate/translatetest"
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
