package translate_test

import (
	"context"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/translate"
)

// TestWorkFollowsDependencies: a change re-plans only what reads it. In ptModel's world
// (c1 and c2 behind a gateway, c3 and c4 on a flat network, a VirtualDestination of web
// backed in every cluster and used by every cluster), each change is translated
// incrementally and counted: which clusters were recomputed, and how many
// VirtualDestination upstreams were built anew or reused from the cluster's previous
// translation. Every incremental result must equal a fresh translation.
func TestWorkFollowsDependencies(t *testing.T) {
	all := []string{"c1", "c2", "c3", "c4"}
	for _, tc := range []struct {
		name   string
		change func(m *ptModel)
		extra  []string // configuration added by the change
		// recomputed clusters, VirtualDestination upstreams planned and reused
		recomputed      []string
		planned, reused int
	}{
		{name: "private service of c2", change: func(m *ptModel) { m.svcs[1]["api"] = []string{"10.2.1.7"} },
			recomputed: []string{"c2"}, planned: 0, reused: 1},
		{name: "backing endpoint of c1 behind its gateway", change: func(m *ptModel) { m.svcs[0]["web"] = []string{"10.1.0.7"} },
			// the other clusters reach c1's web through c1's gateway: only c1 reads it
			recomputed: []string{"c1"}, planned: 1, reused: 0},
		{name: "backing endpoint of c3 on the flat network", change: func(m *ptModel) { m.svcs[2]["web"] = []string{"10.3.0.7"} },
			// every cluster reaches c3's web directly: every cluster reads it
			recomputed: all, planned: 4, reused: 0},
		{name: "route table for every cluster", extra: []string{ptRouteTable("rt-all", "all.example.com", nil, "default-web-8080")},
			recomputed: all, planned: 0, reused: 4},
		{name: "route table for c4", extra: []string{ptRouteTable("rt-c4", "c4.example.com", []string{"c4"}, "default-web-8080")},
			recomputed: []string{"c4"}, planned: 0, reused: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ptNewModel()
			m.vd = true
			m.region = []string{"east", "west", "east", "west"}
			tr := translate.NewTranslator()
			if res := tr.Translate(m.input(t)); res.Work.VirtualDestinationsPlanned != 4 {
				t.Fatalf("first translation planned %d VirtualDestination upstreams, want one per cluster (4)", res.Work.VirtualDestinationsPlanned)
			}
			if tc.change != nil {
				tc.change(m)
			}
			in := m.input(t)
			if len(tc.extra) > 0 {
				in.Config = append(in.Config, ptInput(t, tc.extra, nil).Config...)
			}
			res := tr.Translate(in)
			if !slices.Equal(res.Recomputed, tc.recomputed) {
				t.Errorf("recomputed %v, want %v", res.Recomputed, tc.recomputed)
			}
			if got := res.Work; got.VirtualDestinationsPlanned != tc.planned || got.VirtualDestinationsReused != tc.reused {
				t.Errorf("VirtualDestination upstreams planned %d, reused %d; want %d, %d", got.VirtualDestinationsPlanned, got.VirtualDestinationsReused, tc.planned, tc.reused)
			}
			if d := ptDiff(translate.Translate(in), res); d != "" {
				t.Errorf("incremental differs from fresh: %s", d)
			}
			if again := tr.Translate(in); len(again.Recomputed) != 0 || again.Work != (translate.Work{}) {
				t.Errorf("unchanged input recomputed %v with work %+v", again.Recomputed, again.Work)
			}
		})
	}
}

// TestAbandonedTranslationKeepsParsedInputs: a translation of new inputs abandoned for a
// configuration change is followed by that change translated with the previous inputs,
// then by the new inputs again (internal/reconcile's config-first round); neither parses an
// input anew, and both equal a fresh translation.
func TestAbandonedTranslationKeepsParsedInputs(t *testing.T) {
	m := ptNewModel()
	m.vd = true
	tr := translate.NewTranslator()
	old := m.input(t)
	if res := tr.Translate(old); res.Work.InputsParsed != len(old.Inputs) {
		t.Fatalf("first translation parsed %d inputs, want %d", res.Work.InputsParsed, len(old.Inputs))
	}
	m.svcs[0]["web"] = []string{"10.1.0.7"}
	m.svcs[1]["api"] = []string{"10.2.1.7"}
	newer := m.input(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // abandoned as soon as it starts: its inputs are parsed all the same
	if _, err := tr.TranslateContext(ctx, newer); err == nil {
		t.Fatal("a translation with its context done was not abandoned")
	}
	configFirst := old
	configFirst.Config = append(slices.Clone(old.Config), ptInput(t, []string{ptRouteTable("rt-all", "all.example.com", nil, "default-web-8080")}, nil).Config...)
	for _, step := range []struct {
		name string
		in   translate.Input
	}{
		{"the configuration change with the previous inputs", configFirst},
		{"the newer inputs", translate.Input{Config: configFirst.Config, Inputs: newer.Inputs, Certs: newer.Certs}},
	} {
		res := tr.Translate(step.in)
		if res.Work.InputsParsed != 0 {
			t.Errorf("%s: parsed %d inputs again", step.name, res.Work.InputsParsed)
		}
		if d := ptDiff(translate.Translate(step.in), res); d != "" {
			t.Fatalf("%s: incremental differs from fresh: %s", step.name, d)
		}
	}
}
