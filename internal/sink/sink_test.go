package sink

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

const manifests = `apiVersion: v1
kind: Service
metadata: {name: a, namespace: web, labels: {app: a}}
spec: {ports: [{port: 80, targetPort: 8080, name: http}], selector: {app: a}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: web, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
ports: [{port: 8080, name: http}]
---
apiVersion: meshrelay.io/v1alpha1
kind: KubernetesCluster
metadata: {name: local}
spec: {clusterDomain: cluster.local}
`

// snap builds a snapshot from YAML manifests.
func snap(t *testing.T, version uint64, yml string) *snapshot.Snapshot {
	t.Helper()
	objs, errs := resource.Parse("test", []byte(yml))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var rs []snapshot.Resource
	for _, o := range objs {
		rs = append(rs, o.Resource())
	}
	return snapshot.New(version, 1, rs)
}

func apply(t *testing.T, d *Dir, s *snapshot.Snapshot) {
	t.Helper()
	if err := d.Apply(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func files(t *testing.T, d *Dir) []string {
	t.Helper()
	f, err := d.Files()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// mtimes returns the modification time of every file in dir.
func mtimes(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]time.Time{}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = fi.ModTime()
	}
	return m
}

// age sets every file's modification time an hour back.
func age(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for name := range mtimes(t, dir) {
		if err := os.Chtimes(filepath.Join(dir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFileName(t *testing.T) {
	for key, want := range map[string]string{
		"Service/web/a":                 "service_web_a.yaml",
		"KubernetesCluster//local":      "kubernetescluster__local.yaml",
		"EndpointSlice/web/a-1.x":       "endpointslice_web_a-1.x.yaml",
		"Service/Web/a b/../c":          "service_-eb_a-b-..-c.yaml",
		"VirtualDestination/ns/Reviews": "virtualdestination_ns_-eviews.yaml",
	} {
		if got, err := FileName(key); err != nil || got != want {
			t.Errorf("FileName(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	if _, err := FileName("Service/a"); err == nil {
		t.Error("want an error for an invalid key")
	}
}

func TestApplyWritesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out", "nested")
	d := NewDir(dir, nil)
	s := snap(t, 1, manifests)
	apply(t, d, s)
	want := []string{"endpointslice_web_a-1.yaml", "kubernetescluster__local.yaml", "service_web_a.yaml"}
	if got := files(t, d); !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("dir: %v %v", fi, err)
	}
	var keys []string
	for _, name := range want {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte(Marker+"\n")) {
			t.Errorf("%s lacks the marker line", name)
		}
		objs, errs := resource.Parse(name, data)
		if len(errs) > 0 || len(objs) != 1 {
			t.Fatalf("%s: %d objects, %v", name, len(objs), errs)
		}
		r, ok := s.Resources[objs[0].Key()]
		if !ok || !bytes.Equal(objs[0].Raw, r.Body) {
			t.Errorf("%s: %s round-trips to\n%s\nwant\n%s", name, objs[0].Key(), objs[0].Raw, r.Body)
		}
		keys = append(keys, objs[0].Key())
	}
	slices.Sort(keys)
	if !slices.Equal(keys, s.Keys()) {
		t.Errorf("keys %v, want %v", keys, s.Keys())
	}
}

func TestApplyChangesOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir, nil)
	apply(t, d, snap(t, 1, manifests))
	for name, body := range map[string]string{
		"README":                     "hello",
		"notes.yaml":                 "# my notes\nkind: Service\n", // unmanaged: no marker
		".meshrelay-123.tmp":         "left by a crash",
		"kubernetescluster__x.yaml~": Marker + "\n", // not the naming pattern
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	age(t, dir)
	before := mtimes(t, dir)

	// Service a changes its port, the EndpointSlice goes away, the cluster is untouched.
	next := strings.Replace(manifests[:strings.Index(manifests, "---")], "port: 80,", "port: 81,", 1) +
		manifests[strings.LastIndex(manifests, "---"):]
	apply(t, d, snap(t, 2, next))
	after := mtimes(t, dir)
	if _, ok := after["endpointslice_web_a-1.yaml"]; ok {
		t.Error("removed resource's file is still there")
	}
	if _, ok := after[".meshrelay-123.tmp"]; ok {
		t.Error("stale temporary file is still there")
	}
	if after["service_web_a.yaml"].Equal(before["service_web_a.yaml"]) {
		t.Error("changed resource's file was not rewritten")
	}
	for _, name := range []string{"kubernetescluster__local.yaml", "README", "notes.yaml", "kubernetescluster__x.yaml~"} {
		if !after[name].Equal(before[name]) {
			t.Errorf("%s was touched", name)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "service_web_a.yaml")); !bytes.Contains(data, []byte("port: 81")) {
		t.Errorf("service file:\n%s", data)
	}
	if got, want := files(t, d), []string{"kubernetescluster__local.yaml", "service_web_a.yaml"}; !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}

	// The same snapshot again, also from a new Dir (an agent restart), rewrites nothing.
	age(t, dir)
	before = mtimes(t, dir)
	apply(t, d, snap(t, 2, next))
	apply(t, NewDir(dir, nil), snap(t, 3, next))
	if after := mtimes(t, dir); !maps(after, before) {
		t.Errorf("re-applying changed mtimes: %v -> %v", before, after)
	}
}

func maps(a, b map[string]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !b[k].Equal(v) {
			return false
		}
	}
	return true
}

func TestApplyErrors(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir, nil)
	s := snapshot.New(1, 1, []snapshot.Resource{
		snapshot.NewResource("Service/web/a b", []byte(`{"kind":"Service"}`)),
		snapshot.NewResource("Service/web/a-b", []byte(`{"kind":"Service"}`)),
	})
	if err := d.Apply(context.Background(), s); err == nil || !strings.Contains(err.Error(), "service_web_a-b.yaml") {
		t.Errorf("collision: %v", err)
	}
	if err := d.Apply(context.Background(), nil); err == nil {
		t.Error("nil snapshot: want an error")
	}
	// A directory in the way of a file: the error names the file.
	if err := os.Mkdir(filepath.Join(dir, "service_web_a.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := d.Apply(context.Background(), snap(t, 1, manifests))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "service_web_a.yaml")) {
		t.Errorf("blocked file: %v", err)
	}
	if f := files(t, d); len(f) != 2 {
		t.Errorf("files %v", f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewDir(t.TempDir(), nil).Apply(ctx, snap(t, 1, manifests)); err == nil {
		t.Error("cancelled context: want an error")
	}
}

// Secrets (Istio's cacerts holds a CA private key) are never written to plain files.
func TestApplySkipsSecrets(t *testing.T) {
	dir := t.TempDir()
	d := NewDir(dir, nil)
	s := snap(t, 1, manifests+"\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: cacerts, namespace: istio-system}\ndata: {ca-key.pem: a2V5}\n")
	if _, ok := s.Resources["Secret/istio-system/cacerts"]; !ok {
		t.Fatalf("the test snapshot lacks the Secret: %v", s.Keys())
	}
	apply(t, d, s)
	want := []string{"endpointslice_web_a-1.yaml", "kubernetescluster__local.yaml", "service_web_a.yaml"}
	if got := files(t, d); !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v (no Secret)", got, want)
	}
}
