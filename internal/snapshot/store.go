package snapshot

import (
	"context"
	"errors"
)

// Kind says which snapshot of a cluster is meant.
type Kind string

const (
	// Input is what an agent discovered in its cluster.
	Input Kind = "input"
	// Output is the configuration translated for a cluster.
	Output Kind = "output"
)

// ErrNotFound is returned when a store holds no snapshot or resource under the asked name.
var ErrNotFound = errors.New("not found")

// ErrUnavailable wraps store errors that are worth retrying (the backend is unreachable).
var ErrUnavailable = errors.New("store unavailable")

// ErrFenced is returned by writes of a server that no longer holds the global lock: they
// were refused, not lost, and retrying them will not help.
var ErrFenced = errors.New("write fenced: this server does not hold the global lock")

// Store persists snapshots per cluster and the configuration resources applied through the
// API. Implementations are safe for concurrent use. Snapshots handed to Put are immutable and
// may be retained; snapshots returned by Get must not be modified.
type Store interface {
	// Get returns the snapshot of kind for cluster or ErrNotFound.
	Get(ctx context.Context, kind Kind, cluster string) (*Snapshot, error)
	// Put stores the snapshot of kind for cluster, replacing the previous one.
	Put(ctx context.Context, kind Kind, cluster string, s *Snapshot) error
	// Delete removes the snapshot of kind for cluster; deleting a missing one is not an error.
	Delete(ctx context.Context, kind Kind, cluster string) error
	// Write applies a batch of Puts and Deletes in order, in one round trip to the backend
	// (one bolt transaction, one Redis pipeline), and returns one error per item, nil for an
	// item that was stored. An item's error does not undo the others: a refused (ErrFenced)
	// or failed item leaves what the other items wrote in place.
	Write(ctx context.Context, batch []Write) []error
	// List returns every stored snapshot of kind by cluster name.
	List(ctx context.Context, kind Kind) (map[string]*Snapshot, error)
	// Index returns the content hash of every stored snapshot of kind by cluster name,
	// cheaply, so replicas can notice what others wrote.
	Index(ctx context.Context, kind Kind) (map[string]string, error)

	// PutConfig stores a configuration resource (its key and canonical JSON body).
	PutConfig(ctx context.Context, r Resource) error
	// DeleteConfig removes a configuration resource by key; a missing key is ErrNotFound.
	DeleteConfig(ctx context.Context, key string) error
	// ListConfig returns every configuration resource and a revision that changes whenever
	// the set changes (replicas poll it to notice changes made elsewhere).
	ListConfig(ctx context.Context) ([]Resource, uint64, error)
	// ConfigRevision returns the current configuration revision cheaply.
	ConfigRevision(ctx context.Context) (uint64, error)

	// Ping checks that the backend is reachable.
	Ping(ctx context.Context) error
}

// Write is one item of a Store.Write batch: Snap becomes the snapshot of Kind for Cluster, or,
// when Snap is nil, that snapshot is deleted.
type Write struct {
	Kind    Kind
	Cluster string
	Snap    *Snapshot
}

// WriteEach applies a batch item by item with Put and Delete: the Write of a store that has
// no cheaper way (memory) and of wrappers around a store.
func WriteEach(ctx context.Context, s Store, batch []Write) []error {
	errs := make([]error, len(batch))
	for i, w := range batch {
		if w.Snap == nil {
			errs[i] = s.Delete(ctx, w.Kind, w.Cluster)
		} else {
			errs[i] = s.Put(ctx, w.Kind, w.Cluster, w.Snap)
		}
	}
	return errs
}
