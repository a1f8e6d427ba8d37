package reconcile_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// logBuffer keeps the JSON log lines a reconciler writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the log records with message msg.
func (b *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// gauges returns the values of a gauge vector by its cluster label.
func gauges(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			cluster := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "cluster" {
					cluster = l.GetValue()
				}
			}
			out[cluster] = m.GetGauge().GetValue()
		}
	}
	return out
}

// The reconciler carries out the safe-mode decision as it always did: "translation held" is
// logged once per reason with the missing clusters, meshrelay_safe_mode_active names them,
// "translation resumed" is logged once on release, and a cluster registered later without
// an input does not hold translation again (the server is warm).
func TestSafeModeDecisionApplied(t *testing.T) {
	var logs logBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	r := reconcile.New(reconcile.Config{SafeMode: true, Tick: tick}, memstore.New(), translate.NewTranslator(), nil, log, reg)
	config := clusters(t, "east", "west")
	r.SetDirConfig(config)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web")}
	r.PutInput(ctx, "east", inputs["east"]) // before the first round: it holds for west alone
	run(t, r)

	poll.Until(t, wait, "safe mode missing west", func() bool {
		sm := r.Status().SafeMode
		return sm.Active && slices.Equal(sm.Missing, []string{"west"})
	})
	since := r.Status().SafeMode.Since
	for range 10 { // rounds that hold for the same reason log nothing new
		time.Sleep(tick)
	}
	if sm := r.Status().SafeMode; !sm.Since.Equal(since) || since.IsZero() {
		t.Errorf("safe mode since %v, then %v: the hold keeps its start", since, sm.Since)
	}
	held := logs.records(t, "translation held")
	if len(held) != 1 {
		t.Fatalf("%d \"translation held\" lines for one reason, want 1: %v", len(held), held)
	}
	if h := held[0]; h["level"] != "WARN" || !strings.HasPrefix(h["reason"].(string), "safe mode:") || !slices.Equal(anyStrings(h["missing"]), []string{"west"}) {
		t.Errorf("translation held logged as %v", h)
	}
	if g := gauges(t, reg, "meshrelay_safe_mode_active"); len(g) != 1 || g["west"] != 1 {
		t.Errorf("meshrelay_safe_mode_active = %v while west is missing, want west=1 only", g)
	}
	if v := configNotLoaded(t, reg); v != 0 {
		t.Errorf("meshrelay_safe_mode_config_not_loaded = %v while held for inputs, want 0", v)
	}

	inputs["west"] = input(t, 1, "api")
	r.PutInput(ctx, "west", inputs["west"])
	poll.Until(t, wait, "outputs of east and west", publishes(r, expect(t, config, inputs)))
	if sm := r.Status().SafeMode; sm.Active || !sm.Since.IsZero() {
		t.Errorf("safe mode %+v after release", sm)
	}
	if g := gauges(t, reg, "meshrelay_safe_mode_active"); len(g) != 1 || g["west"] != 0 {
		t.Errorf("meshrelay_safe_mode_active = %v after release, want west=0 (the series stays)", g)
	}
	resumed := logs.records(t, "translation resumed")
	if len(resumed) != 1 || resumed[0]["level"] != "INFO" {
		t.Fatalf("\"translation resumed\" lines %v, want one at INFO", resumed)
	}

	// Warm: a cluster registered later without an input is translated without waiting.
	config = clusters(t, "east", "west", "north")
	r.SetDirConfig(config)
	poll.Until(t, wait, "an output for north, which never reported", func() bool { return r.Output("north") != nil })
	if sm := r.Status().SafeMode; sm.Active {
		t.Errorf("a warm server held translation again for a missing input: %+v", sm)
	}
	if n := len(logs.records(t, "translation held")); n != 1 {
		t.Errorf("%d \"translation held\" lines after north was registered, want still 1", n)
	}
}

func anyStrings(v any) []string {
	vs, _ := v.([]any)
	out := make([]string, 0, len(vs))
	for _, s := range vs {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}
