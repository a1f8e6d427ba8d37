package agent

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// benchOutputs are an output shaped like one cluster's in the relay bench world (29
// resources, about 124 KiB) and the output after a change of one of them by about 1.3 KiB,
// the size of an all-cluster change there.
func benchOutputs(resources, bodyBytes int) (before, after *snapshot.Snapshot, d snapshot.Delta) {
	rs := make([]snapshot.Resource, resources)
	for i := range rs {
		k := fmt.Sprintf("Envoy/cluster/svc-%04d", i)
		rs[i] = snapshot.NewResource(k, fmt.Appendf(nil, `{"name":"svc-%d","pad":%q}`, i, strings.Repeat("x", bodyBytes)))
	}
	before = snapshot.New(1, 1, rs)
	changed := append([]snapshot.Resource(nil), rs...)
	changed[0] = snapshot.NewResource(rs[0].Key, fmt.Appendf(nil, `{"name":"svc-0","route":%q}`, strings.Repeat("r", 1300)))
	after = snapshot.New(2, 1, changed)
	d = snapshot.Diff(before.ResourceHashes(), after)
	return before, after, d
}

// BenchmarkStatePersist compares what the agent does to persist one applied change: append
// the delta (now) with rewriting the whole output (before the delta log; a compaction does
// the same work).
func BenchmarkStatePersist(b *testing.B) {
	for _, shape := range []struct{ resources, body int }{{29, 4300}, {1000, 300}} {
		before, after, d := benchOutputs(shape.resources, shape.body)
		name := fmt.Sprintf("%d resources %d KiB", shape.resources, len(mustJSON(b, before))>>10)
		open := func(b *testing.B) *stateStore {
			s := newStateStore(b.TempDir(), slog.New(slog.DiscardHandler), newMetrics(nil))
			if _, err := s.open(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.close() })
			if err := s.save(before, snapshot.Diff(nil, before)); err != nil {
				b.Fatal(err)
			}
			return s
		}
		b.Run(name+"/append delta", func(b *testing.B) {
			s := open(b)
			s.minCompact = 1 << 62 // measure the append alone; compaction is the other case
			b.ReportAllocs()
			for b.Loop() {
				if err := s.save(after, d); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/rewrite whole output", func(b *testing.B) {
			s := open(b)
			b.ReportAllocs()
			for b.Loop() {
				if err := s.save(after, snapshot.Delta{Full: true}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkApplyDelta measures snapshot.Apply of a one-resource change: what it costs
// beyond the changed resource (the copy of the key map and the snapshot hash over every
// key) at the bench world's size and at 1,000 resources.
func BenchmarkApplyDelta(b *testing.B) {
	for _, shape := range []struct{ resources, body int }{{29, 4300}, {1000, 300}} {
		before, _, d := benchOutputs(shape.resources, shape.body)
		b.Run(fmt.Sprintf("%d resources", shape.resources), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := snapshot.Apply(before, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustJSON(b *testing.B, s *snapshot.Snapshot) []byte {
	out, err := s.MarshalJSON()
	if err != nil {
		b.Fatal(err)
	}
	return out
}
