package translate

import (
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
// other clusters' backings of a VirtualDestination give it (a gateway each) does not. With
// a FailoverPolicy, a cluster's own endpoints are its upstream's first priority and the
// others' priorities follow, untouched by them (localityPriorities ranks the own cluster
// first). So the others' part of the upstream is remembered per cluster under vdOthersKey
// (vdPortKey without the own endpoints), with its rendered load-assignment localities and
// the ServiceEntry endpoints sorted once, and an own-endpoint change plans, sorts, renders
// and encodes only the own endpoints: O(own), not O(clusters). Every shortcut is taken only
// where it gives exactly what the full path gives (vdOthers.exact, ownFits); anywhere else
// the full path runs.

// noAssembly turns assembling off, for tests that compare it with the full path.
var noAssembly atomic.Bool

// vdUpstream is a VirtualDestination port's upstream as planned for a cluster: plan, and,
// when it was assembled from the cluster's own endpoints and a remembered others' part,
// that part (others) and whether the own endpoints lead as priority 0 (own).
type vdUpstream struct {
	plan   *UpstreamPlan
	others *vdOthers
	own    bool
}

// vdOthers is the part of a VirtualDestination port's upstream that the backings of the
// other clusters give cluster c, as c sees it.
type vdOthers struct {
	// prios are those endpoints in c's failover order (localityPriorities without c's own).
	prios [][]Endpoint
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
// offset by 0 or 1 (after the own endpoints' priority): the localities' encodings and the
// TLS settings by SNI that its endpoints carry.
type othersCLA struct {
	localities []claLocality
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
// same endpoints vdPortUpstream gathers from the other clusters' backings).
func (w *world) buildOthers(c, region string, backings []backing, mappings []v1alpha1.LocalityMapping) *vdOthers {
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
			continue
		}
		if tls == nil || tlsName != b.u.name {
			tlsName, tls = b.u.name, w.clientTLS(c, b.u.name)
		}
		for _, e := range gw {
			e.TLS = tls
			eps = append(eps, e)
		}
	}
	o := &vdOthers{regions: map[string]bool{}, exact: true}
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
	if len(eps) > 0 {
		o.prios = localityPriorities(c, region, eps, mappings)
	}
	return o
}

// ownFits reports whether c's own endpoints own, put before the others' part o, give what
// localityPriorities gives for all endpoints together: each is c's, valid, without TLS (as
// a direct endpoint is), of a region the
// failover order already has (so it adds none), and at an address and port of its own.
func (o *vdOthers) ownFits(c, region string, own []Endpoint) bool {
	if !o.exact {
		return false
	}
	seen := make(map[[2]string]bool, len(own))
	for _, e := range own {
		if e.Cluster != c || e.TLS != nil || e.Address == "" || e.Port == 0 || e.Port > 65535 {
			return false
		}
		if e.Region != region && e.Region != "" && !o.regions[e.Region] {
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

// priorities is the upstream's priorities: own first, when there are own endpoints.
func (o *vdOthers) priorities(own []Endpoint) [][]Endpoint {
	if len(own) == 0 {
		return o.prios
	}
	return append([][]Endpoint{own}, o.prios...)
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
		}
	}
	o.cla[off] = r
	return r
}

// assembledOwnEntry builds the ServiceEntry se (its endpoints not gathered yet) of a
// VirtualDestination whose only upstream was assembled from c's own endpoints and the
// others' part of the cluster's previous entry prev, when that gives exactly what
// buildServiceEntry gives (nil otherwise): prev was built cleanly from the same others'
// part with the own endpoints leading alike, so its others' endpoints are the others'
// part sorted, and every own endpoint has an address and port of its own (ownFits).
func assembledOwnEntry(c string, se ServiceEntryPlan, up *vdUpstream, prev *builtServiceEntry) *builtServiceEntry {
	if prev == nil || !prev.clean || prev.from != up.others || prev.ownFirst != up.own || up.others == nil {
		return nil
	}
	others := prev.others
	rest := others
	rest.Endpoints = nil
	se.Endpoints = nil
	if !reflect.DeepEqual(rest, se) {
		return nil
	}
	var own []Endpoint
	if up.own {
		own = slices.Clone(up.plan.Priorities[0])
		for i := range own {
			own[i].Priority = 0
		}
		sortEndpoints(own)
	}
	eps := make([]Endpoint, 0, len(others.Endpoints)+len(own))
	eps = append(append(eps, others.Endpoints...), own...)
	se.Endpoints = eps
	k := len(others.Endpoints)
	b := &builtServiceEntry{plan: se, others: se, own: se, othersKey: prev.othersKey, from: up.others, ownFirst: up.own, clean: true}
	b.others.Endpoints, b.own.Endpoints = eps[:k:k], eps[k:]
	b.ownKey = "se|" + planHash(b.own)
	return b
}

// assembled reports whether u still has the priorities s assembled: the own endpoints
// (when own) and then exactly the others' part's (the plan may have replaced them, as
// dropMissingSecrets does).
func (s *vdUpstream) assembled(u UpstreamPlan) bool {
	if s == nil || s.others == nil {
		return false
	}
	off := boolInt(s.own)
	if len(u.Priorities) != off+len(s.others.prios) {
		return false
	}
	for i, p := range s.others.prios {
		q := u.Priorities[off+i]
		if len(q) != len(p) || len(p) > 0 && &q[0] != &p[0] {
			return false
		}
	}
	return true
}
