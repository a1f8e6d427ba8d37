package translate

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// The Secrets that carry a cluster's mesh identity issued by the management server
// (used when no bring-your-own secret is referenced) are envoyres.MeshIdentitySecret and
// envoyres.MeshCASecret.
const (
	// FailoverUpstreamSecret is the seed's client secret for failover connections: when a
	// Secret of this name exists in the primary's cluster it is used instead of the mesh
	// identity.
	FailoverUpstreamSecret = "failover-upstream"
	// DefaultHTTPPort is the port of the default HTTP gateway a cluster gets when route
	// tables apply to it and it declares no httpGateway (Gloo's gateway-proxy).
	DefaultHTTPPort = 8080
)

// caSecretPrefix names the Envoy secret holding the ca.crt of a bring-your-own Secret
// (an Envoy secret holds either a certificate or a validation context).
const caSecretPrefix = "ca:"

func caSecretName(secret string) string { return caSecretPrefix + secret }

// world is the parsed configuration and inputs of one translation.
type world struct {
	clusters map[string]v1alpha1.KubernetesCluster
	names    []string
	models   map[string]*clusterModel
	certs    map[string]ClusterCert
	// parsed counts what parsing the changed inputs decoded and reused (Work).
	parsed parseStats
	// refs is referencedIn's index, built once and shared by the copies of the world.
	refs *referenceIndex

	upstreamDecls []typed[v1alpha1.Upstream]
	gatewayDecls  []typed[v1alpha1.Gateway]
	schemes       []typed[v1alpha1.FailoverScheme]
	routeTables   []typed[v1alpha1.RouteTable]
	vds           []typed[v1alpha1.VirtualDestination]
	fpolicies     []typed[v1alpha1.FailoverPolicy]
	opolicies     []typed[v1alpha1.OutlierDetectionPolicy]

	// status collects problems: those of the configuration in the world Translate builds,
	// those of one cluster's plan in the copy that plans it.
	status *statusSet

	// Memoized per translation (the world is immutable once built), shared by the copies
	// that plan clusters in parallel.
	localCache   *cache[string, map[string]*upstreamModel]
	backingCache *cache[string, []backing]
	// gatewayEndpointsCache remembers gatewayEndpoints by cluster (callers copy elements
	// before changing them).
	gatewayEndpointsCache *cache[string, []Endpoint]
	// tlsCache remembers clientTLS by consumer cluster and SNI.
	tlsCache *cache[[2]string, *UpstreamTLS]
	// vdKeyCache remembers the digests vdPortKey is made of.
	vdKeyCache *cache[string, string]
	// selections is the Translator's memo of selectedIn.
	selections *selectionMemo

	// vd is what planning one cluster remembers of its VirtualDestinations (vdmemo.go); each
	// planning copy has its own.
	vd *vdState
}

// vdState is the VirtualDestination upstreams of one cluster: those of its previous
// translation (prev) and this one's (next), by vdPortKey, and what was reused or built.
type vdState struct {
	prev, next map[string]*vdUpstream
	// othersPrev and othersNext are the others' parts of those upstreams, by vdOthersKey
	// (vdsplit.go).
	othersPrev, othersNext map[string]*vdOthers
	// sePrev and seNext are the ServiceEntries built from them, by vdServiceEntryKey.
	sePrev, seNext map[string]*builtServiceEntry
	// keys are the vdPortKeys of the upstreams put in the plan, splits those of them
	// assembled from parts; seKeys the ServiceEntries built for the plan, by namespace/name.
	keys                       map[*UpstreamPlan]string
	splits                     map[*UpstreamPlan]*vdUpstream
	seKeys                     map[string][]*builtServiceEntry
	planned, reused, assembled int
	// render holds the memo keys of the finished plan (set at the end of plan).
	render planKeys
}

func newVDState(prev vdPlans) *vdState {
	return &vdState{prev: prev.upstreams, next: map[string]*vdUpstream{}, othersPrev: prev.others, othersNext: map[string]*vdOthers{},
		sePrev: prev.serviceEntries, seNext: map[string]*builtServiceEntry{},
		keys: map[*UpstreamPlan]string{}, splits: map[*UpstreamPlan]*vdUpstream{}, seKeys: map[string][]*builtServiceEntry{}}
}

// vdPlans is what a cluster's translation leaves for the next one to reuse: its
// VirtualDestination upstreams by vdPortKey, their others' parts by vdOthersKey and their
// ServiceEntries by vdServiceEntryKey.
type vdPlans struct {
	upstreams      map[string]*vdUpstream
	others         map[string]*vdOthers
	serviceEntries map[string]*builtServiceEntry
}

// prevServiceEntry is the ServiceEntry namespace/name of the cluster's previous
// translation, nil when it had none.
func (s *vdState) prevServiceEntry(namespace, name string) *builtServiceEntry {
	for _, b := range s.sePrev {
		if b.plan.Namespace == namespace && b.plan.Name == name {
			return b
		}
	}
	return nil
}

