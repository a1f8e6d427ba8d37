package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/meshrelay/meshrelay/internal/kubelease"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
)

// LeaseBackend is a Backend whose leader lease among the replicas of one management
// cluster is a coordination.k8s.io Lease in that cluster, elected with client-go's
// leaderelection; the global active/passive lock, the replica set and the store stay in
// the wrapped Backend (Redis), because they span management clusters. Run its Start beside
// the Coordinator's.
type LeaseBackend struct {
	Backend
	elector *leaderelection.LeaderElector
	id      string
	log     *slog.Logger

	mu      sync.Mutex // guards leading and epoch
	leading bool
	epoch   uint64 // leaderships this replica has started
}

var _ Backend = (*LeaseBackend)(nil)

// NewLeaseBackend wraps b so that the leader is elected with the Lease namespace/name of
// the API server of cfg, under identity id. ttl is the lease duration; a leader that
// cannot renew for two thirds of it stops leading, and candidates retry every fifth of it.
// It does no I/O.
func NewLeaseBackend(b Backend, cfg *rest.Config, namespace, name, id string, ttl time.Duration, log *slog.Logger) (*LeaseBackend, error) {
	if b == nil {
		return nil, errors.New("ha: a Kubernetes Lease elects the leader only with a shared store (--redis-address)")
	}
	l := &LeaseBackend{Backend: b, id: id, log: log}
	var err error
	l.elector, err = kubelease.NewElector(cfg, kubelease.Config{Namespace: namespace, Name: name, Identity: id, Duration: ttl},
		leaderelection.LeaderCallbacks{OnStartedLeading: l.started, OnStoppedLeading: l.stopped})
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	return l, nil
}

// started runs (in client-go's goroutine) when this replica acquired the Lease; ctx ends
// when it stops leading, which stopped reports after ctx ended, so a late start never
// overrides a stop.
func (l *LeaseBackend) started(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ctx.Err() == nil {
		l.leading = true
		l.epoch++
	}
}

func (l *LeaseBackend) stopped() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leading = false
}

// Start runs the election until ctx ends, campaigning again whenever leadership is lost;
// the Lease is released when ctx ends while leading.
func (l *LeaseBackend) Start(ctx context.Context) error {
	for ctx.Err() == nil {
		l.elector.Run(ctx)
		if ctx.Err() == nil {
			l.log.Warn("lost the leader lease; campaigning again")
		}
	}
	return nil
}

// AcquireLease implements Backend: it reports the Lease's current holder, this replica
// while it leads. The election itself runs in Start.
func (l *LeaseBackend) AcquireLease(_ context.Context, _, id string, _ time.Duration) (redisstore.Lease, error) {
	l.mu.Lock()
	leading, epoch := l.leading, l.epoch
	l.mu.Unlock()
	if leading && id == l.id {
		return redisstore.Lease{Holder: l.id, Epoch: epoch}, nil
	}
	holder := l.elector.GetLeader()
	if holder == l.id {
		holder = "" // observed as ours, but no longer leading: nobody known
	}
	return redisstore.Lease{Holder: holder, Epoch: epoch}, nil
}

// ReleaseLease implements Backend: the Lease is released by Start when its context ends.
func (l *LeaseBackend) ReleaseLease(context.Context, string, string) error { return nil }
