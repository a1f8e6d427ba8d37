package reconcile_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
)

// raisableRole is an active leader owning every cluster whose epoch the test moves.
type raisableRole struct{ epoch atomic.Uint64 }

func (f *raisableRole) Active() (bool, uint64) { return true, f.epoch.Load() }
func (f *raisableRole) Leader() bool           { return true }
func (f *raisableRole) Owns(string) bool       { return true }

// An agent holding a newer epoch than the lock's: its epoch is witnessed (the coordinator
// raises the lock above it), the refusal shows in the status until the agent acknowledges
// the output made under the raised epoch, with a version above everything before.
func TestEpochRefusalUntilRaised(t *testing.T) {
	role := &raisableRole{}
	role.epoch.Store(1)
	var mu sync.Mutex
	var witnessed []uint64
	config := clusters(t, "east", "west")
	r := start(t, reconcile.Config{Role: role, WitnessEpoch: func(e uint64) {
		mu.Lock()
		defer mu.Unlock()
		witnessed = append(witnessed, e)
	}}, memstore.New(), config)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(t.Context(), "east", inputs["east"])
	poll.Until(t, wait, "outputs", publishes(r, expect(t, config, inputs)))
	before := r.Output("east")

	r.AgentEpoch("east", 2)
	r.EpochRefused("east", 1, 2)
	mu.Lock()
	if len(witnessed) != 2 || witnessed[0] != 2 || witnessed[1] != 2 {
		t.Errorf("witnessed epochs %v, want the agent's epoch 2 twice", witnessed)
	}
	mu.Unlock()
	refusal := func() *reconcile.EpochRefusal {
		for _, c := range r.Status().Clusters {
			if c.Name == "east" {
				return c.EpochRefusal
			}
		}
		return nil
	}
	if ref := refusal(); ref == nil || ref.Refused != 1 || ref.Held != 2 {
		t.Fatalf("status refusal %+v, want epoch 1 refused, 2 held", ref)
	}
	r.Acked("east", before.Version-1, "0123456789abcdef", "agent") // not the current output
	if refusal() == nil {
		t.Error("refusal cleared by the ack of another output")
	}

	role.epoch.Store(3) // the coordinator raised the lock
	r.Kick()
	poll.Until(t, wait, "output re-stamped under epoch 3", func() bool {
		o := r.Output("east")
		return o.Epoch == 3 && o.Hash == before.Hash && o.Version > before.Version
	})
	after := r.Output("east")
	r.Acked("east", after.Version, after.Hash, "agent")
	if ref := refusal(); ref != nil {
		t.Errorf("refusal %+v left after the agent acknowledged the epoch-3 output", ref)
	}
}
