// Package reconcile is the management server's core loop: it holds the configuration (from
// a watched directory and from the store), the latest input snapshot of every cluster (in
// memory, written through to the store), runs the translator when either changes, and
// publishes each cluster's output snapshot to the relay streams subscribed to it. Safe mode
// is applied here: after a start, nothing is translated until the configuration is complete
// (the store's snapshots and applied resources loaded, every stored resource decoded, the
// config directory read, every mesh identity present) and every registered cluster's input
// is present.
//
// The Reconciler is the composition of:
//   - reconcile.go: the translation loop (Start), which asks package safemode whether to
//     translate and applies its decision (logs, metrics, /status), then publishes outputs;
//   - store.go: the write-through of the snapshots to the store (writeThrough), and the
//     applied configuration read from it into config.go's configSet;
//   - acks.go: what the agents acknowledged or refused (tracker);
//   - status.go: /status; metrics.go: the Prometheus metrics; roles.go: the HA role.
//
// One lock, the Reconciler's mu, guards the state of all of them: the loop and the relay
// handlers share it; it is this package's only lock (only the callbacks CertSource and
// WitnessEpoch are called with it held).
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/reconcile/safemode"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// Translator is the translation the reconciler runs (translate.Translator). It gives up,
// with an error, when ctx ends.
type Translator interface {
	TranslateContext(ctx context.Context, in translate.Input) (translate.Result, error)
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
	// MaxInputWait bounds how long input changes give way to configuration changes, which
	// go first, translated with the inputs of the last published translation. A
	// translation of inputs that have waited this long is no longer abandoned for a
	// configuration change (which then waits for it, and goes first again after it); once
	// they have waited twice this long, the next configuration change is translated
	// together with them. Under endpoint churn and a stream of configuration changes an
	// endpoint change waits at most twice this long (plus a translation); default 3s.
	MaxInputWait time.Duration
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
	// Changes traces configuration changes: a translation that takes one in is its child,
	// and the outputs it publishes carry it to their delivery (nil: not traced).
	Changes *changetrace.Tracer
}

// Reconciler is the server's core loop. Create it with New and run it with Start.
type Reconciler struct {
	cfg       Config
	translate Translator
	certs     CertSource
	log       *slog.Logger
	m         *metrics
	now       func() time.Time
	kick      kicker
	roles     roles
	store     *writeThrough
	acks      *tracker

	// safeSeries are the clusters with a meshrelay_safe_mode_active series (guarded by mu).
	safeSeries map[string]bool

	// built is the output snapshot made of each cluster's resources in the last
	// translation; only the reconcile loop uses it.
	built map[string]builtOutput

	mu     sync.Mutex // guards config, subs, the state of store and acks, and everything below
	config configSet
	subs   subscribers
	// safe is the safe-mode state the last decision left.
	safe         safemode.State
	startedAt    time.Time
	lastErrors   []string
	lastStatus   map[string][]string
	lastRun      time.Time
	translations uint64
	// translated is what the last published translation read; running is the translation
	// under way (nil between translations).
	translated translated
	running    *running
	// delivering is what the last translation of a configuration change published: the
	// clusters with a connected agent and the version each must acknowledge, until
	// deliverBy; input changes wait for it (deferInputsLocked).
	delivering map[string]uint64
	deliverBy  time.Time
	deferring  bool // input changes are being put off for it now
}

// builtOutput is the snapshot made of a translation's resources for a cluster: a
// translator hands back the same slice for a cluster it did not recompute, and its snapshot
// (map and content hash) need not be built again.
type builtOutput struct {
	resources []snapshot.Resource
	snap      *snapshot.Snapshot
}

// reuses reports whether b was built of exactly rs (the same slice) under epoch.
func (b builtOutput) reuses(rs []snapshot.Resource, epoch uint64) bool {
	return b.snap != nil && b.snap.Epoch == epoch && len(b.resources) == len(rs) &&
		(len(rs) == 0 || &b.resources[0] == &rs[0])
}

// translated is what a published translation read.
type translated struct {
	config []resource.Object
	inputs map[string]*snapshot.Snapshot
	// configFirst: it translated a configuration change with older inputs (the next one
	// must take the newest inputs).
	configFirst bool
}

