// Package reconcile is the management server's core loop: it holds the configuration (from
// a watched directory and from the store), the latest input snapshot of every cluster (in
// memory, written through to the store), runs the translator when either changes, and
// publishes each cluster's output snapshot to the relay streams subscribed to it. Safe mode
// lives here: after a start, nothing is translated until the configuration is complete (the
// store's snapshots and applied resources loaded, every stored resource decoded, the config
// directory read) and every registered cluster's input is present.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// Translator is the translation the reconciler runs (translate.Translator).
type Translator interface {
	Translate(in translate.Input) translate.Result
}

// Role says what this server may do among its peers (ha.Coordinator implements it; nil
// means a single server that does everything).
type Role interface {
	// Active reports whether this server may translate and write, and the epoch it
	// stamps on outputs.
	Active() (bool, uint64)
	// Leader reports whether this replica carries out cluster-wide duties.
	Leader() bool
	// Owns reports whether this replica owns (serves and writes the output of) a cluster.
	Owns(cluster string) bool
}

// CertSource gives the mesh identities of the clusters. With a CertSource (nil: outputs carry
// none) translation holds until every registered cluster has one. It is called with the
// reconciler's lock held and must not call back.
type CertSource func(clusters []string) map[string]translate.ClusterCert

// Config tunes a Reconciler.
type Config struct {
	// SafeMode holds translation after a start until every registered cluster (minus those
	// with skipWarming) has an input snapshot.
	SafeMode bool
	// SafeStartWindow, used when SafeMode is off, is how long to wait at most for missing
	// inputs before translating with what is present; 0 does not wait.
	SafeStartWindow time.Duration
	// WaitForConfigDir makes the first translation wait until the config directory (or, in
	// Kubernetes mode, the custom resources, which also arrive through SetDirConfig) has been
	// read once.
	WaitForConfigDir bool
	// Role decides activity, leadership and ownership among peers; nil = single server.
	Role Role
	// Tick is how often the store is polled for config changes and unwritten snapshots are
	// retried; default 1s.
	Tick time.Duration
	// OnTranslate, when set, is called after every translation this server publishes, from
	// the loop goroutine without the reconciler's lock held, with the configuration that was
	// translated and the problems found by resource (translate.Result.Status). It must not
	// block (the Kubernetes status writer only records them and wakes itself up).
	OnTranslate func(config []resource.Object, status map[string][]string)
	// WitnessEpoch, when set, is told every epoch seen outside the global lock: held by an
	// agent, carried by an output read from the store (ha.Coordinator.WitnessEpoch, which
	// keeps the lock above them). Called with the reconciler's lock held; it must not call
	// back.
	WitnessEpoch func(epoch uint64)
}

