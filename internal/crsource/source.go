// Package crsource is the management server's configuration source in Kubernetes mode: it
// reads meshrelay's custom resources (group meshrelay.io, the 8 kinds of api/kube/v1alpha1)
// in every namespace of the management cluster through controller-runtime's cache, converts
// each into the resource.Object the reconciler translates, and hands the full set to the
// reconciler whenever it changes (as discovery.Dir does for --config-dir). After each
// translation, Status writes every custom resource's status: the Accepted condition (naming
// the field and the reason when the resource is invalid or the translation found problems
// in it), observedGeneration and the clusters it selects.
//
// A custom resource that fails conversion or validation is left out of the set (and
// reported in its status); the others keep flowing.
package crsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/discovery"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// syncWarnAfter is how long Start waits for the first sync before it warns (and keeps
// waiting): missing RBAC or an unreachable API server keep the cache from syncing.
const syncWarnAfter = 30 * time.Second

// ErrCRDsMissing is returned by Start when the API server does not serve meshrelay's custom
// resources.
var ErrCRDsMissing = errors.New("meshrelay CRDs are not installed in the management cluster (install charts/meshrelay-server/crds, or the meshrelay-server chart)")

// Source reads meshrelay's custom resources from an API server. Create it with New and run
// it with Start.
type Source struct {
	cfg      *rest.Config
	scheme   *runtime.Scheme
	log      *slog.Logger
	debounce time.Duration

	mu      sync.Mutex // guards entries, synced and subs
	entries []Entry    // sorted by key
	synced  bool
	subs    []chan struct{}
}

// Entry is one custom resource as last read: the object (with its status, generation and
// resourceVersion) and either the resource it converts to or why it does not.
type Entry struct {
	// Key is the resource key (resource.Key) of the custom resource.
	Key string
	// Kind is the custom resource's kind.
	Kind string
	// Object is the custom resource as the cache holds it; never modify it.
	Object kubev1alpha1.Object
	// Resource is the converted resource when Err is nil.
	Resource resource.Object
	// Err says why the custom resource does not convert or is invalid; it is left out of
	// the configuration.
	Err error
}

// Option configures a Source.
type Option func(*Source)

// WithDebounce sets how long the Source waits for a burst of changes to settle before it
// rebuilds the set (default 100ms). Under a continuous stream of changes it rebuilds at least
// every ten debounce periods.
func WithDebounce(d time.Duration) Option { return func(s *Source) { s.debounce = d } }

// New returns a Source for the API server of cfg. It does no I/O.
func New(cfg *rest.Config, log *slog.Logger, opts ...Option) (*Source, error) {
	if cfg == nil {
		return nil, errors.New("crsource: nil REST config")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	scheme := runtime.NewScheme()
	if err := kubev1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("crsource: build scheme: %w", err)
	}
	s := &Source{cfg: cfg, scheme: scheme, log: log, debounce: 100 * time.Millisecond}
	for _, o := range opts {
		o(s)
	}
	if s.debounce <= 0 {
		return nil, fmt.Errorf("crsource: debounce must be positive, got %s", s.debounce)
	}
	return s, nil
}

// Scheme returns the scheme of meshrelay's custom resources the Source reads with.
func (s *Source) Scheme() *runtime.Scheme { return s.scheme }

// Entries returns the custom resources as last read, sorted by key; nil before the first
// sync. The entries are shared: never modify them.
func (s *Source) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries
}

// Synced reports whether the first full set was read.
func (s *Source) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Errors returns one message per custom resource left out of the configuration, sorted.
func (s *Source) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.entries {
		if e.Err != nil {
			out = append(out, e.Err.Error())
		}
	}
	return out
}

// Subscribe returns a channel that receives a value after every read of the set (changed or
// not: a status written elsewhere shows up here too).
func (s *Source) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}

