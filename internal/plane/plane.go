// Package plane gives every management server the view of the whole management plane: each
// server publishes, through the shared store, which agents are connected to it and how they
// are doing (their streams, their sync state, what they report wrong), and reads the views
// of the others. A cluster is healthy when it is connected and in sync on some server, so
// `meshrelay check` against any replica judges the plane, not one replica.
//
// plane.go holds the view and the questions asked of it; publisher.go keeps it shared.
package plane

import (
	"sort"
	"time"

	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
)

// Server is one management server's view of the agents connected to it.
type Server struct {
	// ID is the replica id; MgmtCluster the management cluster it belongs to.
	ID          string    `json:"id"`
	MgmtCluster string    `json:"mgmtCluster,omitempty"`
	Relay       string    `json:"relayAddress,omitempty"`
	At          time.Time `json:"at"`
	// SafeMode is the server's safe mode: while active, its clusters get no new outputs.
	SafeMode reconcile.SafeModeStatus `json:"safeMode"`
	// Clusters has every cluster with a stream open to this server.
	Clusters []Cluster `json:"clusters"`
}

// Cluster is a cluster connected to a server: its streams there and the server's view of
// its sync state.
type Cluster struct {
	Name       string                  `json:"name"`
	Connection relay.Connection        `json:"connection"`
	Sync       reconcile.ClusterStatus `json:"sync"`
}

// Connected reports whether both of the cluster's streams are open.
func (c Cluster) Connected() bool { return c.Connection.Push > 0 && c.Connection.Pull > 0 }

// Local builds a server's own view from its reconciler's status and its relay connections.
func Local(id, mgmtCluster, relayAddr string, st reconcile.Status, conns map[string]relay.Connection, now time.Time) Server {
	v := Server{ID: id, MgmtCluster: mgmtCluster, Relay: relayAddr, At: now.UTC(), SafeMode: st.SafeMode, Clusters: []Cluster{}}
	byName := make(map[string]reconcile.ClusterStatus, len(st.Clusters))
	for _, cs := range st.Clusters {
		byName[cs.Name] = cs
	}
	for name, c := range conns {
		cs, ok := byName[name]
		if !ok {
			cs = reconcile.ClusterStatus{Name: name}
		}
		v.Clusters = append(v.Clusters, Cluster{Name: name, Connection: c, Sync: cs})
	}
	sort.Slice(v.Clusters, func(i, j int) bool { return v.Clusters[i].Name < v.Clusters[j].Name })
	return v
}

// Status is the whole plane as one server sees it: its own view (first) and the views its
// peers published.
type Status struct {
	Servers []Server `json:"servers"`
	// Error says why the peers' views are missing or old (the store is unreachable).
	Error string `json:"error,omitempty"`
}

// Where is a cluster's place in the plane.
type Where struct {
	Server  Server
	Cluster Cluster
}

// Find returns the server a cluster is connected to with both streams (preferring one where
// it is in sync, then this server), and whether there is one. partial lists the servers
// that have only one of its streams.
func (st Status) Find(cluster string) (at Where, ok bool, partial []Where) {
	for _, s := range st.Servers {
		for _, c := range s.Clusters {
			if c.Name != cluster {
				continue
			}
			if !c.Connected() {
				partial = append(partial, Where{s, c})
				continue
			}
			if !ok || (c.Sync.InSync && !at.Cluster.Sync.InSync) {
				at, ok = Where{s, c}, true
			}
		}
	}
	return at, ok, partial
}
