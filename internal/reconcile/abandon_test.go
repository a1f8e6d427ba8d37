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

// slowTranslator is the real translator, except that the translations hold(in) picks take
// until their context ends or release is closed, like a translation of heavy endpoint churn
// would, and those delay(in) picks take that much longer. It records what every finished
// translation read.
type slowTranslator struct {
	tr      *translate.Translator
	hold    func(in translate.Input) bool
	delay   func(in translate.Input) time.Duration // nil: none
	held    chan struct{}                          // receives when a held or delayed translation starts
	release chan struct{}                          // nil: held until abandoned

	mu       sync.Mutex // guards finished
	finished []translate.Input
}

func (s *slowTranslator) TranslateContext(ctx context.Context, in translate.Input) (translate.Result, error) {
	var d time.Duration
	if s.delay != nil {
		d = s.delay(in)
	}
	if held := s.hold(in); held || d > 0 {
		select {
		case s.held <- struct{}{}:
		default:
		}
		if held {
			select {
			case <-ctx.Done():
				return translate.Result{}, context.Cause(ctx)
			case <-s.release:
			}
		}
		time.Sleep(d)
	}
	res, err := s.tr.TranslateContext(ctx, in)
	if err == nil {
		s.mu.Lock()
		s.finished = append(s.finished, in)
		s.mu.Unlock()
	}
	return res, err
}

// readings says, for each finished translation that with picks, whether it read east's
// churned input ("newer inputs") or not ("previous inputs"), in order.
func (s *slowTranslator) readings(with func(translate.Input) bool, churned *snapshot.Snapshot) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, in := range s.finished {
		if with(in) {
			out = append(out, map[bool]string{true: "newer inputs", false: "previous inputs"}[in.Inputs["east"] == churned])
		}
	}
	return out
}

// TestConfigChangeAbandonsInputTranslation: a configuration change made while a
// translation of input changes runs abandons it, is translated first with the inputs the
// agents' outputs were made of, and the newer inputs right after it.
func TestConfigChangeAbandonsInputTranslation(t *testing.T) {
	config := clusters(t, "east", "west")
	marker := parse(t, "apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: marker, namespace: shop}\nspec:\n  clusters: [east, west]\n  hosts: [marker.shop]\n  http:\n  - forwardTo: {destinations: [{ref: {name: shop-web-80}}]}\n")
	config2 := resource.Dedupe(append(slices.Clone(config), marker...))
	old := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1, "web")}
	churned := input(t, 2, "web", "api")
	hasMarker := func(in translate.Input) bool {
		return slices.ContainsFunc(in.Config, func(o resource.Object) bool { return o.Name == "marker" })
	}
	slow := &slowTranslator{tr: translate.NewTranslator(), held: make(chan struct{}, 1),
		hold: func(in translate.Input) bool { return in.Inputs["east"] == churned && !hasMarker(in) }}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := reconcile.New(reconcile.Config{Tick: tick}, memstore.New(), slow, nil, log, reg)
	r.SetDirConfig(config)
	run(t, r)
	ctx := t.Context()
	for c, s := range old {
		r.PutInput(ctx, c, s)
	}
	poll.Until(t, wait, "outputs of the first inputs", publishes(r, expect(t, config, old)))

	r.PutInput(ctx, "east", churned) // a translation of this input change starts and takes long
	select {
	case <-slow.held:
	case <-ctx.Done():
		t.Fatal("the input change was not translated")
	}
	r.SetDirConfig(config2)
	newer := map[string]*snapshot.Snapshot{"east": churned, "west": old["west"]}
	poll.Until(t, wait, "outputs of the configuration change and the newer inputs", publishes(r, expect(t, config2, newer)))

	after := slow.readings(hasMarker, churned) // what the translations with the configuration change read
	if len(after) < 2 || after[0] != "previous inputs" || after[1] != "newer inputs" {
		t.Errorf("translations of the configuration change read %v; want the previous inputs first, then the newer ones", after)
	}
	if got := metricValue(t, reg, "meshrelay_translation_abandoned_total"); got != 1 {
		t.Errorf("meshrelay_translation_abandoned_total = %v, want 1", got)
	}
	if got := metricValue(t, reg, "meshrelay_translation_config_first_total"); got != 1 {
		t.Errorf("meshrelay_translation_config_first_total = %v, want 1", got)
	}
}

