package bench

import (
	"testing"

	ib "github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/translatebench"
)

// TestTranslateSmoke runs `meshrelay-bench translate` tiny, through the same function as
// the command, and checks that the report is sane: incremental changes recompute exactly
// the clusters they can affect. It measures nothing.
func TestTranslateSmoke(t *testing.T) {
	o := ib.WorldOptions{Clusters: 4, Services: 20, VirtualDestinations: 2, Routes: 2}
	rep := translatebench.Run(o)
	rep.Print(t.Output())
	if rep.Errors != 0 || rep.Resources <= 0 || rep.OutputBytes <= 0 || rep.FullSeconds <= 0 {
		t.Errorf("full translation: %+v", rep)
	}
	if rep.NoopRecomputed != 0 {
		t.Errorf("nothing changed, yet %d clusters were recomputed", rep.NoopRecomputed)
	}
	if rep.LocalRecomputed != 1 {
		t.Errorf("one cluster's private change recomputed %d clusters, want 1", rep.LocalRecomputed)
	}
	if rep.ExportedRecomputed != 1 {
		t.Errorf("an exported service's change behind its gateway recomputed %d clusters, want 1 (no other cluster reads it)", rep.ExportedRecomputed)
	}
	if rep.GlobalRecomputed != o.Clusters {
		t.Errorf("a change every cluster sees recomputed %d clusters, want %d", rep.GlobalRecomputed, o.Clusters)
	}
}
