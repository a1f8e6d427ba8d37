// Package kubeha elects the leader among the replicas of one management cluster with a
// Kubernetes Lease (an ha.LeaseStore); the agent's own election stays in internal/kubelease,
// which knows nothing of the server's HA.
package kubeha

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/kubelease"
)

// Election is an ha.LeaseStore whose leader lease among the replicas of one management
// cluster is a coordination.k8s.io Lease in that cluster, elected with client-go's
// leaderelection; the global active/passive lock and the replica set stay in the shared
// store (Redis), because they span management clusters. Run its Start beside the
// Coordinator's.
type Election struct {
	elector *leaderelection.LeaderElector
	id      string
	log     *slog.Logger

	mu      sync.Mutex // guards leading and epoch
	leading bool
	epoch   uint64 // leaderships this replica has started
}

var _ ha.LeaseStore = (*Election)(nil)

// NewElection elects the leader with the Lease of c (c.Identity is this replica) in the API
// server of rc. c.Duration is the lease duration; a leader that cannot renew for two thirds
// of it stops leading, and candidates retry every fifth of it. It does no I/O.
func NewElection(rc *rest.Config, c kubelease.Config, log *slog.Logger) (*Election, error) {
	l := &Election{id: c.Identity, log: log}
	var err error
	l.elector, err = kubelease.NewElector(rc, c, leaderelection.LeaderCallbacks{OnStartedLeading: l.started, OnStoppedLeading: l.stopped})
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	return l, nil
}

// started runs (in client-go's goroutine) when this replica acquired the Lease; ctx ends
// when it stops leading, which stopped reports after ctx ended, so a late start never
// overrides a stop.
func (l *Election) started(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ctx.Err() == nil {
		l.leading = true
		l.epoch++
	}
}

func (l *Election) stopped() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leading = false
}

// Start runs the election until ctx ends, campaigning again whenever leadership is lost;
// the Lease is released when ctx ends while leading.
func (l *Election) Start(ctx context.Context) error {
	for ctx.Err() == nil {
		l.elector.Run(ctx)
		if ctx.Err() == nil {
			l.log.Warn("lost the leader lease; campaigning again")
		}
	}
	return nil
}

// AcquireLease implements ha.LeaseStore: it reports the Lease's current holder, this
// replica while it leads. The election itself runs in Start.
func (l *Election) AcquireLease(_ context.Context, _, id string, _ time.Duration) (ha.Lease, error) {
	l.mu.Lock()
	leading, epoch := l.leading, l.epoch
	l.mu.Unlock()
	if leading && id == l.id {
		return ha.Lease{Holder: l.id, Epoch: epoch}, nil
	}
	holder := l.elector.GetLeader()
	if holder == l.id {
		holder = "" // observed as ours, but no longer leading: nobody known
	}
	return ha.Lease{Holder: holder, Epoch: epoch}, nil
}

// ReleaseLease implements ha.LeaseStore: the Lease is released by Start when its context
// ends.
func (l *Election) ReleaseLease(context.Context, string, string) error { return nil }
