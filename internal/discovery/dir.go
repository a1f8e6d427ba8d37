package discovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/meshrelay/meshrelay/internal/resource"
)

// Dir is a Source that watches a directory tree of Kubernetes-shaped YAML manifests
// (Services, EndpointSlices and meshrelay's own kinds). Hidden files and directories are
// ignored. A file that fails to parse keeps contributing its last good objects, so a bad
// edit never removes what was running; Errors reports such files.
type Dir struct {
	dir      string
	logger   *slog.Logger
	debounce time.Duration
	resync   time.Duration

	mu   sync.Mutex
	errs map[string]string // relative file path → error message
	// appeared counts errors that appeared or changed (ErrorsAppeared); guarded by mu.
	appeared uint64
}

// DirOption configures a Dir.
type DirOption func(*Dir)

// WithDebounce sets how long Dir waits for a burst of file events to settle before re-reading
// (default 100ms). Under a continuous stream of events it re-reads at least every ten
// debounce periods.
func WithDebounce(d time.Duration) DirOption { return func(x *Dir) { x.debounce = d } }

// WithResync sets the interval of full re-reads that catch missed file events (default 30s;
// zero or less disables them).
func WithResync(d time.Duration) DirOption { return func(x *Dir) { x.resync = d } }

// NewDir returns a Source reading the manifests under dir. It does no I/O.
func NewDir(dir string, logger *slog.Logger, opts ...DirOption) *Dir {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Dir{dir: dir, logger: logger, debounce: 100 * time.Millisecond, resync: 30 * time.Second}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Errors returns the current errors of unreadable or invalid files, sorted; each names its
// file (relative to the directory), or the directory when it cannot be read itself. It is
// safe for concurrent use.
func (d *Dir) Errors() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.errs))
	for _, e := range d.errs {
		out = append(out, e)
	}
	sort.Strings(out)
	return out
}

// Start implements Source. It fails at once if the directory does not exist or cannot be
// watched, and returns nil when ctx ends. Start must not run twice at the same time on one
// Dir. emit must not modify the objects it receives.
func (d *Dir) Start(ctx context.Context, emit func(objs []resource.Object)) error {
	if fi, err := os.Stat(d.dir); err != nil {
		return fmt.Errorf("discovery: manifest directory %s: %w", d.dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("discovery: manifest directory %s: not a directory", d.dir)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("discovery: watch %s: %w", d.dir, err)
	}
	defer w.Close()
	if err := w.Add(d.dir); err != nil {
		return fmt.Errorf("discovery: watch %s: %w", d.dir, err)
	}
	s := &scanner{d: d, w: w, good: map[string][]resource.Object{}, addFailed: map[string]bool{}}
	last, err := s.read()
	if err != nil {
		return fmt.Errorf("discovery: read manifest directory %s: %w", d.dir, err)
	}
	emit(last)

	refresh := func() {
		objs, err := s.read()
		if err != nil {
			// The objects last read stay: an unreadable directory never removes what runs.
			d.setDirError(err) // before the log line, so whoever reads the log sees it in Errors
			d.logger.Warn("read manifest directory failed; keeping the objects last read", "dir", d.dir, "error", err)
			return
		}
		changed := !Equal(objs, last)
		if changed {
			last = objs
			emit(objs)
		}
		d.logger.Debug("manifests read", "dir", d.dir, "objects", len(objs), "changed", changed)
	}
	var tick <-chan time.Time
	if d.resync > 0 {
		t := time.NewTicker(d.resync)
		defer t.Stop()
		tick = t.C
	}
	deb := NewDebounce(d.debounce)
	defer deb.Stop()
	schedule := deb.Changed
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("discovery: watcher of %s closed", d.dir)
			}
			if resource.IsManifest(ev.Name) || ev.Has(fsnotify.Create|fsnotify.Remove|fsnotify.Rename) {
				schedule()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("discovery: watcher of %s closed", d.dir)
			}
			d.logger.Warn("file watch error", "dir", d.dir, "error", err)
			schedule() // e.g. an overflow: events were lost
		case <-deb.C():
			deb.Fired()
			refresh()
		case <-tick:
			refresh()
		}
	}
}