// running is a translation under way.
type running struct {
	// config is what it translates; inputsOnly says that it translates input changes
	// alone (its config is the last published one), so that a configuration change may
	// abandon it, unless those inputs had waited MaxInputWait (since when they waited:
	// inputsSince, zero when none did).
	config      []resource.Object
	inputsOnly  bool
	inputsSince time.Time
	started     time.Time
	abandon     context.CancelCauseFunc
}

// errConfigChanged abandons a translation of input changes when the configuration changes.
var errConfigChanged = errors.New("configuration changed")

// New builds a reconciler; it does no I/O.
func New(cfg Config, store snapshot.Store, tr Translator, certs CertSource, log *slog.Logger, reg prometheus.Registerer) *Reconciler {
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.MaxInputWait <= 0 {
		cfg.MaxInputWait = defaultMaxInputWait
	}
	r := &Reconciler{
		cfg: cfg, translate: tr, certs: certs, log: log, m: newMetrics(reg), now: time.Now, safeSeries: map[string]bool{},
		kick:  make(kicker, 1),
		roles: roles{role: cfg.Role, witness: cfg.WitnessEpoch},
		subs:  subscribers{},
	}
	r.store = newWriteThrough(store, log, r.m, r.roles, r.kick, &r.subs, &r.config, &r.mu)
	r.acks = newTracker(log, r.m, r.roles, r.now, r.store, &r.mu)
	r.config.changed = r.configChangedLocked
	if reg != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_ha_active",
				Help: "1 while this server is the active management server (it translates and writes; always 1 without HA)."},
				func() float64 {
					if a, _ := r.roles.active(); a {
						return 1
					}
					return 0
				}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_ha_lock_epoch",
				Help: "Epoch of the global lock as this server knows it; the active server stamps its outputs with it (1 without HA)."},
				func() float64 { _, e := r.roles.active(); return float64(e) }))
	}
	return r
}

// configChangedLocked abandons a translation of input changes alone when the configuration
// changed: under endpoint churn such a translation may take seconds, and the configuration
// change would wait behind it; it is translated next instead (prepare), and the abandoned
// inputs right after it. Inputs that have waited MaxInputWait are not abandoned again: the
// configuration change waits for them.
func (r *Reconciler) configChangedLocked() {
	run := r.running
	if run == nil || !run.inputsOnly || sameObjects(run.config, r.config.effective()) {
		return
	}
	run.inputsOnly = false // once
	if waited := r.now().Sub(run.inputsSince); !run.inputsSince.IsZero() && waited >= r.cfg.MaxInputWait {
		r.m.configWaited.Inc()
		r.log.Info("configuration change waits for a translation of inputs", "inputsWaited", waited.Round(time.Millisecond),
			"translationRunning", time.Since(run.started).Round(time.Millisecond))
		return
	}
	run.abandon(errConfigChanged)
	r.m.abandoned.Inc()
	r.log.Info("translation abandoned", "reason", errConfigChanged.Error(), "after", time.Since(run.started).Round(time.Millisecond))
}

// Kick asks for a translation soon (for example because mesh certificates are due).
func (r *Reconciler) Kick() { r.kick.kick() }

// Start loads the stored snapshots and runs the loop until ctx ends.
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	r.startedAt = r.now()
	r.mu.Unlock()
	tick := time.NewTicker(r.cfg.Tick)
	defer tick.Stop()
	r.kick.kick()
	var deferred <-chan time.Time // kicks again when input changes were put off
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			// Unwritten snapshots are retried here, unless a translation is due: it writes
			// the inputs it read with its outputs, and under endpoint churn (a translation
			// always due) writing every input each tick would hold up the loop for each.
			r.store.sync(ctx, len(r.kick) == 0)
			r.mu.Lock()
			warm := r.safe.Warm
			r.acks.updateStalenessLocked(r.now())
			r.mu.Unlock()
			if !warm {
				r.kick.kick() // safe-start window deadlines and the first load
			}
		case <-deferred:
			deferred = nil
			r.kick.kick()
		case <-r.kick:
			// No wait to gather a burst: the kick channel holds one kick, so whatever
			// arrives while this round runs is one more round, translated with the newest
			// state. A lone change starts translating at once.
			// Inputs are written with the outputs made of them (below) or on the next tick,
			// not before translating.
			r.store.sync(ctx, false)
			r.mu.Lock()
			wait := r.deferInputsLocked()
			r.mu.Unlock()
			if wait > 0 {
				if deferred == nil {
					deferred = time.After(wait)
				}
				continue
			}
			changed, translated, inputsOnly, held := r.reconcile(ctx)
			if held {
				// Nothing translates the inputs: write them now (a passive server, safe mode).
				fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if err := r.store.flush(fctx, nil); err != nil {
					r.log.Debug("inputs not written", "error", err)
				}
				cancel()
			}
			if len(changed) > 0 {
				batch := notifyBatch
				if inputsOnly {
					batch = len(changed)
				}
				r.writeAndNotify(ctx, changed, translated, batch)
			}
		}
	}
}

