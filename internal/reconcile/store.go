package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// writeThrough holds the snapshots in memory and keeps the store in step with them: it loads
// what a previous server left, writes every new snapshot through (retrying while the store is
// unavailable, writing again what the store lost), reads what other servers wrote, and reads
// the applied configuration into the configSet. Memory is the truth the relay serves from;
// the store is where it survives a restart and is shared with the other replicas.
type writeThrough struct {
	store   snapshot.Store
	log     *slog.Logger
	m       *metrics
	roles   roles
	kick    kicker
	subs    *subscribers // told when an output read from the store changes
	config  *configSet
	mu      *sync.Mutex // the reconciler's lock; guards config, subs and the fields below
	inputs  map[string]*snapshot.Snapshot
	outputs map[string]*snapshot.Snapshot
	// dirtyInputs and dirtyOutputs are the snapshots the store has not accepted yet;
	// deadOutputs the outputs of removed clusters the store still holds.
	dirtyInputs  map[string]bool
	dirtyOutputs map[string]bool
	deadOutputs  map[string]bool
	loaded       bool // the stored snapshots were read
	// exclusive: only this server writes the store (exclusiveStore), so after the load
	// it is not read again for what other servers wrote or what it lost.
	exclusive bool
	storeErr  string // the last store error, "" after a success
	// inputsSince is when the oldest input no translation has taken yet arrived (zero:
	// none); the reconciler reads and resets it.
	inputsSince time.Time

	// wroteInput is the input snapshot this server last wrote to the store, by cluster.
	wroteInput map[string]*snapshot.Snapshot
	// outputsChecked is when the active server last compared the stored outputs with its
	// own (only its sync goroutine uses it).
	outputsChecked time.Time
}

// outputCheckEvery is how often the active server compares the store's output index with
// the outputs it holds, to write again what the store lost; outputCheckMax how long it goes
// without when translations are always due.
const (
	outputCheckEvery = time.Second
	outputCheckMax   = 10 * time.Second
)

// exclusiveStore is a store only this process writes (bbolt holds its file locked): what it
// holds changes only through this server's own writes.
type exclusiveStore interface{ Exclusive() bool }

func newWriteThrough(store snapshot.Store, log *slog.Logger, m *metrics, rl roles, kick kicker, subs *subscribers, config *configSet, mu *sync.Mutex) *writeThrough {
	ex, _ := store.(exclusiveStore)
	return &writeThrough{
		store: store, log: log, m: m, roles: rl, kick: kick, subs: subs, config: config, mu: mu,
		exclusive:    ex != nil && ex.Exclusive(),
		inputs:       map[string]*snapshot.Snapshot{},
		outputs:      map[string]*snapshot.Snapshot{},
		dirtyInputs:  map[string]bool{},
		dirtyOutputs: map[string]bool{},
		deadOutputs:  map[string]bool{},
		wroteInput:   map[string]*snapshot.Snapshot{},
	}
}

// sync talks to the store: first load, config changes, and (with flush) retries of unwritten
// snapshots.
func (w *writeThrough) sync(ctx context.Context, flush bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := w.syncStore(ctx, flush)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.storeErr == "" {
			w.log.Warn("store unavailable; serving from memory and retrying", "error", err)
		}
		w.storeErr = err.Error()
		w.m.storeUp.Set(0)
		return
	}
	if w.storeErr != "" {
		w.log.Info("store reachable again; caught up")
	}
	w.storeErr = ""
	w.m.storeUp.Set(1)
}

