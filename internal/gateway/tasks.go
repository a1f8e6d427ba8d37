package gateway

import (
	"context"
	"sync"
)

// tasks owns goroutines started while the gateway runs (health checkers, outlier sweeps,
// listener servers): each gets a context derived from the gateway's, can be stopped by key
// without waiting, and wait blocks until every one has returned.
type tasks struct {
	ctx context.Context
	wg  sync.WaitGroup

	mu      sync.Mutex // guards cancels
	cancels map[any]context.CancelFunc
}

func newTasks() *tasks {
	return &tasks{ctx: context.Background(), cancels: map[any]context.CancelFunc{}}
}

// bind sets the parent context; it must be called before any go.
func (t *tasks) bind(ctx context.Context) { t.ctx = ctx }

// goKeyed starts fn under key, stopping a previous task of that key first.
func (t *tasks) goKeyed(key any, fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(t.ctx)
	t.mu.Lock()
	if prev := t.cancels[key]; prev != nil {
		prev()
	}
	t.cancels[key] = cancel
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer cancel()
		fn(ctx)
	}()
}

// goAnon starts fn without a key; it stops when the parent context ends.
func (t *tasks) goAnon(fn func(ctx context.Context)) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		fn(t.ctx)
	}()
}

// stop cancels the task of key, if any, without waiting for it.
func (t *tasks) stop(key any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.cancels[key]; c != nil {
		c()
		delete(t.cancels, key)
	}
}

// wait blocks until every task has returned (after the parent context ended).
func (t *tasks) wait() { t.wg.Wait() }
