// Package translatetest writes and compares translation outputs in the golden-file format of
// internal/translate/testdata, for every test that checks outputs against those files.
package translatetest

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/snapshot"
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
			y, err := yaml.JSONToYAML(r.Body)
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
