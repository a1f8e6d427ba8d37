package reconcile_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
)

// inputReads is a real memstore that counts the input snapshots read from it.
type inputReads struct {
	*memstore.Store
	n atomic.Int64
}

func (s *inputReads) Get(ctx context.Context, k snapshot.Kind, c string) (*snapshot.Snapshot, error) {
	if k == snapshot.Input {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, k, c)
}

// A server whose memory holds a newer input than the one it last wrote does not read its
// own write back from the store before translating (under endpoint churn that was every
// cluster, every round), but it still reads an input another server wrote.
func TestOwnStoredInputIsNotReadBack(t *testing.T) {
	store := &inputReads{Store: memstore.New()}
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{}, store, config)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"west": input(t, 1, "db")}
	r.PutInput(ctx, "west", inputs["west"])
	stored := func(c string, s *snapshot.Snapshot) func() bool {
		return func() bool {
			got, err := store.Store.Get(ctx, snapshot.Input, c)
			return err == nil && got.Hash == s.Hash
		}
	}
	for v := uint64(1); v <= 5; v++ {
		inputs["east"] = input(t, v, "web", "api"+string(rune('a'+v)))
		r.PutInput(ctx, "east", inputs["east"])
		poll.Until(t, wait, "outputs of east's input", publishes(r, expect(t, config, inputs)))
		poll.Until(t, wait, "east's input stored", stored("east", inputs["east"]))
	}
	if n := store.n.Load(); n != 0 {
		t.Errorf("the reconciler read %d input snapshots from the store that it had written itself; want 0", n)
	}

	// Another server (after the agent moved to it) writes a newer input of west.
	newer := input(t, 9, "db", "cache")
	if err := store.Store.Put(ctx, snapshot.Input, "west", newer); err != nil {
		t.Fatal(err)
	}
	inputs["west"] = newer
	poll.Until(t, wait, "west's newer input read from the store", func() bool { return hashOf(r.Input("west")) == newer.Hash })
	poll.Until(t, wait, "outputs of west's newer input", publishes(r, expect(t, config, inputs)))
	if store.n.Load() == 0 {
		t.Error("the input another server wrote was not read")
	}
}
