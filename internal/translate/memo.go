package translate

import (
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// renderMemo remembers the rendered resources of upstream plans by a hash of the whole
// plan (a key that covers every input of the rendering, CONVENTIONS habit 6). Entries not
// used in a translation are dropped after it. A nil memo remembers nothing.
type renderMemo struct {
	cur, prev map[string][]snapshot.Resource
}

func newRenderMemo() *renderMemo {
	return &renderMemo{cur: map[string][]snapshot.Resource{}, prev: map[string][]snapshot.Resource{}}
}

type hashWriter struct {
	h interface{ Write([]byte) (int, error) }
}

func (w hashWriter) Write(b []byte) (int, error) { return w.h.Write(b) }

func (m *renderMemo) key(u UpstreamPlan) string {
	if m == nil {
		return ""
	}
	h := sha256.New()
	if err := gob.NewEncoder(hashWriter{h}).Encode(u); err != nil {
		return "" // not memoizable; render it
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (m *renderMemo) get(key string) ([]snapshot.Resource, bool) {
	if m == nil || key == "" {
		return nil, false
	}
	if rs, ok := m.cur[key]; ok {
		return rs, true
	}
	if rs, ok := m.prev[key]; ok {
		m.cur[key] = rs
		return rs, true
	}
	return nil, false
}

func (m *renderMemo) add(key string, r snapshot.Resource) {
	if m == nil || key == "" {
		return
	}
	m.cur[key] = append(m.cur[key], r)
}

// rotate ends a translation. Entries used in it are kept; the others too while the memo
// is under twice the size of what is in use (clusters that were not recomputed still
// reference theirs), otherwise they are forgotten.
func (m *renderMemo) rotate(inUse int) {
	if len(m.prev)+len(m.cur) <= 2*inUse {
		for k, v := range m.cur {
			m.prev[k] = v
		}
		m.cur = map[string][]snapshot.Resource{}
		return
	}
	m.prev, m.cur = m.cur, map[string][]snapshot.Resource{}
}
