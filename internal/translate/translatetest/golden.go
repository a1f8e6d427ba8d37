// Package translatetest loads the translation cases of internal/translate/testdata and writes
// and compares outputs in their golden-file format, for every test that uses those cases.
package translatetest

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// Dump renders outputs (each cluster's resources sorted by key), the problems per resource
// and the translation errors in the golden-file format.
func Dump(outputs map[string][]snapshot.Resource, status map[string][]string, errors []string) ([]byte, error) {
	var b bytes.Buffer
	clusters := make([]string, 0, len(outputs))
	for c := range outputs {
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	for _, c := range clusters {
		fmt.Fprintf(&b, "# ===== cluster %s: %d resources\n", c, len(outputs[c]))
		for _, r := range outputs[c] {
			js, err := envoyres.JSON(r)
			if err != nil {
				return nil, fmt.Errorf("%s of cluster %s: %w", r.Key, c, err)
			}
			y, err := yaml.JSONToYAML(js)
			if err != nil {
				return nil, fmt.Errorf("%s of cluster %s: %w", r.Key, c, err)
			}
			fmt.Fprintf(&b, "---\n# %s\n%s", r.Key, y)
		}
	}
	fmt.Fprintf(&b, "# ===== status\n")
	keys := make([]string, 0, len(status))
	for k := range status {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, m := range status[k] {
			fmt.Fprintf(&b, "# %s: %s\n", k, m)
		}
	}
	for _, e := range errors {
		fmt.Fprintf(&b, "# error: %s\n", e)
	}
	return b.Bytes(), nil
}

// FirstDiff describes the first line where got differs from want.
func FirstDiff(want, got string) string {
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

// Certs are fixed stand-ins for the mesh identities the server issues to clusters; the
// translator only places the bytes, so fixed text keeps golden files stable.
func Certs(clusters ...string) map[string]translate.ClusterCert {
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

// LoadCase reads a testdata case: <dir>/config (the management server's configuration) and
// <dir>/inputs/<cluster>/ (each cluster's input), with Certs for every registered cluster.
func LoadCase(t testing.TB, dir string) translate.Input {
	t.Helper()
	config, errs := resource.LoadPath(filepath.Join(dir, "config"))
	if len(errs) > 0 {
		t.Fatalf("config of %s: %v", dir, errs)
	}
	inputs, errs := resource.LoadInputsDir(filepath.Join(dir, "inputs"))
	if len(errs) > 0 {
		t.Fatalf("inputs of %s: %v", dir, errs)
	}
	var clusters []string
	for c := range translate.Clusters(config) {
		clusters = append(clusters, c)
	}
	return translate.Input{Config: config, Inputs: inputs, Certs: Certs(clusters...)}
}
