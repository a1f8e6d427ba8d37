package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

// Under endpoint churn every cluster's own endpoints change all the time, while what the
// other clusters' backings of a VirtualDestination give it (a gateway each) does not. So the
// others' part of each VirtualDestination port's upstream is remembered per cluster under
// vdOthersKey (vdPortKey without the own endpoints), with its load-assignment localities
// encoded once and the ServiceEntry's endpoints sorted once, and an own-endpoint change
// plans, sorts, renders and encodes only the own endpoints: O(own), not O(clusters). Two
// shapes: with a FailoverPolicy the own endpoints are priority 0 and the others' priorities
// follow (localityPriorities ranks the own cluster first); without one, there is one
// priority, the own endpoints in their backing's place among the others'. Every shortcut is
// taken only where it gives exactly what the full path gives (vdOthers.exact, ownFits, the
// localities' check in render); anywhere else the full path runs.

// noAssembly turns assembling off, for tests that compare it with the full path.
var noAssembly atomic.Bool

// vdUpstream is a VirtualDestination port's upstream as planned for a cluster: plan, and,
// when it was assembled from the cluster's own endpoints (own) and a remembered others'
// part, that part (others).
type vdUpstream struct {
	plan   *UpstreamPlan
	others *vdOthers
	own    []Endpoint
}

// off is the offset of the others' priorities in the plan: 1 after the own endpoints'
// priority with a FailoverPolicy, 0 otherwise.
func (s *vdUpstream) off() int { return boolInt(s.others.failover && len(s.own) > 0) }

// vdOthers is the part of a VirtualDestination port's upstream that the backings of the
// other clusters give cluster c, as c sees it.
type vdOthers struct {
	// failover says a FailoverPolicy applies: prios are the endpoints in c's failover
	// order (localityPriorities without c's own); without, prios is one priority of the
	// endpoints in backing order, in which c's own go at index at.
	failover bool
	prios    [][]Endpoint
	at       int
	// regions are the regions the endpoints are in.
	regions map[string]bool
	// exact says the split gives what the full path gives: no endpoint claims cluster c or
	// no cluster, no two endpoints share an address and port, and every endpoint is
	// valid (it has an address and a port in 1-65535).
	exact bool

	mu  sync.Mutex // guards cla
	cla [2]*othersCLA
}

// othersCLA is the others' part of a load assignment, rendered with its priorities
// offset by 0 or 1 (after the own endpoints' priority): the localities' encodings, their
// region and zone, and the TLS settings by SNI that its endpoints carry.
type othersCLA struct {
	localities []claLocality
	where      [][2]string
	tlsBySNI   map[string]UpstreamTLS
	err        error // a conflict between the part's TLS settings: render the full way
}

// vdOthersKey keys the others' part of the upstream a VirtualDestination port gives
// cluster c: vdPortKey without c's own endpoints.
func (w *world) vdOthersKey(c string, vi int, port v1alpha1.VirtualDestinationPort, vd typed[v1alpha1.VirtualDestination]) string {
	h := sha256.New()
	write := func(s string) { writeField(h, s) }
	write(w.vdStaticKey(vi))
	write(strconv.Itoa(port.Number))
	write(w.vdSharedKey(vd, vi, port))
	write(c)
	write(w.clusters[c].Metadata.Labels[v1alpha1.LabelRegion])
	t := w.clientTLS(c, "")
	write(t.CertSecret)
	write(t.CASecret)
	return "vdo|" + hex.EncodeToString(h.Sum(nil))
}

// buildOthers builds the others' part of a VirtualDestination port's upstream in c (the
// same endpoints vdPriorities gathers from the other clusters' backings); fp is the
// FailoverPolicy that applies, nil for none.
func (w *world) buildOthers(c, region string, backings []backing, fp *typed[v1alpha1.FailoverPolicy]) *vdOthers {
	o := &vdOthers{regions: map[string]bool{}, exact: true, failover: fp != nil}
	var eps []Endpoint
	var tlsName string
	var tls *UpstreamTLS
	for _, b := range backings {
		if b.cluster == c {
			continue
		}
		gw := w.gatewayEndpoints(b.cluster)
		if len(gw) == 0 {
			eps = append(eps, b.u.endpoints...)
		} else {
			if tls == nil || tlsName != b.u.name {
				tlsName, tls = b.u.name, w.clientTLS(c, b.u.name)
			}
			for _, e := range gw {
				e.TLS = tls
				eps = append(eps, e)
			}
		}
		if b.cluster < c { // backings are sorted by cluster: c's go after these
			o.at = len(eps)
		}
	}
	for _, e := range eps {
		o.regions[e.Region] = true
		if e.Cluster == c || e.Cluster == "" || e.Address == "" || e.Port == 0 || e.Port > 65535 {
			o.exact = false
		}
	}
	if o.exact {
		sorted := slices.Clone(eps)
		sortEndpoints(sorted)
		o.exact = len(dedupeEndpoints(sorted)) == len(eps)
	}
	switch {
	case len(eps) == 0:
	case fp != nil:
		o.prios = localityPriorities(c, region, eps, fp.v.Spec.Config.LocalityMappings)
	default:
		o.prios = [][]Endpoint{eps}
	}
	return o
}

