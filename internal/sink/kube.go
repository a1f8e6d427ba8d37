package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Ownership marks of the objects Kube writes.
const (
	// FieldManager is the server-side apply field manager of the agent.
	FieldManager = "meshrelay-agent"
	// LabelManagedBy and ManagedBy mark every object the agent owns.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "meshrelay"
	// LabelCluster names the workload cluster whose agent owns the object.
	LabelCluster = "meshrelay.io/cluster"
	// AnnotationAppliedHash holds the hash of what the agent last applied to the object; an
	// object whose hash and content still match the output is not written again.
	AnnotationAppliedHash = "meshrelay.io/applied-hash"
)

// Defaults of KubeConfig.
const (
	DefaultMaxDeleteFraction   = 0.5
	DefaultMinGuardedDeletions = 2
	DefaultKubeResync          = time.Minute
)

// IstioGroup is the API group of the resources Kube applies.
const IstioGroup = "networking.istio.io"

// The only core object Kube applies: Istio's plugged-in CA Secret (Kube needs get and patch
// on it, create in its namespace).
const (
	IstioCASecretNamespace = "istio-system"
	IstioCASecretName      = "cacerts"
)

var coreV1 = schema.GroupVersion{Version: "v1"}

// istioListVersion is the version Kube lists owned objects with (served by Istio ≥ 1.22; the
// same objects are visible in every served version).
const istioListVersion = "v1"

// istioResources maps the Istio kinds Kube applies to their resource (plural) names.
var istioResources = map[string]string{
	"ServiceEntry":    "serviceentries",
	"DestinationRule": "destinationrules",
	"VirtualService":  "virtualservices",
	"Gateway":         "gateways",
	"WorkloadEntry":   "workloadentries",
}

var (
	// ErrDeletionGuard is wrapped by the error of an Apply whose deletions the guard held back.
	ErrDeletionGuard = errors.New("deletion guard held back deletions")
)

// KubeConfig configures a Kube sink.
type KubeConfig struct {
	// Cluster is the workload cluster's name, written in LabelCluster (required).
	Cluster string
	// FieldManager is the server-side apply field manager (default FieldManager).
	FieldManager string
	// MaxDeleteFraction is the largest share (0 to 1) of its owned objects the sink deletes in
	// one step without the management plane's say-so (see Kube). Use
	// DefaultMaxDeleteFraction; 1 turns the guard off.
	MaxDeleteFraction float64
	// MinGuardedDeletions is the smallest number of deletions the guard ever holds back: a
	// step deleting fewer objects always proceeds. Use DefaultMinGuardedDeletions.
	MinGuardedDeletions int
	// Resync is how often Start re-applies the last output to repair drift (objects deleted
	// or edited by hand); zero means DefaultKubeResync, negative disables it.
	Resync time.Duration
}

// Validate checks the configuration.
func (c KubeConfig) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("sink: cluster name is required"))
	} else if len(c.Cluster) > 63 {
		errs = append(errs, fmt.Errorf("sink: cluster name %q is longer than a label value may be (63)", c.Cluster))
	}
	if math.IsNaN(c.MaxDeleteFraction) || c.MaxDeleteFraction < 0 || c.MaxDeleteFraction > 1 {
		errs = append(errs, fmt.Errorf("sink: max delete fraction %v is not between 0 and 1", c.MaxDeleteFraction))
	}
	if c.MinGuardedDeletions < 0 {
		errs = append(errs, fmt.Errorf("sink: min guarded deletions %d is negative", c.MinGuardedDeletions))
	}
	return errors.Join(errs...)
}