func (w *writeThrough) syncStore(ctx context.Context, flush bool) error {
	w.mu.Lock()
	loaded := w.loaded
	w.mu.Unlock()
	if !loaded {
		if err := w.load(ctx); err != nil {
			return err
		}
	}
	if w.exclusive {
		return w.syncExclusive(ctx, flush)
	}
	rev, err := w.store.ConfigRevision(ctx)
	if err != nil {
		return fmt.Errorf("read config revision: %w", err)
	}
	w.mu.Lock()
	// The store went back in time (restarted empty, failover), or did and has not been
	// restored yet: it may lack applied configuration this server holds.
	lost := w.config.apiLoaded && (rev < w.config.apiRev || w.config.apiLost)
	stale := !w.config.apiLoaded || rev != w.config.apiRev || lost
	kept := w.config.api
	w.mu.Unlock()
	if active, _ := w.roles.active(); lost && active && w.roles.leader() {
		// Never trust a store that forgot configuration: write back what this server holds.
		w.log.Warn("store lost applied configuration; restoring it from memory", "storeRevision", rev, "resources", len(kept))
		for _, o := range kept {
			if err := w.store.PutConfig(ctx, o.Resource()); err != nil {
				return fmt.Errorf("restore config %s: %w", o, err)
			}
		}
		if rev, err = w.store.ConfigRevision(ctx); err != nil {
			return fmt.Errorf("read config revision: %w", err)
		}
		stale = true
	}
	if stale {
		if err := w.loadAPIConfig(ctx, lost); err != nil {
			return err
		}
	}
	if err := w.pullChanged(ctx, snapshot.Input); err != nil {
		return err
	}
	since := time.Since(w.outputsChecked)
	if active, _ := w.roles.active(); !active || (flush && since >= outputCheckEvery) || since >= outputCheckMax {
		// A passive server serves what the active one wrote, without translating. The
		// active one writes again the outputs the store lost or holds older (a Redis
		// failover loses the last writes: snapshots are not waited on, docs/adr/0015):
		// on an idle tick, not before a translation, unless churn leaves no idle tick.
		if err := w.pullChanged(ctx, snapshot.Output); err != nil {
			return err
		}
		w.outputsChecked = time.Now()
	}
	if !flush {
		return nil
	}
	return w.flush(ctx, nil)
}

// syncExclusive is syncStore for a store only this server writes, which does not lose
// writes: its applied configuration is read once (after that, this server's own apply and
// delete read it back), and neither its configuration revision nor its index is read again
// for what other servers wrote (1,000 clusters: each kick and tick under churn).
func (w *writeThrough) syncExclusive(ctx context.Context, flush bool) error {
	w.mu.Lock()
	apiLoaded := w.config.apiLoaded
	w.mu.Unlock()
	if !apiLoaded {
		if err := w.loadAPIConfig(ctx, false); err != nil {
			return err
		}
	}
	if !flush {
		return nil
	}
	return w.flush(ctx, nil)
}

// pullChanged reconciles memory with the store for one kind, by content hash: what other
// servers wrote (and is newer) is read into memory; what the store lacks or holds older
// (Redis restarted empty, or lost acknowledged writes in a failover) is written again from
// memory rather than trusted. Outputs are rewritten only by their writer (active, owner).
func (w *writeThrough) pullChanged(ctx context.Context, kind snapshot.Kind) error {
	idx, err := w.store.Index(ctx, kind)
	if err != nil {
		return fmt.Errorf("read %s index: %w", kind, err)
	}
	active, epoch := w.roles.active()
	var changed []string
	w.mu.Lock()
	mem := w.inputs
	if kind == snapshot.Output {
		mem = w.outputs
	}
	for c, h := range idx {
		if kind == snapshot.Output && active && w.dirtyOutputs[c] {
			continue // about to be written anyway
		}
		// The index has content hashes only: a passive server also reads an output it
		// holds under an older epoch than the lock's, which the active server re-stamps
		// with the same content (its agents must learn the new epoch).
		cur := mem[c]
		if kind == snapshot.Input && cur != nil && cur.Hash != h && w.dirtyInputs[c] && w.wroteInput[c] != nil && w.wroteInput[c].Hash == h {
			// The store holds this server's last write and memory has a newer input for
			// the next flush: nothing to read (under churn, every cluster, every round).
			continue
		}
		if cur == nil || cur.Hash != h || (kind == snapshot.Output && !active && cur.Epoch < epoch) {
			changed = append(changed, c)
		}
	}
	for c := range mem {
		if _, ok := idx[c]; ok {
			continue
		}
		switch {
		case kind == snapshot.Input:
			w.dirtyInputs[c] = true
		case active && w.roles.owns(c):
			w.dirtyOutputs[c] = true
		}
	}
	w.mu.Unlock()
	for _, c := range changed {
		s, err := w.store.Get(ctx, kind, c)
		if errors.Is(err, snapshot.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s of cluster %s: %w", kind, c, err)
		}
		w.mu.Lock()
		w.takeNewerLocked(kind, c, s, active)
		w.mu.Unlock()
	}
	return nil
}

