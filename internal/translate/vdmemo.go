package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"reflect"
	"slices"
	"strconv"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

// A VirtualDestination's Envoy cluster in a consumer cluster c holds an endpoint per backing
// of every cluster (thousands at a thousand clusters), ordered by c's locality. Building it
// and keying its rendering by planHash (reflection over every endpoint) was most of the
// cost of re-planning c, and c is re-planned whenever anything it reads changes, most often
// something that has nothing to do with the VirtualDestination (a RouteTable, its own
// private services). So the upstream a VirtualDestination port gives c is remembered per
// cluster from one translation to the next (cachedOutput.vdPlans) under vdPortKey, a key of
// exactly what that upstream is built from (CONVENTIONS habit 6), composed of digests the
// world computes once per translation rather than of the upstream itself; the same key,
// not planHash, keys its rendering (planKeys).

// vdPortKey is the key of the upstream a VirtualDestination port gives cluster c: its
// othersKey (vdOthersKey: the VirtualDestination and the policies that apply to it, the
// port, every backing with what c reads of it, c's region and client TLS) and the
// endpoints of c's own backings (which c reaches directly, not through its gateway).
func (w *world) vdPortKey(c string, vd typed[v1alpha1.VirtualDestination], port v1alpha1.VirtualDestinationPort, othersKey string) string {
	h := sha256.New()
	writeField(h, othersKey) // vdOthersKey: all but the own endpoints
	for _, b := range backingsIn(w.vdBackings(vd, port), c) {
		writeField(h, b.u.name)
		writeField(h, w.endpointsDigest(c, b.u))
	}
	return "vd|" + hex.EncodeToString(h.Sum(nil))
}

// vdStaticKey hashes VirtualDestination vi of the world and the failover and outlier
// detection policies that apply to it (each with where it came from).
func (w *world) vdStaticKey(vi int) string {
	return w.vdKeyCache.get("static|"+strconv.Itoa(vi), func() string {
		vd := w.vds[vi]
		h := sha256.New()
		writeField(h, vd.origin)
		writeField(h, string(vd.obj.Raw))
		if fp := w.failoverPolicyFor(vd); fp != nil {
			writeField(h, "fp")
			writeField(h, fp.origin)
			writeField(h, string(fp.obj.Raw))
		}
		if od := w.outlierPolicyFor(vd); od != nil {
			writeField(h, "od")
			writeField(h, od.origin)
			writeField(h, string(od.obj.Raw))
		}
		return string(h.Sum(nil))
	})
}

// vdSharedKey hashes the backings of a VirtualDestination port as every other cluster reads
// them: each backing's cluster and upstream name, and the addresses of that cluster's
// gateway — or, without a gateway, the backing's own endpoints.
func (w *world) vdSharedKey(vd typed[v1alpha1.VirtualDestination], vi int, port v1alpha1.VirtualDestinationPort) string {
	return w.vdKeyCache.get("shared|"+strconv.Itoa(vi)+"|"+strconv.Itoa(port.Number), func() string {
		h := sha256.New()
		for _, b := range w.vdBackings(vd, port) {
			writeField(h, b.cluster)
			writeField(h, b.u.name)
			if gw := w.gatewayEndpoints(b.cluster); len(gw) > 0 {
				writeField(h, "gw")
				writeField(h, w.gatewayDigest(b.cluster))
			} else {
				writeField(h, "ep")
				writeField(h, w.endpointsDigest(b.cluster, b.u))
			}
		}
		return string(h.Sum(nil))
	})
}

// endpointsDigest is the digest of an upstream's endpoints (cached per translation).
func (w *world) endpointsDigest(c string, u *upstreamModel) string {
	return w.vdKeyCache.get("ep|"+c+"|"+u.name, func() string { return endpointsDigest(u.endpoints) })
}

// gatewayDigest is the digest of where cluster c's gateway is reached.
func (w *world) gatewayDigest(c string) string {
	return w.vdKeyCache.get("gw|"+c, func() string { return endpointsDigest(w.gatewayEndpoints(c)) })
}