// Kube is a Sink that applies the Istio resources of an output snapshot (ServiceEntry,
// DestinationRule, VirtualService and Gateway of networking.istio.io), and Istio's plugged-in
// CA Secret istio-system/cacerts, to a Kubernetes cluster with server-side apply under its
// own field manager. A cacerts Secret it does not own (plugged in by the user, cert-manager
// or external-secrets) is left alone, a conflict and also a refused object (so that the
// management server's check shows it); one it owns is never deleted. Other resources of the snapshot (the
// Envoy ones, served over xDS) are not its business and are ignored.
//
// Ownership: every object it writes carries LabelManagedBy=ManagedBy and
// LabelCluster=<cluster>. It owns an object only when the object has both labels and a
// server-side apply entry of its field manager in managedFields, i.e. it created the object.
// It never modifies or deletes an object it does not own: an output resource whose name is
// taken by an object it does not own is skipped, logged and reported by Status (Conflicts)
// and the metric meshrelay_sink_unowned_conflicts, without failing the step; objects that
// merely carry the labels are left alone. Owned objects that left the output are pruned, each
// deleted with its UID and resourceVersion as preconditions.
//
// Per object: each object is applied on its own. An object whose namespace does not exist
// gets it: the sink creates the namespace, labelled LabelManagedBy=ManagedBy and
// LabelCluster=<cluster>, and never deletes a namespace. An object the API server refuses for
// a reason retrying it does not fix (a Terminating namespace, an admission policy or webhook,
// the schema, a kind not installed, RBAC) does not hold back the others: Apply applies the
// rest, prunes what left the output, counts the output as applied and returns a
// *RefusedError naming each refused object and the API server's reason (also in Status's
// Refused); resync retries them. Failures retrying may fix (the API server unreachable,
// overloaded, a timeout) make Apply return a plain error after attempting every write, and
// the output does not count as applied. An object is only ever deleted because it left the
// output, never because another failed.
//
// No needless writes: an owned object whose AnnotationAppliedHash equals the hash of the
// wanted object, and whose live content holds every wanted field with the wanted value, is
// not written, so re-applying an unchanged output (also from a new Kube after an agent
// restart) sends reads only, and resourceVersions stay. The content check also catches hand
// edits, which the periodic resync of Start repairs.
//
// Deletion guard: a step is held back when it would delete more than MaxDeleteFraction of the
// objects the sink owns before the step, and at least MinGuardedDeletions of them, unless the
// management plane meant it. The management plane means it when the output's Epoch is greater
// than the epoch of the last output this Kube applied completely: the epoch moves only when an
// operator runs `meshrelay switch-active` (or the global lock is first taken), not when a
// server restarts or loses inputs, so the deletions of a server that published a partial
// output are held back, while those of an output made after an explicit switch of the
// management plane go through. A Kube that has not applied an output completely yet cannot
// compare epochs and holds back (the agent re-applies its last output from disk first, which
// normally sets the epoch). A held-back step writes nothing at all — the cluster keeps the
// last output that passed, which is also what the agent keeps as applied when it refuses
// (NACKs) this one — and Apply returns an error wrapping ErrDeletionGuard that names the
// counts; `meshrelay check` shows it as the cluster's refusal, Guard and Status report it,
// and the metrics meshrelay_sink_deletion_guard_active and
// meshrelay_sink_deletions_refused_total count it. The hold ends with the first step that
// passes: an output that keeps the objects, an output of a newer epoch, or a run with a
// larger MaxDeleteFraction (the periodic resync of the last output that passed does not end
// it).
type Kube struct {
	client dynamic.Interface
	cfg    KubeConfig
	log    *slog.Logger
	m      *kubeMetrics

	mu         sync.Mutex         // serializes Apply and resync; guards the fields below
	last       *snapshot.Snapshot // the last output not held back by the guard: what resync applies
	applied    bool               // an output was applied completely
	appliedEpo uint64             // epoch of the last output applied completely

	statusMu sync.Mutex // guards status
	status   KubeStatus
}

// KubeStatus is what /status shows of a Kube sink.
type KubeStatus struct {
	// OwnedObjects is the number of objects the sink owned after its last step.
	OwnedObjects int `json:"ownedObjects"`
	// AppliedVersion and AppliedEpoch are of the last output applied completely.
	AppliedVersion uint64 `json:"appliedVersion,omitempty"`
	AppliedEpoch   uint64 `json:"appliedEpoch,omitempty"`
	// Applies and Deletes count the writes sent to the API server.
	Applies uint64 `json:"applies"`
	Deletes uint64 `json:"deletes"`
	// Conflicts names the output objects whose name an object the sink does not own has taken
	// (left untouched).
	Conflicts []string `json:"conflicts,omitempty"`
	// Refused lists the objects of the last step the API server refused while the rest was
	// applied (see RefusedError).
	Refused []Refusal `json:"refused,omitempty"`
	// LastError is the error of the last step, empty when it succeeded (also when it
	// succeeded except for the Refused objects).
	LastError     string      `json:"lastError,omitempty"`
	DeletionGuard GuardStatus `json:"deletionGuard"`
}