// takeNewerLocked puts a snapshot read from the store into memory when it is newer than
// memory's; when memory is newer, memory is written back.
func (w *writeThrough) takeNewerLocked(kind snapshot.Kind, c string, s *snapshot.Snapshot, active bool) {
	if kind == snapshot.Input {
		cur := w.inputs[c]
		switch {
		case cur == nil || s.Version > cur.Version:
			w.inputs[c] = s
			delete(w.dirtyInputs, c)
			w.m.inputVersion.WithLabelValues(c).Set(float64(s.Version))
			w.inputArrivedLocked()
			w.kick.kick()
		case s.Hash != cur.Hash:
			w.dirtyInputs[c] = true
		}
		return
	}
	w.roles.witnessLocked(s.Epoch)
	cur := w.outputs[c]
	switch {
	case cur == nil || s.Epoch > cur.Epoch || (s.Epoch == cur.Epoch && s.Version > cur.Version):
		w.outputs[c] = s
		delete(w.dirtyOutputs, c)
		w.m.outputVersion.WithLabelValues(c).Set(float64(s.Version))
		w.m.outputResources.WithLabelValues(c).Set(float64(s.Len()))
		w.subs.notifyLocked(c)
	case s.Hash != cur.Hash && active && w.roles.owns(c):
		w.dirtyOutputs[c] = true
	}
}

