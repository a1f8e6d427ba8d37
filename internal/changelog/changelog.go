// Package changelog keeps a bounded, in-memory timeline of this server's configuration
// changes: what changed, when, through which path (apply, delete, config directory,
// Kubernetes CRs), and when each registered cluster acknowledged an output translated from
// it. The UI shows it; it is lost when the server stops and holds only the changes that
// reached this server (an apply to another replica appears in that replica's log).
package changelog

import (
	"bytes"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// The paths a change takes into the server.
const (
	PathApply     = "apply"      // POST /api/v1/apply (meshrelay apply)
	PathDelete    = "delete"     // DELETE /api/v1/... (meshrelay delete)
	PathConfigDir = "config-dir" // --config-dir
	PathCR        = "cr"         // Kubernetes custom resources
)

// Bounds of the log: the newest MaxEntries changes, each naming at most MaxKeys resources.
const (
	MaxEntries = 200
	MaxKeys    = 50
)

// Entry is one configuration change.
type Entry struct {
	ID   uint64    `json:"id"`
	At   time.Time `json:"at"`
	Path string    `json:"path"`
	// Added, Changed and Removed are resource keys (Kind/namespace/name), at most MaxKeys
	// in all; Omitted counts those left out.
	Added   []string `json:"added,omitempty"`
	Changed []string `json:"changed,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Omitted int      `json:"omitted,omitempty"`
	// Acks are the clusters whose agent acknowledged an output translated after the change,
	// with when this server saw it and the version acknowledged.
	Acks map[string]Ack `json:"acks,omitempty"`
}

// Ack is a cluster's acknowledgement of a change.
type Ack struct {
	At      time.Time `json:"at"`
	Version uint64    `json:"version"`
}

// Log is the bounded change log; it is safe for concurrent use.
type Log struct {
	max int

	mu      sync.Mutex // guards next and entries
	next    uint64
	entries []Entry // oldest first
}

// New returns an empty log keeping the newest max entries (MaxEntries when max <= 0).
func New(max int) *Log {
	if max <= 0 {
		max = MaxEntries
	}
	return &Log{max: max}
}

// Record adds a change at time at from the effective configuration before and after it;
// a change that changes nothing (the same objects applied again) is not recorded.
func (l *Log) Record(at time.Time, path string, before, after []resource.Object) {
	e := diff(before, after)
	if len(e.Added)+len(e.Changed)+len(e.Removed)+e.Omitted == 0 {
		return
	}
	e.At, e.Path = at.UTC(), path
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	e.ID = l.next
	l.entries = append(l.entries, e)
	if n := len(l.entries) - l.max; n > 0 {
		l.entries = slices.Delete(l.entries, 0, n)
	}
}

// Observe records the acknowledgements the reconciler's status shows: a cluster has
// acknowledged a change when a translation started after it and the cluster is in sync
// (its agent acknowledged the current output), seen at time now.
func (l *Log) Observe(st reconcile.Status, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.entries {
		e := &l.entries[i]
		if !st.LastTranslation.After(e.At) {
			continue
		}
		for _, c := range st.Clusters {
			if !c.InSync || c.AckedVersion == 0 {
				continue
			}
			if _, ok := e.Acks[c.Name]; ok {
				continue
			}
			if e.Acks == nil {
				e.Acks = map[string]Ack{}
			}
			e.Acks[c.Name] = Ack{At: now.UTC(), Version: c.AckedVersion}
		}
	}
}

// Entries returns copies of the entries, newest first.
func (l *Log) Entries() []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Entry, len(l.entries))
	for i, e := range l.entries {
		e.Acks = maps.Clone(e.Acks)
		out[len(out)-1-i] = e
	}
	return out
}

// diff lists the keys added, changed and removed between two configurations, bounded by
// MaxKeys.
func diff(before, after []resource.Object) Entry {
	old := make(map[string][]byte, len(before))
	for _, o := range before {
		old[o.Key()] = o.Raw
	}
	var e Entry
	n := 0
	add := func(list *[]string, key string) {
		if n >= MaxKeys {
			e.Omitted++
			return
		}
		n++
		*list = append(*list, key)
	}
	seen := make(map[string]bool, len(after))
	for _, o := range after {
		k := o.Key()
		seen[k] = true
		raw, ok := old[k]
		switch {
		case !ok:
			add(&e.Added, k)
		case !bytes.Equal(raw, o.Raw):
			add(&e.Changed, k)
		}
	}
	for _, o := range before {
		if !seen[o.Key()] {
			add(&e.Removed, o.Key())
		}
	}
	return e
}