// Reconciler is the server's core loop. Create it with New and run it with Start.
type Reconciler struct {
	cfg       Config
	store     snapshot.Store
	translate Translator
	certs     CertSource
	log       *slog.Logger
	m         *metrics
	now       func() time.Time
	kick      chan struct{}

	mu           sync.Mutex // guards everything below
	dirConfig    []resource.Object
	dirLoaded    bool
	apiConfig    []resource.Object
	apiLoaded    bool
	apiBroken    []string // stored configuration resources that do not decode: "key: error"
	apiLost      bool     // the store lost applied configuration this server still holds
	apiRev       uint64
	registered   map[string]bool // the registered clusters; nil when the config changed
	inputs       map[string]*snapshot.Snapshot
	outputs      map[string]*snapshot.Snapshot
	dirtyInputs  map[string]bool
	dirtyOutputs map[string]bool
	deadOutputs  map[string]bool
	acks         map[string]*ackState
	seen         map[string]uint64 // highest output version an agent reported holding
	refusals     map[string]*EpochRefusal
	subs         map[string]map[chan struct{}]struct{}
	loaded       bool
	warm         bool
	startedAt    time.Time
	safe         SafeModeStatus
	lastErrors   []string
	lastStatus   map[string][]string
	recomputed   int
	lastRun      time.Time
	translations uint64
	storeErr     string
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

// New builds a reconciler; it does no I/O.
func New(cfg Config, store snapshot.Store, tr Translator, certs CertSource, log *slog.Logger, reg prometheus.Registerer) *Reconciler {
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	return &Reconciler{
		cfg: cfg, store: store, translate: tr, certs: certs, log: log, m: newMetrics(reg), now: time.Now,
		kick:         make(chan struct{}, 1),
		inputs:       map[string]*snapshot.Snapshot{},
		outputs:      map[string]*snapshot.Snapshot{},
		dirtyInputs:  map[string]bool{},
		dirtyOutputs: map[string]bool{},
		deadOutputs:  map[string]bool{},
		acks:         map[string]*ackState{},
		seen:         map[string]uint64{},
		refusals:     map[string]*EpochRefusal{},
		subs:         map[string]map[chan struct{}]struct{}{},
	}
}

// Kick asks for a translation soon (for example because mesh certificates are due).
func (r *Reconciler) Kick() { r.trigger() }

func (r *Reconciler) trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Start loads the stored snapshots and runs the loop until ctx ends.
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	r.startedAt = r.now()
	r.mu.Unlock()
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	r.trigger()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			r.sync(ctx)
			r.mu.Lock()
			warm := r.warm
			r.updateStalenessLocked(r.now())
			r.mu.Unlock()
			if !warm {
				r.trigger() // safe-start window deadlines and the first load
			}
		case <-r.kick:
			// Coalesce bursts of changes into one translation.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(20 * time.Millisecond):
			}
			select {
			case <-r.kick:
			default:
			}
			r.sync(ctx)
			if changed := r.reconcile(); len(changed) > 0 {
				// Write new outputs through to the store before agents see them, so a
				// passive server or another replica never has older outputs than an agent
				// (with the store down they are published from memory all the same).
				fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if err := r.flush(fctx); err != nil {
					r.log.Debug("outputs not written before publishing", "error", err)
				}
				cancel()
				r.mu.Lock()
				for _, c := range changed {
					r.notifyLocked(c)
				}
				r.mu.Unlock()
			}
		}
	}
}

// sync talks to the store: first load, config changes, and retries of unwritten snapshots.
func (r *Reconciler) sync(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := r.syncStore(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if r.storeErr == "" {
			r.log.Warn("store unavailable; serving from memory and retrying", "error", err)
		}
		r.storeErr = err.Error()
		r.m.storeUp.Set(0)
		return
	}
	if r.storeErr != "" {
		r.log.Info("store reachable again; caught up")
	}
	r.storeErr = ""
	r.m.storeUp.Set(1)
}

func (r *Reconciler) syncStore(ctx context.Context) error {
	r.mu.Lock()
	loaded := r.loaded
	r.mu.Unlock()
	if !loaded {
		if err := r.load(ctx); err != nil {
			return err
		}
	}
	rev, err := r.store.ConfigRevision(ctx)
	if err != nil {
		return fmt.Errorf("read config revision: %w", err)
	}
	r.mu.Lock()
	// The store went back in time (restarted empty, failover), or did and has not been
	// restored yet: it may lack applied configuration this server holds.
	lost := r.apiLoaded && (rev < r.apiRev || r.apiLost)
	stale := !r.apiLoaded || rev != r.apiRev || lost
	kept := r.apiConfig
	r.mu.Unlock()
	if active, _ := r.role(); lost && active && r.leader() {
		// Never trust a store that forgot configuration: write back what this server holds.
		r.log.Warn("store lost applied configuration; restoring it from memory", "storeRevision", rev, "resources", len(kept))
		for _, o := range kept {
			if err := r.store.PutConfig(ctx, o.Resource()); err != nil {
				return fmt.Errorf("restore config %s: %w", o, err)
			}
		}
		if rev, err = r.store.ConfigRevision(ctx); err != nil {
			return fmt.Errorf("read config revision: %w", err)
		}
		stale = true
	}
	if stale {
		if err := r.loadAPIConfig(ctx, lost); err != nil {
			return err
		}
	}
	if err := r.pullChanged(ctx, snapshot.Input); err != nil {
		return err
	}
	if active, _ := r.role(); !active {
		// A passive server serves what the active one wrote, without translating.
		if err := r.pullChanged(ctx, snapshot.Output); err != nil {
			return err
		}
	}
	return r.flush(ctx)
}

