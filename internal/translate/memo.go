package translate

import (
	"cmp"
	"fmt"
	"maps"
	"sync"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// renderMemo remembers rendered resources by a hash of everything they were rendered
// from (planHash, or for VirtualDestination upstreams and ServiceEntries the digest key of
// their inputs, vdPortKey: a key that covers every input of the rendering, CONVENTIONS habit 6):
// Envoy clusters and load assignments by their upstream plan, Istio resources by their
// kind, final name and source plan element. Entries not used in a translation are dropped
// after it. A nil memo remembers nothing. get and put are safe for concurrent use.
type renderMemo struct {
	mu        sync.Mutex // guards cur, prev, localities and prevLocalities
	cur, prev map[string][]snapshot.Resource
	// localities are the encodings of ClusterLoadAssignment localities (field 2, tag and
	// length included) by what they are built from (encodeCLA).
	localities, prevLocalities map[string][]byte
}

func newRenderMemo() *renderMemo {
	return &renderMemo{cur: map[string][]snapshot.Resource{}, prev: map[string][]snapshot.Resource{},
		localities: map[string][]byte{}, prevLocalities: map[string][]byte{}}
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
		k := l.key()
		f, ok := m.locality(k)
		if !ok {
			msg := l.message()
			if err := msg.ValidateAll(); err != nil {
				// The whole message's validation names the locality.
				return nil, cmp.Or(claMessage(name, localities).ValidateAll(), err)
			}
			n := proto.MarshalOptions{Deterministic: true}.Size(msg)
			f = protowire.AppendTag(make([]byte, 0, n+protowire.SizeVarint(uint64(n))+1), claEndpointsField, protowire.BytesType)
			f = protowire.AppendVarint(f, uint64(n))
			var err error
			if f, err = (proto.MarshalOptions{Deterministic: true}).MarshalAppend(f, msg); err != nil {
				return nil, fmt.Errorf("locality %d: %w", i, err)
			}
			m.putLocality(k, f)
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

func (m *renderMemo) locality(key string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.localities[key]; ok {
		return f, true
	}
	if f, ok := m.prevLocalities[key]; ok {
		m.localities[key] = f
		return f, true
	}
	return nil, false
}

func (m *renderMemo) putLocality(key string, f []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.localities[key] = f
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
	m.mu.Lock()
	defer m.mu.Unlock()
	if rs, ok := m.cur[key]; ok {
		return rs, true
	}
	if rs, ok := m.prev[key]; ok {
		m.cur[key] = rs
		return rs, true
	}
	return nil, false
}

// put remembers the resources rendered from key: all of them at once, so that a render
// racing with another of the same key (rendering the same resources) is not added twice.
func (m *renderMemo) put(key string, rs ...snapshot.Resource) {
	if m == nil || key == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cur[key]; !ok {
		m.cur[key] = rs
	}
}

// rotate ends a translation. Entries used in it are kept; the others too while the memo
// is under twice the size of what is in use (clusters that were not recomputed still
// reference theirs), otherwise they are forgotten. Locality encodings follow the same rule
// with the same bound: the localities of a world's load assignments are mostly shared
// between clusters (a remote gateway at a priority), so they number about the clusters
// times the distinct priorities, well under the output resources.
func (m *renderMemo) rotate(inUse int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prev, m.cur = keepOrDrop(m.prev, m.cur, inUse)
	m.prevLocalities, m.localities = keepOrDrop(m.prevLocalities, m.localities, inUse)
}

// keepOrDrop returns the prev and cur maps of the next translation.
func keepOrDrop[V any](prev, cur map[string]V, inUse int) (map[string]V, map[string]V) {
	if len(prev)+len(cur) <= 2*inUse {
		maps.Copy(prev, cur)
		return prev, map[string]V{}
	}
	return cur, map[string]V{}
}