// refreshOutput makes a passive server serve the latest output in the store for a cluster.
func (w *writeThrough) refreshOutput(ctx context.Context, cluster string) {
	if active, _ := w.roles.active(); active {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := w.store.Get(ctx, snapshot.Output, cluster)
	if err != nil {
		return
	}
	w.mu.Lock()
	w.takeNewerLocked(snapshot.Output, cluster, s, false)
	w.mu.Unlock()
}

// load reads the inputs and outputs a previous server left in the store.
func (w *writeThrough) load(ctx context.Context) error {
	ins, err := w.store.List(ctx, snapshot.Input)
	if err != nil {
		return fmt.Errorf("load inputs: %w", err)
	}
	outs, err := w.store.List(ctx, snapshot.Output)
	if err != nil {
		return fmt.Errorf("load outputs: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, s := range ins {
		if cur := w.inputs[c]; cur == nil {
			w.inputs[c] = s
		}
	}
	for c, s := range outs {
		w.roles.witnessLocked(s.Epoch)
		if cur := w.outputs[c]; cur == nil || cur.Version < s.Version {
			w.outputs[c] = s
			w.subs.notifyLocked(c)
		}
	}
	w.loaded = true
	w.log.Info("loaded snapshots from store", "inputs", len(ins), "outputs", len(outs))
	return nil
}

// loadAPIConfig reads the applied configuration from the store. After the store went back in
// time (lost), a server that did not restore it (a replica that is not the leader, or before
// the leader's restore) keeps what it holds until the store holds all of it again: adopting
// the store's shorter set would publish outputs without configuration that was never deleted.
func (w *writeThrough) loadAPIConfig(ctx context.Context, lost bool) error {
	rs, rev, err := w.store.ListConfig(ctx)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	if lost {
		w.mu.Lock()
		held := w.config.api
		w.mu.Unlock()
		if missing := missingConfig(held, rs); len(missing) > 0 {
			w.mu.Lock()
			first := !w.config.apiLost
			w.config.apiLost = true
			w.mu.Unlock()
			if first {
				w.log.Warn("store lost applied configuration; keeping this server's until it is restored",
					"storeRevision", rev, "missing", len(missing), "first", missing[:min(len(missing), 5)])
			}
			w.m.configLost.Set(1)
			return nil
		}
		w.log.Info("store holds the applied configuration again", "storeRevision", rev, "resources", len(rs))
	}
	w.mu.Lock()
	w.config.apiLost = false
	w.mu.Unlock()
	w.m.configLost.Set(0)
	objs := make([]resource.Object, 0, len(rs))
	var broken []string
	for _, res := range rs {
		o, err := resource.Decode(res.Body)
		if err != nil {
			// Translating without it would publish outputs that miss what the store holds:
			// the safe-mode decision holds translation until it is fixed or deleted.
			w.log.Error("stored config resource does not decode; translation held until it is deleted or applied again", "key", res.Key, "error", err)
			broken = append(broken, fmt.Sprintf("%s: %v", res.Key, err))
			continue
		}
		objs = append(objs, o)
	}
	w.mu.Lock()
	w.config.setAPI(objs, rev, broken)
	w.mu.Unlock()
	w.kick.kick()
	return nil
}

// missingConfig returns the keys of held resources that stored lacks, sorted.
func missingConfig(held []resource.Object, stored []snapshot.Resource) []string {
	in := make(map[string]bool, len(stored))
	for _, r := range stored {
		in[r.Key] = true
	}
	var missing []string
	for _, o := range held {
		if k := o.Resource().Key; !in[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	return missing
}

// flush writes snapshots that the store has not accepted yet, all in one batch (one
// transaction or pipeline): every one, or with translated (the inputs a translation read,
// by cluster) the outputs and only the inputs that must be in the store before those
// outputs: the newest input of each cluster whose translated input this server has not
// written yet. A configuration change translated with the inputs of the previous
// translation (reconcile) so writes its outputs without waiting for the newer inputs, which
// the next flush writes. Items the store refused stay dirty for the next flush, except
// fenced ones, which are dropped.
func (w *writeThrough) flush(ctx context.Context, translated map[string]*snapshot.Snapshot) error {
	return w.flushOutputs(ctx, translated, nil)
}

// flushOutputs is flush writing, of the dirty outputs, those of the clusters named (all of
// them when nil); deletions and inputs are written all the same.
func (w *writeThrough) flushOutputs(ctx context.Context, translated map[string]*snapshot.Snapshot, clusters []string) error {
	var batch []snapshot.Write
	w.mu.Lock()
	// Deletions first, so a cluster removed and re-added while the store was down ends up
	// with its new output.
	for c := range w.deadOutputs {
		if w.roles.leader() {
			batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: c})
		}
	}
	for c := range w.dirtyInputs {
		if s, ok := translated[c]; translated != nil && (!ok || w.wroteInput[c] == s) {
			continue
		}
		batch = append(batch, snapshot.Write{Kind: snapshot.Input, Cluster: c, Snap: w.inputs[c]})
	}
	output := func(c string) {
		if w.dirtyOutputs[c] && w.roles.owns(c) {
			batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: c, Snap: w.outputs[c]})
		}
	}
	if clusters == nil {
		for c := range w.dirtyOutputs {
			output(c)
		}
	}
	for _, c := range clusters {
		output(c)
	}
	w.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	errs := w.store.Write(ctx, batch)
	var first error
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, it := range batch {
		err := errs[i]
		if errors.Is(err, snapshot.ErrFenced) {
			// Another management server holds the lock: this write must never land. Drop
			// it; the coordinator will notice the lock moved and make this server passive.
			w.log.Warn("write refused by the global lock; dropped", "kind", it.Kind, "cluster", it.Cluster, "error", err)
			w.m.fenced.Inc()
			delete(w.dirtyInputs, it.Cluster)
			delete(w.dirtyOutputs, it.Cluster)
			continue
		}
		if err != nil {
			if first == nil {
				what := "write"
				if it.Snap == nil {
					what = "delete"
				}
				first = fmt.Errorf("%s %s of cluster %s: %w", what, it.Kind, it.Cluster, err)
			}
			continue
		}
		switch {
		case it.Snap == nil:
			delete(w.deadOutputs, it.Cluster)
		case it.Kind == snapshot.Input:
			w.wroteInput[it.Cluster] = it.Snap
			if w.inputs[it.Cluster] == it.Snap {
				delete(w.dirtyInputs, it.Cluster)
			}
		case it.Kind == snapshot.Output && w.outputs[it.Cluster] == it.Snap:
			delete(w.dirtyOutputs, it.Cluster)
		}
	}
	return first
}

