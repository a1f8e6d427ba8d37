package reconcile

import (
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// tracker records what each cluster's agent reports of the outputs: acknowledged, refused
// (NACK, refused objects, a stale epoch), the version it held when its stream opened, and
// how long the current output has gone unacknowledged. It reads the outputs from the
// write-through and re-stamps one when an agent holds it under a higher version.
type tracker struct {
	log   *slog.Logger
	m     *metrics
	roles roles
	now   func() time.Time
	out   *writeThrough
	mu    *sync.Mutex // the reconciler's lock; guards the fields below
	acks  map[string]*ackState
	// seen is the highest output version an agent reported holding.
	seen     map[string]uint64
	refusals map[string]*EpochRefusal
	// published is when this server published each cluster's current output, until its
	// agent acknowledges it (meshrelay_output_sync_duration_seconds).
	published map[string]publishMark
}

type publishMark struct {
	hash string
	at   time.Time
}

// publishedLocked notes that the cluster's output with hash was published at.
func (t *tracker) publishedLocked(cluster, hash string, at time.Time) {
	if t.published == nil {
		t.published = map[string]publishMark{}
	}
	t.published[cluster] = publishMark{hash: hash, at: at}
}

type ackState struct {
	Version      uint64
	Hash         string
	Nack         string
	NackedHash   string
	Agent        string
	pendingSince time.Time
	// refusals are the objects of output refusedHash the agent's cluster refused.
	refusals    []ObjectRefusal
	refusedHash string
}

// ObjectRefusal is an object of a cluster's applied output that the cluster refused while
// the rest was applied.
type ObjectRefusal struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// EpochRefusal says that a cluster's agent refuses this server's output because it holds a
// newer epoch (the store lost the lock and it was taken again too low); it lasts until the
// agent acknowledges the current output.
type EpochRefusal struct {
	Refused uint64    `json:"refusedEpoch"`
	Held    uint64    `json:"heldEpoch"`
	Since   time.Time `json:"since"`
}

func newTracker(log *slog.Logger, m *metrics, rl roles, now func() time.Time, out *writeThrough, mu *sync.Mutex) *tracker {
	return &tracker{
		log: log, m: m, roles: rl, now: now, out: out, mu: mu,
		acks:     map[string]*ackState{},
		seen:     map[string]uint64{},
		refusals: map[string]*EpochRefusal{},
	}
}

// adoptVersion: see Reconciler.AdoptVersion.
func (t *tracker) adoptVersion(cluster string, version uint64, hash string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if version > t.seen[cluster] {
		t.seen[cluster] = version
	}
	cur := t.out.outputs[cluster]
	if cur == nil || cur.Version > version || (cur.Version == version && cur.Hash == hash) {
		return
	}
	next := version
	if cur.Hash != hash {
		if active, _ := t.roles.active(); !active {
			return // a passive server serves the store's outputs as they are
		}
		next = version + 1 // different content must come with a version the agent has not seen
	}
	t.out.restampOutputLocked(cluster, cur.WithVersion(next, cur.Epoch))
}

// nextVersionLocked is the lowest version a new output of cluster may take: above anything
// an agent of the cluster reported holding.
func (t *tracker) nextVersionLocked(cluster string) uint64 { return t.seen[cluster] + 1 }

func (t *tracker) agentEpoch(held uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roles.witnessLocked(held)
}

func (t *tracker) epochRefused(cluster string, refused, held uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.refusals[cluster]; cur == nil || cur.Refused != refused || cur.Held != held {
		t.refusals[cluster] = &EpochRefusal{Refused: refused, Held: held, Since: t.now()}
	}
	t.roles.witnessLocked(held)
}

func (t *tracker) acked(cluster string, version uint64, hash, agent string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if out := t.out.outputs[cluster]; out != nil && out.Hash == hash {
		delete(t.refusals, cluster)
	}
	if p, ok := t.published[cluster]; ok && p.hash == hash {
		t.m.syncSeconds.WithLabelValues(cluster).Observe(t.now().Sub(p.at).Seconds())
		delete(t.published, cluster)
	}
	a := t.ackLocked(cluster)
	a.Version, a.Hash, a.Nack, a.NackedHash, a.Agent = version, hash, "", "", agent
	t.m.ackedVersion.WithLabelValues(cluster).Set(float64(version))
}

func (t *tracker) nacked(cluster string, version uint64, hash, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.ackLocked(cluster)
	a.Nack, a.NackedHash = fmt.Sprintf("version %d: %s", version, reason), hash
	t.m.nacks.WithLabelValues(cluster).Inc()
}

func (t *tracker) refused(cluster string, version uint64, hash string, refusals map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.ackLocked(cluster)
	prev := map[string]string{}
	for _, o := range a.refusals {
		prev[o.Key] = o.Reason
	}
	a.refusedHash, a.refusals = hash, nil
	for k, reason := range refusals {
		a.refusals = append(a.refusals, ObjectRefusal{Key: k, Reason: reason})
	}
	sort.Slice(a.refusals, func(i, j int) bool { return a.refusals[i].Key < a.refusals[j].Key })
	t.m.refused.WithLabelValues(cluster).Set(float64(len(a.refusals)))
	for _, o := range a.refusals {
		if prev[o.Key] != o.Reason {
			t.log.Warn("cluster refused an output object; the rest of the output is applied", "cluster", cluster, "version", version, "object", o.Key, "reason", o.Reason)
		}
	}
}

func (t *tracker) ackLocked(cluster string) *ackState {
	a := t.acks[cluster]
	if a == nil {
		a = &ackState{}
		t.acks[cluster] = a
	}
	return a
}

// updateStalenessLocked measures how long each cluster's agent has not acknowledged its
// current output.
func (t *tracker) updateStalenessLocked(now time.Time) {
	for c, out := range t.out.outputs {
		a := t.ackLocked(c)
		if a.Hash == out.Hash {
			a.pendingSince = time.Time{}
			t.m.staleness.WithLabelValues(c).Set(0)
			continue
		}
		if a.pendingSince.IsZero() {
			a.pendingSince = now
		}
		t.m.staleness.WithLabelValues(c).Set(now.Sub(a.pendingSince).Seconds())
	}
}

// clusterStatusLocked fills in what the cluster's agent reported.
func (t *tracker) clusterStatusLocked(cs *ClusterStatus, now time.Time) {
	out := t.out.outputs[cs.Name]
	if a := t.acks[cs.Name]; a != nil {
		cs.AckedVersion, cs.LastNack = a.Version, a.Nack
		cs.InSync = out != nil && a.Hash == out.Hash
		if a.refusedHash == a.Hash {
			cs.RefusedObjects = append([]ObjectRefusal(nil), a.refusals...)
		}
		if !cs.InSync && !a.pendingSince.IsZero() {
			cs.StaleSeconds = now.Sub(a.pendingSince).Seconds()
		}
	}
	if ref := t.refusals[cs.Name]; ref != nil {
		e := *ref
		cs.EpochRefusal = &e
	}
}