// role returns whether this server is active and its epoch.
func (r *Reconciler) role() (bool, uint64) {
	if r.cfg.Role == nil {
		return true, 1
	}
	return r.cfg.Role.Active()
}

func (r *Reconciler) leader() bool { return r.cfg.Role == nil || r.cfg.Role.Leader() }

func (r *Reconciler) owns(cluster string) bool {
	if r.cfg.Role == nil {
		return true
	}
	return r.cfg.Role.Owns(cluster)
}

// pullChanged reconciles memory with the store for one kind, by content hash: what other
// servers wrote (and is newer) is read into memory; what the store lacks or holds older
// (Redis restarted empty, or lost acknowledged writes in a failover) is written again from
// memory rather than trusted. Outputs are rewritten only by their writer (active, owner).
func (r *Reconciler) pullChanged(ctx context.Context, kind snapshot.Kind) error {
	idx, err := r.store.Index(ctx, kind)
	if err != nil {
		return fmt.Errorf("read %s index: %w", kind, err)
	}
	active, epoch := r.role()
	var changed []string
	r.mu.Lock()
	mem := r.inputs
	if kind == snapshot.Output {
		mem = r.outputs
	}
	for c, h := range idx {
		// The index has content hashes only: a passive server also reads an output it
		// holds under an older epoch than the lock's, which the active server re-stamps
		// with the same content (its agents must learn the new epoch).
		if cur := mem[c]; cur == nil || cur.Hash != h || (kind == snapshot.Output && !active && cur.Epoch < epoch) {
			changed = append(changed, c)
		}
	}
	for c := range mem {
		if _, ok := idx[c]; ok {
			continue
		}
		switch {
		case kind == snapshot.Input:
			r.dirtyInputs[c] = true
		case active && r.owns(c):
			r.dirtyOutputs[c] = true
		}
	}
	r.mu.Unlock()
	for _, c := range changed {
		s, err := r.store.Get(ctx, kind, c)
		if errors.Is(err, snapshot.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s of cluster %s: %w", kind, c, err)
		}
		r.mu.Lock()
		r.takeNewerLocked(kind, c, s, active)
		r.mu.Unlock()
	}
	return nil
}

// takeNewerLocked puts a snapshot read from the store into memory when it is newer than
// memory's; when memory is newer, memory is written back.
func (r *Reconciler) takeNewerLocked(kind snapshot.Kind, c string, s *snapshot.Snapshot, active bool) {
	if kind == snapshot.Input {
		cur := r.inputs[c]
		switch {
		case cur == nil || s.Version > cur.Version:
			r.inputs[c] = s
			delete(r.dirtyInputs, c)
			r.m.inputVersion.WithLabelValues(c).Set(float64(s.Version))
			r.kickLocked()
		case s.Hash != cur.Hash:
			r.dirtyInputs[c] = true
		}
		return
	}
	r.witnessLocked(s.Epoch)
	cur := r.outputs[c]
	switch {
	case cur == nil || s.Epoch > cur.Epoch || (s.Epoch == cur.Epoch && s.Version > cur.Version):
		r.outputs[c] = s
		delete(r.dirtyOutputs, c)
		r.m.outputVersion.WithLabelValues(c).Set(float64(s.Version))
		r.notifyLocked(c)
	case s.Hash != cur.Hash && active && r.owns(c):
		r.dirtyOutputs[c] = true
	}
}

