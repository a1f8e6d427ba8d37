// Package chartstest renders meshrelay's Helm charts (the embedded files of package charts)
// the way `helm template` does, with Helm's own Go SDK, so that tests can check what the
// charts produce: the arguments they pass to the binary, the RBAC they grant, the Services
// they expose. Tests anywhere in the module (the Kubernetes end-to-end tests that run the
// agent with the chart's RBAC) render the same bytes a user installs. Only tests import it:
// the product binary runs the helm binary instead of linking Helm (see internal/register).
package chartstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/charts"
)

// Load loads the named chart (Server or Agent) from the embedded files, and the files the
// chart links to in the repository (linkedFiles).
func Load(name string) (*chart.Chart, error) {
	if err := charts.Check(name); err != nil {
		return nil, err
	}
	var bufs []*archive.BufferedFile
	err := fs.WalkDir(charts.FS(), name, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(charts.FS(), p)
		if err != nil {
			return err
		}
		bufs = append(bufs, &archive.BufferedFile{Name: strings.TrimPrefix(p, name+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read chart %s: %w", name, err)
	}
	linked, err := linkedFiles(name)
	if err != nil {
		return nil, fmt.Errorf("read chart %s: %w", name, err)
	}
	ch, err := loader.LoadFiles(append(bufs, linked...))
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", name, err)
	}
	return ch, nil
}

// linkedFiles returns the chart's files that are symbolic links to files elsewhere in the
// repository (files/telemetry-gateway.yaml to examples/telemetry/): go:embed leaves links
// out, helm follows them. They are read from the chart's directory in the source tree, found
// from the working directory up (tests run inside the module).
func linkedFiles(name string) ([]*archive.BufferedFile, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "charts", name, "Chart.yaml")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, fmt.Errorf("no charts/%s/Chart.yaml above the working directory: the chart's linked files are read from the source tree", name)
		}
		dir = parent
	}
	dir = filepath.Join(dir, "charts", name)
	var bufs []*archive.BufferedFile
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("linked file: %w", err)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		bufs = append(bufs, &archive.BufferedFile{Name: filepath.ToSlash(rel), Data: data})
		return nil
	})
	return bufs, err
}

// Options say what a chart is rendered for.
type Options struct {
	// ReleaseName is the Helm release name; empty means the chart's name, so the objects are
	// called meshrelay-server and meshrelay-agent, as docs/kubernetes.md installs them.
	ReleaseName string
	// Namespace is the release namespace; empty means "meshrelay-system".
	Namespace string
	// Values override the chart's values.yaml (nested maps, as `helm --values` would give).
	Values map[string]any
}

// Object is one rendered Kubernetes object.
type Object struct {
	Source     string // template (or crds/ file) it came from, e.g. "templates/deployment.yaml"
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	JSON       []byte // the object as JSON
}

// Into decodes the object into v (a k8s.io/api type, say), refusing fields v does not
// have, so a misspelled field in a template is an error rather than silently dropped.
func (o Object) Into(v any) error {
	dec := json.NewDecoder(bytes.NewReader(o.JSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s %s from %s: %w", o.Kind, o.Name, o.Source, err)
	}
	return nil
}

// Rendered is a rendered chart.
type Rendered struct {
	// Objects are the rendered templates' objects, ordered by template file, then document.
	Objects []Object
	// CRDs are the chart's crds/ files (Helm installs them before the templates, unrendered).
	CRDs []Object
	// Notes is the rendered NOTES.txt.
	Notes string
}

// Get returns the object of kind and name, or false.
func (r *Rendered) Get(kind, name string) (Object, bool) {
	for _, o := range r.Objects {
		if o.Kind == kind && o.Name == name {
			return o, true
		}
	}
	return Object{}, false
}

// OfKind returns the objects of kind, in order.
func (r *Rendered) OfKind(kind string) []Object {
	var out []Object
	for _, o := range r.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// Render renders the named chart like `helm template` (no cluster: lookup finds nothing), with
// the chart's values.schema.json when it has one, failing on references to values that do not
// exist (strict mode).
func Render(name string, opts Options) (*Rendered, error) {
	ch, err := Load(name)
	if err != nil {
		return nil, err
	}
	if opts.ReleaseName == "" {
		opts.ReleaseName = name
	}
	if opts.Namespace == "" {
		opts.Namespace = "meshrelay-system"
	}
	vals := opts.Values
	if vals == nil {
		vals = map[string]any{}
	}
	rel := chartcommon.ReleaseOptions{Name: opts.ReleaseName, Namespace: opts.Namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, rel, chartcommon.DefaultCapabilities.Copy(), false)
	if err != nil {
		return nil, fmt.Errorf("values of %s: %w", name, err)
	}
	out, err := engine.Engine{Strict: true}.Render(ch, top)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	r := &Rendered{}
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		src := strings.TrimPrefix(k, ch.Name()+"/")
		if path.Base(src) == "NOTES.txt" {
			r.Notes = out[k]
			continue
		}
		objs, err := decode(src, out[k])
		if err != nil {
			return nil, err
		}
		r.Objects = append(r.Objects, objs...)
	}
	for _, f := range ch.CRDObjects() {
		objs, err := decode(f.Filename, string(f.File.Data))
		if err != nil {
			return nil, err
		}
		r.CRDs = append(r.CRDs, objs...)
	}
	return r, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// decode splits a manifest into its documents and reads each one's identity.
func decode(src, manifest string) ([]Object, error) {
	var out []Object
	for i, doc := range docSeparator.Split(manifest, -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s document %d is not YAML: %w", src, i, err)
		}
		if string(js) == "null" {
			continue // empty or comments only
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			return nil, fmt.Errorf("%s document %d is not an object: %w", src, i, err)
		}
		if meta.APIVersion == "" || meta.Kind == "" || meta.Metadata.Name == "" {
			return nil, fmt.Errorf("%s document %d lacks apiVersion, kind or metadata.name", src, i)
		}
		out = append(out, Object{Source: src, APIVersion: meta.APIVersion, Kind: meta.Kind,
			Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, JSON: js})
	}
	return out, nil
}