// Start watches the custom resources until ctx ends. Once the cache has synced it calls
// emit with the full set, and again (debounced) whenever the set changes; emit must not
// modify the objects. It fails at once when the CRDs are not installed, and returns nil when
// ctx ends. Start must not run twice on one Source.
func (s *Source) Start(ctx context.Context, emit func([]resource.Object)) error {
	c, err := cache.New(s.cfg, cache.Options{Scheme: s.scheme})
	if err != nil {
		return fmt.Errorf("crsource: new cache: %w", err)
	}
	kick := make(chan struct{}, 1)
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		UpdateFunc: func(any, any) { signal() },
		DeleteFunc: func(any) { signal() },
	}
	for _, kind := range kubev1alpha1.Kinds() {
		obj, err := kubev1alpha1.New(kind)
		if err != nil {
			return fmt.Errorf("crsource: %w", err)
		}
		inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("crsource: watch %s: %w: %w", kind, ErrCRDsMissing, err)
			}
			return fmt.Errorf("crsource: watch %s: %w", kind, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("crsource: watch %s: %w", kind, err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- c.Start(ctx) }()
	defer func() { cancel(); <-cacheErr }() // the cache stops before Start returns
	for {
		wctx, wcancel := context.WithTimeout(ctx, syncWarnAfter)
		ok := c.WaitForCacheSync(wctx)
		wcancel()
		if ok {
			break
		}
		select {
		case err := <-cacheErr:
			cacheErr <- err // for the deferred receive
			if err != nil {
				return fmt.Errorf("crsource: cache: %w", err)
			}
			return nil
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("custom resources not synced yet; still waiting (is the API server reachable, and may this identity list and watch meshrelay.io resources?)",
			"waited", syncWarnAfter)
	}

	var last []resource.Object
	first := true
	rebuild := func() {
		objs, err := s.read(ctx, c)
		if err != nil {
			s.log.Warn("read custom resources from the cache failed", "error", err)
			return
		}
		if first || !discovery.Equal(objs, last) {
			first = false
			last = objs
			emit(objs)
		}
	}
	rebuild()
	s.log.Info("custom resources synced", "resources", len(last))

	deb := discovery.NewDebounce(s.debounce)
	defer deb.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-cacheErr:
			cacheErr <- err
			if err != nil {
				return fmt.Errorf("crsource: cache: %w", err)
			}
			return nil
		case <-kick:
			deb.Changed()
		case <-deb.C():
			deb.Fired()
			rebuild()
		}
	}
}

// read lists every custom resource from the cache, converts those that changed since the
// last read and publishes the entries; it returns the valid resources sorted by key.
func (s *Source) read(ctx context.Context, c client.Reader) ([]resource.Object, error) {
	s.mu.Lock()
	prev := make(map[string]Entry, len(s.entries))
	for _, e := range s.entries {
		prev[e.Key] = e
	}
	s.mu.Unlock()

	var entries []Entry
	for _, kind := range kubev1alpha1.Kinds() {
		list, err := kubev1alpha1.NewList(kind)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		if err := c.List(ctx, list); err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		for _, it := range items {
			cr, ok := it.(kubev1alpha1.Object)
			if !ok {
				return nil, fmt.Errorf("list %s: unexpected item %T", kind, it)
			}
			key := resource.Key(kind, cr.GetNamespace(), cr.GetName())
			if p, ok := prev[key]; ok && p.Object.GetUID() == cr.GetUID() && p.Object.GetResourceVersion() == cr.GetResourceVersion() {
				entries = append(entries, p)
				continue
			}
			e := Entry{Key: key, Kind: kind, Object: cr}
			e.Resource, e.Err = Convert(cr)
			entries = append(entries, e)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key < entries[j].Key })
	objs := make([]resource.Object, 0, len(entries))
	for _, e := range entries {
		old, had := prev[e.Key]
		switch {
		case e.Err == nil && had && old.Err != nil:
			s.log.Info("custom resource valid again", "resource", e.Key)
		case e.Err != nil && (!had || old.Err == nil || old.Err.Error() != e.Err.Error()):
			s.log.Warn("invalid custom resource left out of the configuration", "resource", e.Key,
				"generation", e.Object.GetGeneration(), "error", e.Err)
		}
		if e.Err == nil {
			objs = append(objs, e.Resource)
		}
	}
	s.mu.Lock()
	s.entries, s.synced = entries, true
	subs := s.subs
	s.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return objs, nil
}

// Convert turns a custom resource into the resource the reconciler translates, through
// api/kube/v1alpha1's ToObject and internal/resource's decoding and validation: the same
// checks and the same canonical bytes as a YAML file of the resource would get (but for
// apiVersion, always meshrelay.io/v1alpha1). A *resource.FieldError (possibly several,
// joined) names the field of an invalid resource.
func Convert(cr kubev1alpha1.Object) (resource.Object, error) {
	v, err := kubev1alpha1.ToObject(cr)
	if err != nil {
		return resource.Object{}, fmt.Errorf("convert %s %s: %w", kindName(cr), namespacedName(cr), err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return resource.Object{}, fmt.Errorf("convert %s %s: %w", kindName(cr), namespacedName(cr), err)
	}
	o, err := resource.Decode(js)
	if err != nil {
		return o, err
	}
	o.Source = "Kubernetes custom resource " + kindName(cr) + " " + namespacedName(cr)
	return o, nil
}

func kindName(cr kubev1alpha1.Object) string {
	if k := cr.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	return fmt.Sprintf("%T", cr)
}

func namespacedName(cr kubev1alpha1.Object) string {
	return types.NamespacedName{Namespace: cr.GetNamespace(), Name: cr.GetName()}.String()
}

// FieldMessages renders a conversion or validation error for a status message: "field:
// reason" for every field error (without the resource's name, which the status belongs to),
// joined with "; ".
func FieldMessages(err error) string {
	var msgs []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *resource.FieldError
		if errors.As(err, &fe) {
			if fe.Field != "" {
				msgs = append(msgs, fe.Field+": "+fe.Reason)
			} else {
				msgs = append(msgs, fe.Reason)
			}
			return
		}
		msgs = append(msgs, err.Error())
	}
	walk(err)
	return strings.Join(msgs, "; ")
}