// TestConfigChangesInARowGoFirst: a second configuration change that comes while the
// newer inputs following the first one are translated goes first too, abandoning that
// translation, while those inputs have waited less than MaxInputWait; once they have
// waited that long, it waits for their translation (which it no longer abandons); and once
// they have waited twice as long, it is translated together with them. (MaxInputWait is a
// minute in the first case, so that a slow machine cannot reach it.)
func TestConfigChangesInARowGoFirst(t *testing.T) {
	for _, tc := range []struct {
		name         string
		maxInputWait time.Duration
		after        time.Duration // between the first change's translation and the second change
		slowFirst    bool          // the first change's translation takes `after` longer
		abandoned    float64       // translations abandoned in all
		second       []string      // what the translations with the second change read
		firstNewer   bool          // a translation read the first change and the newer inputs
	}{
		{name: "at once: the second change abandons the newer inputs' translation", maxInputWait: time.Minute,
			abandoned: 2, second: []string{"previous inputs", "newer inputs"}},
		{name: "after the inputs waited MaxInputWait: it waits for their translation", maxInputWait: 300 * time.Millisecond, after: 600 * time.Millisecond,
			abandoned: 1, second: []string{"newer inputs"}, firstNewer: true},
		{name: "after the inputs waited twice MaxInputWait: it is translated with them", maxInputWait: 200 * time.Millisecond, after: 600 * time.Millisecond, slowFirst: true,
			abandoned: 1, second: []string{"newer inputs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testConfigChangesInARow(t, tc.maxInputWait, tc.after, tc.slowFirst, tc.abandoned, tc.second, tc.firstNewer)
		})
	}
}

func testConfigChangesInARow(t *testing.T, maxInputWait, after time.Duration, slowFirst bool, abandoned float64, wantSecond []string, wantFirstNewer bool) {
	config := clusters(t, "east", "west")
	rt := func(name string) []resource.Object {
		return parse(t, "apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: "+name+", namespace: shop}\nspec:\n  clusters: [east, west]\n  hosts: ["+name+".shop]\n  http:\n  - forwardTo: {destinations: [{ref: {name: shop-web-80}}]}\n")
	}
	has := func(in translate.Input, name string) bool {
		return slices.ContainsFunc(in.Config, func(o resource.Object) bool { return o.Name == name })
	}
	config1 := resource.Dedupe(append(slices.Clone(config), rt("first")...))
	config2 := resource.Dedupe(append(slices.Clone(config1), rt("second")...))
	old := map[string]*snapshot.Snapshot{"east": input(t, 1, "web"), "west": input(t, 1, "web")}
	churned := input(t, 2, "web", "api")
	// Translations of the churned input are held until abandoned or released, unless they
	// carry the second change; with slowFirst, the first change's (with the previous
	// inputs) takes `after` longer.
	slow := &slowTranslator{tr: translate.NewTranslator(), held: make(chan struct{}, 1), release: make(chan struct{}),
		hold: func(in translate.Input) bool { return in.Inputs["east"] == churned && !has(in, "second") }}
	if slowFirst {
		slow.delay = func(in translate.Input) time.Duration {
			if has(in, "first") && in.Inputs["east"] != churned {
				return after
			}
			return 0
		}
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	r := reconcile.New(reconcile.Config{Tick: tick, MaxInputWait: maxInputWait}, memstore.New(), slow, nil, log, reg)
	r.SetDirConfig(config)
	run(t, r)
	ctx := t.Context()
	for c, s := range old {
		r.PutInput(ctx, c, s)
	}
	poll.Until(t, wait, "outputs of the first inputs", publishes(r, expect(t, config, old)))

	r.PutInput(ctx, "east", churned)
	<-slow.held
	r.SetDirConfig(config1) // goes first, then the churned input is translated again (held)
	if slowFirst {
		<-slow.held             // the first change's translation started
		r.SetDirConfig(config2) // comes while it runs
	} else {
		poll.Until(t, wait, "outputs of the first change with the previous inputs", publishes(r, expect(t, config1, old)))
		<-slow.held
		time.Sleep(after)
		r.SetDirConfig(config2)
	}
	if wantFirstNewer {
		// The held translation of the first change and the newer inputs is not abandoned.
		time.Sleep(200 * time.Millisecond)
		if got := metricValue(t, reg, "meshrelay_translation_abandoned_total"); got != abandoned {
			t.Errorf("meshrelay_translation_abandoned_total = %v while the inputs that waited were translated, want %v", got, abandoned)
		}
		if got := metricValue(t, reg, "meshrelay_translation_config_waited_total"); got != 1 {
			t.Errorf("meshrelay_translation_config_waited_total = %v, want 1", got)
		}
	}
	close(slow.release)
	newer := map[string]*snapshot.Snapshot{"east": churned, "west": old["west"]}
	poll.Until(t, wait, "outputs of both changes and the newer inputs", publishes(r, expect(t, config2, newer)))

	// What matters is the order of what they read: a kick that lands after the round it asked
	// for has started (SetDirConfig's, when the abandoned translation's own kick came first)
	// translates the same state once more, which changes nothing (1 run in 30 under -race).
	second := slices.Compact(slow.readings(func(in translate.Input) bool { return has(in, "second") }, churned))
	if !slices.Equal(second, wantSecond) {
		t.Errorf("translations of the second change read %v; want %v", second, wantSecond)
	}
	firstOnly := slow.readings(func(in translate.Input) bool { return has(in, "first") && !has(in, "second") }, churned)
	if got := slices.Contains(firstOnly, "newer inputs"); got != wantFirstNewer {
		t.Errorf("translations of the first change alone read %v; want one with the newer inputs: %t", firstOnly, wantFirstNewer)
	}
	if got := metricValue(t, reg, "meshrelay_translation_abandoned_total"); got != abandoned {
		t.Errorf("meshrelay_translation_abandoned_total = %v, want %v", got, abandoned)
	}
}
