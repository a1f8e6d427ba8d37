package crsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// ReasonTranslationProblems is the reason of an Accepted=False condition of a valid resource
// in which the last translation found problems (a reference to something that does not
// exist, an unsupported combination): the rest of it is translated, and so is every other
// resource; the message lists the problems, each naming its field.
const ReasonTranslationProblems = "TranslationProblems"

// maxMessage bounds a condition's message (the API allows 32768 bytes).
const maxMessage = 4096

// Status writes the status of every custom resource the Source reads: the Accepted
// condition, observedGeneration and the clusters it selects, through the status subresource.
// A valid resource's status is written only once a translation has covered its current
// spec (Translated tells it); an invalid one's at once. A status that would not change
// makes no API call, and only the leader writes.
type Status struct {
	src    *Source
	client client.Client
	leader func() bool
	log    *slog.Logger
	retry  time.Duration
	now    func() time.Time
	wake   chan struct{}

	mu         sync.Mutex          // guards translated, problems, clusters and haveResult
	translated map[string][]byte   // resource key → canonical JSON of what was translated (shared, immutable)
	problems   map[string][]string // resource (Object.String) → problems of the translation
	clusters   []string            // registered clusters of the translated configuration
	haveResult bool

	pending map[string]written // key → status written and not yet seen in the cache; loop only
}

// written is a status this writer sent, and the resourceVersion it was computed from.
type written struct {
	baseRV string
	status kubev1alpha1.Status
}

// NewStatus returns the status writer of src's custom resources. c writes (its scheme must
// know api/kube/v1alpha1: use src.Scheme()); leader says whether this server may write
// (nil: always). It does no I/O.
func NewStatus(src *Source, c client.Client, leader func() bool, log *slog.Logger) *Status {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if leader == nil {
		leader = func() bool { return true }
	}
	return &Status{src: src, client: c, leader: leader, log: log, retry: 2 * time.Second, now: time.Now,
		wake: make(chan struct{}, 1), pending: map[string]written{}}
}

// Translated records a translation: the configuration it translated and the problems it
// found by resource. It is reconcile.Config.OnTranslate; it does not block.
func (s *Status) Translated(config []resource.Object, problems map[string][]string) {
	tr := make(map[string][]byte, len(config))
	var clusters []string
	for _, o := range config {
		tr[o.Key()] = o.Raw
		if o.Kind == v1alpha1.KindKubernetesCluster {
			clusters = append(clusters, o.Name)
		}
	}
	sort.Strings(clusters)
	s.mu.Lock()
	s.translated, s.problems, s.clusters, s.haveResult = tr, problems, clusters, true
	s.mu.Unlock()
	s.Kick()
}

// Kick asks for a status round soon (for example when this server became the leader).
func (s *Status) Kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// LeaderOnly reports that Status writes only while this replica leads (it is started on
// every replica and checks leader before each round).
func (s *Status) LeaderOnly() bool { return true }

// Start writes statuses until ctx ends: after every translation, every read of the custom
// resources and, while writes fail, every retry period. It runs on every replica and checks
// leader before each round: only the leader writes.
func (s *Status) Start(ctx context.Context) error {
	changes := s.src.Subscribe()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-changes:
		case <-retry:
		}
		retry = nil
		if err := s.round(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("status not written; retrying", "error", err, "retry", s.retry)
			retry = time.After(s.retry)
		}
	}
}

// round writes every status that differs from what it should be.
func (s *Status) round(ctx context.Context) error {
	if !s.leader() || !s.src.Synced() {
		return nil
	}
	var errs []error
	seen := map[string]bool{}
	for _, e := range s.src.Entries() {
		seen[e.Key] = true
		want, ok := s.desired(e)
		if !ok {
			continue // not translated yet
		}
		cur := *e.Object.GetStatus()
		if sameStatus(cur, want) {
			delete(s.pending, e.Key)
			continue
		}
		if p, ok := s.pending[e.Key]; ok && p.baseRV == e.Object.GetResourceVersion() && sameStatus(p.status, want) {
			continue // written; the cache has not seen it yet
		}
		patched, ok := e.Object.DeepCopyObject().(kubev1alpha1.Object)
		if !ok {
			return fmt.Errorf("copy %s: unexpected type %T", e.Key, e.Object)
		}
		*patched.GetStatus() = want
		if err := s.client.Status().Patch(ctx, patched, client.MergeFrom(e.Object)); err != nil {
			if apierrors.IsNotFound(err) {
				continue // deleted meanwhile
			}
			errs = append(errs, fmt.Errorf("write status of %s: %w", e.Key, err))
			continue
		}
		s.pending[e.Key] = written{baseRV: e.Object.GetResourceVersion(), status: want}
		s.log.Debug("status written", "resource", e.Key, "generation", e.Object.GetGeneration(),
			"accepted", acceptedStatus(want))
	}
	for k := range s.pending {
		if !seen[k] {
			delete(s.pending, k)
		}
	}
	return errors.Join(errs...)
}

