// Package safemode decides whether the management server may translate now. It is a pure
// core in the manner of etcd's raft: no I/O, no locks and no clock (the caller passes the
// time). The reconciler gathers the facts under its lock, asks Decide, and applies the
// decision: its logs, its metrics and the safe mode shown in /status.
//
// Translation is held while the configuration may lack part of what the store or the
// configuration source holds (Loaded.Reason), and while a registered cluster lacks its mesh
// identity. Until the first release after a start (the state becomes warm), it is also held
// while a registered cluster without skipWarming has no input snapshot: for as long as it
// takes in safe mode, otherwise for at most the safe start window. Once warm, a missing input
// no longer holds translation; an incomplete configuration still does.
package safemode

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

// Status says whether translation is held and why.
type Status struct {
	Active  bool      `json:"active"`
	Reason  string    `json:"reason,omitempty"`
	Missing []string  `json:"missingClusters,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// State is what one decision hands to the next.
type State struct {
	Status Status
	// Warm is set by the first release after a start: from then on, missing inputs no
	// longer hold translation.
	Warm bool
}

// Loaded says whether the configuration is complete.
type Loaded struct {
	// Snapshots and Config say whether the stored snapshots and the applied configuration
	// were read from the store.
	Snapshots, Config bool
	// StoreError is the last store error ("" when none), named while not loaded.
	StoreError string
	// Broken lists the stored configuration resources that do not decode ("key: error").
	Broken []string
	// WaitForConfigDir says to wait until the configuration source (config directory or
	// custom resources) was read once, and ConfigDir whether it was.
	WaitForConfigDir, ConfigDir bool
}

// Reason says why the configuration may lack part of what the store or the configuration
// source holds; "" when it is complete.
func (l Loaded) Reason() string {
	switch {
	case !l.Snapshots || !l.Config:
		reason := "configuration not loaded from the store yet"
		if l.StoreError != "" {
			reason += ": " + l.StoreError
		}
		return reason
	case len(l.Broken) > 0:
		return "stored configuration resources do not decode (delete or apply them again): " + strings.Join(l.Broken, "; ")
	case l.WaitForConfigDir && !l.ConfigDir:
		return "configuration source (config directory or custom resources) not read yet"
	}
	return ""
}

// Input is what one decision is made from.
type Input struct {
	// Now is the time of the decision, StartedAt when the server started.
	Now, StartedAt time.Time
	// SafeMode holds translation until every registered cluster without skipWarming has an
	// input; without it, SafeStartWindow is how long after the start to wait at most.
	SafeMode        bool
	SafeStartWindow time.Duration
	Loaded          Loaded
	// Passive says that this server does not translate (another one is active).
	Passive bool
	// Clusters are the registered clusters (with their skipWarming).
	Clusters map[string]v1alpha1.KubernetesCluster
	// Inputs are the clusters that have an input snapshot (others may be listed).
	Inputs map[string]bool
	// RequireIdentities holds translation until every registered cluster is in Identities
	// (it has its mesh identity).
	RequireIdentities bool
	Identities        map[string]bool
}

// Outcome is what to do this round.
type Outcome int

const (
	// Translate: translation may run.
	Translate Outcome = iota
	// HoldNotLoaded: held because the configuration is incomplete or a mesh identity is
	// missing.
	HoldNotLoaded
	// HoldInputs: held by safe mode or the safe start window for missing inputs.
	HoldInputs
	// Passive: a passive server does not translate; the state is unchanged.
	Passive
)

func (o Outcome) String() string {
	switch o {
	case Translate:
		return "translate"
	case HoldNotLoaded:
		return "hold-not-loaded"
	case HoldInputs:
		return "hold-inputs"
	case Passive:
		return "passive"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Event is what the decision asks to log.
type Event int

const (
	// NoEvent: nothing changed worth a log line.
	NoEvent Event = iota
	// Held: translation is held for a reason it was not held for before.
	Held
	// Resumed: translation resumes after a hold (or with inputs missing, once the safe start
	// window ended).
	Resumed
)

// Decision is the outcome of one round and the state for the next.
type Decision struct {
	Outcome Outcome
	State   State
	Event   Event
	// Warming says that the missing inputs were checked this round (the state was not warm
	// yet); Missing then lists the clusters without skipWarming that lack an input, sorted,
	// nil when none.
	Warming bool
	Missing []string
}

// Decide makes the decision of one round from the previous state and the facts.
func Decide(prev State, in Input) Decision {
	if reason := in.Loaded.Reason(); reason != "" {
		return holdNotLoaded(prev, in, reason)
	}
	if in.Passive {
		return Decision{Outcome: Passive, State: prev}
	}
	if in.RequireIdentities {
		if missing := missingIdentities(in.Clusters, in.Identities); len(missing) > 0 {
			return holdNotLoaded(prev, in, "mesh identity not issued or not read from the store yet for clusters "+strings.Join(missing, ", "))
		}
	}
	if prev.Warm {
		d := Decision{Outcome: Translate, State: State{Warm: true}}
		if prev.Status.Active {
			d.Event = Resumed
		}
		return d
	}
	missing := missingInputs(in.Clusters, in.Inputs)
	reason := ""
	switch {
	case len(missing) == 0:
	case in.SafeMode:
		reason = "safe mode: waiting for the input snapshot of every registered cluster"
	case in.Now.Before(in.StartedAt.Add(in.SafeStartWindow)):
		reason = fmt.Sprintf("safe start window: waiting up to %s for missing inputs", in.SafeStartWindow)
	}
	d := Decision{Warming: true, Missing: missing}
	if reason != "" {
		d.Outcome = HoldInputs
		d.State = State{Status: Status{Active: true, Reason: reason, Missing: missing, Since: in.StartedAt}}
		if !prev.Status.Active || prev.Status.Reason != reason {
			d.Event = Held
		}
		return d
	}
	d.Outcome, d.State = Translate, State{Warm: true}
	if prev.Status.Active || len(missing) > 0 {
		d.Event = Resumed
	}
	return d
}

// holdNotLoaded holds translation like safe mode while the configuration is incomplete:
// outputs are never made from a configuration that misses what the store holds. A hold that
// goes on keeps its start; one that starts after translation began starts now.
func holdNotLoaded(prev State, in Input, reason string) Decision {
	since := in.StartedAt
	switch {
	case prev.Status.Active:
		since = prev.Status.Since
	case prev.Warm: // a stored resource stopped decoding after translation had started
		since = in.Now
	}
	d := Decision{
		Outcome: HoldNotLoaded,
		State:   State{Status: Status{Active: true, Reason: reason, Since: since}, Warm: prev.Warm},
	}
	if !prev.Status.Active || prev.Status.Reason != reason {
		d.Event = Held
	}
	return d
}

// missingInputs lists the clusters without skipWarming that have no input, sorted.
func missingInputs(clusters map[string]v1alpha1.KubernetesCluster, inputs map[string]bool) []string {
	var missing []string
	for name, kc := range clusters {
		if !kc.Spec.SkipWarming && !inputs[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	return missing
}

// missingIdentities lists the clusters without a mesh identity, sorted. Translating them
// would publish outputs without it: every gateway of theirs would lose its identity, and with
// it the east-west mTLS (a server restarted on an emptied store, before the leader issued
// again).
func missingIdentities(clusters map[string]v1alpha1.KubernetesCluster, identities map[string]bool) []string {
	var missing []string
	for c := range clusters {
		if !identities[c] {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	return missing
}