// GuardStatus is the state of the deletion guard.
type GuardStatus struct {
	// Active is true while the last step's deletions were held back.
	Active            bool    `json:"active"`
	MaxDeleteFraction float64 `json:"maxDeleteFraction"`
	MinDeletions      int     `json:"minDeletions"`
	// Refusals counts the steps held back since start.
	Refusals uint64 `json:"refusals,omitempty"`
	// The last refusal (kept after the guard clears).
	Version          uint64    `json:"version,omitempty"`
	Epoch            uint64    `json:"epoch,omitempty"`
	LastAppliedEpoch uint64    `json:"lastAppliedEpoch,omitempty"`
	Deletions        int       `json:"deletions,omitempty"`
	Owned            int       `json:"owned,omitempty"`
	Objects          []string  `json:"objects,omitempty"` // the first objects held back
	At               time.Time `json:"at,omitzero"`
	Message          string    `json:"message,omitempty"`
}

// maxGuardObjects bounds GuardStatus.Objects.
const maxGuardObjects = 20

type kubeMetrics struct {
	writes      *prometheus.CounterVec
	refused     prometheus.Counter
	guardActive prometheus.Gauge
	owned       prometheus.Gauge
	conflicts   prometheus.Gauge
}

func newKubeMetrics(reg prometheus.Registerer) *kubeMetrics {
	m := &kubeMetrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_sink_writes_total",
			Help: "Writes the Kubernetes sink sent to the API server, by operation (apply, delete)."}, []string{"operation"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshrelay_sink_deletions_refused_total",
			Help: "Deletions the deletion guard held back, summed over the steps it held back."}),
		guardActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshrelay_sink_deletion_guard_active",
			Help: "1 while the last output's deletions are held back by the deletion guard."}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshrelay_sink_owned_objects",
			Help: "Objects the Kubernetes sink owns in its cluster."}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshrelay_sink_unowned_conflicts",
			Help: "Output objects left untouched because an object the agent does not own has their name."}),
	}
	m.writes.WithLabelValues("apply")
	m.writes.WithLabelValues("delete")
	if reg != nil {
		reg.MustRegister(m.writes, m.refused, m.guardActive, m.owned, m.conflicts)
	}
	return m
}

