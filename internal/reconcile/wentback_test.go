package reconcile_test

import (
	"fmt"
	"testing"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
)

// Snapshots are not waited on (docs/adr/0015): a Redis failover may lose the last writes of
// inputs and outputs, or all of them. The active server re-writes from memory whatever the
// store lacks or holds older than what it holds: an output and an input that went back to
// their previous versions, and an output that vanished.
func TestStoreThatWentBackIsRewritten(t *testing.T) {
	store := memstore.New()
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{SafeMode: true, Role: fixedRole{epoch: 1}}, store, config)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1, "api")}
	r.PutInput(ctx, "east", inputs["east"])
	r.PutInput(ctx, "west", inputs["west"])
	poll.Until(t, wait, "first outputs", publishes(r, expect(t, config, inputs)))
	oldIn := inputs["east"]
	poll.Until(t, wait, "first output in the store", storeHolds(t, store, snapshot.Output, "east", r.Output("east").Hash))
	oldOut := r.Output("east")

	inputs["east"] = input(t, 2, "web", "db")
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "second outputs", publishes(r, expect(t, config, inputs)))
	east, west := r.Output("east"), r.Output("west")
	if east.Hash == oldOut.Hash {
		t.Fatal("the test needs an input change that changes east's output")
	}
	for _, w := range []struct {
		kind    snapshot.Kind
		cluster string
		hash    string
	}{{snapshot.Input, "east", inputs["east"].Hash}, {snapshot.Output, "east", east.Hash}, {snapshot.Output, "west", west.Hash}} {
		poll.Until(t, wait, fmt.Sprintf("%s of %s in the store", w.kind, w.cluster), storeHolds(t, store, w.kind, w.cluster, w.hash))
	}

	// A failover to a replica that had not got the last writes, and none of west's output.
	for _, err := range []error{store.Put(ctx, snapshot.Input, "east", oldIn), store.Put(ctx, snapshot.Output, "east", oldOut),
		store.Delete(ctx, snapshot.Output, "west")} {
		if err != nil {
			t.Fatal(err)
		}
	}

	poll.Until(t, wait, "east's input written again", storeHolds(t, store, snapshot.Input, "east", inputs["east"].Hash))
	poll.Until(t, wait, "east's output written again", storeHolds(t, store, snapshot.Output, "east", east.Hash))
	poll.Until(t, wait, "west's output written again", storeHolds(t, store, snapshot.Output, "west", west.Hash))
	if got := r.Output("east"); got.Hash != east.Hash || got.Version < east.Version {
		t.Errorf("the server's east output went from v%d to v%d (%.12s): it adopted what the store went back to", east.Version, got.Version, got.Hash)
	}
}

// storeHolds reports whether store holds a snapshot of kind for cluster with hash.
func storeHolds(t *testing.T, store snapshot.Store, kind snapshot.Kind, cluster, hash string) func() bool {
	return func() bool {
		s, err := store.Get(t.Context(), kind, cluster)
		return err == nil && s.Hash == hash
	}
}
