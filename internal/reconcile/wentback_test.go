package reconcile_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/boltstore"
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

// indexCounter counts the Index and ConfigRevision reads of the store it wraps; it is exclusive when the
// store it wraps is (the promoted Exclusive method of a bolt store).
type indexCounter struct {
	snapshot.Store
	reads, revisions atomic.Int64
}

func (c *indexCounter) Index(ctx context.Context, kind snapshot.Kind) (map[string]string, error) {
	c.reads.Add(1)
	return c.Store.Index(ctx, kind)
}

func (c *indexCounter) ConfigRevision(ctx context.Context) (uint64, error) {
	c.revisions.Add(1)
	return c.Store.ConfigRevision(ctx)
}

// exclusiveCounter is an indexCounter that says what the bolt store it wraps says.
type exclusiveCounter struct{ *indexCounter }

func (e exclusiveCounter) Exclusive() bool { return e.Store.(*boltstore.Store).Exclusive() }

// A bolt store is written by this server alone (bbolt locks the file): under input churn
// the server does not read its index back on every round and tick for what other servers
// wrote, as it must with a shared store; it still writes every input and output, and a
// restart reads them.
func TestExclusiveStoreIsNotPolled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		exclusive bool
	}{{"bolt", true}, {"shared", false}} {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := boltstore.Open(filepath.Join(t.TempDir(), boltstore.FileName))
			if err != nil {
				t.Fatal(err)
			}
			defer bs.Close()
			counter := &indexCounter{Store: bs}
			var store snapshot.Store = counter
			if tc.exclusive {
				store = exclusiveCounter{counter}
			}
			config := clusters(t, "east", "west")
			r := newReconciler(t, reconcile.Config{SafeMode: true, Tick: 20 * time.Millisecond}, store)
			ctx := t.Context()
			stop := run(t, r)
			r.SetDirConfig(config)
			inputs := map[string]*snapshot.Snapshot{"west": input(t, 1, "api")}
			r.PutInput(ctx, "west", inputs["west"])
			for v := uint64(1); v <= 5; v++ {
				inputs["east"] = input(t, v, "web", fmt.Sprintf("db%d", v))
				r.PutInput(ctx, "east", inputs["east"])
				poll.Until(t, wait, fmt.Sprintf("outputs of east's input %d", v), publishes(r, expect(t, config, inputs)))
			}
			// A configuration applied through this server is translated all the same.
			if err := r.Apply(ctx, clusters(t, "north")); err != nil {
				t.Fatal(err)
			}
			config = append(config, clusters(t, "north")...)
			inputs["north"] = input(t, 1, "cache")
			r.PutInput(ctx, "north", inputs["north"])
			poll.Until(t, wait, "outputs with the applied cluster north", publishes(r, expect(t, config, inputs)))
			poll.Until(t, wait, "east's last output in the store", storeHolds(t, bs, snapshot.Output, "east", r.Output("east").Hash))
			poll.Until(t, wait, "east's last input in the store", storeHolds(t, bs, snapshot.Input, "east", inputs["east"].Hash))
			time.Sleep(100 * time.Millisecond) // ticks
			stop()
			reads := counter.reads.Load()
			if tc.exclusive && reads != 0 {
				t.Errorf("the server read the index of a store only it writes %d times", reads)
			}
			if revs := counter.revisions.Load(); tc.exclusive && revs != 0 {
				t.Errorf("the server read the configuration revision of a store only it writes %d times", revs)
			}
			if !tc.exclusive && reads == 0 {
				t.Error("the server never read the index of a shared store: it would miss what other servers wrote")
			}

			// A restart on the same store serves what the first run wrote.
			want := r.Output("east")
			r2 := start(t, reconcile.Config{SafeMode: true}, store, config)
			poll.Until(t, wait, "the restarted server's output of east", func() bool {
				got := r2.Output("east")
				return got != nil && got.Hash == want.Hash && got.Version == want.Version
			})
		})
	}
}
