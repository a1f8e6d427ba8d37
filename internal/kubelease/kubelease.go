// Package kubelease elects one leader among the replicas of a process with a
// coordination.k8s.io Lease, through client-go's leaderelection: the server's replicas of
// one management cluster (Election, an ha.LeaseStore) and the agent's replicas of one
// workload cluster (Leader).
package kubelease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Config names a Lease and this replica's identity in it.
type Config struct {
	Namespace, Name string
	// Identity is this replica's holder identity; it must differ between replicas.
	Identity string
	// Duration is the lease duration: a leader that cannot renew for two thirds of it stops
	// leading, and candidates retry every fifth of it.
	Duration time.Duration
}

func (c Config) String() string { return c.Namespace + "/" + c.Name }

// ParseName splits NAMESPACE/NAME.
func ParseName(s string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, "/")
	if !ok || namespace == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("lease %q: want NAMESPACE/NAME", s)
	}
	return namespace, name, nil
}

// NewElector builds a client-go LeaderElector on the Lease of c in the API server of rc,
// released when the context of its Run ends. It does no I/O.
func NewElector(rc *rest.Config, c Config, cb leaderelection.LeaderCallbacks) (*leaderelection.LeaderElector, error) {
	if c.Identity == "" {
		return nil, fmt.Errorf("lease %s: empty identity", c)
	}
	if c.Duration < time.Second {
		return nil, fmt.Errorf("lease %s: duration %s is under 1s", c, c.Duration)
	}
	cs, err := kubernetes.NewForConfig(rest.CopyConfig(rc))
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for lease %s: %w", c, err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, c.Namespace, c.Name, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: c.Identity})
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", c, err)
	}
	el, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   c.Duration,
		RenewDeadline:   c.Duration * 2 / 3,
		RetryPeriod:     c.Duration / 5,
		ReleaseOnCancel: true,
		Name:            c.String(),
		Callbacks:       cb,
	})
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", c, err)
	}
	return el, nil
}

// ErrLost is returned by Leader.Run when the Lease was lost while leading.
var ErrLost = errors.New("lost the leader lease")

// Leader runs a function only while this replica holds the Lease.
type Leader struct {
	cfg Config
	el  *leaderelection.LeaderElector
	run func(context.Context) error
	log *slog.Logger

	mu           sync.Mutex
	parent       context.Context    // Run's ctx
	stopElection context.CancelFunc // ends the election (and releases the Lease)
	leading      bool               // run has started (the Lease is held, or run is stopping)
	since        time.Time          // when leading became true
	runDone      chan error
}

// NewLeader prepares to run run while holding the Lease of c. It does no I/O. Run it once.
func NewLeader(rc *rest.Config, c Config, run func(context.Context) error, log *slog.Logger) (*Leader, error) {
	l := &Leader{cfg: c, run: run, log: log, runDone: make(chan error, 1)}
	var err error
	l.el, err = NewElector(rc, c, leaderelection.LeaderCallbacks{
		OnStartedLeading: l.started,
		OnStoppedLeading: func() {},
		OnNewLeader: func(id string) {
			if id != c.Identity {
				log.Info("leader elected", "lease", c.String(), "leader", id)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Run campaigns for the Lease until ctx ends, runs run once it is acquired and blocks
// until it returns. The Lease is released only after run has returned, so that two
// replicas never run at once:
//   - ctx ends: run's context is cancelled, then the Lease released; Run returns run's error;
//   - run fails: the Lease is released and Run returns the error;
//   - the Lease is lost (not renewed in time): run's context is cancelled and Run returns
//     ErrLost once run returned, so that the process exits and campaigns again when it is
//     restarted, with nothing of its leading state left.
func (l *Leader) Run(ctx context.Context) error {
	// The election's context outlives ctx while run stops, so that the Lease is released
	// only after run returned.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	l.mu.Lock()
	l.parent, l.stopElection = ctx, stopElection
	l.mu.Unlock()
	stopWaiting := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !l.leading {
			stopElection() // still campaigning: give up
		}
	})
	defer stopWaiting()

	l.log.Info("campaigning for the leader lease", "lease", l.cfg.String(), "identity", l.cfg.Identity, "duration", l.cfg.Duration)
	l.el.Run(electCtx)

	if !l.Leading() {
		if ctx.Err() == nil { // the Lease was lost before run could start
			return fmt.Errorf("%w %s (held as %s) before starting", ErrLost, l.cfg, l.cfg.Identity)
		}
		return nil // ctx ended before the Lease was acquired
	}
	err := <-l.runDone
	switch {
	case err != nil:
		return err
	case ctx.Err() == nil:
		return fmt.Errorf("%w %s (held as %s)", ErrLost, l.cfg, l.cfg.Identity)
	}
	return nil
}

// started runs in client-go's goroutine once the Lease is acquired; leadCtx ends when it
// is lost. It runs l.run until leadCtx or Run's ctx ends, then ends the election.
func (l *Leader) started(leadCtx context.Context) {
	l.mu.Lock()
	parent, stopElection := l.parent, l.stopElection
	if parent.Err() != nil {
		l.mu.Unlock()
		stopElection() // acquired while giving up: release at once
		return
	}
	l.leading, l.since = true, time.Now()
	l.mu.Unlock()
	l.log.Info("leading", "lease", l.cfg.String(), "identity", l.cfg.Identity)
	runCtx, cancel := context.WithCancel(leadCtx)
	stop := context.AfterFunc(parent, cancel)
	err := l.run(runCtx)
	stop()
	cancel()
	l.runDone <- err
	stopElection() // releases the Lease, now that run has stopped
}

// Status is the election's state, for /status.
type Status struct {
	Lease    string `json:"lease"`
	Identity string `json:"identity"`
	// Leading is true while this replica holds the Lease and runs.
	Leading bool `json:"leading"`
	// Holder is the identity holding the Lease as last observed.
	Holder string    `json:"holder,omitempty"`
	Since  time.Time `json:"leadingSince,omitzero"`
}

// Status reports the election's state.
func (l *Leader) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Status{Lease: l.cfg.String(), Identity: l.cfg.Identity, Leading: l.leading, Holder: l.el.GetLeader()}
	if l.leading {
		st.Since = l.since
	}
	return st
}

// Leading reports whether this replica leads.
func (l *Leader) Leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading
}
