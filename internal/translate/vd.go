package translate

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

// backing is one upstream that backs a VirtualDestination port.
type backing struct {
	cluster string
	u       *upstreamModel
}

// vdBackings returns, per VirtualDestination port, the upstreams of every cluster its
// selectors pick, sorted by cluster then name.
func (w *world) vdBackings(vd typed[v1alpha1.VirtualDestination], port v1alpha1.VirtualDestinationPort) []backing {
	key := vd.obj.Key() + "|" + fmt.Sprint(port.Number)
	return w.backingCache.get(key, func() []backing {
		var out []backing
		for _, c := range w.names {
			for _, u := range w.selectedIn(c, vd) {
				if portMatches(port, u) {
					out = append(out, backing{cluster: c, u: u})
				}
			}
		}
		return out
	})
}

// selectedIn returns the discovered upstreams of cluster c that a VirtualDestination's
// selectors pick, sorted by name. It depends only on c's model (cached by its input) and
// the VirtualDestination, so it is remembered across translations (selectionMemo): a
// translation scans only the clusters whose input changed.
func (w *world) selectedIn(c string, vd typed[v1alpha1.VirtualDestination]) []*upstreamModel {
	m := w.models[c]
	return w.selections.get(selectionKey{model: m, cluster: c, origin: vd.origin, vd: string(vd.obj.Raw)}, func() []*upstreamModel {
		var out []*upstreamModel
		for _, name := range sortedNames(m.upstreams) {
			if u := m.upstreams[name]; u.svcName != "" && selected(vd.v.Spec.Services, c, u) {
				out = append(out, u)
			}
		}
		return out
	})
}

// selectionKey identifies what selectedIn reads.
type selectionKey struct {
	model               *clusterModel
	cluster, origin, vd string
}

// selectionMemo remembers selectedIn from one translation to the next; entries not used in
// a translation are dropped after it. Safe for concurrent use.
type selectionMemo struct {
	gens *generations[selectionKey, []*upstreamModel]
}

func newSelectionMemo() *selectionMemo {
	return &selectionMemo{gens: newGenerations[selectionKey, []*upstreamModel]()}
}

func (m *selectionMemo) get(k selectionKey, compute func() []*upstreamModel) []*upstreamModel {
	if v, ok := m.gens.get(k); ok {
		return v
	}
	return m.gens.add(k, compute())
}

// rotate ends a translation: what it did not use is forgotten.
func (m *selectionMemo) rotate() { m.gens.rotate(nil) }

// backingsIn returns the backings of cluster c among bs (sorted by cluster, as vdBackings
// returns them), without scanning the others.
func backingsIn(bs []backing, c string) []backing {
	i, _ := slices.BinarySearchFunc(bs, c, func(b backing, c string) int { return strings.Compare(b.cluster, c) })
	j := i
	for j < len(bs) && bs[j].cluster == c {
		j++
	}
	return bs[i:j]
}

func selected(sels []v1alpha1.ServiceSelector, cluster string, u *upstreamModel) bool {
	for _, s := range sels {
		if s.Cluster != "" && s.Cluster != cluster {
			continue
		}
		if s.Namespace != "" && s.Namespace != u.namespace {
			continue
		}
		if s.Name != "" && s.Name != u.svcName {
			continue
		}
		if matchLabels(s.Labels, u.labels) {
			return true
		}
	}
	return false
}

