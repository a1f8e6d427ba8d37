package ha_test

import (
	"fmt"
	"testing"

	"github.com/meshrelay/meshrelay/internal/ha"
)

func replicas(n int) []ha.Replica {
	out := make([]ha.Replica, n)
	for i := range out {
		out[i] = ha.Replica{ID: fmt.Sprintf("replica-%d", i+1)}
	}
	return out
}

func clusters(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func TestAssignIsEvenAndMovesLittle(t *testing.T) {
	for _, prefix := range []string{"c", "cluster", "east", "w"} {
		cl := clusters(prefix, 30)
		three := ha.Assign(cl, replicas(3))
		load := map[string]int{}
		for _, r := range three {
			load[r.ID]++
		}
		for id, n := range load {
			if n < 8 || n > 12 {
				t.Errorf("%s: %s holds %d of 30 clusters, want 10±2 (%v)", prefix, id, n, load)
			}
		}
		four := ha.Assign(cl, replicas(4))
		moved, toNew := 0, 0
		for _, c := range cl {
			if three[c].ID != four[c].ID {
				moved++
				if four[c].ID == "replica-4" {
					toNew++
				}
			}
		}
		// Ideally about 30/4 clusters move, mostly to the new replica; bounded load caps
		// every replica at ceil(1.1·30/4) = 9, it does not fill the newcomer up.
		if toNew < 2 || moved > 12 {
			t.Errorf("%s: adding a replica moved %d clusters (%d to it), want few, mostly to it", prefix, moved, toNew)
		}
		// Deterministic: the same sets give the same assignment.
		again := ha.Assign(cl, replicas(3))
		for _, c := range cl {
			if again[c] != three[c] {
				t.Fatalf("%s: assignment not deterministic for %s", prefix, c)
			}
		}
	}
}

func TestRendezvousRemovingAReplicaMovesOnlyItsClusters(t *testing.T) {
	cl := clusters("c", 200)
	all := replicas(4)
	without := all[:3]
	for _, c := range cl {
		before, _ := ha.Rendezvous(c, all)
		after, _ := ha.Rendezvous(c, without)
		if before.ID != "replica-4" && before != after {
			t.Fatalf("%s moved from %s to %s although its replica stayed", c, before.ID, after.ID)
		}
	}
}