// RefreshOutput makes a passive server serve the latest output in the store for a
// cluster before answering its agent (memory may lag the store by a tick).
func (r *Reconciler) RefreshOutput(ctx context.Context, cluster string) {
	if active, _ := r.role(); active {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := r.store.Get(ctx, snapshot.Output, cluster)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.takeNewerLocked(snapshot.Output, cluster, s, false)
	r.mu.Unlock()
}

func (r *Reconciler) kickLocked() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// load reads the inputs and outputs a previous server left in the store.
func (r *Reconciler) load(ctx context.Context) error {
	ins, err := r.store.List(ctx, snapshot.Input)
	if err != nil {
		return fmt.Errorf("load inputs: %w", err)
	}
	outs, err := r.store.List(ctx, snapshot.Output)
	if err != nil {
		return fmt.Errorf("load outputs: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for c, s := range ins {
		if cur := r.inputs[c]; cur == nil {
			r.inputs[c] = s
		}
	}
	for c, s := range outs {
		r.witnessLocked(s.Epoch)
		if cur := r.outputs[c]; cur == nil || cur.Version < s.Version {
			r.outputs[c] = s
			r.notifyLocked(c)
		}
	}
	r.loaded = true
	r.log.Info("loaded snapshots from store", "inputs", len(ins), "outputs", len(outs))
	return nil
}

// loadAPIConfig reads the applied configuration from the store. After the store went back in
// time (lost), a server that did not restore it (a replica that is not the leader, or before
// the leader's restore) keeps what it holds until the store holds all of it again: adopting
// the store's shorter set would publish outputs without configuration that was never deleted.
func (r *Reconciler) loadAPIConfig(ctx context.Context, lost bool) error {
	rs, rev, err := r.store.ListConfig(ctx)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	if lost {
		r.mu.Lock()
		held := r.apiConfig
		r.mu.Unlock()
		if missing := missingConfig(held, rs); len(missing) > 0 {
			r.mu.Lock()
			first := !r.apiLost
			r.apiLost = true
			r.mu.Unlock()
			if first {
				r.log.Warn("store lost applied configuration; keeping this server's until it is restored",
					"storeRevision", rev, "missing", len(missing), "first", missing[:min(len(missing), 5)])
			}
			r.m.configLost.Set(1)
			return nil
		}
		r.log.Info("store holds the applied configuration again", "storeRevision", rev, "resources", len(rs))
	}
	r.mu.Lock()
	r.apiLost = false
	r.mu.Unlock()
	r.m.configLost.Set(0)
	objs := make([]resource.Object, 0, len(rs))
	var broken []string
	for _, res := range rs {
		o, err := resource.Decode(res.Body)
		if err != nil {
			// Translating without it would publish outputs that miss what the store holds:
			// prepare holds translation until it is fixed or deleted.
			r.log.Error("stored config resource does not decode; translation held until it is deleted or applied again", "key", res.Key, "error", err)
			broken = append(broken, fmt.Sprintf("%s: %v", res.Key, err))
			continue
		}
		objs = append(objs, o)
	}
	r.mu.Lock()
	r.apiConfig, r.apiRev, r.apiLoaded, r.apiBroken = objs, rev, true, broken
	r.registered = nil
	r.mu.Unlock()
	r.trigger()
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

// flush writes snapshots that the store has not accepted yet.
func (r *Reconciler) flush(ctx context.Context) error {
	type item struct {
		kind    snapshot.Kind
		cluster string
		snap    *snapshot.Snapshot
		del     bool
	}
	var items []item
	r.mu.Lock()
	// Deletions first, so a cluster removed and re-added while the store was down ends up
	// with its new output.
	for c := range r.deadOutputs {
		if r.leader() {
			items = append(items, item{snapshot.Output, c, nil, true})
		}
	}
	for c := range r.dirtyInputs {
		items = append(items, item{snapshot.Input, c, r.inputs[c], false})
	}
	for c := range r.dirtyOutputs {
		if r.owns(c) {
			items = append(items, item{snapshot.Output, c, r.outputs[c], false})
		}
	}
	r.mu.Unlock()
	for _, it := range items {
		var err error
		if it.del {
			err = r.store.Delete(ctx, it.kind, it.cluster)
		} else {
			err = r.store.Put(ctx, it.kind, it.cluster, it.snap)
		}
		if errors.Is(err, snapshot.ErrFenced) {
			// Another management server holds the lock: this write must never land. Drop
			// it; the coordinator will notice the lock moved and make this server passive.
			r.log.Warn("write refused by the global lock; dropped", "kind", it.kind, "cluster", it.cluster, "error", err)
			r.m.fenced.Inc()
			r.mu.Lock()
			delete(r.dirtyInputs, it.cluster)
			delete(r.dirtyOutputs, it.cluster)
			r.mu.Unlock()
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s of cluster %s: %w", it.kind, it.cluster, err)
		}
		r.mu.Lock()
		switch {
		case it.del:
			delete(r.deadOutputs, it.cluster)
		case it.kind == snapshot.Input && r.inputs[it.cluster] == it.snap:
			delete(r.dirtyInputs, it.cluster)
		case it.kind == snapshot.Output && r.outputs[it.cluster] == it.snap:
			delete(r.dirtyOutputs, it.cluster)
		}
		r.mu.Unlock()
	}
	return nil
}

// SetDirConfig replaces the configuration read from the config directory.
func (r *Reconciler) SetDirConfig(objs []resource.Object) {
	r.mu.Lock()
	r.dirConfig, r.dirLoaded = objs, true
	r.registered = nil
	r.mu.Unlock()
	r.trigger()
}

// Apply validates nothing (callers pass decoded objects) and stores the objects as API
// configuration; every replica sharing the store picks them up.
func (r *Reconciler) Apply(ctx context.Context, objs []resource.Object) error {
	for _, o := range objs {
		if err := r.store.PutConfig(ctx, o.Resource()); err != nil {
			return fmt.Errorf("store %s: %w", o, err)
		}
	}
	return r.loadAPIConfig(ctx, false)
}

// Delete removes an API configuration resource by key.
func (r *Reconciler) Delete(ctx context.Context, key string) error {
	if err := r.store.DeleteConfig(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return r.loadAPIConfig(ctx, false)
}

// Config returns the effective configuration: the config directory's objects overridden by
// API-applied ones of the same key, sorted by key.
func (r *Reconciler) Config() []resource.Object {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.configLocked()
}

func (r *Reconciler) configLocked() []resource.Object {
	all := make([]resource.Object, 0, len(r.dirConfig)+len(r.apiConfig))
	all = append(all, r.dirConfig...)
	all = append(all, r.apiConfig...)
	return resource.Dedupe(all)
}

// IsRegistered reports whether a KubernetesCluster of that name exists. It is asked on
// every registration and stream, so the set is kept until the configuration changes.
func (r *Reconciler) IsRegistered(cluster string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.registered == nil {
		r.registered = map[string]bool{}
		for c := range translate.Clusters(r.configLocked()) {
			r.registered[c] = true
		}
	}
	return r.registered[cluster]
}

// Input returns the latest input snapshot of a cluster, or nil.
func (r *Reconciler) Input(cluster string) *snapshot.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inputs[cluster]
}

// PutInput records a cluster's new input snapshot in memory; the loop writes it to the
// store (retried while the store is unavailable) and translates.
func (r *Reconciler) PutInput(_ context.Context, cluster string, s *snapshot.Snapshot) {
	r.mu.Lock()
	r.inputs[cluster] = s
	r.dirtyInputs[cluster] = true
	r.m.inputVersion.WithLabelValues(cluster).Set(float64(s.Version))
	r.mu.Unlock()
	r.trigger() // the loop writes it to the store, then translates
}

// Output returns the current output snapshot of a cluster, or nil when none was made yet.
func (r *Reconciler) Output(cluster string) *snapshot.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outputs[cluster]
}

// Subscribe returns a channel that receives a value whenever the cluster's output changes.
func (r *Reconciler) Subscribe(cluster string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	if r.subs[cluster] == nil {
		r.subs[cluster] = map[chan struct{}]struct{}{}
	}
	r.subs[cluster][ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs[cluster], ch)
		r.mu.Unlock()
	}
}

func (r *Reconciler) notifyLocked(cluster string) {
	for ch := range r.subs[cluster] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// AdoptVersion is told what an agent holds when its stream opens. When the agent holds the
// current content under a higher version (it was served by a server that has since
// restarted), the output takes that version so versions never go backwards for the agent.
func (r *Reconciler) AdoptVersion(cluster string, version uint64, hash string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if version > r.seen[cluster] {
		r.seen[cluster] = version
	}
	cur := r.outputs[cluster]
	if cur == nil || cur.Version > version || (cur.Version == version && cur.Hash == hash) {
		return
	}
	next := version
	if cur.Hash != hash {
		if active, _ := r.role(); !active {
			return // a passive server serves the store's outputs as they are
		}
		next = version + 1 // different content must come with a version the agent has not seen
	}
	r.outputs[cluster] = cur.WithVersion(next, cur.Epoch)
	r.dirtyOutputs[cluster] = true
	r.m.outputVersion.WithLabelValues(cluster).Set(float64(next))
}

func (r *Reconciler) witnessLocked(epoch uint64) {
	if r.cfg.WitnessEpoch != nil && epoch > 0 {
		r.cfg.WitnessEpoch(epoch)
	}
}

// AgentEpoch is told the epoch of the output a cluster's agent holds (its Hello).
func (r *Reconciler) AgentEpoch(_ string, held uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.witnessLocked(held)
}

// EpochRefusal says that a cluster's agent refuses this server's output because it holds a
// newer epoch (the store lost the lock and it was taken again too low); it lasts until the
// agent acknowledges the current output.
type EpochRefusal struct {
	Refused uint64    `json:"refusedEpoch"`
	Held    uint64    `json:"heldEpoch"`
	Since   time.Time `json:"since"`
}

// EpochRefused records that the agent of cluster holds epoch held and refuses outputs of
// epoch refused; the epoch it holds is witnessed so the lock is raised above it.
func (r *Reconciler) EpochRefused(cluster string, refused, held uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.refusals[cluster]; cur == nil || cur.Refused != refused || cur.Held != held {
		r.refusals[cluster] = &EpochRefusal{Refused: refused, Held: held, Since: r.now()}
	}
	r.witnessLocked(held)
}

// Acked records that the agent of cluster applied version/hash.
func (r *Reconciler) Acked(cluster string, version uint64, hash, agent string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if out := r.outputs[cluster]; out != nil && out.Hash == hash {
		delete(r.refusals, cluster)
	}
	a := r.ackLocked(cluster)
	a.Version, a.Hash, a.Nack, a.NackedHash, a.Agent = version, hash, "", "", agent
	r.m.ackedVersion.WithLabelValues(cluster).Set(float64(version))
}

// Nacked records that the agent of cluster refused version/hash.
func (r *Reconciler) Nacked(cluster string, version uint64, hash, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.ackLocked(cluster)
	a.Nack, a.NackedHash = fmt.Sprintf("version %d: %s", version, reason), hash
	r.m.nacks.WithLabelValues(cluster).Inc()
}

func (r *Reconciler) ackLocked(cluster string) *ackState {
	a := r.acks[cluster]
	if a == nil {
		a = &ackState{}
		r.acks[cluster] = a
	}
	return a
}

// reconcile translates and publishes changed outputs, unless safe mode holds. The
// translation itself runs without the lock (between prepare and publish), so that agents'
// ACKs, inputs and subscriptions are never held up by it; only the loop goroutine calls
// reconcile.
func (r *Reconciler) reconcile() []string {
	rd, ok := r.prepare()
	if !ok {
		return nil
	}
	start := time.Now()
	res := r.translate.Translate(rd.in)
	elapsed := time.Since(start)
	nexts := make(map[string]*snapshot.Snapshot, len(res.Outputs))
	for c, rs := range res.Outputs {
		nexts[c] = snapshot.New(0, rd.epoch, rs)
	}
	changed, ok := r.publish(rd, res, nexts, elapsed)
	if ok && r.cfg.OnTranslate != nil {
		r.cfg.OnTranslate(rd.in.Config, res.Status)
	}
	return changed
}

// round is what one translation reads, taken under the lock.
type round struct {
	in       translate.Input
	clusters map[string]v1alpha1.KubernetesCluster
	epoch    uint64
	now      time.Time
}

// prepare reports whether to translate now and with what: not before the configuration and
// stored snapshots are known, not on a passive server, not while safe mode holds.
func (r *Reconciler) prepare() (round, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.updateStalenessLocked(now)
	if reason := r.notLoadedLocked(); reason != "" {
		r.holdNotLoadedLocked(reason)
		return round{}, false
	}
	active, epoch := r.role()
	if !active {
		r.m.configNotLoaded.Set(0)
		return round{}, false // passive: outputs come from the store (pullChanged)
	}
	config := r.configLocked()
	clusters := translate.Clusters(config)
	var certs map[string]translate.ClusterCert
	if r.certs != nil {
		certs = r.certs(sortedKeys(clusters))
		if missing := missingCerts(clusters, certs); len(missing) > 0 {
			r.holdNotLoadedLocked("mesh identity not issued or not read from the store yet for clusters " + strings.Join(missing, ", "))
			return round{}, false
		}
	}
	r.m.configNotLoaded.Set(0)
	if r.warm && r.safe.Active {
		r.log.Info("translation resumed")
		r.safe = SafeModeStatus{}
	}
	if !r.warm && r.holdLocked(clusters, now) {
		return round{}, false
	}
	inputs := make(map[string]*snapshot.Snapshot, len(clusters))
	for c := range clusters {
		if in := r.inputs[c]; in != nil {
			inputs[c] = in
		}
	}
	return round{in: translate.Input{Config: config, Inputs: inputs, Certs: certs}, clusters: clusters, epoch: epoch, now: now}, true
}

// missingCerts lists the clusters without a mesh identity. Translating them would publish
// outputs without it: every gateway of theirs would lose its identity, and with it the
// east-west mTLS (a server restarted on an emptied store, before the leader issued again).
func missingCerts(clusters map[string]v1alpha1.KubernetesCluster, certs map[string]translate.ClusterCert) []string {
	var missing []string
	for c := range clusters {
		if len(certs[c].CertPEM) == 0 {
			missing = append(missing, c)
		}
	}
	sort.Strings(missing)
	return missing
}

// publish makes the translated outputs current and returns the clusters whose output
// changed; it reports false, publishing nothing, when the global lock moved during the
// translation (the outputs must not appear under the old epoch; the next round sees the
// new role).
func (r *Reconciler) publish(rd round, res translate.Result, nexts map[string]*snapshot.Snapshot, elapsed time.Duration) (changed []string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, e := r.role(); !a || e != rd.epoch {
		r.trigger()
		return nil, false
	}
	epoch := rd.epoch
	r.m.translations.Inc()
	r.m.recomputed.Add(float64(len(res.Recomputed)))
	r.m.translationSeconds.Observe(elapsed.Seconds())
	r.translations++
	r.lastRun = rd.now
	r.lastErrors = res.Errors
	r.lastStatus = res.Status
	r.recomputed = len(res.Recomputed)
	for c, next := range nexts {
		cur := r.outputs[c]
		if cur != nil && cur.Hash == next.Hash && cur.Epoch == next.Epoch {
			continue
		}
		v := r.seen[c] + 1 // above anything an agent of this cluster reported holding
		if cur != nil && cur.Version >= v {
			v = cur.Version + 1
		}
		next = next.WithVersion(v, epoch)
		r.outputs[c] = next
		r.dirtyOutputs[c] = true
		delete(r.deadOutputs, c) // a cluster re-added before its deletion reached the store
		r.m.outputVersion.WithLabelValues(c).Set(float64(v))
		r.log.Debug("output changed", "cluster", c, "version", v, "resources", next.Len(), "hash", next.Hash[:12])
		changed = append(changed, c)
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		first := changed[:min(len(changed), 5)]
		r.log.Info("outputs changed", "clusters", len(changed), "first", first, "recomputed", len(res.Recomputed), "translation", elapsed.Round(time.Millisecond))
	}
	for c := range r.outputs {
		if _, ok := rd.clusters[c]; !ok {
			delete(r.outputs, c)
			delete(r.dirtyOutputs, c)
			r.deadOutputs[c] = true
			r.m.outputVersion.DeleteLabelValues(c)
			r.notifyLocked(c)
		}
	}
	return changed, true
}

// notLoadedLocked says why the configuration this server would translate may lack part of
// what the store or the configuration source holds ("" when it is complete).
func (r *Reconciler) notLoadedLocked() string {
	switch {
	case !r.loaded || !r.apiLoaded:
		reason := "configuration not loaded from the store yet"
		if r.storeErr != "" {
			reason += ": " + r.storeErr
		}
		return reason
	case len(r.apiBroken) > 0:
		return "stored configuration resources do not decode (delete or apply them again): " + strings.Join(r.apiBroken, "; ")
	case r.cfg.WaitForConfigDir && !r.dirLoaded:
		return "configuration source (config directory or custom resources) not read yet"
	}
	return ""
}

// holdNotLoadedLocked holds translation like safe mode while the configuration is incomplete:
// outputs are never made from a configuration that misses what the store holds.
func (r *Reconciler) holdNotLoadedLocked(reason string) {
	r.m.configNotLoaded.Set(1)
	if !r.safe.Active || r.safe.Reason != reason {
		r.log.Warn("translation held", "reason", reason)
	}
	since := r.startedAt
	switch {
	case r.safe.Active:
		since = r.safe.Since
	case r.warm: // a stored resource stopped decoding after translation had started
		since = r.now()
	}
	r.safe = SafeModeStatus{Active: true, Reason: reason, Since: since}
}

// holdLocked applies safe mode and the safe start window; it reports whether translation
// must wait.
func (r *Reconciler) holdLocked(clusters map[string]v1alpha1.KubernetesCluster, now time.Time) bool {
	var missing []string
	for name, kc := range clusters {
		if !kc.Spec.SkipWarming && r.inputs[name] == nil {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	hold := false
	reason := ""
	switch {
	case len(missing) == 0:
	case r.cfg.SafeMode:
		hold, reason = true, "safe mode: waiting for the input snapshot of every registered cluster"
	case now.Before(r.startedAt.Add(r.cfg.SafeStartWindow)):
		hold, reason = true, fmt.Sprintf("safe start window: waiting up to %s for missing inputs", r.cfg.SafeStartWindow)
	}
	r.m.safeMode.Reset()
	if hold {
		for _, c := range missing {
			r.m.safeMode.WithLabelValues(c).Set(1)
		}
		if !r.safe.Active || r.safe.Reason != reason {
			r.log.Warn("translation held", "reason", reason, "missing", missing)
		}
		r.safe = SafeModeStatus{Active: true, Reason: reason, Missing: missing, Since: r.startedAt}
		return true
	}
	if r.safe.Active || len(missing) > 0 {
		r.log.Info("translation resumed", "missing", missing)
	}
	r.safe = SafeModeStatus{}
	r.warm = true
	return false
}

func (r *Reconciler) updateStalenessLocked(now time.Time) {
	for c, out := range r.outputs {
		a := r.ackLocked(c)
		if a.Hash == out.Hash {
			a.pendingSince = time.Time{}
			r.m.staleness.WithLabelValues(c).Set(0)
			continue
		}
		if a.pendingSince.IsZero() {
			a.pendingSince = now
		}
		r.m.staleness.WithLabelValues(c).Set(now.Sub(a.pendingSince).Seconds())
	}
}

// ErrNotReady is returned by Status consumers when the reconciler has not loaded yet.
var ErrNotReady = errors.New("reconciler not ready")

// Ready reports whether the stored state and configuration were loaded.
func (r *Reconciler) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.loaded:
		return fmt.Errorf("%w: snapshots not loaded from store (%s)", ErrNotReady, r.storeErr)
	case !r.apiLoaded:
		return fmt.Errorf("%w: configuration not loaded from store", ErrNotReady)
	case r.cfg.WaitForConfigDir && !r.dirLoaded:
		return fmt.Errorf("%w: configuration source (config directory or custom resources) not read yet", ErrNotReady)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ResourceStatus returns the problems the last translation found, by resource.
func (r *Reconciler) ResourceStatus() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastStatus
}