// matchLabels reports whether labels has every key of sel with its value (a Kubernetes
// equality selector; an empty selector matches everything).
func matchLabels(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// portMatches says whether a service port backs a VirtualDestination port: by targetPort
// number, or the same number when no targetPort is given.
func portMatches(p v1alpha1.VirtualDestinationPort, u *upstreamModel) bool {
	if p.TargetPort != nil && p.TargetPort.Number > 0 {
		return u.port == uint32(p.TargetPort.Number)
	}
	if p.TargetPort != nil && p.TargetPort.Name != "" {
		return true // names are matched by the service's single named port; accept any
	}
	return u.port == uint32(p.Number)
}

func vdUpstreamName(vd typed[v1alpha1.VirtualDestination], port int) string {
	return sanitize(fmt.Sprintf("vd-%s-%s-%d", vd.obj.Namespace, vd.obj.Name, port))
}

// vdUpstream resolves a route destination of kind VIRTUAL_DESTINATION to the Envoy cluster
// made for it in this cluster.
func (w *world) vdUpstream(d v1alpha1.RouteDestination, ups map[string]*UpstreamPlan) (name, host string, port uint32, ok bool) {
	for _, vd := range w.vds {
		if vd.obj.Name != d.Ref.Name || (d.Ref.Namespace != "" && d.Ref.Namespace != vd.obj.Namespace) {
			continue
		}
		for _, p := range vd.v.Spec.Ports {
			if d.Port != nil && d.Port.Number != p.Number {
				continue
			}
			n := vdUpstreamName(vd, p.Number)
			if _, exists := ups[n]; exists {
				return n, vd.v.Spec.Hosts[0], uint32(p.Number), true
			}
		}
	}
	return "", "", 0, false
}

// applyVirtualDestinations makes every VirtualDestination usable from cluster c: an Envoy
// cluster per port whose endpoints are the selected services of every cluster — local
// ones directly, remote ones through their gateway over mTLS — ordered by locality when a
// FailoverPolicy applies, and a ServiceEntry for its hosts. Each port's upstream comes from
// the previous translation of c when its key (vdPortKey) is unchanged (vdmemo.go).
func (w *world) applyVirtualDestinations(c string, p *Plan, ups map[string]*UpstreamPlan, served map[string]bool, secrets map[string]bool) {
	for vi, vd := range w.vds {
		se := ServiceEntryPlan{Name: sanitize("vd-" + vd.obj.Name), Namespace: vd.obj.Namespace, Hosts: vd.v.Spec.Hosts, SplitOwn: true}
		portKeys := make([]string, 0, len(vd.v.Spec.Ports))
		var built []*UpstreamPlan // the ports' upstreams, whose endpoints the entry lists
		var builtFrom []*vdUpstream
		for _, port := range vd.v.Spec.Ports {
			proto := orString(port.Protocol, v1alpha1.ProtocolHTTP)
			se.Ports = append(se.Ports, ServicePort{Number: uint32(port.Number), Name: fmt.Sprintf("%s-%d", sanitize(proto), port.Number), Protocol: proto})
			// c's own backing upstreams are served to other clusters by c's gateway.
			for _, ps := range vd.v.Spec.Ports {
				for _, b := range backingsIn(w.vdBackings(vd, ps), c) {
					served[b.u.name] = true
				}
			}
			okey := w.vdOthersKey(c, vi, port, vd)
			key := w.vdPortKey(c, vd, port, okey)
			cached, ok := w.vd.prev[key]
			if ok {
				w.vd.reused++
				if cached.others != nil {
					w.vd.othersNext[okey] = cached.others
				}
			} else {
				cached = w.vdPortUpstream(c, vd, port, okey)
				w.vd.planned++
			}
			w.vd.next[key] = cached
			if cached.plan == nil {
				portKeys = append(portKeys, "")
				continue
			}
			portKeys = append(portKeys, key)
			up := new(UpstreamPlan)
			*up = *cached.plan // the plan may change its copy; the remembered one stays as built
			ups[up.Name] = up
			w.vd.keys[up] = key
			if cached.others != nil {
				w.vd.splits[up] = cached
			}
			if se.Upstream == "" {
				se.Upstream = up.Name
			}
			built = append(built, up)
			builtFrom = append(builtFrom, cached)
		}
		if !slices.ContainsFunc(built, func(up *UpstreamPlan) bool {
			return slices.ContainsFunc(up.Priorities, func(eps []Endpoint) bool { return len(eps) > 0 })
		}) {
			continue
		}
		key := vdServiceEntryKey(w.vdStaticKey(vi), portKeys)
		entry, ok := w.vd.sePrev[key]
		if !ok {
			prev := w.vd.prevServiceEntry(se.Namespace, se.Name)
			var from *vdUpstream // the entry's one upstream, when assembled from parts
			if len(built) == 1 && builtFrom[0].others != nil && builtFrom[0].assembled(*built[0]) {
				from = builtFrom[0]
				entry = assembledOwnEntry(se, from, prev)
			}
			if entry == nil {
				for _, up := range built {
					for prio, eps := range up.Priorities {
						for _, e := range eps {
							e.Priority = prio
							se.Endpoints = append(se.Endpoints, e)
						}
					}
				}
				sortEndpoints(se.Endpoints)
				n := len(se.Endpoints)
				se.Endpoints = dedupeEndpoints(se.Endpoints)
				entry = buildServiceEntry(c, se, prev)
				entry.clean = len(se.Endpoints) == n
				if from != nil {
					entry.from, entry.off = from.others, from.off()
				}
			}
		}
		w.vd.seNext[key] = entry
		p.ServiceEntries = append(p.ServiceEntries, entry.plan)
		w.vd.seKeys[se.Namespace+"/"+se.Name] = append(w.vd.seKeys[se.Namespace+"/"+se.Name], entry)
	}
	sortServiceEntries(p.ServiceEntries)
}

// vdPortUpstream builds the upstream a VirtualDestination port gives cluster c (a nil plan
// when no backing has an endpoint). It reads exactly what vdPortKey covers; okey is its
// vdOthersKey. It assembles the upstream from c's own endpoints and the others' part (kept
// under okey) when that is exact (vdsplit.go).
func (w *world) vdPortUpstream(c string, vd typed[v1alpha1.VirtualDestination], port v1alpha1.VirtualDestinationPort, okey string) *vdUpstream {
	backings := w.vdBackings(vd, port)
	fp := w.failoverPolicyFor(vd)
	region := w.clusters[c].Metadata.Labels[v1alpha1.LabelRegion]
	res := &vdUpstream{}
	var prios [][]Endpoint
	if !noAssembly.Load() {
		o, remembered := w.vd.othersPrev[okey]
		if !remembered {
			o = w.buildOthers(c, region, backings, fp)
		}
		w.vd.othersNext[okey] = o
		var own []Endpoint
		for _, b := range backingsIn(backings, c) {
			own = append(own, b.u.endpoints...)
		}
		if o.ownFits(c, region, own) {
			prios = o.priorities(own)
			res.others, res.own = o, own
			if remembered {
				w.vd.assembled++
			}
			if len(prios) == 0 {
				return res
			}
		}
	}
	if res.others == nil {
		prios = w.vdPriorities(c, region, backings, fp)
		if prios == nil {
			return res
		}
	}
	up := &UpstreamPlan{Name: vdUpstreamName(vd, port.Number), Namespace: vd.obj.Namespace, Host: vd.v.Spec.Hosts[0], Port: uint32(port.Number), Priorities: prios}
	if fp != nil {
		up.Failover = &FailoverPlan{Source: fp.obj.String()}
	}
	if od := w.outlierPolicyFor(vd); od != nil {
		cfg := od.v.Spec.Config
		o := &Outlier{Consecutive5xx: uint32(max(cfg.ConsecutiveErrors, v1alpha1.DefaultConsecutiveErrors*boolInt(cfg.ConsecutiveErrors == 0))),
			Interval: orDefault(cfg.Interval.Duration, 10e9), BaseEjectionTime: orDefault(cfg.BaseEjectionTime.Duration, 30e9), MaxEjectionPercent: 100}
		if cfg.MaxEjectionPercent != nil {
			o.MaxEjectionPercent = uint32(*cfg.MaxEjectionPercent)
		}
		up.Outlier = o
	}
	res.plan = up
	return res
}

// vdPriorities gathers the endpoints of every backing as c reaches them and orders them
// into priorities (nil when there are none).
func (w *world) vdPriorities(c, region string, backings []backing, fp *typed[v1alpha1.FailoverPolicy]) [][]Endpoint {
	// Other clusters' endpoints are reached through their gateway, which must then serve
	// this upstream; without a gateway they are reached directly (flat network).
	gws := make([][]Endpoint, len(backings))
	n := 0
	for i, b := range backings {
		if b.cluster != c {
			gws[i] = w.gatewayEndpoints(b.cluster)
		}
		if len(gws[i]) > 0 {
			n += len(gws[i])
		} else {
			n += len(b.u.endpoints)
		}
	}
	all := make([]Endpoint, 0, n)
	var tlsName string // the backings mostly share an upstream name: look its TLS up once
	var tls *UpstreamTLS
	for i, b := range backings {
		if len(gws[i]) == 0 {
			all = append(all, b.u.endpoints...)
			continue
		}
		if tls == nil || tlsName != b.u.name {
			tlsName, tls = b.u.name, w.clientTLS(c, b.u.name)
		}
		for _, e := range gws[i] {
			e.TLS = tls
			all = append(all, e)
		}
	}
	if len(all) == 0 {
		return nil
	}
	if fp != nil {
		return localityPriorities(c, region, all, fp.v.Spec.Config.LocalityMappings)
	}
	return [][]Endpoint{all}
}

func sortServiceEntries(ses []ServiceEntryPlan) {
	sort.Slice(ses, func(i, j int) bool { return ses[i].Namespace+"/"+ses[i].Name < ses[j].Namespace+"/"+ses[j].Name })
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func policySelects(sels []v1alpha1.DestinationSelector, policyNS string, vd typed[v1alpha1.VirtualDestination]) bool {
	for _, s := range sels {
		sel := s.Selector
		ns := orString(sel.Namespace, policyNS)
		if ns != vd.obj.Namespace || (sel.Name != "" && sel.Name != vd.obj.Name) {
			continue
		}
		if matchLabels(sel.Labels, vd.obj.Labels) {
			return true
		}
	}
	return false
}

func (w *world) failoverPolicyFor(vd typed[v1alpha1.VirtualDestination]) *typed[v1alpha1.FailoverPolicy] {
	for i, fp := range w.fpolicies {
		if policySelects(fp.v.Spec.ApplyToDestinations, fp.obj.Namespace, vd) {
			return &w.fpolicies[i]
		}
	}
	return nil
}

func (w *world) outlierPolicyFor(vd typed[v1alpha1.VirtualDestination]) *typed[v1alpha1.OutlierDetectionPolicy] {
	for i, op := range w.opolicies {
		if policySelects(op.v.Spec.ApplyToDestinations, op.obj.Namespace, vd) {
			return &w.opolicies[i]
		}
	}
	return nil
}

// localityPriorities orders endpoints for a consumer in cluster c (region r): its own
// cluster first, then its region, then other regions in the order of the matching
// locality mapping (or by name), one priority each.
func localityPriorities(c, r string, eps []Endpoint, mappings []v1alpha1.LocalityMapping) [][]Endpoint {
	order := failoverRegions(r, eps, mappings)
	rank := func(e Endpoint) int {
		switch {
		case e.Cluster == c:
			return 0
		case e.Region == r:
			return 1
		}
		for i, reg := range order {
			if reg == e.Region {
				return 2 + i
			}
		}
		return 2 + len(order)
	}
	buckets := map[int][]Endpoint{}
	for _, e := range eps {
		buckets[rank(e)] = append(buckets[rank(e)], e)
	}
	keys := make([]int, 0, len(buckets))
	for k := range buckets {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	out := make([][]Endpoint, 0, len(keys))
	for _, k := range keys {
		out = append(out, buckets[k])
	}
	return out
}

// failoverRegions lists the other regions in failover order for region r.
func failoverRegions(r string, eps []Endpoint, mappings []v1alpha1.LocalityMapping) []string {
	var order []string
	for _, m := range mappings {
		if m.From.Region == r {
			for _, t := range m.To {
				if t.Region != r && !contains(order, t.Region) {
					order = append(order, t.Region)
				}
			}
		}
	}
	var rest []string
	for _, e := range eps {
		if e.Region != r && e.Region != "" && !contains(order, e.Region) && !contains(rest, e.Region) {
			rest = append(rest, e.Region)
		}
	}
	sort.Strings(rest)
	return append(order, rest...)
}