// ownFits reports whether c's own endpoints own, assembled with the others' part o, give
// what the full path gives for all endpoints together: each is c's, valid, without TLS (as
// a direct endpoint is), at an address and port of its own, and, with a FailoverPolicy, of
// a region the failover order already has (so that it adds none).
func (o *vdOthers) ownFits(c, region string, own []Endpoint) bool {
	if !o.exact {
		return false
	}
	seen := make(map[[2]string]bool, len(own))
	for _, e := range own {
		if e.Cluster != c || e.TLS != nil || e.Address == "" || e.Port == 0 || e.Port > 65535 {
			return false
		}
		if o.failover && e.Region != region && e.Region != "" && !o.regions[e.Region] {
			return false
		}
		k := [2]string{e.Address, strconv.FormatUint(uint64(e.Port), 10)}
		if seen[k] || o.hasAddress(e.Address, e.Port) {
			return false
		}
		seen[k] = true
	}
	return true
}

// hasAddress reports whether an endpoint of o is at address:port.
func (o *vdOthers) hasAddress(address string, port uint32) bool {
	for _, p := range o.prios {
		for _, e := range p {
			if e.Address == address && e.Port == port {
				return true
			}
		}
	}
	return false
}

// priorities is the upstream's priorities, assembled from own and o.
func (o *vdOthers) priorities(own []Endpoint) [][]Endpoint {
	switch {
	case len(own) == 0:
		return o.prios
	case o.failover:
		return append([][]Endpoint{own}, o.prios...)
	case len(o.prios) == 0:
		return [][]Endpoint{own}
	}
	all := make([]Endpoint, 0, len(o.prios[0])+len(own))
	all = append(append(append(all, o.prios[0][:o.at]...), own...), o.prios[0][o.at:]...)
	return [][]Endpoint{all}
}

// renderedCLA returns o's localities and TLS settings with priorities offset by off,
// rendered and encoded once (through memo, which shares the encodings between clusters).
func (o *vdOthers) renderedCLA(off int, name string, memo *renderMemo) *othersCLA {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.cla[off]; r != nil {
		return r
	}
	r := &othersCLA{tlsBySNI: map[string]UpstreamTLS{}}
	for prio, eps := range o.prios {
		locs, err := claLocalities(prio+off, eps, r.tlsBySNI)
		if err != nil {
			r.err = err
			break
		}
		for _, l := range locs {
			f, err := memo.localityFragment(name, locs, l)
			if err != nil {
				r.err = err
				break
			}
			r.localities = append(r.localities, claLocality{prio: l.prio, frag: f})
			r.where = append(r.where, [2]string{l.eps[0].Region, l.eps[0].Zone})
		}
	}
	o.cla[off] = r
	return r
}

// assembledOwnEntry builds the ServiceEntry se (its endpoints not gathered yet) of a
// VirtualDestination whose only upstream up was assembled from c's own endpoints and a
// remembered others' part, from the others' part of the cluster's previous entry prev,
// when that gives exactly what buildServiceEntry gives (nil otherwise): prev was built
// cleanly from the same others' part with the same priority offset, so its others'
// endpoints are that part sorted, and every own endpoint has an address and port of its
// own (ownFits).
func assembledOwnEntry(se ServiceEntryPlan, up *vdUpstream, prev *builtServiceEntry) *builtServiceEntry {
	if prev == nil || !prev.clean || prev.from != up.others || prev.off != up.off() {
		return nil
	}
	others := prev.others
	rest := others
	rest.Endpoints = nil
	se.Endpoints = nil
	if !reflect.DeepEqual(rest, se) {
		return nil
	}
	own := slices.Clone(up.own) // priority 0 in both shapes
	for i := range own {
		own[i].Priority = 0
	}
	sortEndpoints(own)
	eps := make([]Endpoint, 0, len(others.Endpoints)+len(own))
	eps = append(append(eps, others.Endpoints...), own...)
	se.Endpoints = eps
	k := len(others.Endpoints)
	b := &builtServiceEntry{plan: se, others: se, own: se, othersKey: prev.othersKey, from: up.others, off: up.off(), clean: true}
	b.others.Endpoints, b.own.Endpoints = eps[:k:k], eps[k:]
	b.ownKey = "se|" + planHash(b.own)
	return b
}

// assembled reports whether u still has the priorities s assembled (the plan may have
// replaced them, as dropMissingSecrets does).
func (s *vdUpstream) assembled(u UpstreamPlan) bool {
	if s == nil || s.others == nil || s.plan == nil || len(u.Priorities) != len(s.plan.Priorities) {
		return false
	}
	for i, p := range s.plan.Priorities {
		q := u.Priorities[i]
		if len(q) != len(p) || len(p) > 0 && &q[0] != &p[0] {
			return false
		}
	}
	return true
}

// mergeLocalities puts the own endpoints' localities own among the others' part's
// localities of the same priority (the one priority of an upstream without a
// FailoverPolicy), ordered by region and zone as claLocalities orders them. It fails when
// an own locality has the region and zone of an others' one: they would be one locality.
func mergeLocalities(own []claLocality, others *othersCLA) ([]claLocality, bool) {
	out := make([]claLocality, 0, len(own)+len(others.localities))
	j := 0
	for _, l := range own {
		if len(l.eps) == 0 {
			return nil, false
		}
		w := [2]string{l.eps[0].Region, l.eps[0].Zone}
		for j < len(others.where) && compareWhere(others.where[j], w) < 0 {
			out = append(out, others.localities[j])
			j++
		}
		if j < len(others.where) && others.where[j] == w {
			return nil, false
		}
		out = append(out, l)
	}
	return append(out, others.localities[j:]...), true
}

func compareWhere(a, b [2]string) int {
	return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
}