// desired computes the status an entry should have; false when it cannot be known yet (a
// valid resource whose current spec no translation has covered).
func (s *Status) desired(e Entry) (kubev1alpha1.Status, bool) {
	gen := e.Object.GetGeneration()
	cond := metav1.Condition{Type: kubev1alpha1.ConditionAccepted, ObservedGeneration: gen}
	var selected []string
	if e.Err != nil {
		cond.Status, cond.Reason = metav1.ConditionFalse, kubev1alpha1.ReasonInvalid
		cond.Message = "invalid, left out of the configuration: " + FieldMessages(e.Err)
	} else {
		s.mu.Lock()
		raw, ok := s.translated[e.Key]
		problems := s.problems[e.Resource.String()]
		clusters := s.clusters
		have := s.haveResult
		s.mu.Unlock()
		if !have || !ok || !bytes.Equal(raw, e.Resource.Raw) {
			return kubev1alpha1.Status{}, false
		}
		switch {
		case translate.HasProblem(problems):
			cond.Status, cond.Reason = metav1.ConditionFalse, ReasonTranslationProblems
			cond.Message = strings.Join(problems, "; ")
		case len(problems) > 0: // notes only: accepted as they say
			cond.Status, cond.Reason = metav1.ConditionTrue, kubev1alpha1.ReasonAccepted
			cond.Message = "accepted and translated; " + strings.Join(problems, "; ")
		default:
			cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, kubev1alpha1.ReasonAccepted, "accepted and translated"
		}
		selected = SelectedClusters(e.Resource, clusters)
	}
	if len(cond.Message) > maxMessage {
		cond.Message = cond.Message[:maxMessage-3] + "..."
	}
	cur := e.Object.GetStatus()
	conds := slices.Clone(cur.Conditions)
	cond.LastTransitionTime = metav1.NewTime(s.now().Truncate(time.Second))
	meta.SetStatusCondition(&conds, cond)
	return kubev1alpha1.Status{ObservedGeneration: gen, Conditions: conds, SelectedClusters: selected}, true
}

// sameStatus compares statuses ignoring when conditions last changed.
func sameStatus(a, b kubev1alpha1.Status) bool {
	if a.ObservedGeneration != b.ObservedGeneration || !slices.Equal(a.SelectedClusters, b.SelectedClusters) ||
		len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

func acceptedStatus(st kubev1alpha1.Status) metav1.ConditionStatus {
	if c := meta.FindStatusCondition(st.Conditions, kubev1alpha1.ConditionAccepted); c != nil {
		return c.Status
	}
	return metav1.ConditionUnknown
}

// SelectedClusters returns the registered clusters a resource applies to, sorted, as far
// as its spec says without the clusters' inputs: a KubernetesCluster itself; an Upstream or
// Gateway its spec.cluster; a FailoverScheme its primary's and its failover targets'
// clusters; a RouteTable its spec.clusters; a VirtualDestination the clusters its service
// selectors name, or every registered cluster when a selector names none. The policies
// (which apply through VirtualDestinations) and a RouteTable without spec.clusters get
// none.
func SelectedClusters(o resource.Object, registered []string) []string {
	set := map[string]bool{}
	all := func() {
		for _, c := range registered {
			set[c] = true
		}
	}
	switch o.Kind {
	case v1alpha1.KindKubernetesCluster:
		set[o.Name] = true
	case v1alpha1.KindUpstream:
		var u v1alpha1.Upstream
		if json.Unmarshal(o.Raw, &u) == nil {
			set[u.Spec.Cluster] = true
		}
	case v1alpha1.KindGateway:
		var g v1alpha1.Gateway
		if json.Unmarshal(o.Raw, &g) == nil {
			set[g.Spec.Cluster] = true
		}
	case v1alpha1.KindFailoverScheme:
		var f v1alpha1.FailoverScheme
		if json.Unmarshal(o.Raw, &f) == nil {
			set[f.Spec.Primary.ClusterName] = true
			for _, g := range f.Spec.FailoverGroups {
				for _, p := range g.PriorityGroup {
					set[p.Cluster] = true
				}
			}
		}
	case v1alpha1.KindRouteTable:
		var r v1alpha1.RouteTable
		if json.Unmarshal(o.Raw, &r) == nil {
			for _, c := range r.Spec.Clusters {
				set[c] = true
			}
		}
	case v1alpha1.KindVirtualDestination:
		var v v1alpha1.VirtualDestination
		if json.Unmarshal(o.Raw, &v) == nil {
			for _, sel := range v.Spec.Services {
				if sel.Cluster == "" {
					all()
				}
				set[sel.Cluster] = true
			}
		}
	}
	var out []string
	for c := range set {
		if c != "" && slices.Contains(registered, c) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}
