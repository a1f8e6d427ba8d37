package safemode_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/reconcile/safemode"
)

var (
	start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now   = start.Add(10 * time.Second)
	// earlier is when a hold that goes on began.
	earlier = start.Add(3 * time.Second)
)

const (
	reasonSafe      = "safe mode: waiting for the input snapshot of every registered cluster"
	reasonWindow    = "safe start window: waiting up to 1m0s for missing inputs"
	reasonNotLoaded = "configuration not loaded from the store yet"
	reasonStoreDown = "configuration not loaded from the store yet: read config revision: connection refused"
	reasonBroken    = "stored configuration resources do not decode (delete or apply them again): FutureKind/shop/x: unknown kind; Bad/y: bad"
	reasonDir       = "configuration source (config directory or custom resources) not read yet"
	reasonIdentity  = "mesh identity not issued or not read from the store yet for clusters east, west"
)

// loaded is a complete configuration.
var loaded = safemode.Loaded{Snapshots: true, Config: true, WaitForConfigDir: true, ConfigDir: true}

func clusters(names ...string) map[string]v1alpha1.KubernetesCluster {
	out := map[string]v1alpha1.KubernetesCluster{}
	for _, n := range names {
		kc := v1alpha1.KubernetesCluster{}
		kc.Metadata.Name = n
		out[n] = kc
	}
	return out
}

func skipWarming(cs map[string]v1alpha1.KubernetesCluster, names ...string) map[string]v1alpha1.KubernetesCluster {
	for _, n := range names {
		kc := cs[n]
		kc.Spec.SkipWarming = true
		cs[n] = kc
	}
	return cs
}

