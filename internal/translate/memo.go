package translate

import (
	"sync"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// renderMemo remembers rendered resources by a hash of everything they were rendered
// from (planHash, or for VirtualDestination upstreams and ServiceEntries the digest key of
// their inputs, vdPortKey: a key that covers every input of the rendering, CONVENTIONS habit 6):
// Envoy clusters and load assignments by their upstream plan, Istio resources by their
// kind, final name and source plan element. Entries not used in a translation are dropped
// after it. A nil memo remembers nothing. get and put are safe for concurrent use.
type renderMemo struct {
	mu        sync.Mutex // guards cur and prev
	cur, prev map[string][]snapshot.Resource
}

func newRenderMemo() *renderMemo {
	return &renderMemo{cur: map[string][]snapshot.Resource{}, prev: map[string][]snapshot.Resource{}}
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
// reference theirs), otherwise they are forgotten.
func (m *renderMemo) rotate(inUse int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.prev)+len(m.cur) <= 2*inUse {
		for k, v := range m.cur {
			m.prev[k] = v
		}
		m.cur = map[string][]snapshot.Resource{}
		return
	}
	m.prev, m.cur = m.cur, map[string][]snapshot.Resource{}
}
