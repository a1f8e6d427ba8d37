package reconcile_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
)

// notifyStore is a memory store that records which outputs each Write carries and, failing,
// fails every item after a delay.
type notifyStore struct {
	*memstore.Store
	fail  bool
	delay time.Duration
	// beforeOutputs runs before a Write that carries outputs, with the number of such
	// Writes before it.
	beforeOutputs func(n int)

	mu      sync.Mutex
	batches [][]string // the output clusters of each Write
	written map[string]time.Time
}

func (s *notifyStore) Write(ctx context.Context, batch []snapshot.Write) []error {
	var outs []string
	for _, w := range batch {
		if w.Kind == snapshot.Output && w.Snap != nil {
			outs = append(outs, w.Cluster)
		}
	}
	if len(outs) > 0 {
		s.mu.Lock()
		n := len(s.batches)
		s.batches = append(s.batches, outs)
		s.mu.Unlock()
		if s.beforeOutputs != nil {
			s.beforeOutputs(n)
		}
	}
	if s.fail {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
		}
		errs := make([]error, len(batch))
		for i := range errs {
			errs[i] = fmt.Errorf("write: connection refused: %w", snapshot.ErrUnavailable)
		}
		return errs
	}
	errs := s.Store.Write(ctx, batch)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range batch {
		if errs[i] == nil && w.Kind == snapshot.Output {
			s.written[w.Cluster] = time.Now()
		}
	}
	return errs
}

// notifications subscribes to every cluster of r and records when each is first told.
type notifications struct {
	mu sync.Mutex
	at map[string]time.Time
}

func subscribeAll(t *testing.T, r *reconcile.Reconciler, names []string) *notifications {
	t.Helper()
	n := &notifications{at: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, c := range names {
		ch, unsubscribe := r.Subscribe(c)
		wg.Go(func() { // subscribed until the test ends, as an agent's stream is
			defer unsubscribe()
			for {
				select {
				case <-ch:
					n.mu.Lock()
					if _, ok := n.at[c]; !ok {
						n.at[c] = time.Now()
					}
					n.mu.Unlock()
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return n
}

func (n *notifications) count(names []string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := 0
	for _, c := range names {
		if _, ok := n.at[c]; ok {
			k++
		}
	}
	return k
}

func clusterNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%03d", i)
	}
	return names
}

// A change that reaches many clusters is written and announced in batches: every output is
// in the store before its agent is told, and the first agents are told before the last
// outputs are written.
func TestOutputsWrittenThenAnnouncedInBatches(t *testing.T) {
	names := clusterNames(300)
	store := &notifyStore{Store: memstore.New(), written: map[string]time.Time{}}
	r := newReconciler(t, reconcile.Config{}, store)
	told := subscribeAll(t, r, names)
	var early bool
	store.beforeOutputs = func(n int) {
		if n == 1 { // the second batch waits until the first one's agents are told
			store.mu.Lock()
			first := names[:len(store.batches[0])]
			store.mu.Unlock()
			for deadline := time.Now().Add(5 * time.Second); !early && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				early = told.count(first) == len(first)
			}
		}
	}
	r.SetDirConfig(clusters(t, names...))
	run(t, r)
	poll.Until(t, wait, "every cluster told", func() bool { return told.count(names) == len(names) })

	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.batches) < 3 {
		t.Fatalf("%d clusters' outputs written in %d writes, want batches of at most a few hundred", len(names), len(store.batches))
	}
	for i, b := range store.batches {
		if len(b) > 128 {
			t.Errorf("write %d carries %d outputs", i, len(b))
		}
	}
	if !early {
		t.Error("the first batch's agents were not told before the next batch was written")
	}
	told.mu.Lock()
	defer told.mu.Unlock()
	for _, c := range names {
		if w, ok := store.written[c]; !ok || told.at[c].Before(w) {
			t.Errorf("cluster %s told at %v, before its output was written (%v, %v)", c, told.at[c], w, ok)
		}
	}
}

// With the store failing, one failed write is all the agents wait for: the outputs are
// announced from memory and written again later.
func TestOutputsAnnouncedAfterOneFailedWrite(t *testing.T) {
	names := clusterNames(300)
	store := &notifyStore{Store: memstore.New(), written: map[string]time.Time{}, fail: true, delay: time.Second}
	r := newReconciler(t, reconcile.Config{}, store)
	told := subscribeAll(t, r, names)
	var mu sync.Mutex
	var firstWrite time.Time
	store.beforeOutputs = func(int) {
		mu.Lock()
		defer mu.Unlock()
		if firstWrite.IsZero() {
			firstWrite = time.Now()
		}
	}
	r.SetDirConfig(clusters(t, names...))
	run(t, r)
	poll.Until(t, wait, "every cluster told", func() bool { return told.count(names) == len(names) })
	told.mu.Lock()
	defer told.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	for _, c := range names {
		if d := told.at[c].Sub(firstWrite); d > 1900*time.Millisecond {
			t.Fatalf("cluster %s told %v after the first failed write began (each takes 1 s)", c, d)
		}
	}
}

// Input changes alone (endpoint churn) are written in one batch however many outputs they
// change: more writes, each with its fsyncs, slowed rounds under churn.
func TestInputRoundWrittenInOneBatch(t *testing.T) {
	names := clusterNames(300)
	store := &notifyStore{Store: memstore.New(), written: map[string]time.Time{}}
	r := newReconciler(t, reconcile.Config{}, store)
	told := subscribeAll(t, r, names) // nobody ACKs: input rounds wait up to 1 s for the first outputs
	for _, c := range names {
		r.PutInput(t.Context(), c, input(t, 1, "web"))
	}
	r.SetDirConfig(clusters(t, names...))
	run(t, r)
	poll.Until(t, wait, "every cluster told", func() bool { return told.count(names) == len(names) })
	store.mu.Lock()
	first := len(store.batches)
	store.mu.Unlock()
	for _, c := range names {
		r.PutInput(t.Context(), c, input(t, 2, "web", "db"))
	}
	poll.Until(t, wait, "outputs of the new inputs written", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		n := 0
		for _, b := range store.batches[first:] {
			n += len(b)
		}
		return n >= len(names)
	})
	store.mu.Lock()
	defer store.mu.Unlock()
	if got := store.batches[first:]; len(got) != 1 {
		sizes := make([]int, len(got))
		for i, b := range got {
			sizes[i] = len(b)
		}
		t.Errorf("one round of input changes wrote its outputs in %d writes of %v, want one", len(got), sizes)
	}
}