// notifyBatch is how many outputs changed by a configuration change are written together
// before their agents are told: the first agents get a change that reaches every cluster
// while the rest of it is still being written. Input changes alone (endpoint churn, where
// each round changes hundreds of clusters' outputs) are written in one batch: under churn,
// more writes (each with its fsyncs) made rounds slower and configuration changes wait.
const notifyBatch = 128

// writeAndNotify writes new outputs through to the store before agents see them, so a
// passive server or another replica never has older outputs than an agent (with the store
// down they are published from memory all the same), and the inputs they were made of
// before them. It writes them batchSize at a time and tells each batch's agents as soon as
// it is written. A write that fails tells every agent left at once: the outputs are
// written again on the next tick, and no agent waits for more than one failed write.
func (r *Reconciler) writeAndNotify(ctx context.Context, changed []string, translated map[string]*snapshot.Snapshot, batchSize int) {
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for len(changed) > 0 {
		batch := changed[:min(len(changed), batchSize)]
		if err := r.store.flushOutputs(fctx, translated, batch); err != nil {
			r.log.Debug("outputs not written before publishing", "error", err)
			batch = changed
		}
		changed = changed[len(batch):]
		r.mu.Lock()
		for _, c := range batch {
			r.subs.notifyLocked(c)
		}
		r.mu.Unlock()
	}
}

// RefreshOutput makes a passive server serve the latest output in the store for a
// cluster before answering its agent (memory may lag the store by a tick).
func (r *Reconciler) RefreshOutput(ctx context.Context, cluster string) {
	r.store.refreshOutput(ctx, cluster)
}

// SetDirConfig replaces the configuration read from the config directory.
func (r *Reconciler) SetDirConfig(objs []resource.Object) {
	r.mu.Lock()
	r.config.setDir(objs)
	r.mu.Unlock()
	r.kick.kick()
}

// Apply validates nothing (callers pass decoded objects) and stores the objects as API
// configuration; every replica sharing the store picks them up. The change of ctx's span
// (changetrace) is traced through the translation the write kicks.
func (r *Reconciler) Apply(ctx context.Context, objs []resource.Object) error {
	r.cfg.Changes.Applied(ctx) // before the write kicks the translation, which takes it in
	if err := r.store.apply(ctx, objs); err != nil {
		r.cfg.Changes.Withdraw(ctx)
		return err
	}
	return nil
}

// Delete removes an API configuration resource by key; traced as Apply is.
func (r *Reconciler) Delete(ctx context.Context, key string) error {
	r.cfg.Changes.Applied(ctx)
	if err := r.store.delete(ctx, key); err != nil {
		r.cfg.Changes.Withdraw(ctx)
		return err
	}
	return nil
}

// Config returns the effective configuration: the config directory's objects overridden by
// API-applied ones of the same key, sorted by key.
func (r *Reconciler) Config() []resource.Object {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.config.effective())
}

// IsRegistered reports whether a KubernetesCluster of that name exists. It is asked on
// every registration and stream, so the set is kept until the configuration changes.
func (r *Reconciler) IsRegistered(cluster string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.config.isRegistered(cluster)
}

// Input returns the latest input snapshot of a cluster, or nil.
func (r *Reconciler) Input(cluster string) *snapshot.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.inputs[cluster]
}

