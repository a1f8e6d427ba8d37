package reconcile_test

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// sample returns the sample of a metric whose labels include every given name/value pair,
// or nil.
func sample(t *testing.T, reg *prometheus.Registry, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// The output metrics follow real publications and acknowledgements: the size of each
// cluster's output, the time from publishing it to its agent's acknowledgement (only for the
// output published, not an older one), and the problems translations report.
func TestOutputMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := reconcile.New(reconcile.Config{Tick: tick}, memstore.New(), translate.NewTranslator(), nil,
		slog.New(slog.NewTextHandler(t.Output(), nil)), reg)
	config := clusters(t, "east", "west")
	r.SetDirConfig(config)
	run(t, r)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web", "api"), "west": input(t, 1, "web")}
	for c, s := range inputs {
		r.PutInput(t.Context(), c, s)
	}
	poll.Until(t, wait, "outputs of east and west", publishes(r, expect(t, config, inputs)))

	for _, c := range []string{"east", "west"} {
		m := sample(t, reg, "meshrelay_output_snapshot_resources", "cluster", c)
		if want := r.Output(c).Len(); m == nil || m.GetGauge().GetValue() != float64(want) || want == 0 {
			t.Errorf("meshrelay_output_snapshot_resources{cluster=%q} = %v, want %d (the output's resources)", c, m, want)
		}
	}
	syncCount := func(c string) uint64 {
		m := sample(t, reg, "meshrelay_output_sync_duration_seconds", "cluster", c)
		if m == nil {
			return 0
		}
		return m.GetHistogram().GetSampleCount()
	}
	out := r.Output("east")
	r.Acked("east", out.Version-1, "0123456789abcdef", "east-agent") // not the published output
	if n := syncCount("east"); n != 0 {
		t.Errorf("sync duration observed %d times after an acknowledgement of another output, want 0", n)
	}
	r.Acked("east", out.Version, out.Hash, "east-agent")
	r.Acked("east", out.Version, out.Hash, "east-agent") // a repeated ack is not a second sync
	if n := syncCount("east"); n != 1 {
		t.Errorf("sync duration observed %d times after east acknowledged its output, want 1", n)
	}
	if n := syncCount("west"); n != 0 {
		t.Errorf("sync duration of west observed %d times before west acknowledged, want 0", n)
	}

	resourceErrors := func() float64 {
		return sample(t, reg, "meshrelay_translation_errors_total", "kind", "resource").GetCounter().GetValue()
	}
	if v := resourceErrors(); v != 0 {
		t.Fatalf("meshrelay_translation_errors_total{kind=resource} = %v before any problem, want 0", v)
	}
	broken := parse(t, "apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: broken, namespace: shop}\nspec:\n  clusters: [east]\n  hosts: [broken.shop]\n  http:\n  - forwardTo: {destinations: [{ref: {name: nowhere}}]}\n")
	r.SetDirConfig(resource.Dedupe(append(slices.Clone(config), broken...)))
	poll.Until(t, wait, "a translation problem counted", func() bool { return resourceErrors() > 0 })
	problems := 0
	for _, msgs := range r.ResourceStatus() {
		for _, m := range msgs {
			if !translate.IsNote(m) {
				problems++
			}
		}
	}
	if problems == 0 {
		t.Fatalf("no problem in the resource status of a route to a missing destination: %v", r.ResourceStatus())
	}
}

// meshrelay_ha_lock_epoch follows the epoch of the server's role; meshrelay_ha_active says
// whether it is the active server; a cluster's NACK counter is exported at 0 from its first
// output on.
func TestEpochMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	role := &raisableRole{}
	role.epoch.Store(7)
	r := reconcile.New(reconcile.Config{Tick: tick, Role: role}, memstore.New(), translate.NewTranslator(), nil,
		slog.New(slog.NewTextHandler(t.Output(), nil)), reg)
	config := clusters(t, "east")
	r.SetDirConfig(config)
	run(t, r)
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(t.Context(), "east", inputs["east"])
	poll.Until(t, wait, "output of east", publishes(r, expect(t, config, inputs)))
	if v := metricValue(t, reg, "meshrelay_ha_lock_epoch"); v != 7 {
		t.Errorf("meshrelay_ha_lock_epoch = %v, want 7", v)
	}
	if v := metricValue(t, reg, "meshrelay_ha_active"); v != 1 {
		t.Errorf("meshrelay_ha_active = %v, want 1", v)
	}
	role.epoch.Store(9)
	if v := metricValue(t, reg, "meshrelay_ha_lock_epoch"); v != 9 {
		t.Errorf("meshrelay_ha_lock_epoch = %v after the epoch moved to 9", v)
	}
	if m := sample(t, reg, "meshrelay_output_snapshot_nacks_total", "cluster", "east"); m == nil || m.GetCounter().GetValue() != 0 {
		t.Errorf("meshrelay_output_snapshot_nacks_total{cluster=east} = %v before any NACK, want 0", m)
	}
	out := r.Output("east")
	r.Nacked("east", out.Version, out.Hash, "invalid")
	if m := sample(t, reg, "meshrelay_output_snapshot_nacks_total", "cluster", "east"); m.GetCounter().GetValue() != 1 {
		t.Errorf("meshrelay_output_snapshot_nacks_total{cluster=east} = %v after a NACK, want 1", m)
	}
}
