package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/resource"
)

const wait = 5 * time.Second

func svc(name string, port int) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: web\nspec:\n  ports:\n  - port: %d\n", name, port)
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// logs is a slog.Handler that forwards records to a channel.
type logs chan slog.Record

func (l logs) Enabled(context.Context, slog.Level) bool { return true }
func (l logs) Handle(_ context.Context, r slog.Record) error {
	select {
	case l <- r:
	default:
	}
	return nil
}
func (l logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logs) WithGroup(string) slog.Handler      { return l }

type run struct {
	d     *Dir
	emits chan []resource.Object
	logs  logs
}

// start runs a Dir on dir until the test ends and returns its emits and log records.
func start(t *testing.T, dir string, opts ...DirOption) *run {
	t.Helper()
	r := &run{emits: make(chan []resource.Object, 100), logs: make(logs, 1000)}
	r.d = NewDir(dir, slog.New(r.logs), opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.d.Start(ctx, func(o []resource.Object) { r.emits <- o }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Start: %v", err)
			}
		case <-time.After(wait):
			t.Error("Start did not return after cancel")
		}
	})
	return r
}

// next returns the next emit, failing after a timeout.
func (r *run) next(t *testing.T) []resource.Object {
	t.Helper()
	select {
	case o := <-r.emits:
		return o
	case <-time.After(wait):
		t.Fatal("no emit")
		return nil
	}
}

// log waits for a record with msg whose attributes contain all of want ("key=value").
func (r *run) log(t *testing.T, msg string, want ...string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case rec := <-r.logs:
			var attrs []string
			rec.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
			s := strings.Join(attrs, " ")
			ok := rec.Message == msg
			for _, w := range want {
				ok = ok && strings.Contains(s, w)
			}
			if ok {
				return
			}
		case <-deadline:
			t.Fatalf("no log %q %v", msg, want)
		}
	}
}

func keys(objs []resource.Object) string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Key())
	}
	return strings.Join(ks, ",")
}

func find(objs []resource.Object, key string) (resource.Object, bool) {
	for _, o := range objs {
		if o.Key() == key {
			return o, true
		}
	}
	return resource.Object{}, false
}

func port(t *testing.T, objs []resource.Object, key string) int {
	t.Helper()
	o, ok := find(objs, key)
	if !ok {
		t.Fatalf("%s missing from %s", key, keys(objs))
	}
	var s struct {
		Spec struct{ Ports []struct{ Port int } }
	}
	if err := o.Into(&s); err != nil || len(s.Spec.Ports) == 0 {
		t.Fatalf("%s: %v", key, err)
	}
	return s.Spec.Ports[0].Port
}

func TestInitialEmit(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "b.yaml"), svc("b", 80)+"---\n"+svc("a", 81))
	write(t, filepath.Join(dir, "eps.yml"), `{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"a-1","namespace":"web","labels":{"kubernetes.io/service-name":"a"}},"endpoints":[{"addresses":["10.0.0.1"]}],"ports":[{"port":81}]}`)
	write(t, filepath.Join(dir, "sub", "up.yaml"), "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  name: up\n  namespace: web\nspec: {}\n")
	write(t, filepath.Join(dir, ".hidden", "x.yaml"), svc("hidden", 80))
	write(t, filepath.Join(dir, ".x.yaml"), svc("hidden2", 80))
	write(t, filepath.Join(dir, "README.md"), "not a manifest")
	r := start(t, dir)
	got := keys(r.next(t))
	if want := "EndpointSlice/web/a-1,Service/web/a,Service/web/b,Upstream/web/up"; got != want {
		t.Fatalf("initial emit %s, want %s", got, want)
	}
	if errs := r.d.Errors(); len(errs) != 0 {
		t.Fatalf("errors %v", errs)
	}
}

func TestMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	err := NewDir(dir, nil).Start(context.Background(), func([]resource.Object) { t.Error("emit") })
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("err %v, want one naming %s", err, dir)
	}
}