func (s *vdState) plans() vdPlans {
	return vdPlans{upstreams: s.next, others: s.othersNext, serviceEntries: s.seNext}
}

// cache is a concurrency-safe memo of values computed from their key. Racing callers may
// both compute a value (the same one: computing is deterministic); the first one stored is
// what every caller gets from then on.
type cache[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

func newCache[K comparable, V any]() *cache[K, V] { return &cache[K, V]{m: map[K]V{}} }

func (c *cache[K, V]) get(k K, compute func() V) V {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = compute()
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[k]; ok {
		return old
	}
	c.m[k] = v
	return v
}

// referenceIndex holds, by cluster, the upstreams failover schemes and route tables name
// there (world.referencedIn).
type referenceIndex struct {
	once sync.Once
	m    map[string]map[string]bool
}

// forPlan returns a copy of w that plans one cluster: it shares everything but collects
// that cluster's problems in a status set of its own.
func (w *world) forPlan(prevVD vdPlans) *world {
	cw := *w
	cw.status = &statusSet{}
	cw.vd = newVDState(prevVD)
	return &cw
}

type typed[T any] struct {
	obj    object
	v      T
	origin string
}

// statusSet collects problems per resource.
type statusSet struct {
	m    map[string][]string
	seen map[statusKey]struct{}
}

type statusKey struct{ resource, msg string }

// NotePrefix starts a status message that is informational: the resource is translated as
// it says (a documented fallback, a part that is ignored), and nothing is left out. IsNote
// tells such messages from problems.
const NotePrefix = "note: "

// IsNote reports whether a status message is a note rather than a problem.
func IsNote(msg string) bool { return strings.HasPrefix(msg, NotePrefix) }

// HasProblem reports whether any of a resource's status messages is a problem, not a note.
func HasProblem(msgs []string) bool {
	return slices.ContainsFunc(msgs, func(m string) bool { return !IsNote(m) })
}

// note adds an informational message (see NotePrefix).
func (s *statusSet) note(o object, format string, args ...any) {
	s.add(o, NotePrefix+format, args...)
}

func (s *statusSet) add(o object, format string, args ...any) {
	s.addMsg(o.describe(), fmt.Sprintf(format, args...))
}

// addMsg adds msg to resource k's messages unless it is there: looked up in a set, so that
// merging a message from each of thousands of clusters takes linear time, not quadratic.
func (s *statusSet) addMsg(k, msg string) {
	if s.m == nil {
		s.m, s.seen = map[string][]string{}, map[statusKey]struct{}{}
	}
	if _, ok := s.seen[statusKey{k, msg}]; ok {
		return
	}
	s.seen[statusKey{k, msg}] = struct{}{}
	s.m[k] = append(s.m[k], msg)
}

// merge adds the messages of another set (a cluster's translation, kept between
// translations: its slices are not modified).
func (s *statusSet) merge(src map[string][]string) {
	for k, msgs := range src {
		for _, msg := range msgs {
			s.addMsg(k, msg)
		}
	}
}

// sorted returns the messages per resource, each resource's sorted (never nil).
func (s *statusSet) sorted() map[string][]string {
	if s.m == nil {
		return map[string][]string{}
	}
	for _, msgs := range s.m {
		sort.Strings(msgs)
	}
	return s.m
}

func decodeInto[T any](objs []object, kind string, w *world, out *[]typed[T]) {
	for _, o := range objs {
		if o.Kind != kind {
			continue
		}
		var v T
		if err := o.Into(&v); err != nil {
			w.status.add(o, "does not decode: %v", err)
			continue
		}
		*out = append(*out, typed[T]{obj: o, v: v, origin: o.origin})
	}
}

// plan builds the Plan of one cluster.
func (w *world) plan(c string) Plan {
	p := Plan{Cluster: c}
	local := w.localUpstreams(c)
	served := map[string]bool{}
	ups := map[string]*UpstreamPlan{}
	for _, name := range sortedNames(local) {
		u := local[name]
		up := &UpstreamPlan{Name: u.name, Namespace: u.namespace, Host: u.host, Port: u.port, ConnectTimeout: u.spec.ConnectTimeout.Duration,
			HealthChecks: healthChecks(u), Outlier: outlier(u.spec.OutlierDetection)}
		if u.svcName != "" {
			up.Service = &ServiceRef{Name: u.svcName, Selector: u.selector, PortName: u.portName}
		}
		if len(u.endpoints) > 0 {
			up.Priorities = [][]Endpoint{u.endpoints}
		}
		ups[name] = up
	}
	w.applySchemes(c, local, ups, served)
	for _, rt := range w.routeTables {
		for _, r := range rt.v.Spec.HTTP {
			for _, d := range r.ForwardTo.Destinations {
				if d.Ref.Cluster == c && d.Kind != v1alpha1.DestinationKindVirtualDestination {
					if u := w.findUpstream(c, d.Ref.Name, d.Ref.Namespace); u != nil {
						served[u.name] = true
					}
				}
			}
		}
	}
	secrets := map[string]bool{}
	w.applyVirtualDestinations(c, &p, ups, served, secrets)
	p.HTTPListeners = w.httpListeners(c, local, ups, secrets)
	var ew eastWest
	if slices.ContainsFunc(w.gateways(c), func(g gatewayModel) bool { return g.gw.Spec.TCPGateway != nil }) {
		ew = w.eastWest(c) // only a cluster with a TCP gateway serves other clusters' sidecars
	}
	p.TCPGateways = w.tcpGateways(c, local, served, secrets, ew)
	if len(p.TCPGateways) > 0 {
		// Aliases live beside the first gateway, visible to it alone (exportTo ".").
		for _, se := range ew.aliases {
			se.Namespace = p.TCPGateways[0].Namespace
			p.ServiceEntries = append(p.ServiceEntries, se)
		}
		sortServiceEntries(p.ServiceEntries)
	}
	for _, name := range sortedNames(ups) {
		up := ups[name]
		// A VirtualDestination upstream has an endpoint per cluster, nearly all with the
		// same secrets: a map write for each was 4 % of the server's CPU under churn.
		var lastCert, lastCA string
		for _, prio := range up.Priorities {
			for _, e := range prio {
				if e.TLS == nil || (e.TLS.CertSecret == lastCert && e.TLS.CASecret == lastCA && lastCert != "") {
					continue
				}
				lastCert, lastCA = e.TLS.CertSecret, e.TLS.CASecret
				secrets[e.TLS.CertSecret] = true
				if e.TLS.CASecret != "" {
					secrets[e.TLS.CASecret] = true
				}
			}
		}
		p.Upstreams = append(p.Upstreams, *up)
	}
	// The mesh identity always goes to the cluster (when the server has one for it): besides
	// the gateways' east-west mTLS, it is what the agent serves its xDS over TLS with
	// (docs/adr/0007).
	secrets[envoyres.MeshIdentitySecret], secrets[envoyres.MeshCASecret] = true, true
	p.Secrets = w.secrets(c, secrets)
	w.dropMissingSecrets(&p)
	w.vd.render = w.renderKeys(p, ups)
	return p
}

// renderKeys collects the memo keys of the VirtualDestination upstreams and ServiceEntries
// that ended up in plan p as built (a name another element took over, or that two elements
// share, is left to planHash).
func (w *world) renderKeys(p Plan, ups map[string]*UpstreamPlan) planKeys {
	keys := planKeys{upstreams: map[string]string{}, serviceEntries: map[string]*builtServiceEntry{}, splits: map[string]*vdUpstream{}}
	for name, up := range ups {
		if k, ok := w.vd.keys[up]; ok {
			keys.upstreams[name] = k
		}
		if s, ok := w.vd.splits[up]; ok {
			keys.splits[name] = s
		}
	}
	count := map[string]int{}
	for _, se := range p.ServiceEntries {
		count[se.Namespace+"/"+se.Name]++
	}
	for id, ks := range w.vd.seKeys {
		if len(ks) == 1 && count[id] == 1 {
			keys.serviceEntries[id] = ks[0]
		}
	}
	return keys
}

// dropMissingSecrets removes what references TLS material that cannot be produced (no
// bring-your-own secret and no mesh identity for the cluster): such an Envoy would wait for
// the secret forever. Each removal is reported.
func (w *world) dropMissingSecrets(p *Plan) {
	have := map[string]bool{}
	for _, s := range p.Secrets {
		have[s.Name] = true
	}
	ok := func(names ...string) bool {
		for _, n := range names {
			if n != "" && !have[n] {
				return false
			}
		}
		return true
	}
	obj := object{Object: resource.Object{Kind: v1alpha1.KindKubernetesCluster, Name: p.Cluster}}
	for i := range p.Upstreams {
		u := &p.Upstreams[i]
		var prios [][]Endpoint
		for _, prio := range u.Priorities {
			// Endpoints share their TLS settings (clientTLS): check each once, and copy
			// the priority only when something is left out.
			var lastTLS *UpstreamTLS
			lastOK := true
			usable := func(t *UpstreamTLS) bool {
				if t == nil {
					return true
				}
				if t != lastTLS {
					lastTLS, lastOK = t, ok(t.CertSecret, t.CASecret)
				}
				return lastOK
			}
			keep := prio
			for i, e := range prio {
				if usable(e.TLS) {
					continue
				}
				keep = slices.Clone(prio[:i])
				var out leftOut
				for _, e := range prio[i:] {
					if !usable(e.TLS) {
						out.add(e)
						continue
					}
					keep = append(keep, e)
				}
				out.report(w.status, obj, u.Name, p.Cluster)
				break
			}
			if len(keep) > 0 || len(prios) == 0 {
				prios = append(prios, keep)
			}
		}
		if len(prios) == 1 && len(prios[0]) == 0 {
			prios = nil
		}
		u.Priorities = prios
	}
	var gws []TCPGateway
	for _, g := range p.TCPGateways {
		var hosts []TCPHost
		for _, h := range g.Hosts {
			if !ok(h.CertSecret, h.CASecret) {
				w.status.add(obj, "gateway %s: host %s needs TLS secrets %s/%s that cluster %s does not have; left out", g.Name, h.Name, h.CertSecret, h.CASecret, p.Cluster)
				continue
			}
			hosts = append(hosts, h)
		}
		if len(hosts) > 0 {
			g.Hosts = hosts
			gws = append(gws, g)
		}
	}
	p.TCPGateways = gws
}

// leftOut gathers the endpoints of one priority that dropMissingSecrets leaves out, by the
// secrets they need: one status message per pair of secrets, however many endpoints (a
// cluster without its mesh identity would otherwise get one per gateway of every other
// cluster).
type leftOut struct {
	secrets []UpstreamTLS // in order of appearance
	addrs   map[UpstreamTLS][]string
}

func (l *leftOut) add(e Endpoint) {
	k := UpstreamTLS{CertSecret: e.TLS.CertSecret, CASecret: e.TLS.CASecret}
	if l.addrs == nil {
		l.addrs = map[UpstreamTLS][]string{}
	}
	if _, ok := l.addrs[k]; !ok {
		l.secrets = append(l.secrets, k)
	}
	l.addrs[k] = append(l.addrs[k], net.JoinHostPort(e.Address, strconv.Itoa(int(e.Port))))
}

// leftOutShown is how many of the endpoints left out a message names.
const leftOutShown = 3

func (l *leftOut) report(s *statusSet, obj object, upstream, cluster string) {
	for _, k := range l.secrets {
		addrs := l.addrs[k]
		what := fmt.Sprintf("endpoint %s needs", addrs[0])
		if len(addrs) > 1 {
			shown := strings.Join(addrs[:min(len(addrs), leftOutShown)], ", ")
			if more := len(addrs) - leftOutShown; more > 0 {
				shown += fmt.Sprintf(" and %d more", more)
			}
			what = fmt.Sprintf("%d endpoints (%s) need", len(addrs), shown)
		}
		s.add(obj, "upstream %s: %s TLS secrets %s/%s that cluster %s does not have (no mesh identity issued and no such Secret discovered); left out", upstream, what, k.CertSecret, k.CASecret, cluster)
	}
}

// localUpstreams are the cluster's discovered upstreams with declared ones merged on, by
// name (an upstream's name is its key, so a reference by name is a lookup). The result is
// shared: callers must not modify it.
func (w *world) localUpstreams(c string) map[string]*upstreamModel {
	return w.localCache.get(c, func() map[string]*upstreamModel { return w.mergeUpstreams(c) })
}

func (w *world) mergeUpstreams(c string) map[string]*upstreamModel {
	m := w.models[c]
	out := make(map[string]*upstreamModel, len(m.upstreams))
	for k, u := range m.upstreams {
		cp := *u
		out[k] = &cp
	}
	for _, d := range w.upstreamDecls {
		target := d.origin
		if target == "" {
			target = d.v.Spec.Cluster
		}
		u := out[d.obj.Name]
		switch {
		case target != "" && target != c:
			continue
		case u == nil && d.v.Spec.Static != nil && target == c:
			u = &upstreamModel{name: d.obj.Name, namespace: d.obj.Namespace, host: d.obj.Name, labels: d.obj.Labels}
			for _, h := range d.v.Spec.Static.Hosts {
				u.endpoints = append(u.endpoints, Endpoint{Address: h.Addr, Port: uint32(h.Port), Cluster: c})
				u.port = uint32(h.Port)
			}
			sortEndpoints(u.endpoints)
			out[u.name] = u
		case u == nil:
			if target == c {
				w.status.add(d.obj, "cluster %s has no upstream %q to patch (discovered upstreams are named <namespace>-<service>-<port>)", c, d.obj.Name)
			}
			continue
		}
		s := &u.spec
		if len(d.v.Spec.HealthChecks) > 0 {
			s.HealthChecks = d.v.Spec.HealthChecks
		}
		if d.v.Spec.OutlierDetection != nil {
			s.OutlierDetection = d.v.Spec.OutlierDetection
		}
		if d.v.Spec.ConnectTimeout.Duration > 0 {
			s.ConnectTimeout = d.v.Spec.ConnectTimeout
		}
	}
	return out
}

func healthChecks(u *upstreamModel) []HealthCheck {
	var out []HealthCheck
	for _, h := range u.spec.HealthChecks {
		if h.HTTPHealthCheck == nil {
			continue
		}
		hc := HealthCheck{Timeout: orDefault(h.Timeout.Duration, time.Second), Interval: orDefault(h.Interval.Duration, 5*time.Second),
			UnhealthyThreshold: uint32(max(h.UnhealthyThreshold, 1)), HealthyThreshold: uint32(max(h.HealthyThreshold, 1)),
			Path: h.HTTPHealthCheck.Path, Host: h.HTTPHealthCheck.Host}
		for _, s := range h.HTTPHealthCheck.ExpectedStatuses {
			hc.ExpectedStatuses = append(hc.ExpectedStatuses, uint32(s))
		}
		out = append(out, hc)
	}
	return out
}

func outlier(o *v1alpha1.OutlierDetection) *Outlier {
	if o == nil {
		return nil
	}
	out := &Outlier{Consecutive5xx: uint32(max(o.Consecutive5xx, 1)), Interval: orDefault(o.Interval.Duration, 10*time.Second),
		BaseEjectionTime: orDefault(o.BaseEjectionTime.Duration, 30*time.Second), MaxEjectionPercent: 100}
	if o.MaxEjectionPercent != nil {
		out.MaxEjectionPercent = uint32(*o.MaxEjectionPercent)
	}
	return out
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// gatewayEndpoints returns where cluster t's TCP (failover) gateway is reachable.
func (w *world) gatewayEndpoints(t string) []Endpoint {
	return w.gatewayEndpointsCache.get(t, func() []Endpoint {
		for _, g := range w.gateways(t) {
			if len(g.addresses) > 0 {
				return g.addresses
			}
		}
		return nil
	})
}

// gateways returns a cluster's gateways: its own and those declared for it on the server.
func (w *world) gateways(c string) []gatewayModel {
	var out []gatewayModel
	if m := w.models[c]; m != nil {
		out = append(out, m.gateways...)
	}
	for _, d := range w.gatewayDecls {
		if d.v.Spec.Cluster == c {
			gm := gatewayModel{gw: d.v, origin: ""}
			if d.v.Spec.TCPGateway != nil {
				gm.addresses, gm.reach, gm.selector = gatewayAddresses(whereIs(c, w.clusters[c]), d.v, w.models[c].services)
			}
			out = append(out, gm)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return out[i].gw.Metadata.Namespace+"/"+out[i].gw.Metadata.Name < out[j].gw.Metadata.Namespace+"/"+out[j].gw.Metadata.Name
	})
	return out
}

// clientTLS is how cluster c authenticates to remote gateways. The result is shared by
// every endpoint that needs it (plans never modify it).
func (w *world) clientTLS(c, sni string) *UpstreamTLS {
	return w.tlsCache.get([2]string{c, sni}, func() *UpstreamTLS {
		t := &UpstreamTLS{SNI: sni, CertSecret: envoyres.MeshIdentitySecret, CASecret: envoyres.MeshCASecret}
		if s, ok := w.models[c].secrets[FailoverUpstreamSecret]; ok {
			t = &UpstreamTLS{SNI: sni, CertSecret: FailoverUpstreamSecret}
			if len(s.Value("ca.crt")) > 0 {
				t.CASecret = caSecretName(FailoverUpstreamSecret)
			}
		}
		return t
	})
}

// findUpstream finds an upstream of cluster t by reference.
func (w *world) findUpstream(t, name, namespace string) *upstreamModel {
	if u := w.localUpstreams(t)[name]; u != nil && u.matchesRef(name, namespace) {
		return u
	}
	return nil
}

// applySchemes adds failover priorities to primaries in c and records which of c's
// upstreams other clusters fail over to (served by its TCP gateway).
func (w *world) applySchemes(c string, local map[string]*upstreamModel, ups map[string]*UpstreamPlan, served map[string]bool) {
	primaries := map[string]string{}
	for _, s := range w.schemes {
		sp := s.v.Spec
		for gi, g := range sp.FailoverGroups {
			for ti, t := range g.PriorityGroup {
				for ui, ref := range t.Upstreams {
					if t.Cluster != c {
						continue
					}
					field := fmt.Sprintf("spec.failoverGroups[%d].priorityGroup[%d].upstreams[%d]", gi, ti, ui)
					if u := w.findUpstream(c, ref.Name, ref.Namespace); u != nil {
						served[u.name] = true
					} else {
						w.status.add(s.obj, "%s: upstream %q not found in cluster %s", field, ref.Name, c)
					}
				}
			}
		}
		if sp.Primary.ClusterName != c {
			continue
		}
		if _, ok := w.clusters[c]; !ok {
			continue
		}
		var primary *UpstreamPlan
		if u := local[sp.Primary.Name]; u != nil && u.matchesRef(sp.Primary.Name, sp.Primary.Namespace) {
			primary = ups[u.name]
		}
		if primary == nil {
			w.status.add(s.obj, "spec.primary: upstream %q not found in cluster %s", sp.Primary.Name, c)
			continue
		}
		if other, dup := primaries[primary.Name]; dup {
			w.status.add(s.obj, "spec.primary: upstream %q of cluster %s is already the primary of %s, which applies (the first by name)", primary.Name, c, other)
			continue
		}
		primaries[primary.Name] = s.obj.describe()
		for _, other := range w.selectingAlso(c, local[primary.Name]) {
			w.status.note(s.obj, "on Istio, Service %s also selects the WorkloadEntries that add the failover gateways to %s (its selector is part of %s's): its callers fail over too", other, primary.Host, primary.Host)
		}
		prios := [][]Endpoint{nil}
		if len(primary.Priorities) > 0 {
			prios[0] = primary.Priorities[0]
		}
		for gi, g := range sp.FailoverGroups {
			var group []Endpoint
			for ti, t := range g.PriorityGroup {
				field := fmt.Sprintf("spec.failoverGroups[%d].priorityGroup[%d]", gi, ti)
				if _, ok := w.clusters[t.Cluster]; !ok {
					w.status.add(s.obj, "%s.cluster: cluster %q is not registered", field, t.Cluster)
					continue
				}
				gw := w.gatewayEndpoints(t.Cluster)
				if len(gw) == 0 {
					w.status.add(s.obj, "%s: cluster %s has no reachable failover gateway (a Gateway with tcpGateway and a Service exposing its bindPort)", field, t.Cluster)
					continue
				}
				for _, ref := range t.Upstreams {
					u := w.findUpstream(t.Cluster, ref.Name, ref.Namespace)
					if u == nil {
						continue // reported above, from the target cluster's side
					}
					for _, e := range gw {
						e.TLS = w.clientTLS(c, u.name)
						group = append(group, e)
					}
				}
			}
			if len(group) > 0 {
				prios = append(prios, group)
			}
		}
		primary.Priorities = prios
		primary.Failover = &FailoverPlan{Source: s.obj.String()}
		if primary.Outlier == nil {
			// A failover cluster ejects up to 100 % of a priority's endpoints (DESIGN §7).
			primary.Outlier = &Outlier{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100}
		}
	}
}

// selectingAlso names the other Services of cluster c, in u's namespace, whose selector is a
// subset of u's Service's: on Istio they select the WorkloadEntries made for u too.
func (w *world) selectingAlso(c string, u *upstreamModel) []string {
	if u == nil || len(u.selector) == 0 {
		return nil
	}
	var out []string
	for _, s := range w.models[c].services {
		sel := s.svc.Spec.Selector
		if s.svc.Metadata.Namespace != u.namespace || s.svc.Metadata.Name == u.svcName || len(sel) == 0 {
			continue
		}
		if matchLabels(sel, u.selector) {
			out = append(out, s.svc.Metadata.Namespace+"/"+s.svc.Metadata.Name)
		}
	}
	return out
}

// routeTablesFor returns the route tables that apply to cluster c.
func (w *world) routeTablesFor(c string) []typed[v1alpha1.RouteTable] {
	var out []typed[v1alpha1.RouteTable]
	for _, rt := range w.routeTables {
		cl := rt.v.Spec.Clusters
		switch {
		case len(cl) > 0:
			if contains(cl, c) {
				out = append(out, rt)
			}
		case rt.origin != "":
			if rt.origin == c {
				out = append(out, rt)
			}
		default:
			out = append(out, rt)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// httpListeners builds the HTTP gateways of c with the routes of its route tables.
func (w *world) httpListeners(c string, local map[string]*upstreamModel, ups map[string]*UpstreamPlan, secrets map[string]bool) []HTTPListener {
	rts := w.routeTablesFor(c)
	var gws []gatewayModel
	for _, g := range w.gateways(c) {
		if g.gw.Spec.HTTPGateway != nil {
			gws = append(gws, g)
		}
	}
	if len(rts) == 0 && len(gws) == 0 {
		return nil
	}
	if len(gws) == 0 {
		gws = []gatewayModel{{gw: v1alpha1.Gateway{Metadata: v1alpha1.ObjectMeta{Name: "gateway-proxy", Namespace: UpstreamNamespace},
			Spec: v1alpha1.GatewaySpec{BindAddress: v1alpha1.DefaultBindAddress, BindPort: DefaultHTTPPort, HTTPGateway: &v1alpha1.HTTPGateway{}}}}}
	}
	var out []HTTPListener
	for _, g := range gws {
		l := HTTPListener{Name: listenerName(g.gw), Address: orString(g.gw.Spec.BindAddress, v1alpha1.DefaultBindAddress), Port: uint32(g.gw.Spec.BindPort), Namespace: g.gw.Metadata.Namespace}
		for _, rt := range rts {
			if ref := rt.v.Spec.Gateway; ref != nil && (ref.Name != g.gw.Metadata.Name || (ref.Namespace != "" && ref.Namespace != g.gw.Metadata.Namespace)) {
				continue
			}
			if refs := g.gw.Spec.HTTPGateway.RouteTables; len(refs) > 0 && !refsContain(refs, rt.obj.Name, rt.obj.Namespace) {
				continue
			}
			vh := VirtualHost{Name: sanitize(rt.obj.Namespace + "-" + rt.obj.Name), Domains: append([]string(nil), rt.v.Spec.Hosts...)}
			if contains(vh.Domains, "*") {
				w.status.note(rt.obj, "spec.hosts: \"*\" matches every host on meshrelay gateways; Istio sidecars get no VirtualService for it (Istio refuses \"*\" for the mesh), only for the other hosts")
			}
			for ri, r := range rt.v.Spec.HTTP {
				if route, ok := w.route(c, rt, ri, r, local, ups, secrets); ok {
					vh.Routes = append(vh.Routes, route)
				}
			}
			l.VirtualHosts = append(l.VirtualHosts, vh)
		}
		sort.Slice(l.VirtualHosts, func(i, j int) bool { return l.VirtualHosts[i].Name < l.VirtualHosts[j].Name })
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func refsContain(refs []v1alpha1.ObjectRef, name, ns string) bool {
	for _, r := range refs {
		if r.Name == name && (r.Namespace == "" || r.Namespace == ns) {
			return true
		}
	}
	return false
}

func listenerName(g v1alpha1.Gateway) string {
	return sanitize(g.Metadata.Namespace + "-" + g.Metadata.Name)
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// route resolves one HTTP route; destinations that do not resolve are reported and the
// route is dropped (the rest of the table still works).
func (w *world) route(c string, rt typed[v1alpha1.RouteTable], ri int, r v1alpha1.HTTPRoute, local map[string]*upstreamModel, ups map[string]*UpstreamPlan, secrets map[string]bool) (Route, bool) {
	route := Route{Name: orString(r.Name, fmt.Sprintf("%s-%d", rt.obj.Name, ri)), Timeout: r.Timeout.Duration}
	if r.Retries != nil {
		route.Retries = &Retries{Attempts: uint32(r.Retries.Attempts), PerTryTimeout: r.Retries.PerTryTimeout.Duration, RetryOn: r.Retries.RetryOn}
	}
	if len(r.Matchers) > 0 {
		m := r.Matchers[0]
		if m.URI != nil {
			route.Match.Prefix, route.Match.Exact, route.Match.Regex = m.URI.Prefix, m.URI.Exact, m.URI.Regex
		}
		for _, h := range m.Headers {
			route.Match.Headers = append(route.Match.Headers, HeaderMatch{Name: h.Name, Value: h.Value, Regex: h.Regex, Invert: h.InvertMatch})
		}
		route.Match.Method = m.Method
		if len(r.Matchers) > 1 {
			w.status.note(rt.obj, "spec.http[%d].matchers: only the first matcher is used", ri)
		}
	}
	if route.Match.Prefix == "" && route.Match.Exact == "" && route.Match.Regex == "" {
		route.Match.Prefix = "/"
	}
	for di, d := range r.ForwardTo.Destinations {
		field := fmt.Sprintf("spec.http[%d].forwardTo.destinations[%d]", ri, di)
		weight := uint32(1)
		if d.Weight != nil {
			weight = uint32(*d.Weight)
		}
		switch d.Kind {
		case v1alpha1.DestinationKindVirtualDestination:
			name, host, port, ok := w.vdUpstream(d, ups)
			if !ok {
				w.status.add(rt.obj, "%s: virtual destination %q not found (or it has no port %v)", field, d.Ref.Name, d.Port)
				return Route{}, false
			}
			route.Destinations = append(route.Destinations, WeightedDestination{Cluster: name, Host: host, Port: port, Weight: weight})
		default:
			target := orString(d.Ref.Cluster, c)
			if target == c {
				var u *upstreamModel
				if l := local[d.Ref.Name]; l != nil && l.matchesRef(d.Ref.Name, d.Ref.Namespace) {
					u = l
				}
				if u == nil {
					w.status.add(rt.obj, "%s: upstream %q not found in cluster %s", field, d.Ref.Name, c)
					return Route{}, false
				}
				route.Destinations = append(route.Destinations, WeightedDestination{Cluster: u.name, Host: u.host, Port: u.port, Weight: weight})
				continue
			}
			up, ok := w.remoteUpstream(c, target, d.Ref.Name, d.Ref.Namespace)
			if !ok {
				w.status.add(rt.obj, "%s: upstream %q not reachable in cluster %s (missing upstream, unregistered cluster, or no failover gateway)", field, d.Ref.Name, target)
				return Route{}, false
			}
			ups[up.Name] = &up
			route.Destinations = append(route.Destinations, WeightedDestination{Cluster: up.Name, Host: up.Host, Port: up.Port, Weight: weight})
		}
	}
	return route, len(route.Destinations) > 0
}

// remoteUpstream is an upstream of cluster t reached from c through t's gateway over mTLS.
func (w *world) remoteUpstream(c, t, name, namespace string) (UpstreamPlan, bool) {
	if _, ok := w.clusters[t]; !ok {
		return UpstreamPlan{}, false
	}
	u := w.findUpstream(t, name, namespace)
	gw := w.gatewayEndpoints(t)
	if u == nil || len(gw) == 0 {
		return UpstreamPlan{}, false
	}
	var eps []Endpoint
	for _, e := range gw {
		e.TLS = w.clientTLS(c, u.name)
		eps = append(eps, e)
	}
	return UpstreamPlan{Name: t + "." + u.name, Namespace: u.namespace, Host: u.host, Port: u.port, Priorities: [][]Endpoint{eps}, Remote: true}, true
}

// tcpGateways builds c's TCP gateways; a forwardSniClusterName host serves the upstreams
// that other clusters fail over or route to.
func (w *world) tcpGateways(c string, local map[string]*upstreamModel, served map[string]bool, secrets map[string]bool, ew eastWest) []TCPGateway {
	var out []TCPGateway
	for _, g := range w.gateways(c) {
		if g.gw.Spec.TCPGateway == nil {
			continue
		}
		tg := TCPGateway{Name: listenerName(g.gw), Address: orString(g.gw.Spec.BindAddress, v1alpha1.DefaultBindAddress), Port: uint32(g.gw.Spec.BindPort),
			Namespace: g.gw.Metadata.Namespace, Selector: g.selector, IstioHosts: ew.hosts, SNIAliases: ew.sni}
		obj := object{Object: resource.Object{Kind: v1alpha1.KindGateway, Name: g.gw.Metadata.Name, Namespace: g.gw.Metadata.Namespace}, origin: g.origin}
		for _, r := range g.reach {
			w.status.note(obj, "%s", r)
		}
		for hi, h := range g.gw.Spec.TCPGateway.TCPHosts {
			th := TCPHost{Name: h.Name, CertSecret: envoyres.MeshIdentitySecret, CASecret: envoyres.MeshCASecret}
			if h.SSLConfig != nil && h.SSLConfig.SecretRef != nil {
				ref := h.SSLConfig.SecretRef
				if s, ok := w.models[c].secrets[orString(ref.Namespace, g.gw.Metadata.Namespace)+"/"+ref.Name]; ok {
					th.CertSecret = ref.Name
					if len(s.Value("ca.crt")) > 0 {
						th.CASecret = caSecretName(ref.Name)
					} else {
						// Client certificates must still be verified: against the mesh CA.
						w.status.note(obj, "spec.tcpGateway.tcpHosts[%d].sslConfig.secretRef: secret %q has no ca.crt; client certificates are verified against the mesh CA", hi, ref.Name)
					}
				} else if _, ok := w.certs[c]; ok {
					w.status.note(obj, "spec.tcpGateway.tcpHosts[%d].sslConfig.secretRef: secret %q not found in cluster %s; using the mesh identity issued by the management server", hi, ref.Name, c)
				} else {
					w.status.add(obj, "spec.tcpGateway.tcpHosts[%d].sslConfig.secretRef: secret %q not found in cluster %s", hi, ref.Name, c)
				}
			}
			switch {
			case h.Destination.ForwardSNIClusterName != nil:
				th.ForwardSNI = true
				for _, name := range sortedNames(served) {
					if _, ok := local[name]; ok {
						th.ServedNames = append(th.ServedNames, name)
					}
				}
			case h.Destination.Single != nil:
				ref := h.Destination.Single.Upstream
				if u := local[ref.Name]; u != nil && u.matchesRef(ref.Name, ref.Namespace) {
					th.Cluster = u.name
				}
				if th.Cluster == "" {
					w.status.add(obj, "spec.tcpGateway.tcpHosts[%d].destination.single: upstream %q not found in cluster %s", hi, ref.Name, c)
					continue
				}
			}
			if th.ForwardSNI && len(th.ServedNames) == 0 {
				continue // nothing to serve yet; an empty chain list would refuse everything anyway
			}
			secrets[th.CertSecret] = true
			if th.CASecret != "" {
				secrets[th.CASecret] = true
			}
			tg.Hosts = append(tg.Hosts, th)
		}
		if len(tg.Hosts) > 0 {
			out = append(out, tg)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// secrets renders the referenced secrets: bring-your-own ones from the cluster's input,
// the mesh identity and CA from the management server's certificates.
func (w *world) secrets(c string, names map[string]bool) []SecretPlan {
	var out []SecretPlan
	for _, n := range sortedNames(names) {
		switch {
		case n == envoyres.MeshIdentitySecret:
			if cert, ok := w.certs[c]; ok {
				out = append(out, SecretPlan{Name: n, CertPEM: cert.CertPEM, KeyPEM: cert.KeyPEM})
			}
		case n == envoyres.MeshCASecret:
			if cert, ok := w.certs[c]; ok {
				out = append(out, SecretPlan{Name: n, CAPEM: cert.CAPEM})
			}
		case strings.HasPrefix(n, caSecretPrefix):
			if s, ok := w.models[c].secrets[strings.TrimPrefix(n, caSecretPrefix)]; ok {
				out = append(out, SecretPlan{Name: n, CAPEM: s.Value("ca.crt")})
			}
		default:
			if s, ok := w.models[c].secrets[n]; ok {
				out = append(out, SecretPlan{Name: n, CertPEM: s.Value("tls.crt"), KeyPEM: s.Value("tls.key")})
			}
		}
	}
	return out
}
