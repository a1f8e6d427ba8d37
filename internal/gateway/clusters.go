package gateway

import (
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// retiredTTL is how long a retired connection pool is kept to close its idle connections
// (requests in flight when its endpoint or cluster was removed return their connections
// to it); it is longer than the pools' idle timeout.
const retiredTTL = 2 * time.Minute

// clusterManager owns the runtime clusters.
type clusterManager struct {
	log     *slog.Logger
	metrics *metrics
	secrets *secretStore
	tasks   *tasks

	cur atomic.Pointer[map[string]*upstream] // read by the proxies without locking

	mu      sync.Mutex // guards byName and retired
	byName  map[string]*upstream
	retired []retiredPool
}

type retiredPool struct {
	t  *http.Transport
	at time.Time
}

func newClusterManager(log *slog.Logger, m *metrics, s *secretStore, t *tasks) *clusterManager {
	cm := &clusterManager{log: log, metrics: m, secrets: s, tasks: t, byName: map[string]*upstream{}}
	empty := map[string]*upstream{}
	cm.cur.Store(&empty)
	return cm
}

// get returns the cluster of that name, or nil.
func (m *clusterManager) get(name string) *upstream { return (*m.cur.Load())[name] }

// list returns the clusters sorted by name.
func (m *clusterManager) list() []*upstream {
	cur := *m.cur.Load()
	out := make([]*upstream, 0, len(cur))
	for _, n := range slices.Sorted(maps.Keys(cur)) {
		out = append(out, cur[n])
	}
	return out
}

// update makes the runtime clusters match specs; loads holds the load assignments by EDS
// service name.
func (m *clusterManager) update(specs map[string]*clusterSpec, loads map[string]*loadAssignment) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]*upstream, len(specs))
	for name, spec := range specs {
		u := m.byName[name]
		if u == nil {
			u = &upstream{name: name, log: m.log, metrics: m.metrics, secrets: m.secrets, tasks: m.tasks, retire: m.retireLocked, active: -1, since: time.Now(), reason: "cluster added", warming: true}
		}
		var la *loadAssignment
		if spec.edsName != "" {
			la = loads[spec.edsName]
		}
		u.update(spec, la)
		next[name] = u
	}
	for name, u := range m.byName {
		if next[name] == nil {
			u.close()
			m.metrics.forgetCluster(name)
		}
	}
	m.byName = next
	cp := maps.Clone(next)
	m.cur.Store(&cp)
	m.sweepRetiredLocked()
}

// retireLocked keeps pools of removed endpoints to close their idle connections later.
// It is called with m.mu held (from update through upstream.update and upstream.close).
func (m *clusterManager) retireLocked(ts ...*http.Transport) {
	now := time.Now()
	for _, t := range ts {
		if t != nil {
			t.CloseIdleConnections()
			m.retired = append(m.retired, retiredPool{t, now})
		}
	}
}

func (m *clusterManager) sweepRetiredLocked() {
	now := time.Now()
	m.retired = slices.DeleteFunc(m.retired, func(r retiredPool) bool {
		r.t.CloseIdleConnections()
		return now.Sub(r.at) > retiredTTL
	})
}

// shutdown stops every cluster and closes the idle connections of every pool.
func (m *clusterManager) shutdown() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range m.byName {
		u.close()
	}
	for _, r := range m.retired {
		r.t.CloseIdleConnections()
	}
	m.retired = nil
}
