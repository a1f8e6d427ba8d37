// Package sink applies an agent's output snapshot to its cluster. Dir writes
// Kubernetes-shaped YAML files, Kube applies them server-side, and Split routes an output
// between them and the xDS server, with the deletion guard's policy (split.go).
package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/atomicfile"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Sink makes a cluster match an output snapshot.
type Sink interface {
	// Apply makes the cluster hold exactly the resources of s.
	Apply(ctx context.Context, s *snapshot.Snapshot) error
}

// Marker is the first line of every file Dir writes. Only files starting with it are ever
// replaced silently or removed.
const Marker = "# managed by meshrelay agent; do not edit"

var managedName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*\.yaml$`)

// Dir is a Sink that keeps one YAML file per resource in a directory. Files whose content is
// already right are not rewritten, so re-applying a snapshot (e.g. after an agent restart)
// touches nothing.
type Dir struct {
	dir    string
	logger *slog.Logger
	mu     sync.Mutex // serializes Apply; guards skipped
	// skipped are the Secrets of the last Apply, not written (logged when they change).
	skipped string
}

// NewDir returns a Sink writing into dir, which Apply creates if missing.
func NewDir(dir string, logger *slog.Logger) *Dir {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Dir{dir: dir, logger: logger}
}

// FileName is the file a resource key is written to: "<kind>_<namespace>_<name>.yaml" with
// the kind lowercased ("<kind>__<name>.yaml" for cluster-scoped kinds) and every character
// outside [a-z0-9._-] replaced by '-'.
func FileName(key string) (string, error) {
	kind, ns, name, err := resource.ParseKey(key)
	if err != nil {
		return "", err
	}
	return sanitize(strings.ToLower(kind)) + "_" + sanitize(ns) + "_" + sanitize(name) + ".yaml", nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

// Apply writes the file of every resource of s whose content differs, each atomically, then
// removes the managed files of resources no longer in s. Nothing is written if a resource
// cannot be converted.
func (d *Dir) Apply(ctx context.Context, s *snapshot.Snapshot) error {
	if s == nil {
		return errors.New("sink: nil snapshot")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	want := make(map[string][]byte, s.Len())
	owner := make(map[string]string, s.Len())
	var skipped []string
	for _, r := range s.Sorted() {
		if strings.HasPrefix(r.Key, "Secret/") {
			// Secrets (Istio's cacerts) hold private keys: never written to plain files.
			skipped = append(skipped, r.Key)
			continue
		}
		name, err := FileName(r.Key)
		if err != nil {
			return fmt.Errorf("sink: %w", err)
		}
		if k, dup := owner[name]; dup {
			return fmt.Errorf("sink: resources %s and %s both map to file %s", k, r.Key, filepath.Join(d.dir, name))
		}
		js, err := envoyres.JSON(r)
		if err != nil {
			return fmt.Errorf("sink: %s: %w", filepath.Join(d.dir, name), err)
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return fmt.Errorf("sink: %s: resource %s: %w", filepath.Join(d.dir, name), r.Key, err)
		}
		owner[name], want[name] = r.Key, append([]byte(Marker+"\n"), y...)
	}
	if k := strings.Join(skipped, ","); k != d.skipped {
		d.skipped = k
		if k != "" {
			d.logger.Info("secrets not written to the output directory", "dir", d.dir, "resources", k, "reason", "they hold private keys; only the Kubernetes sink applies them")
		}
	}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return fmt.Errorf("sink: create directory %s: %w", d.dir, err)
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	var written, removed int
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("sink: apply to %s: %w", d.dir, err)
		}
		path := filepath.Join(d.dir, name)
		old, err := os.ReadFile(path)
		if err == nil && bytes.Equal(old, want[name]) {
			continue
		}
		if err == nil && !bytes.HasPrefix(old, []byte(Marker+"\n")) {
			d.logger.Warn("replacing unmanaged file", "file", path, "resource", owner[name])
		}
		if err := atomicfile.Write(path, want[name], 0o644); err != nil {
			return fmt.Errorf("sink: write %s: %w", path, err)
		}
		written++
	}
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("sink: list %s: %w", d.dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.Type().IsRegular() && atomicfile.IsTemp(n): // left by a crash
		case want[n] == nil && d.isManaged(e):
			removed++
		default:
			continue
		}
		if err := os.Remove(filepath.Join(d.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sink: remove %s: %w", filepath.Join(d.dir, n), err)
		}
	}
	if written+removed > 0 {
		if f, err := os.Open(d.dir); err == nil { // make the renames and removals durable
			_ = f.Sync()
			_ = f.Close()
		}
		d.logger.Info("applied snapshot", "dir", d.dir, "version", s.Version, "files", len(want), "written", written, "removed", removed)
	}
	return nil
}

// Files lists the names of the managed files in the directory, sorted.
func (d *Dir) Files() ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("sink: list %s: %w", d.dir, err)
	}
	var out []string
	for _, e := range entries {
		if d.isManaged(e) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// isManaged reports whether e is a regular file named like the sink's files whose first line
// is Marker.
func (d *Dir) isManaged(e fs.DirEntry) bool {
	if !e.Type().IsRegular() || !managedName.MatchString(e.Name()) {
		return false
	}
	f, err := os.Open(filepath.Join(d.dir, e.Name()))
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, len(Marker)+1)
	_, err = io.ReadFull(f, head)
	return err == nil && string(head) == Marker+"\n"
}