func set(names ...string) map[string]bool {
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

// input is a round of a server started at start, now, with a complete configuration and
// east and west registered.
func input(f func(*safemode.Input)) safemode.Input {
	in := safemode.Input{
		Now: now, StartedAt: start, Loaded: loaded,
		Clusters: clusters("east", "west"),
	}
	if f != nil {
		f(&in)
	}
	return in
}

func held(reason string, since time.Time, missing ...string) safemode.Status {
	return safemode.Status{Active: true, Reason: reason, Missing: missing, Since: since}
}

// TestDecide is the decision's table: the state the previous round left and the facts of
// this one, in; the outcome, the next state, the log event and the missing inputs, out.
func TestDecide(t *testing.T) {
	cold := safemode.State{}
	warm := safemode.State{Warm: true}
	tests := []struct {
		name string
		prev safemode.State
		in   safemode.Input
		want safemode.Decision
	}{
		// Warm-up: inputs.
		{
			name: "safe mode holds while an input is missing",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.SafeMode, in.Inputs = true, set("east") }),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonSafe, start, "west")},
				Event: safemode.Held, Warming: true, Missing: []string{"west"}},
		},
		{
			name: "safe mode holds past any window",
			prev: cold,
			in: input(func(in *safemode.Input) {
				in.SafeMode, in.SafeStartWindow, in.Now = true, time.Second, start.Add(time.Hour)
			}),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonSafe, start, "east", "west")},
				Event: safemode.Held, Warming: true, Missing: []string{"east", "west"}},
		},
		{
			name: "a hold for the same reason logs nothing again and keeps its start",
			prev: safemode.State{Status: held(reasonSafe, start, "east", "west")},
			in:   input(func(in *safemode.Input) { in.SafeMode, in.Inputs = true, set("west") }),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonSafe, start, "east")},
				Warming: true, Missing: []string{"east"}},
		},
		{
			name: "a hold for another reason is logged",
			prev: safemode.State{Status: held(reasonNotLoaded, start)},
			in:   input(func(in *safemode.Input) { in.SafeMode = true }),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonSafe, start, "east", "west")},
				Event: safemode.Held, Warming: true, Missing: []string{"east", "west"}},
		},
		{
			name: "safe mode releases once every input is present",
			prev: safemode.State{Status: held(reasonSafe, start, "west")},
			in:   input(func(in *safemode.Input) { in.SafeMode, in.Inputs = true, set("east", "west") }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Event: safemode.Resumed, Warming: true},
		},
		{
			name: "skipWarming clusters do not hold",
			prev: cold,
			in: input(func(in *safemode.Input) {
				in.SafeMode, in.Inputs, in.Clusters = true, set("east"), skipWarming(clusters("east", "west"), "west")
			}),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Warming: true},
		},
		{
			name: "inputs of unregistered clusters do not count",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.SafeMode, in.Inputs = true, set("east", "north") }),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonSafe, start, "west")},
				Event: safemode.Held, Warming: true, Missing: []string{"west"}},
		},
		{
			name: "no registered cluster: nothing to wait for, released quietly",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.SafeMode, in.Clusters = true, nil }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Warming: true},
		},
		{
			name: "without safe mode or window, missing inputs do not hold but are named",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.Inputs = set("east") }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Event: safemode.Resumed, Warming: true, Missing: []string{"west"}},
		},
		{
			name: "the safe start window holds before its end",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.SafeStartWindow, in.Inputs = time.Minute, set("west") }),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonWindow, start, "east")},
				Event: safemode.Held, Warming: true, Missing: []string{"east"}},
		},
		{
			name: "the safe start window ends at start plus the window",
			prev: safemode.State{Status: held(reasonWindow, start, "east")},
			in: input(func(in *safemode.Input) {
				in.SafeStartWindow, in.Inputs, in.Now = time.Minute, set("west"), start.Add(time.Minute)
			}),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Event: safemode.Resumed, Warming: true, Missing: []string{"east"}},
		},
		{
			name: "the safe start window ends early when every input is present",
			prev: safemode.State{Status: held(reasonWindow, start, "east")},
			in:   input(func(in *safemode.Input) { in.SafeStartWindow, in.Inputs = time.Minute, set("east", "west") }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Event: safemode.Resumed, Warming: true},
		},
		// Warm: missing inputs no longer hold.
		{
			name: "once warm, a missing input does not hold again",
			prev: warm,
			in:   input(func(in *safemode.Input) { in.SafeMode = true }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm},
		},
		{
			name: "once warm, the end of a not-loaded hold resumes without checking inputs",
			prev: safemode.State{Status: held(reasonDir, earlier), Warm: true},
			in:   input(func(in *safemode.Input) { in.SafeMode = true }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Event: safemode.Resumed},
		},
		// Not loaded: the configuration is incomplete.
		{
			name: "snapshots not loaded hold from the start",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.Loaded.Snapshots, in.Inputs = false, set("east", "west") }),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonNotLoaded, start)}, Event: safemode.Held},
		},
		{
			name: "applied configuration not loaded names the store error",
			prev: cold,
			in: input(func(in *safemode.Input) {
				in.Loaded.Config, in.Loaded.StoreError = false, "read config revision: connection refused"
			}),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonStoreDown, start)}, Event: safemode.Held},
		},
		{
			name: "a store error while loaded does not hold",
			prev: warm,
			in:   input(func(in *safemode.Input) { in.Loaded.StoreError = "connection refused" }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm},
		},
		{
			name: "broken stored resources hold even when warm, from now",
			prev: warm,
			in:   input(func(in *safemode.Input) { in.Loaded.Broken = []string{"FutureKind/shop/x: unknown kind", "Bad/y: bad"} }),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonBroken, now), Warm: true}, Event: safemode.Held},
		},
		{
			name: "a not-loaded hold that goes on keeps its start and logs nothing",
			prev: safemode.State{Status: held(reasonDir, earlier), Warm: true},
			in:   input(func(in *safemode.Input) { in.Loaded.ConfigDir = false }),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonDir, earlier), Warm: true}},
		},
		{
			name: "a not-loaded hold after a safe-mode hold keeps its start, drops the missing clusters",
			prev: safemode.State{Status: held(reasonSafe, start, "west")},
			in:   input(func(in *safemode.Input) { in.Loaded.ConfigDir = false }),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonDir, start)}, Event: safemode.Held},
		},
		{
			name: "the config directory is waited for only when asked",
			prev: cold,
			in: input(func(in *safemode.Input) {
				in.Loaded.WaitForConfigDir, in.Loaded.ConfigDir, in.Inputs = false, false, set("east", "west")
			}),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Warming: true},
		},
		{
			name: "not loaded holds a passive server too",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.Loaded.Snapshots, in.Passive = false, true }),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonNotLoaded, start)}, Event: safemode.Held},
		},
		// Passive servers.
		{
			name: "a passive server does not translate and keeps the state",
			prev: safemode.State{Status: held(reasonNotLoaded, earlier)},
			in: input(func(in *safemode.Input) {
				in.Passive, in.RequireIdentities = true, true
			}),
			want: safemode.Decision{Outcome: safemode.Passive, State: safemode.State{Status: held(reasonNotLoaded, earlier)}},
		},
		// Mesh identities.
		{
			name: "missing mesh identities hold, even when warm",
			prev: warm,
			in: input(func(in *safemode.Input) {
				in.RequireIdentities, in.Identities, in.Clusters = true, set("south"), clusters("east", "south", "west")
			}),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonIdentity, now), Warm: true}, Event: safemode.Held},
		},
		{
			name: "identities are checked before inputs",
			prev: cold,
			in: input(func(in *safemode.Input) {
				in.SafeMode, in.RequireIdentities, in.Identities = true, true, map[string]bool{"south": true, "east": false}
			}),
			want: safemode.Decision{Outcome: safemode.HoldNotLoaded, State: safemode.State{Status: held(reasonIdentity, start)}, Event: safemode.Held},
		},
		{
			name: "identities not required do not hold",
			prev: cold,
			in:   input(func(in *safemode.Input) { in.Inputs = set("east", "west") }),
			want: safemode.Decision{Outcome: safemode.Translate, State: warm, Warming: true},
		},
		{
			name: "every identity present: inputs decide",
			prev: cold,
			in: input(func(in *safemode.Input) {
				in.SafeMode, in.RequireIdentities, in.Identities, in.Inputs = true, true, set("east", "west"), set("east")
			}),
			want: safemode.Decision{Outcome: safemode.HoldInputs, State: safemode.State{Status: held(reasonSafe, start, "west")},
				Event: safemode.Held, Warming: true, Missing: []string{"west"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := safemode.Decide(tt.prev, tt.in)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decide\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

// TestDecideIsDeterministic runs the same rounds twice: a pure core gives the same
// decisions for the same facts (map order must not leak into the missing clusters).
func TestDecideIsDeterministic(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	in := input(func(in *safemode.Input) {
		in.SafeMode, in.Clusters, in.RequireIdentities, in.Identities = true, clusters(names...), true, set(names...)
	})
	first := safemode.Decide(safemode.State{}, in)
	for range 20 {
		if got := safemode.Decide(safemode.State{}, in); !reflect.DeepEqual(got, first) {
			t.Fatalf("Decide gave %+v, then %+v", first, got)
		}
	}
	if !reflect.DeepEqual(first.Missing, names) {
		t.Fatalf("missing %v, want %v sorted", first.Missing, names)
	}
}
