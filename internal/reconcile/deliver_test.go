package reconcile_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// timedTranslator is the real translator, recording when it translated what.
type timedTranslator struct {
	tr *translate.Translator

	mu   sync.Mutex // guards runs
	runs []timedRun
}

type timedRun struct {
	at time.Time
	in translate.Input
}

func (s *timedTranslator) TranslateContext(ctx context.Context, in translate.Input) (translate.Result, error) {
	s.mu.Lock()
	s.runs = append(s.runs, timedRun{at: time.Now(), in: in})
	s.mu.Unlock()
	return s.tr.TranslateContext(ctx, in)
}

// firstReading returns when the first translation reading s as east's input started.
func (s *timedTranslator) firstReading(east *snapshot.Snapshot) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.runs {
		if r.in.Inputs["east"] == east {
			return r.at, true
		}
	}
	return time.Time{}, false
}

// TestInputChangesWaitForConfigDelivery: input changes that arrive right after a
// configuration change are translated once the change reached the connected agents (east's
// acknowledged it; west has no agent to wait for), or after a second without that, not
// before: under endpoint churn, translating them at once would take the CPU from delivering
// the configuration change. A configuration change never waits.
func TestInputChangesWaitForConfigDelivery(t *testing.T) {
	config := clusters(t, "east", "west")
	route := func(name string) []resource.Object {
		return parse(t, "apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: "+name+", namespace: shop}\nspec:\n  clusters: [east, west]\n  hosts: ["+name+".shop]\n  http:\n  - forwardTo: {destinations: [{ref: {name: shop-web-80}}]}\n")
	}
	tr := &timedTranslator{tr: translate.NewTranslator()}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := reconcile.New(reconcile.Config{Tick: tick}, memstore.New(), tr, nil, log, reg)
	r.SetDirConfig(config)
	run(t, r)
	ctx := t.Context()
	inputs := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1, "web")}
	for c, s := range inputs {
		r.PutInput(ctx, c, s)
	}
	poll.Until(t, wait, "outputs of the first inputs", publishes(r, expect(t, config, inputs)))
	_, unsubscribe := r.Subscribe("east") // east's agent is connected; west's is not
	defer unsubscribe()

	// A configuration change, then an input change while it is delivered.
	config = resource.Dedupe(append(slices.Clone(config), route("first")...))
	r.SetDirConfig(config)
	poll.Until(t, wait, "outputs of the configuration change", publishes(r, expect(t, config, inputs)))
	inputs["east"] = input(t, 2, "web", "api")
	r.PutInput(ctx, "east", inputs["east"])
	time.Sleep(300 * time.Millisecond)
	if at, ok := tr.firstReading(inputs["east"]); ok {
		t.Fatalf("the input change was translated %v after it arrived, before east acknowledged the configuration change", time.Since(at))
	}
	out := r.Output("east")
	acked := time.Now()
	r.Acked("east", out.Version, out.Hash, "east-agent")
	poll.Until(t, wait, "outputs of the input change", publishes(r, expect(t, config, inputs)))
	if at, _ := tr.firstReading(inputs["east"]); at.Before(acked) {
		t.Fatalf("the input change was translated before the acknowledgement")
	}
	if got := metricValue(t, reg, "meshrelay_translation_inputs_deferred_total"); got != 1 {
		t.Errorf("meshrelay_translation_inputs_deferred_total = %v, want 1", got)
	}

	// Without an acknowledgement, the input change waits a second at most.
	config = resource.Dedupe(append(slices.Clone(config), route("second")...))
	r.SetDirConfig(config)
	poll.Until(t, wait, "outputs of the second configuration change", publishes(r, expect(t, config, inputs)))
	inputs["east"] = input(t, 3, "web")
	put := time.Now()
	r.PutInput(ctx, "east", inputs["east"])
	poll.Until(t, wait, "outputs of the unacknowledged input change", publishes(r, expect(t, config, inputs)))
	at, _ := tr.firstReading(inputs["east"])
	if d := at.Sub(put); d < 500*time.Millisecond {
		t.Errorf("the input change was translated %v after it arrived, while the configuration change was unacknowledged", d)
	}

	// A configuration change does not wait for one still on its way.
	config = resource.Dedupe(append(slices.Clone(config), route("third")...))
	r.SetDirConfig(config)
	poll.Until(t, wait, "outputs of the third configuration change", publishes(r, expect(t, config, inputs)))
	changed := time.Now()
	config = resource.Dedupe(append(slices.Clone(config), route("fourth")...))
	r.SetDirConfig(config)
	poll.Until(t, wait, "outputs of the fourth configuration change", publishes(r, expect(t, config, inputs)))
	if d := time.Since(changed); d > 900*time.Millisecond {
		t.Errorf("the configuration change took %v to publish while the previous one was unacknowledged; it must not wait", d)
	}
}
