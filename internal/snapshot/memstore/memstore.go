// Package memstore is the in-memory snapshot.Store: the default for a single management
// server. Everything it holds is lost when the process exits.
package memstore

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Store is an in-memory snapshot.Store.
type Store struct {
	mu        sync.RWMutex // guards everything below
	snapshots map[snapshot.Kind]map[string]*snapshot.Snapshot
	config    map[string]snapshot.Resource
	rev       uint64
}

var _ snapshot.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		snapshots: map[snapshot.Kind]map[string]*snapshot.Snapshot{},
		config:    map[string]snapshot.Resource{},
	}
}

// Get implements snapshot.Store.
func (s *Store) Get(_ context.Context, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if snap, ok := s.snapshots[kind][cluster]; ok {
		return snap, nil
	}
	return nil, fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, snapshot.ErrNotFound)
}

// Put implements snapshot.Store.
func (s *Store) Put(_ context.Context, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapshots[kind] == nil {
		s.snapshots[kind] = map[string]*snapshot.Snapshot{}
	}
	s.snapshots[kind][cluster] = snap
	return nil
}

// Delete implements snapshot.Store.
func (s *Store) Delete(_ context.Context, kind snapshot.Kind, cluster string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.snapshots[kind], cluster)
	return nil
}

// Write implements snapshot.Store: memory has no round trip to save.
func (s *Store) Write(ctx context.Context, batch []snapshot.Write) []error {
	return snapshot.WriteEach(ctx, s, batch)
}

// List implements snapshot.Store.
func (s *Store) List(_ context.Context, kind snapshot.Kind) (map[string]*snapshot.Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]*snapshot.Snapshot, len(s.snapshots[kind]))
	for k, v := range s.snapshots[kind] {
		out[k] = v
	}
	return out, nil
}

// Index implements snapshot.Store.
func (s *Store) Index(_ context.Context, kind snapshot.Kind) (map[string]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]string, len(s.snapshots[kind]))
	for k, v := range s.snapshots[kind] {
		out[k] = v.Hash
	}
	return out, nil
}

// PutConfig implements snapshot.Store.
func (s *Store) PutConfig(_ context.Context, r snapshot.Resource) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.config[r.Key]; ok && old.Hash == r.Hash {
		return nil
	}
	s.config[r.Key] = r
	s.rev++
	return nil
}

// DeleteConfig implements snapshot.Store.
func (s *Store) DeleteConfig(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.config[key]; !ok {
		return fmt.Errorf("config resource %s: %w", key, snapshot.ErrNotFound)
	}
	delete(s.config, key)
	s.rev++
	return nil
}

// ListConfig implements snapshot.Store.
func (s *Store) ListConfig(_ context.Context) ([]snapshot.Resource, uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]snapshot.Resource, 0, len(s.config))
	for _, r := range s.config {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, s.rev, nil
}

// ConfigRevision implements snapshot.Store.
func (s *Store) ConfigRevision(_ context.Context) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev, nil
}

// Ping implements snapshot.Store; memory is always reachable.
func (s *Store) Ping(context.Context) error { return nil }
