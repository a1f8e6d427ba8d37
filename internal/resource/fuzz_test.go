package resource_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/resource"
)

// manifestSeeds adds every manifest of the repository's examples and test data (the
// configuration and inputs of the translate golden cases, the seeds' YAML, the examples) as
// YAML and, for single documents, as JSON. The golden outputs are left out: large, and of
// kinds this package does not read.
func manifestSeeds(f *testing.F) {
	f.Helper()
	n := 0
	for _, root := range []string{"../translate/testdata", "../../examples", "../../api/kube/v1alpha1/testdata"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !resource.IsManifest(p) || strings.HasSuffix(p, ".golden.yaml") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			f.Add(b)
			if js, err := yaml.YAMLToJSON(b); err == nil && !bytes.Contains(b, []byte("\n---")) {
				f.Add(js)
			}
			n++
			return nil
		})
		if err != nil {
			f.Fatal(err)
		}
	}
	if n == 0 {
		f.Fatal("no seed manifests found")
	}
}

// FuzzParse decodes YAML and JSON manifests of every kind (what LoadPath, `meshrelay apply`
// and the configuration API read). Whatever the bytes: no panic; every invalid document is
// reported as a DocumentError naming the source, document and line, with a reason; every
// object returned is valid, keyed, and canonical: decoding its canonical JSON again gives
// the same bytes and header, and FromResource reads the same header back.
func FuzzParse(f *testing.F) {
	manifestSeeds(f)
	f.Add([]byte("kind: List\napiVersion: v1\nitems:\n- kind: Service\n  apiVersion: v1\n  metadata: {name: a}\n- 7\n"))
	f.Add([]byte("---\n# only a comment\n---\nkind: Upstream\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, errs := resource.Parse("fuzz.yaml", data)
		for _, err := range errs {
			var de *resource.DocumentError
			if !errors.As(err, &de) || de.Source != "fuzz.yaml" || de.Document < 1 || de.Line < 1 || de.Err == nil {
				t.Fatalf("error %q (%T) does not name its document", err, err)
			}
		}
		for _, o := range objs {
			kind, ns, name, err := resource.ParseKey(o.Key())
			if err != nil || kind != o.Kind || ns != o.Namespace || name != o.Name {
				t.Fatalf("object %s: key %q does not parse back: %v", o, o.Key(), err)
			}
			again, err := resource.Decode(o.Raw)
			if err != nil {
				t.Fatalf("object %s: its canonical JSON does not decode again: %v\n%s", o, err, o.Raw)
			}
			if !bytes.Equal(again.Raw, o.Raw) || again.Key() != o.Key() || again.APIVersion != o.APIVersion {
				t.Fatalf("object %s: decoding is not idempotent:\n%s\n%s", o, o.Raw, again.Raw)
			}
			back, err := resource.FromResource(o.Resource())
			if err != nil || back.Key() != o.Key() || back.APIVersion != o.APIVersion {
				t.Fatalf("object %s: FromResource gives %s, %v", o, back, err)
			}
		}
	})
}