func TestAddEditRemove(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	if o := r.next(t); len(o) != 0 {
		t.Fatalf("initial emit %s, want empty", keys(o))
	}
	f := filepath.Join(dir, "s.yaml")
	write(t, f, svc("s", 80))
	if o := r.next(t); port(t, o, "Service/web/s") != 80 {
		t.Fatal("want port 80")
	}
	write(t, f, svc("s", 90))
	if o := r.next(t); port(t, o, "Service/web/s") != 90 {
		t.Fatal("want port 90")
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	if o := r.next(t); len(o) != 0 {
		t.Fatalf("after remove %s, want empty", keys(o))
	}
}

func TestMalformedKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, svc("a1", 80)+"---\n"+svc("a2", 80))
	// Never good: contributes its valid documents only.
	write(t, filepath.Join(dir, "c.yaml"), svc("c", 80)+"---\nkind: Deployment\n")
	r := start(t, dir)
	if got := keys(r.next(t)); got != "Service/web/a1,Service/web/a2,Service/web/c" {
		t.Fatalf("initial %s", got)
	}
	if errs := r.d.Errors(); len(errs) != 1 || !strings.Contains(errs[0], "c.yaml") {
		t.Fatalf("errors %v, want c.yaml", errs)
	}
	write(t, a, svc("a1", 99)+"---\nmetadata: [unclosed\n")
	r.log(t, "invalid manifest", "file=a.yaml")
	if errs := r.d.Errors(); len(errs) != 2 || !strings.HasPrefix(errs[0], "a.yaml: document 2") {
		t.Fatalf("errors %v, want a.yaml", errs)
	}
	write(t, filepath.Join(dir, "b.yaml"), svc("b", 80))
	o := r.next(t)
	if got := keys(o); got != "Service/web/a1,Service/web/a2,Service/web/b,Service/web/c" {
		t.Fatalf("after bad edit %s", got)
	}
	if port(t, o, "Service/web/a1") != 80 {
		t.Fatal("a1 changed by a bad edit")
	}
	write(t, a, svc("a1", 99))
	o = r.next(t)
	if got := keys(o); got != "Service/web/a1,Service/web/b,Service/web/c" || port(t, o, "Service/web/a1") != 99 {
		t.Fatalf("after fix %s", got)
	}
	if errs := r.d.Errors(); len(errs) != 1 || !strings.Contains(errs[0], "c.yaml") {
		t.Fatalf("errors %v after fix, want only c.yaml", errs)
	}
}

func TestNewSubdirectory(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	r.next(t)
	write(t, filepath.Join(dir, "x", "y", "s.yaml"), svc("deep", 80))
	if got := keys(r.next(t)); got != "Service/web/deep" {
		t.Fatalf("got %s", got)
	}
	// A later file in the new subdirectory arrives through its watch.
	write(t, filepath.Join(dir, "x", "y", "t.yaml"), svc("deep2", 80))
	if got := keys(r.next(t)); got != "Service/web/deep,Service/web/deep2" {
		t.Fatalf("got %s", got)
	}
}

func TestDebounce(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, WithDebounce(200*time.Millisecond))
	r.next(t)
	for i := range 20 {
		write(t, filepath.Join(dir, fmt.Sprintf("s%02d.yaml", i)), svc(fmt.Sprintf("s%02d", i), 80))
	}
	for n := 1; ; n++ {
		o := r.next(t)
		if len(o) == 20 {
			if n > 3 {
				t.Fatalf("%d emits for a burst of 20 writes", n)
			}
			return
		}
	}
}

func TestTouchDoesNotEmit(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "s.yaml")
	write(t, f, svc("s", 80))
	r := start(t, dir)
	r.next(t)
	now := time.Now()
	if err := os.Chtimes(f, now, now); err != nil {
		t.Fatal(err)
	}
	write(t, f, svc("s", 80))
	r.log(t, "manifests read", "changed=false")
	select {
	case o := <-r.emits:
		t.Fatalf("unchanged content emitted %s", keys(o))
	default:
	}
}

func TestResyncCatchesMissedChanges(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	target := filepath.Join(outside, "s.yaml")
	write(t, target, svc("s", 80))
	if err := os.Symlink(target, filepath.Join(dir, "s.yaml")); err != nil {
		t.Skip(err)
	}
	r := start(t, dir, WithResync(50*time.Millisecond))
	if port(t, r.next(t), "Service/web/s") != 80 {
		t.Fatal("want 80")
	}
	write(t, target, svc("s", 81)) // not watched: only a resync sees it
	if port(t, r.next(t), "Service/web/s") != 81 {
		t.Fatal("want 81")
	}
}

// A directory that goes away is reported at once (log and Errors) and emits nothing, so the
// objects last read stay; when it is back, the next read clears the error.
func TestDirGoneKeepsObjects(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "d")
	write(t, filepath.Join(dir, "s.yaml"), svc("s", 80))
	r := start(t, dir, WithResync(200*time.Millisecond))
	if keys(r.next(t)) != "Service/web/s" {
		t.Fatal("want the Service")
	}
	if err := os.Rename(dir, dir+".moved"); err != nil {
		t.Fatal(err)
	}
	r.log(t, "read manifest directory failed; keeping the objects last read", "dir="+dir)
	if errs := r.d.Errors(); len(errs) != 1 || !strings.Contains(errs[0], dir) {
		t.Errorf("Errors() = %q, want the directory's error", errs)
	}
	select {
	case o := <-r.emits:
		t.Fatalf("emitted %q for a directory that went away", keys(o))
	default:
	}
	if err := os.Rename(dir+".moved", dir); err != nil {
		t.Fatal(err)
	}
	r.log(t, "manifest error cleared")
	if errs := r.d.Errors(); len(errs) != 0 {
		t.Errorf("Errors() = %q after the directory came back", errs)
	}
}