// dirError is the key in errs of an error reading the directory itself.
const dirError = "."

// setDirError records that the directory itself could not be read; the next good read
// clears it.
func (d *Dir) setDirError(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	errs := make(map[string]string, len(d.errs)+1)
	for f, e := range d.errs {
		errs[f] = e
	}
	errs[dirError] = "manifest directory unreadable: " + err.Error()
	if d.errs[dirError] != errs[dirError] {
		d.appeared++
	}
	d.errs = errs
}

// ErrorsAppeared returns how many errors appeared (or changed) since the Dir was made: a
// file that became invalid, an unreadable directory. It is safe for concurrent use.
func (d *Dir) ErrorsAppeared() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.appeared
}

// scanner holds the state of one Start call.
type scanner struct {
	d         *Dir
	w         *fsnotify.Watcher
	good      map[string][]resource.Object // relative file path → last good objects
	addFailed map[string]bool              // directories whose watch failed (warned once)
}

// read walks the tree (watching every directory it finds), parses every manifest and
// returns the current set. It fails only if the root cannot be read.
func (s *scanner) read() ([]resource.Object, error) {
	root := s.d.dir
	var files []string
	dirErrs := map[string]error{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			if !errors.Is(err, fs.ErrNotExist) { // else removed while we walked
				dirErrs[p] = err
			}
			return nil
		}
		if !e.IsDir() {
			if resource.IsManifest(p) {
				files = append(files, p)
			}
			return nil
		}
		if p != root && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		if err := s.w.Add(p); err != nil && !s.addFailed[p] {
			s.addFailed[p] = true
			s.d.logger.Warn("cannot watch directory", "dir", p, "error", err)
		} else if err == nil {
			delete(s.addFailed, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	next := map[string][]resource.Object{}
	errs := map[string]string{}
	var all []resource.Object
	for p, err := range dirErrs { // unreadable directory: keep what its files had
		r := s.rel(p)
		errs[r] = fmt.Sprintf("%s: %v", r, err)
		for f, objs := range s.good {
			if strings.HasPrefix(f, r+string(filepath.Separator)) {
				next[f] = objs
				all = append(all, objs...)
			}
		}
	}
	for _, p := range files {
		r := s.rel(p)
		if _, done := next[r]; done {
			continue
		}
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed while we walked
		}
		var objs []resource.Object
		var msgs []string
		if err != nil {
			msgs = []string{fmt.Sprintf("%s: %v", r, err)}
		} else {
			var perrs []error
			objs, perrs = resource.Parse(r, data)
			for _, e := range perrs {
				msgs = append(msgs, e.Error())
			}
			for i := range objs {
				objs[i].Source = p // the full path, so that messages say which file to edit
			}
		}
		if len(msgs) == 0 {
			next[r] = objs
		} else {
			errs[r] = strings.Join(msgs, "; ")
			if old, ok := s.good[r]; ok {
				next[r], objs = old, old
			}
		}
		all = append(all, objs...)
	}
	s.good = next
	s.setErrors(errs)
	return resource.Dedupe(all), nil
}

func (s *scanner) rel(p string) string {
	if r, err := filepath.Rel(s.d.dir, p); err == nil {
		return r
	}
	return p
}

// setErrors publishes the file errors, logging those that appeared, changed or cleared.
func (s *scanner) setErrors(errs map[string]string) {
	s.d.mu.Lock()
	prev := s.d.errs
	s.d.errs = errs
	for f, e := range errs {
		if prev[f] != e {
			s.d.appeared++
		}
	}
	s.d.mu.Unlock()
	for f, e := range errs {
		if prev[f] != e {
			_, kept := s.good[f]
			s.d.logger.Warn("invalid manifest", "file", f, "error", e, "kept_previous", kept)
		}
	}
	for f := range prev {
		if _, ok := errs[f]; !ok {
			s.d.logger.Info("manifest error cleared", "file", f)
		}
	}
}
