// Package runner starts a process's long-running components and waits for them, like
// controller-runtime's manager: each component is a Runnable whose Start(ctx) blocks until
// ctx ends, added under a name; Run starts them all and returns when every one has returned.
// The first to fail cancels the others, and Run returns its error wrapped with its name. A
// component that returns nil early does not stop the others.
//
// A component that does its work only while this replica leads says so with LeaderOnly (as
// controller-runtime's LeaderElectionRunnable). The runner reports it and starts it like any
// other: such components check leadership themselves (or are started by an election, as the
// agent's kubelease.Leader does), so that marking one never changes when it runs.
package runner

import (
	"context"
	"errors"
	"log/slog"

	"golang.org/x/sync/errgroup"
)

// Runnable is a long-running component: Start blocks until ctx ends or the component fails.
type Runnable interface {
	Start(ctx context.Context) error
}

// Func adapts a function to a Runnable.
type Func func(ctx context.Context) error

// Start calls f.
func (f Func) Start(ctx context.Context) error { return f(ctx) }

// LeaderOnly is implemented by components that do their work only while this replica leads.
type LeaderOnly interface {
	LeaderOnly() bool
}

// MarkLeaderOnly marks r as doing its work only while this replica leads; r still runs as
// before (see the package documentation).
func MarkLeaderOnly(r Runnable) Runnable { return leaderOnly{r} }

type leaderOnly struct{ Runnable }

func (leaderOnly) LeaderOnly() bool { return true }

// Error is a component's failure as Run returns it: "name: error".
type Error struct {
	Component string
	Err       error
}

func (e *Error) Error() string { return e.Component + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Runner runs named components. Add every component before Run; a Runner runs once.
type Runner struct {
	log        *slog.Logger
	components []named
	started    func()
}

type named struct {
	name       string
	leaderOnly bool
	r          Runnable
}

// New returns an empty Runner that logs each component's start at debug level.
func New(log *slog.Logger) *Runner { return &Runner{log: log} }

// Add adds a component; name says which component failed in Run's error.
func (r *Runner) Add(name string, c Runnable) {
	lo, _ := c.(LeaderOnly)
	r.components = append(r.components, named{name: name, leaderOnly: lo != nil && lo.LeaderOnly(), r: c})
}

// OnStarted sets a function Run calls once every component has been started (not
// necessarily ready), while they run.
func (r *Runner) OnStarted(f func()) { r.started = f }

// Run starts every component in the order added and blocks until all have returned: until
// ctx ends, or until the first one fails, which cancels the others' context. It returns
// the first error, wrapped with the failing component's name in an *Error (an *Error from a
// nested Runner is returned as it is, naming the innermost component), or nil.
func (r *Runner) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range r.components {
		r.log.Debug("component starting", "name", c.name, "leaderOnly", c.leaderOnly)
		g.Go(func() error {
			if err := c.r.Start(gctx); err != nil {
				if ce := (*Error)(nil); errors.As(err, &ce) {
					return err // a nested Runner's error names its own component
				}
				return &Error{Component: c.name, Err: err}
			}
			return nil
		})
	}
	if r.started != nil {
		r.started()
	}
	return g.Wait()
}