// NewKube returns a Sink applying through client. It validates the configuration, registers
// its metrics on reg (when not nil) and does no I/O.
func NewKube(client dynamic.Interface, cfg KubeConfig, log *slog.Logger, reg prometheus.Registerer) (*Kube, error) {
	if client == nil {
		return nil, errors.New("sink: nil Kubernetes client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.FieldManager == "" {
		cfg.FieldManager = FieldManager
	}
	if cfg.Resync == 0 {
		cfg.Resync = DefaultKubeResync
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Kube{client: client, cfg: cfg, log: log, m: newKubeMetrics(reg)}
	k.status.DeletionGuard = GuardStatus{MaxDeleteFraction: cfg.MaxDeleteFraction, MinDeletions: cfg.MinGuardedDeletions}
	return k, nil
}

// Status reports the sink's state. It is safe for concurrent use.
func (k *Kube) Status() KubeStatus {
	k.statusMu.Lock()
	defer k.statusMu.Unlock()
	s := k.status
	s.Conflicts = append([]string(nil), s.Conflicts...)
	s.Refused = append([]Refusal(nil), s.Refused...)
	s.DeletionGuard.Objects = append([]string(nil), s.DeletionGuard.Objects...)
	return s
}

// Guard reports the deletion guard's state. It is safe for concurrent use.
func (k *Kube) Guard() GuardStatus { return k.Status().DeletionGuard }

// Start re-applies the last output not held back by the guard every Resync until ctx ends,
// repairing drift: owned objects deleted or edited by hand are written again, and writes
// that failed are retried. It writes nothing while the cluster matches. Errors are logged and
// shown by Status.
func (k *Kube) Start(ctx context.Context) error {
	if k.cfg.Resync < 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(k.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			k.mu.Lock()
			var err error
			if k.last != nil {
				err = k.applyLocked(ctx, k.last, true)
			}
			k.mu.Unlock()
			var refused *RefusedError
			if err != nil && ctx.Err() == nil && !errors.As(err, &refused) { // refusals: logged as they change
				k.log.Warn("resync of kubernetes objects failed", "cluster", k.cfg.Cluster, "error", err)
			}
		}
	}
}

// Apply makes the cluster's owned Istio objects match the Istio resources of s (see Kube).
// Unless the deletion guard holds the step back, every write is attempted even when some
// fail. When the only failures are objects the API server refused, the error is a
// *RefusedError and s counts as applied; otherwise it joins every failure and names the
// objects.
func (k *Kube) Apply(ctx context.Context, s *snapshot.Snapshot) error {
	if s == nil {
		return errors.New("sink: nil snapshot")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.applyLocked(ctx, s, false)
}

// objectID identifies an object independently of its API version.
type objectID struct{ kind, namespace, name string }

func (id objectID) String() string { return id.kind + "/" + id.namespace + "/" + id.name }

type wantObject struct {
	id   objectID
	gvr  schema.GroupVersionResource
	obj  *unstructured.Unstructured
	hash string
	key  string // snapshot key
}

// desired extracts the Istio objects of s, labelled and annotated as applied.
func (k *Kube) desired(s *snapshot.Snapshot) (map[objectID]*wantObject, error) {
	out := map[objectID]*wantObject{}
	for _, r := range s.Sorted() {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if json.Unmarshal(r.Body, &head) != nil {
			continue // not a Kubernetes object (e.g. an Envoy resource): not ours
		}
		gv, err := schema.ParseGroupVersion(head.APIVersion)
		if err != nil {
			continue
		}
		plural, ok := istioResources[head.Kind]
		caSecret := gv == coreV1 && head.Kind == "Secret"
		if !(gv.Group == IstioGroup && ok) && !caSecret {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(r.Body); err != nil {
			return nil, fmt.Errorf("sink: resource %s: decode: %w", r.Key, err)
		}
		if obj.GetName() == "" || obj.GetNamespace() == "" {
			return nil, fmt.Errorf("sink: resource %s: an Istio object needs a name and a namespace", r.Key)
		}
		if caSecret {
			// The one core object: Istio's plugged-in CA. It is never listed (the agent may
			// read no other Secret) nor pruned (istiod would make a CA of its own at restart).
			if obj.GetNamespace() != IstioCASecretNamespace || obj.GetName() != IstioCASecretName {
				continue
			}
			plural = "secrets"
		}
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelManagedBy], labels[LabelCluster] = ManagedBy, k.cfg.Cluster
		obj.SetLabels(labels)
		ann := obj.GetAnnotations()
		delete(ann, AnnotationAppliedHash)
		obj.SetAnnotations(ann)
		for _, f := range []string{"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"} {
			unstructured.RemoveNestedField(obj.Object, "metadata", f)
		}
		unstructured.RemoveNestedField(obj.Object, "status")
		canon, err := json.Marshal(obj.Object)
		if err != nil {
			return nil, fmt.Errorf("sink: resource %s: encode: %w", r.Key, err)
		}
		hash := snapshot.HashBytes(canon)
		if ann == nil {
			ann = map[string]string{}
		}
		ann[AnnotationAppliedHash] = hash
		obj.SetAnnotations(ann)
		id := objectID{head.Kind, obj.GetNamespace(), obj.GetName()}
		if prev, dup := out[id]; dup {
			return nil, fmt.Errorf("sink: resources %s and %s are the same object %s", prev.key, r.Key, id)
		}
		out[id] = &wantObject{id: id, gvr: gv.WithResource(plural), obj: obj, hash: hash, key: r.Key}
	}
	return out, nil
}

// listOwned lists the objects the sink owns, by kind.
func (k *Kube) listOwned(ctx context.Context) (map[objectID]*unstructured.Unstructured, error) {
	sel := LabelManagedBy + "=" + ManagedBy + "," + LabelCluster + "=" + k.cfg.Cluster
	out := map[objectID]*unstructured.Unstructured{}
	for _, kind := range sortedKinds() {
		gvr := schema.GroupVersionResource{Group: IstioGroup, Version: istioListVersion, Resource: istioResources[kind]}
		opts := metav1.ListOptions{LabelSelector: sel, Limit: 500}
		for {
			list, err := k.client.Resource(gvr).Namespace(metav1.NamespaceAll).List(ctx, opts)
			if apierrors.IsNotFound(err) {
				break // the kind's CRD is not installed: nothing of it can be owned
			}
			if err != nil {
				return nil, fmt.Errorf("sink: list %s owned by cluster %s: %w", gvr.GroupResource(), k.cfg.Cluster, err)
			}
			for i := range list.Items {
				o := &list.Items[i]
				if k.owns(o) {
					out[objectID{kind, o.GetNamespace(), o.GetName()}] = o
				}
			}
			if opts.Continue = list.GetContinue(); opts.Continue == "" {
				break
			}
		}
	}
	return out, nil
}

// owns reports whether the sink created o: its labels and a server-side apply entry of the
// sink's field manager.
func (k *Kube) owns(o *unstructured.Unstructured) bool {
	l := o.GetLabels()
	if l[LabelManagedBy] != ManagedBy || l[LabelCluster] != k.cfg.Cluster {
		return false
	}
	for _, mf := range o.GetManagedFields() {
		if mf.Manager == k.cfg.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

// inSync reports whether live already holds what w would apply.
func inSync(w *wantObject, live *unstructured.Unstructured) bool {
	if live.GetDeletionTimestamp() != nil || live.GetAnnotations()[AnnotationAppliedHash] != w.hash {
		return false
	}
	if !contains(w.obj.GetLabels(), live.GetLabels()) || !contains(w.obj.GetAnnotations(), live.GetAnnotations()) {
		return false
	}
	for f, v := range w.obj.Object {
		switch f {
		case "apiVersion", "kind", "metadata":
			continue
		}
		if !subset(v, live.Object[f]) {
			return false
		}
	}
	return true
}

func contains(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// subset reports whether have holds every field of want with an equal value (lists must have
// the same length, element by element). Numbers compare by value, whatever their Go type.
func subset(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok || !subset(wv, hv) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for i := range w {
			if !subset(w[i], h[i]) {
				return false
			}
		}
		return true
	case nil:
		return have == nil
	}
	if wn, ok := number(want); ok {
		hn, ok := number(have)
		return ok && wn == hn
	}
	return want == have
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

// applyLocked is one step of Apply (see Kube); k.mu is held.
func (k *Kube) applyLocked(ctx context.Context, s *snapshot.Snapshot, resync bool) error {
	want, err := k.desired(s)
	if err != nil {
		k.finish(s, err, nil, -1)
		return err
	}
	live, err := k.listOwned(ctx)
	if err != nil {
		err = fmt.Errorf("sink: apply output version %d to cluster %s: %w", s.Version, k.cfg.Cluster, err)
		k.finish(s, err, nil, -1)
		return err
	}
	var stale []objectID
	for id := range live {
		if _, ok := want[id]; !ok {
			stale = append(stale, id)
		}
	}
	sortIDs(stale)
	owned := len(live)
	if err := k.guard(s, stale, owned, resync); err != nil {
		// Held back: nothing at all is written, so the cluster keeps the last output that
		// passed, which is also what the agent keeps as applied after refusing this one.
		k.finish(s, err, nil, owned)
		return err
	}
	k.last = s // what resync repairs towards, also when some writes below fail

	var errs []error
	var conflicts []string
	var refusals []Refusal
	ids := make([]objectID, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sortIDs(ids)
	applied, created := 0, 0
	for _, id := range ids {
		w := want[id]
		ri := k.client.Resource(w.gvr).Namespace(id.namespace)
		l, listed := live[id]
		if listed {
			if inSync(w, l) {
				continue
			}
		} else {
			// Not owned: look first, so that an object someone else made is never touched.
			cur, err := ri.Get(ctx, id.name, metav1.GetOptions{})
			switch {
			case err == nil && !k.owns(cur):
				conflicts = append(conflicts, id.String())
				if id.kind == "Secret" {
					// Istio's CA plugged in by someone else: the mesh may not share meshrelay's
					// root, so it is reported with the output's acknowledgement (check) too.
					refusals = append(refusals, Refusal{Key: w.key, Object: id.String(), Reason: fmt.Sprintf(
						"%s/%s exists and was not created by meshrelay (plugged in by hand, cert-manager or external-secrets?): left alone; "+
							"start the management server with --istio-cacerts=false to stop issuing it", id.namespace, id.name)})
				}
				continue
			case err == nil && inSync(w, cur):
				continue
			case err != nil && !apierrors.IsNotFound(err):
				errs = append(errs, fmt.Errorf("get %s %s/%s: %w", w.gvr.GroupResource(), id.namespace, id.name, err))
				continue
			}
		}
		got, err := k.applyObject(ctx, w)
		if err != nil {
			err = fmt.Errorf("apply %s %s/%s: %w", w.gvr.GroupResource(), id.namespace, id.name, err)
			if refused(err) {
				refusals = append(refusals, Refusal{Key: w.key, Object: id.String(), Reason: err.Error()})
			} else {
				errs = append(errs, err)
			}
			continue
		}
		applied++
		if !listed {
			created++
		}
		k.m.writes.WithLabelValues("apply").Inc()
		k.countWrite(true)
		if !inSync(w, got) {
			k.log.Warn("applied object differs from the output; the API server dropped or changed fields, so it will be applied again every step",
				"cluster", k.cfg.Cluster, "object", id.String(), "resource", w.key)
		}
	}

	deleted := 0
	for _, id := range stale {
		o := live[id]
		uid, rv := o.GetUID(), o.GetResourceVersion()
		gvr := schema.GroupVersionResource{Group: IstioGroup, Version: istioListVersion, Resource: istioResources[id.kind]}
		err := k.client.Resource(gvr).Namespace(id.namespace).Delete(ctx, id.name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}, // exactly the object examined
		})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s %s/%s: %w", gvr.GroupResource(), id.namespace, id.name, err))
			continue
		}
		if err == nil {
			k.m.writes.WithLabelValues("delete").Inc()
			k.countWrite(false)
		}
		deleted++
	}
	var stepErr error
	switch {
	case len(errs) > 0:
		// A failure retrying may fix (the API server unreachable, overloaded, a timeout): the
		// output is not applied, and the agent refuses it so that the server sends it again.
		stepErr = fmt.Errorf("sink: apply output version %d to cluster %s: %w", s.Version, k.cfg.Cluster, errors.Join(append(errs, refusalErrs(refusals)...)...))
	case len(refusals) > 0:
		// Only objects the cluster refused: the rest is applied, and the output counts as
		// applied with these refusals.
		k.applied, k.appliedEpo = true, s.Epoch
		stepErr = &RefusedError{Version: s.Version, Cluster: k.cfg.Cluster, Refusals: refusals}
	default:
		k.applied, k.appliedEpo = true, s.Epoch
	}
	k.finish(s, stepErr, conflicts, owned-deleted+created)
	k.setRefusals(refusals)
	if applied+deleted > 0 || stepErr != nil {
		k.log.Info("applied output to kubernetes", "cluster", k.cfg.Cluster, "version", s.Version, "epoch", s.Epoch,
			"objects", len(want), "applied", applied, "deleted", deleted, "conflicts", len(conflicts), "refused", len(refusals))
	}
	return stepErr
}

// guard decides whether the stale objects may be deleted (nil) or are held back, and records
// the decision. A resync re-applies the last output that passed: it may go ahead, but it
// does not end a hold — the output held back is still refused and must stay visible until
// an output replaces it.
func (k *Kube) guard(s *snapshot.Snapshot, stale []objectID, owned int, resync bool) error {
	d := len(stale)
	meant := k.applied && s.Epoch > k.appliedEpo
	hold := d > 0 && d >= k.cfg.MinGuardedDeletions && float64(d) > k.cfg.MaxDeleteFraction*float64(owned) && !meant
	k.statusMu.Lock()
	defer k.statusMu.Unlock()
	g := &k.status.DeletionGuard
	if !hold && resync && g.Active {
		return nil
	}
	if !hold {
		if g.Active {
			k.log.Info("deletion guard released", "cluster", k.cfg.Cluster, "version", s.Version, "epoch", s.Epoch, "deletions", d, "owned", owned, "newEpoch", meant)
		}
		g.Active = false
		k.m.guardActive.Set(0)
		return nil
	}
	last := "none"
	if k.applied {
		last = fmt.Sprint(k.appliedEpo)
	}
	err := fmt.Errorf("%w: output version %d would delete %d of the %d objects this agent owns in cluster %s, more than the allowed share %.2f; epoch %d is not newer than the last applied epoch %s, so nothing is deleted until an output keeps them, a newer epoch confirms it, or --max-delete-fraction allows it",
		ErrDeletionGuard, s.Version, d, owned, k.cfg.Cluster, k.cfg.MaxDeleteFraction, s.Epoch, last)
	names := make([]string, 0, min(d, maxGuardObjects))
	for _, id := range stale[:min(d, maxGuardObjects)] {
		names = append(names, id.String())
	}
	if !g.Active {
		k.log.Warn("deletion guard holds back deletions", "cluster", k.cfg.Cluster, "version", s.Version, "epoch", s.Epoch,
			"lastAppliedEpoch", last, "deletions", d, "owned", owned, "maxDeleteFraction", k.cfg.MaxDeleteFraction)
	}
	*g = GuardStatus{
		Active: true, MaxDeleteFraction: k.cfg.MaxDeleteFraction, MinDeletions: k.cfg.MinGuardedDeletions, Refusals: g.Refusals + 1,
		Version: s.Version, Epoch: s.Epoch, LastAppliedEpoch: k.appliedEpo, Deletions: d, Owned: owned, Objects: names,
		At: time.Now().UTC(), Message: err.Error(),
	}
	k.m.guardActive.Set(1)
	k.m.refused.Add(float64(d))
	return err
}

func (k *Kube) countWrite(apply bool) {
	k.statusMu.Lock()
	defer k.statusMu.Unlock()
	if apply {
		k.status.Applies++
	} else {
		k.status.Deletes++
	}
}

// finish records the outcome of a step; owned < 0 keeps the previous count.
func (k *Kube) finish(s *snapshot.Snapshot, err error, conflicts []string, owned int) {
	k.statusMu.Lock()
	defer k.statusMu.Unlock()
	st := &k.status
	st.LastError = ""
	var partial *RefusedError
	if errors.As(err, &partial) {
		err = nil // applied, with refusals (setRefusals records them)
	}
	if err != nil {
		st.LastError = err.Error()
	} else {
		st.AppliedVersion, st.AppliedEpoch = s.Version, s.Epoch
	}
	if owned >= 0 {
		st.OwnedObjects = owned
		k.m.owned.Set(float64(owned))
	}
	if conflicts != nil || err == nil {
		if strings.Join(conflicts, ",") != strings.Join(st.Conflicts, ",") && len(conflicts) > 0 {
			k.log.Warn("output objects left untouched: objects of the same name exist that this agent did not create",
				"cluster", k.cfg.Cluster, "objects", strings.Join(conflicts, ", "))
		}
		st.Conflicts = conflicts
		k.m.conflicts.Set(float64(len(conflicts)))
	}
}

func sortedKinds() []string {
	out := make([]string, 0, len(istioResources))
	for k := range istioResources {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortIDs(ids []objectID) {
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
}