// endpointsDigest hashes every field of every endpoint (appendEndpoint, which
// TestPlanHashCoversEveryField keeps complete).
func endpointsDigest(eps []Endpoint) string {
	b := hashBufs.Get().(*[]byte)
	buf := appendLen((*b)[:0], len(eps))
	for _, e := range eps {
		buf = appendEndpoint(buf, e)
	}
	sum := sha256.Sum256(buf)
	if cap(buf) <= 1<<20 {
		*b = buf
		hashBufs.Put(b)
	}
	return string(sum[:])
}

func writeField(h hash.Hash, s string) {
	var n [10]byte
	h.Write(appendLen(n[:0], len(s)))
	h.Write([]byte(s))
}

// planKeys are memo keys of plan elements that plan() built from digests (vdPortKey), by
// upstream name and by ServiceEntry namespace/name; render uses them instead of planHash.
type planKeys struct {
	upstreams      map[string]string
	serviceEntries map[string]*builtServiceEntry
	// splits are the upstreams assembled from parts (vdsplit.go), by name.
	splits map[string]*vdUpstream
}

// builtServiceEntry is a VirtualDestination's ServiceEntry as planned, and split as it is
// rendered (splitOwnEndpoints) with the memo key of each part, remembered under its
// vdServiceEntryKey from one translation of a cluster to the next: an unchanged entry is
// neither gathered, sorted and split again nor hashed for the render memo.
type builtServiceEntry struct {
	plan              ServiceEntryPlan
	others, own       ServiceEntryPlan
	othersKey, ownKey string
	// from is the others' part of the entry's one upstream, when it was assembled from
	// parts (vdsplit.go), with the others' priorities offset by off; clean says no
	// endpoint was left out as a duplicate.
	from  *vdOthers
	off   int
	clean bool
}

// buildServiceEntry splits se into the other clusters' endpoints and c's own and keys both
// parts. prev, when not nil, is the entry of the same name from c's previous translation:
// when the others part is equal to prev's (compared element by element, which is much
// cheaper than hashing it), prev's key is reused. Under churn, c's own endpoints change
// every second while the other clusters' gateways do not.
func buildServiceEntry(c string, se ServiceEntryPlan, prev *builtServiceEntry) *builtServiceEntry {
	// The plan lists the other clusters' endpoints first, then c's own, each part in the
	// order it had, so that the two parts are windows on the plan's slice: kept for every
	// cluster, the entry holds each endpoint once.
	k := 0
	for _, e := range se.Endpoints {
		if !ownEndpoint(c, e) {
			k++
		}
	}
	eps := make([]Endpoint, len(se.Endpoints))
	i, j := 0, k
	for _, e := range se.Endpoints {
		if ownEndpoint(c, e) {
			eps[j] = e
			j++
		} else {
			eps[i] = e
			i++
		}
	}
	se.Endpoints = eps
	others, own := se, se
	others.Endpoints, own.Endpoints = eps[:k:k], eps[k:]
	b := &builtServiceEntry{plan: se, others: others, own: own}
	if prev != nil && sameServiceEntry(prev.others, others) {
		b.othersKey = prev.othersKey
	} else {
		b.othersKey = "se|" + planHash(b.others)
	}
	b.ownKey = "se|" + planHash(b.own)
	return b
}

// sameServiceEntry reports whether a and b are equal: their endpoints element by element,
// the rest (a few fields, no endpoints) by reflection.
func sameServiceEntry(a, b ServiceEntryPlan) bool {
	if !slices.EqualFunc(a.Endpoints, b.Endpoints, sameEndpoint) {
		return false
	}
	a.Endpoints, b.Endpoints = nil, nil
	return reflect.DeepEqual(a, b)
}

// sameEndpoint compares endpoints with == (every field, as long as Endpoint and UpstreamTLS
// stay comparable), the TLS settings by value.
func sameEndpoint(a, b Endpoint) bool {
	ta, tb := a.TLS, b.TLS
	a.TLS, b.TLS = nil, nil
	return a == b && (ta == tb || ta != nil && tb != nil && *ta == *tb)
}

// vdServiceEntryKey keys a VirtualDestination's ServiceEntry: the VirtualDestination and
// the keys of its ports' upstreams ("" for a port without one), from which it is built.
func vdServiceEntryKey(static string, portKeys []string) string {
	h := sha256.New()
	writeField(h, static)
	for _, k := range portKeys {
		writeField(h, k)
	}
	return fmt.Sprintf("vdse|%x", h.Sum(nil))
}
