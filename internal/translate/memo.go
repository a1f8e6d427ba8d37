package translate

import (
	"cmp"
	"fmt"
	"sync"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// generations is a memo of two generations: what the current translation used (cur) and
// what earlier ones left (prev), so that a translation can end by forgetting what it did
// not use. Safe for concurrent use.
type generations[K comparable, V any] struct {
	mu        sync.Mutex // guards cur and prev
	cur, prev map[K]V
}

func newGenerations[K comparable, V any]() *generations[K, V] {
	return &generations[K, V]{cur: map[K]V{}, prev: map[K]V{}}
}

// get returns what k holds, moving it to the current generation.
func (g *generations[K, V]) get(k K) (V, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	v, ok := g.cur[k]
	if !ok {
		if v, ok = g.prev[k]; ok {
			g.cur[k] = v
		}
	}
	return v, ok
}

// add remembers v under k unless the current generation has k already (a computation
// racing with another of the same key), and returns what k holds.
func (g *generations[K, V]) add(k K, v V) V {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old, ok := g.cur[k]; ok {
		return old
	}
	g.cur[k] = v
	return v
}

// len is the number of entries the current translation used or added.
func (g *generations[K, V]) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.cur)
}

// rotate ends a translation: what it did not use is forgotten, unless keepUnused says to
// keep it given the sizes of the two generations.
func (g *generations[K, V]) rotate(keepUnused func(cur, prev int) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if keepUnused != nil && keepUnused(len(g.cur), len(g.prev)) {
		for k, v := range g.cur {
			g.prev[k] = v
		}
		g.cur = map[K]V{}
		return
	}
	g.prev, g.cur = g.cur, map[K]V{}
}

// renderMemo remembers rendered resources by a hash of everything they were rendered
// from (planHash, or for VirtualDestination upstreams and ServiceEntries the digest key of
// their inputs, vdPortKey: a key that covers every input of the rendering, CONVENTIONS habit 6):
// Envoy clusters and load assignments by their upstream plan, Istio resources by their
// kind, final name and source plan element. Entries not used in a translation are dropped
// after it. A nil memo remembers nothing. get and put are safe for concurrent use.
type renderMemo struct {
	gens *generations[string, []snapshot.Resource]
	// localities are the encodings of ClusterLoadAssignment localities (field 2, tag and
	// length included) by what they are built from (encodeCLA).
	localities *generations[string, []byte]
}

func newRenderMemo() *renderMemo {
	return &renderMemo{gens: newGenerations[string, []snapshot.Resource](), localities: newGenerations[string, []byte]()}
}

// claEndpointsField is the field number of ClusterLoadAssignment.endpoints.
const claEndpointsField = 2

// encodeCLA returns the deterministic encoding (proto.MarshalOptions{Deterministic: true})
// of claMessage(name, localities), assembled from the remembered encodings of its
// localities; a locality not remembered is rendered, validated, encoded and remembered.
func (m *renderMemo) encodeCLA(name string, localities []claLocality) ([]byte, error) {
	if err := (&endpointv3.ClusterLoadAssignment{ClusterName: name}).ValidateAll(); err != nil {
		return nil, err
	}
	frags := make([][]byte, len(localities))
	size := 0
	for i, l := range localities {
		f, err := m.localityFragment(name, localities, l)
		if err != nil {
			return nil, err
		}
		frags[i] = f
		size += len(f)
	}
	// Fields in field-number order: cluster_name (1), then every endpoints (2) entry.
	b := make([]byte, 0, size+len(name)+protowire.SizeVarint(uint64(len(name)))+1)
	if name != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, name)
	}
	for _, f := range frags {
		b = append(b, f...)
	}
	return b, nil
}

// localityFragment returns the encoding of locality l of the load assignment name
// (localities are all of them, to name the culprit when l is invalid) as encodeCLA
// appends it: remembered, or encoded, validated and remembered now.
func (m *renderMemo) localityFragment(name string, localities []claLocality, l claLocality) ([]byte, error) {
	if l.frag != nil {
		return l.frag, nil
	}
	k := l.key()
	if f, ok := m.locality(k); ok {
		return f, nil
	}
	msg := l.message()
	if err := msg.ValidateAll(); err != nil {
		// The whole message's validation names the locality.
		return nil, cmp.Or(claMessage(name, localities).ValidateAll(), err)
	}
	n := proto.MarshalOptions{Deterministic: true}.Size(msg)
	f := protowire.AppendTag(make([]byte, 0, n+protowire.SizeVarint(uint64(n))+1), claEndpointsField, protowire.BytesType)
	f = protowire.AppendVarint(f, uint64(n))
	f, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(f, msg)
	if err != nil {
		return nil, fmt.Errorf("locality of priority %d: %w", l.prio, err)
	}
	m.putLocality(k, f)
	return f, nil
}

func (m *renderMemo) locality(key string) ([]byte, bool) {
	if m == nil {
		return nil, false
	}
	return m.localities.get(key)
}

func (m *renderMemo) putLocality(key string, f []byte) {
	if m != nil {
		m.localities.add(key, f)
	}
}

// key returns the memo key of a plan element ("" without a memo, or when v cannot be
// keyed: render it afresh).
func (m *renderMemo) key(v any) string {
	if m == nil {
		return ""
	}
	return planHash(v)
}

func (m *renderMemo) get(key string) ([]snapshot.Resource, bool) {
	if m == nil || key == "" {
		return nil, false
	}
	return m.gens.get(key)
}

// put remembers the resources rendered from key: all of them at once, so that a render
// racing with another of the same key (rendering the same resources) is not added twice.
func (m *renderMemo) put(key string, rs ...snapshot.Resource) {
	if m == nil || key == "" {
		return
	}
	m.gens.add(key, rs)
}

// rotate ends a translation. Entries used in it are kept; the others too while the memo
// is under twice the size of what is in use (clusters that were not recomputed still
// reference theirs), otherwise they are forgotten. Locality encodings follow the same rule
// with the same bound: the localities of a world's load assignments are mostly shared
// between clusters (a remote gateway at a priority), so they number about the clusters
// times the distinct priorities, well under the output resources.
func (m *renderMemo) rotate(inUse int) {
	keep := func(cur, prev int) bool { return cur+prev <= 2*inUse }
	m.gens.rotate(keep)
	m.localities.rotate(keep)
}