// PutInput records a cluster's new input snapshot in memory; the loop writes it to the
// store (retried while the store is unavailable) and translates.
func (r *Reconciler) PutInput(_ context.Context, cluster string, s *snapshot.Snapshot) {
	r.store.putInput(cluster, s)
}

// Output returns the current output snapshot of a cluster, or nil when none was made yet.
func (r *Reconciler) Output(cluster string) *snapshot.Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store.outputs[cluster]
}

// Subscribe returns a channel that receives a value whenever the cluster's output changes.
func (r *Reconciler) Subscribe(cluster string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs.addLocked(cluster, ch)
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		r.subs.removeLocked(cluster, ch)
		r.mu.Unlock()
	}
}

// subscribers are the channels told when a cluster's output changes, by cluster; the
// reconciler's lock guards them.
type subscribers map[string]map[chan struct{}]struct{}

func (s subscribers) addLocked(cluster string, ch chan struct{}) {
	if s[cluster] == nil {
		s[cluster] = map[chan struct{}]struct{}{}
	}
	s[cluster][ch] = struct{}{}
}

func (s subscribers) removeLocked(cluster string, ch chan struct{}) { delete(s[cluster], ch) }

func (s subscribers) notifyLocked(cluster string) {
	for ch := range s[cluster] {
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
	r.acks.adoptVersion(cluster, version, hash)
}

// AgentEpoch is told the epoch of the output a cluster's agent holds (its Hello).
func (r *Reconciler) AgentEpoch(_ string, held uint64) { r.acks.agentEpoch(held) }

// EpochRefused records that the agent of cluster holds epoch held and refuses outputs of
// epoch refused; the epoch it holds is witnessed so the lock is raised above it.
func (r *Reconciler) EpochRefused(cluster string, refused, held uint64) {
	r.acks.epochRefused(cluster, refused, held)
}

// Acked records that the agent of cluster applied version/hash.
func (r *Reconciler) Acked(cluster string, version uint64, hash, agent string) {
	r.acks.acked(cluster, version, hash, agent)
}

// Nacked records that the agent of cluster refused version/hash.
func (r *Reconciler) Nacked(cluster string, version uint64, hash, reason string) {
	r.acks.nacked(cluster, version, hash, reason)
}

// Refused records the objects of output version/hash that the agent of cluster reported its
// cluster refused, with the ACK of that version (none clears them). They are shown by
// Status while the acknowledged output is that hash.
func (r *Reconciler) Refused(cluster string, version uint64, hash string, refusals map[string]string) {
	r.acks.refused(cluster, version, hash, refusals)
}

// reconcile translates and publishes changed outputs, unless safe mode holds. The
// translation itself runs without the lock (between prepare and publish), so that agents'
// ACKs, inputs and subscriptions are never held up by it; only the loop goroutine calls
// reconcile.
//
// Changes never queue: a round translates the newest configuration and inputs there are
// when it starts (inputs are kept as the latest snapshot per cluster, and kicks coalesce),
// and changes that arrive meanwhile are all taken by the next round. A configuration change
// does not wait behind a long translation of input changes (endpoint churn): it abandons
// such a translation (configChangedLocked) and is translated first, with the inputs of the
// last published translation, which re-plans only what the configuration change touches;
// the newer inputs follow in the next round, which nothing abandons then (prepare).
//
// It returns the clusters whose output changed and the inputs translated, or held when
// nothing was to be translated (safe mode, a passive server).
func (r *Reconciler) reconcile(ctx context.Context) (changed []string, translated map[string]*snapshot.Snapshot, inputsOnly, held bool) {
	rd, ok := r.prepare()
	if !ok {
		return nil, nil, false, true
	}
	start := time.Now()
	var span trace.Span = noop.Span{}
	if !rd.inputsOnly {
		ctx, span = r.cfg.Changes.Translation(ctx)
	}
	defer span.End()
	tctx, abandon := context.WithCancelCause(ctx)
	defer abandon(nil)
	r.mu.Lock()
	r.running = &running{config: rd.in.Config, inputsOnly: rd.inputsOnly, inputsSince: rd.inputsSince, started: start, abandon: abandon}
	r.mu.Unlock()
	res, err := r.translate.TranslateContext(tctx, rd.in)
	r.mu.Lock()
	r.running = nil
	r.mu.Unlock()
	if err != nil {
		// Abandoned for a configuration change (logged by configChangedLocked), or ctx
		// ended: translate again with what is newest (the traced change goes with it).
		span.SetStatus(codes.Error, err.Error())
		r.cfg.Changes.Applied(ctx)
		r.kick.kick()
		return nil, nil, false, false
	}
	elapsed := time.Since(start)
	nexts := make(map[string]*snapshot.Snapshot, len(res.Outputs))
	built := make(map[string]builtOutput, len(res.Outputs))
	for c, rs := range res.Outputs {
		b := r.built[c]
		if !b.reuses(rs, rd.epoch) {
			b = builtOutput{resources: rs, snap: snapshot.New(0, rd.epoch, rs)}
		}
		nexts[c], built[c] = b.snap, b
	}
	r.built = built
	changed, ok = r.publish(rd, res, nexts, elapsed)
	for _, c := range changed {
		if out := r.Output(c); out != nil {
			r.cfg.Changes.Published(ctx, c, out.Version)
		}
	}
	span.SetAttributes(attribute.Int("meshrelay.outputs_changed", len(changed)), attribute.Int("meshrelay.translation_errors", len(res.Errors)))
	if ok && r.cfg.OnTranslate != nil {
		r.cfg.OnTranslate(rd.in.Config, res.Status)
	}
	return changed, rd.in.Inputs, rd.inputsOnly, false
}

// defaultMaxInputWait is Config.MaxInputWait's default.
const defaultMaxInputWait = 3 * time.Second

// configDistributionGrace bounds how long input changes wait for a configuration change
// to reach the connected agents.
const configDistributionGrace = time.Second

// deferInputsLocked says how long to put off the next round (0: translate now). A round of
// input changes alone waits while the last configuration change is still on its way to the
// connected agents, up to configDistributionGrace: under endpoint churn, translating the
// inputs at once would take the CPU from delivering that change, and the inputs lose little
// by being gathered a moment longer (they are translated together, newest state). A
// configuration change never waits.
func (r *Reconciler) deferInputsLocked() time.Duration {
	if len(r.delivering) == 0 {
		r.deferring = false
		return 0
	}
	last := r.translated
	if last.inputs == nil || !sameObjects(r.config.effective(), last.config) {
		r.deferring = false
		return 0 // a configuration change: translate it now
	}
	now := r.now()
	for c, v := range r.delivering {
		out := r.store.outputs[c]
		a := r.acks.acks[c]
		switch {
		case out == nil || out.Version != v || len(r.subs[c]) == 0:
			// replaced, removed, or no agent to deliver it to
		case a != nil && (a.Hash == out.Hash || a.NackedHash == out.Hash):
			// answered
		default:
			continue
		}
		delete(r.delivering, c)
	}
	if len(r.delivering) == 0 || !now.Before(r.deliverBy) {
		if r.deferring && len(r.delivering) > 0 {
			r.log.Debug("input changes no longer wait for the configuration change", "clustersNotAcknowledged", len(r.delivering))
		}
		r.delivering, r.deferring = nil, false
		return 0
	}
	if !r.deferring {
		r.deferring = true
		r.m.inputsDeferred.Inc()
		r.log.Debug("input changes wait for the configuration change to reach the agents", "clusters", len(r.delivering), "atMost", r.deliverBy.Sub(now).Round(time.Millisecond))
	}
	return min(r.deliverBy.Sub(now), 20*time.Millisecond)
}

// round is what one translation reads, taken under the lock.
type round struct {
	in       translate.Input
	clusters map[string]v1alpha1.KubernetesCluster
	epoch    uint64
	now      time.Time
	// configFirst: a configuration change translated with the last published inputs;
	// inputsOnly: input changes alone, the configuration being the last published one.
	configFirst, inputsOnly bool
	// inputsSince is when the oldest input this round takes arrived (zero: none, or a
	// configFirst round).
	inputsSince time.Time
}

// prepare reports whether to translate now and with what: it gathers what package safemode
// decides from (the mesh identities only when they are asked for: not before the
// configuration is complete, not on a passive server) and applies its decision.
func (r *Reconciler) prepare() (round, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.acks.updateStalenessLocked(now)
	active, epoch := r.roles.active()
	in := safemode.Input{
		Now:             now,
		StartedAt:       r.startedAt,
		SafeMode:        r.cfg.SafeMode,
		SafeStartWindow: r.cfg.SafeStartWindow,
		Loaded: safemode.Loaded{
			Snapshots:        r.store.loaded,
			Config:           r.config.apiLoaded,
			StoreError:       r.store.storeErr,
			Broken:           r.config.apiBroken,
			WaitForConfigDir: r.cfg.WaitForConfigDir,
			ConfigDir:        r.config.dirLoaded,
		},
		Passive: !active,
	}
	var rd round
	if in.Loaded.Reason() == "" && active {
		config := r.config.effective()
		clusters := r.config.registered()
		inputs := make(map[string]*snapshot.Snapshot, len(clusters))
		in.Inputs = make(map[string]bool, len(clusters))
		last := r.translated
		configChanged := last.inputs == nil || !sameObjects(config, last.config)
		inputsChanged := false
		for c := range clusters {
			if s := r.store.inputs[c]; s != nil {
				inputs[c] = s
				in.Inputs[c] = true
				inputsChanged = inputsChanged || last.inputs[c] != s
			}
		}
		// A configuration change goes first, with the inputs the agents' outputs were
		// made of (a new cluster's with its own), unless the last translation already
		// went first and the newest inputs have waited twice MaxInputWait: then they come
		// in, configuration and all. (A translation of inputs that waited MaxInputWait is
		// not abandoned: configChangedLocked.)
		since := r.store.inputsSince
		waited := time.Duration(0)
		if !since.IsZero() {
			waited = now.Sub(since)
		}
		configFirst := configChanged && inputsChanged && last.inputs != nil &&
			(!last.configFirst || waited < 2*r.cfg.MaxInputWait)
		if configChanged && inputsChanged && last.inputs != nil && !configFirst {
			r.log.Info("configuration change translated with the inputs that waited", "inputsWaited", waited.Round(time.Millisecond))
		}
		if configFirst {
			for c, s := range inputs {
				if old, ok := last.inputs[c]; ok {
					inputs[c] = old
				} else {
					inputs[c] = s
				}
			}
			r.kick.kick() // the newer inputs next
		}
		in.Clusters = clusters
		var certs map[string]translate.ClusterCert
		if r.certs != nil {
			certs = r.certs(sortedKeys(clusters))
			in.RequireIdentities = true
			in.Identities = make(map[string]bool, len(certs))
			for c, cert := range certs {
				in.Identities[c] = len(cert.CertPEM) > 0
			}
		}
		rd = round{in: translate.Input{Config: config, Inputs: inputs, Certs: certs}, clusters: clusters, epoch: epoch, now: now,
			configFirst: configFirst, inputsOnly: !configChanged}
		if !configFirst {
			rd.inputsSince = since
		}
	}
	d := safemode.Decide(r.safe, in)
	r.applyLocked(d, in.Clusters)
	return rd, d.Outcome == safemode.Translate
}

// applyLocked carries out a safe-mode decision: its log line, its metrics and the state
// /status shows.
func (r *Reconciler) applyLocked(d safemode.Decision, clusters map[string]v1alpha1.KubernetesCluster) {
	r.safe = d.State
	if d.Outcome == safemode.HoldNotLoaded {
		r.m.configNotLoaded.Set(1)
	} else {
		r.m.configNotLoaded.Set(0)
	}
	// A cluster's series stays at 0 once its input arrived (a dashboard or alert sees the
	// end of safe mode, not a vanished series) until the cluster is deregistered (clusters
	// is nil when this round did not read the registrations).
	for c := range r.safeSeries {
		if _, ok := clusters[c]; !ok && clusters != nil {
			r.m.safeMode.DeleteLabelValues(c)
			delete(r.safeSeries, c)
		}
	}
	if d.Warming {
		held := map[string]bool{}
		if d.Outcome == safemode.HoldInputs {
			for _, c := range d.Missing {
				held[c] = true
			}
		}
		for c := range held {
			r.safeSeries[c] = true
		}
		for c := range r.safeSeries {
			v := 0.0
			if held[c] {
				v = 1
			}
			r.m.safeMode.WithLabelValues(c).Set(v)
		}
	}
	switch {
	case d.Event == safemode.Held && d.Warming:
		r.log.Warn("translation held", "reason", d.State.Status.Reason, "missing", d.Missing)
	case d.Event == safemode.Held:
		r.log.Warn("translation held", "reason", d.State.Status.Reason)
	case d.Event == safemode.Resumed && d.Warming:
		r.log.Info("translation resumed", "missing", d.Missing)
	case d.Event == safemode.Resumed:
		r.log.Info("translation resumed")
	}
}

// publish makes the translated outputs current and returns the clusters whose output
// changed; it reports false, publishing nothing, when the global lock moved during the
// translation (the outputs must not appear under the old epoch; the next round sees the
// new role).
func (r *Reconciler) publish(rd round, res translate.Result, nexts map[string]*snapshot.Snapshot, elapsed time.Duration) (changed []string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, e := r.roles.active(); !a || e != rd.epoch {
		r.kick.kick()
		return nil, false
	}
	epoch := rd.epoch
	r.translated = translated{config: rd.in.Config, inputs: rd.in.Inputs, configFirst: rd.configFirst}
	if rd.configFirst {
		r.m.configFirst.Inc()
	} else {
		// This round took every input there was when it was prepared; those that arrived
		// since have waited at most since then.
		r.store.inputsSince = time.Time{}
		for c, s := range r.store.inputs {
			if _, ok := rd.clusters[c]; ok && rd.in.Inputs[c] != s {
				r.store.inputsSince = rd.now
				break
			}
		}
	}
	r.m.translations.Inc()
	r.m.recomputed.Add(float64(len(res.Recomputed)))
	r.m.translationSeconds.Observe(elapsed.Seconds())
	r.m.translationErrors.WithLabelValues(errorKindInput).Add(float64(len(res.Errors)))
	for _, msgs := range res.Status {
		for _, msg := range msgs {
			if !translate.IsNote(msg) {
				r.m.translationErrors.WithLabelValues(errorKindResource).Inc()
			}
		}
	}
	r.translations++
	r.lastRun = rd.now
	r.lastErrors = res.Errors
	r.lastStatus = res.Status
	for c, next := range nexts {
		cur := r.store.outputs[c]
		if cur != nil && cur.Hash == next.Hash && cur.Epoch == next.Epoch {
			continue
		}
		v := r.acks.nextVersionLocked(c)
		if cur != nil && cur.Version >= v {
			v = cur.Version + 1
		}
		next = next.WithVersion(v, epoch)
		r.store.publishOutputLocked(c, next)
		r.acks.publishedLocked(c, next.Hash, r.now())
		r.log.Debug("output changed", "cluster", c, "version", v, "resources", next.Len(), "hash", next.Hash[:12])
		changed = append(changed, c)
	}
	if !rd.inputsOnly {
		r.delivering = map[string]uint64{}
		for _, c := range changed {
			if len(r.subs[c]) > 0 {
				r.delivering[c] = r.store.outputs[c].Version
			}
		}
		r.deliverBy = r.now().Add(configDistributionGrace)
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		first := changed[:min(len(changed), 5)]
		r.log.Info("outputs changed", "clusters", len(changed), "first", first, "recomputed", len(res.Recomputed), "translation", elapsed.Round(time.Millisecond),
			"configFirst", rd.configFirst)
	}
	for c := range r.store.outputs {
		if _, ok := rd.clusters[c]; !ok {
			r.store.dropOutputLocked(c)
		}
	}
	return changed, true
}

// ErrNotReady is returned by Status consumers when the reconciler has not loaded yet.
var ErrNotReady = errors.New("reconciler not ready")

// Ready reports whether the stored state and configuration were loaded.
func (r *Reconciler) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.store.loaded:
		return fmt.Errorf("%w: snapshots not loaded from store (%s)", ErrNotReady, r.store.storeErr)
	case !r.config.apiLoaded:
		return fmt.Errorf("%w: configuration not loaded from store", ErrNotReady)
	case r.cfg.WaitForConfigDir && !r.config.dirLoaded:
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