// apply stores the objects as API configuration and reads it back.
func (w *writeThrough) apply(ctx context.Context, objs []resource.Object) error {
	for _, o := range objs {
		if err := w.store.PutConfig(ctx, o.Resource()); err != nil {
			return fmt.Errorf("store %s: %w", o, err)
		}
	}
	return w.loadAPIConfig(ctx, false)
}

// delete removes an API configuration resource by key and reads the configuration back.
func (w *writeThrough) delete(ctx context.Context, key string) error {
	if err := w.store.DeleteConfig(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return w.loadAPIConfig(ctx, false)
}

// putInput records a cluster's new input snapshot in memory, to be written by the next flush.
func (w *writeThrough) putInput(cluster string, s *snapshot.Snapshot) {
	w.mu.Lock()
	w.inputs[cluster] = s
	w.dirtyInputs[cluster] = true
	w.m.inputVersion.WithLabelValues(cluster).Set(float64(s.Version))
	w.inputArrivedLocked()
	w.mu.Unlock()
	w.kick.kick() // the loop writes it to the store, then translates
}

// inputArrivedLocked notes that an input arrived that no translation has taken yet.
func (w *writeThrough) inputArrivedLocked() {
	if w.inputsSince.IsZero() {
		w.inputsSince = time.Now()
	}
}

// publishOutputLocked makes next the cluster's output, to be written by the next flush.
func (w *writeThrough) publishOutputLocked(c string, next *snapshot.Snapshot) {
	w.outputs[c] = next
	w.dirtyOutputs[c] = true
	delete(w.deadOutputs, c) // a cluster re-added before its deletion reached the store
	w.m.outputVersion.WithLabelValues(c).Set(float64(next.Version))
	w.m.outputResources.WithLabelValues(c).Set(float64(next.Len()))
	w.m.nacks.WithLabelValues(c) // 0 from the first output, so that rate() sees the first NACK
}

// restampOutputLocked gives the cluster's current output another version (same content).
func (w *writeThrough) restampOutputLocked(c string, next *snapshot.Snapshot) {
	w.outputs[c] = next
	w.dirtyOutputs[c] = true
	w.m.outputVersion.WithLabelValues(c).Set(float64(next.Version))
}

// dropOutputLocked removes the output of a cluster that is no longer registered; the next
// flush deletes it from the store.
func (w *writeThrough) dropOutputLocked(c string) {
	delete(w.outputs, c)
	delete(w.dirtyOutputs, c)
	w.deadOutputs[c] = true
	w.m.outputVersion.DeleteLabelValues(c)
	w.m.outputResources.DeleteLabelValues(c)
	w.m.syncSeconds.DeleteLabelValues(c)
	w.subs.notifyLocked(c)
}
