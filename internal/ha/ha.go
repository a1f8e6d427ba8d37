// Package ha coordinates a management server with its peers through the shared store: the
// leader lease among the replicas of one management cluster, the replicas' advertisements
// and the rendezvous hashing that gives every workload cluster one owning replica, and the
// global lock that names the management cluster allowed to write (active/passive).
//
// It defines what it needs of the store as three small interfaces (store.go): LockStore,
// LeaseStore and ReplicaStore. internal/snapshot/redisstore implements all three in Redis;
// internal/kubelease implements LeaseStore with a coordination.k8s.io Lease.
package ha

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Config configures a Coordinator.
type Config struct {
	// MgmtCluster names this management cluster. With ActivePassive, the global lock
	// decides whether it may write.
	MgmtCluster   string
	ActivePassive bool
	// LeaderElection elects one leader among the replicas of MgmtCluster.
	LeaderElection bool
	// LoadBalancing spreads workload clusters over the live replicas.
	LoadBalancing bool
	// ReplicaID identifies this replica; Advertise is where agents reach it.
	ReplicaID string
	Advertise string
	// LeaseTTL is the leader lease; a leader that cannot renew steps down at two thirds.
	LeaseTTL time.Duration
	// Interval is how often the lease is renewed, the replica advertised and the lock read.
	Interval time.Duration
}

// Coordinator runs the coordination loop and answers role questions. With no Stores it is a
// single server: always active, leader and owner.
type Coordinator struct {
	cfg    Config
	stores Stores
	log    *slog.Logger
	now    func() time.Time

	kick chan struct{} // asks the loop for a round now (an agent holds a newer epoch)

	mu          sync.RWMutex  // guards everything below
	changed     chan struct{} // closed and replaced on every change
	lock        Lock
	lockKnown   bool
	floor       uint64    // the lowest epoch the lock may have: from agents, outputs, earlier locks
	freeSince   time.Time // when the lock another server held was first seen gone (loop only)
	lease       Lease
	leaderUntil time.Time
	replicas    []Replica
	clusters    []string
	assignment  map[string]Replica
	lastErr     string
}

// New builds a coordinator; it does no I/O.
func New(cfg Config, stores Stores, log *slog.Logger) *Coordinator {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = cfg.LeaseTTL / 5
	}
	return &Coordinator{cfg: cfg, stores: stores, log: log, now: time.Now, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Watch returns a channel that is closed at the next change of the role, the lock or the
// replica set; call it again for the one after.
func (c *Coordinator) Watch() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

func (c *Coordinator) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Start runs the loop until ctx ends; on a clean stop it leaves the replica set and
// releases the lease so peers take over at once.
func (c *Coordinator) Start(ctx context.Context) error {
	if !c.activePassive() && !c.leaderElection() && !c.loadBalancing() {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.round(ctx)
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if c.loadBalancing() {
				_ = c.stores.Replicas.Leave(cctx, c.cfg.MgmtCluster, c.cfg.ReplicaID)
			}
			if c.leaderElection() {
				_ = c.stores.Lease.ReleaseLease(cctx, c.cfg.MgmtCluster, c.cfg.ReplicaID)
			}
			return nil
		case <-t.C:
		case <-c.kick:
		}
	}
}

// WitnessEpoch tells the coordinator of an epoch seen outside the lock: held by an agent
// (its Hello, a refusal) or carried by an output read from the store. With the epochs of
// the earlier locks it saw (each one plus one), it makes the floor that the coordinator
// hands to the store at every lock round: a free lock is taken above it, and a lock below
// it (Behind) is raised above it by its holder. So after the store lost its data, the
// epoch agents see never goes backwards, with no manual step.
func (c *Coordinator) WitnessEpoch(epoch uint64) {
	c.mu.Lock()
	if epoch <= c.floor {
		c.mu.Unlock()
		return
	}
	c.floor = epoch
	behind := c.lockKnown && Behind(c.lock, c.floor)
	c.mu.Unlock()
	if behind && c.activePassive() {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// Behind reports whether lock l is below floor, the lowest epoch the lock may have: an
// agent holds a newer epoch, or an earlier lock had this epoch or a higher one. That
// happens only when the store lost the lock and its counter and the lock was taken again
// too low; its holder must raise it before agents accept anything. (An agent holding the
// lock's own epoch is the normal case: the holder's outputs carry it.)
func Behind(l Lock, floor uint64) bool {
	return l.Name != "" && l.Epoch < floor
}

func (c *Coordinator) round(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Interval)
	defer cancel()
	start := c.now()
	var errs []string
	changed := false
	if c.activePassive() {
		c.mu.RLock()
		floor := c.floor
		if c.lockKnown {
			// Should the lock be gone (the store lost it), the next one is taken above it.
			floor = max(floor, c.lock.Epoch)
		}
		last, known := c.lock, c.lockKnown
		c.mu.RUnlock()
		// The store takes a free lock above floor, raises the lock this server holds above
		// it (Behind), and otherwise records it for the holder's next round.
		var lock Lock
		var err error
		if known && last.Name != c.cfg.MgmtCluster {
			lock, err = c.stores.Lock.ReadLock(ctx)
		}
		switch {
		case err != nil:
		case known && lock.Name == "" && last.Name != c.cfg.MgmtCluster && last.Name != "":
			// The lock vanished (the store lost its data) while another server held it:
			// leave it to that server for a lease, so the lock does not move to another
			// region because of the loss; take it only if that server is gone too.
			if c.freeSince.IsZero() {
				c.freeSince = start
				c.log.Warn("global lock vanished from the store; leaving it to its last holder for a lease", "lastHolder", last.Name, "epoch", last.Epoch)
			}
			if start.Sub(c.freeSince) < c.cfg.LeaseTTL {
				lock = last
				break
			}
			fallthrough
		default:
			c.freeSince = time.Time{}
			lock, err = c.stores.Lock.AcquireLockIfFree(ctx, c.cfg.MgmtCluster, floor)
		}
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			c.mu.Lock()
			if c.lockKnown && lock != c.lock {
				// Every lock after this one must be above it: a lock that moved to an
				// epoch not above it was taken again after the store lost its data.
				c.floor = max(c.floor, c.lock.Epoch+1)
			}
			if !c.lockKnown || lock != c.lock {
				if c.lock.Name != lock.Name || c.lock.Epoch != lock.Epoch {
					c.log.Info("global lock", "holder", lock.Name, "epoch", lock.Epoch, "active", lock.Name == c.cfg.MgmtCluster)
				}
				if c.lockKnown && lock.Name == c.cfg.MgmtCluster && c.lock.Name == lock.Name && lock.Since.Equal(c.lock.Since) && lock.Epoch > c.lock.Epoch {
					c.log.Warn("global lock epoch raised above what agents or earlier locks hold", "from", c.lock.Epoch, "epoch", lock.Epoch)
				}
				if Behind(lock, c.floor) {
					c.log.Warn("global lock epoch not above what agents or earlier locks hold; its holder raises it", "holder", lock.Name, "epoch", lock.Epoch, "floor", c.floor)
				}
				c.lock, c.lockKnown, changed = lock, true, true
			}
			c.mu.Unlock()
		}
	}
	if c.leaderElection() {
		lease, err := c.stores.Lease.AcquireLease(ctx, c.cfg.MgmtCluster, c.cfg.ReplicaID, c.cfg.LeaseTTL)
		c.mu.Lock()
		wasLeader := c.leaderLocked()
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			c.lease = lease
			if lease.Holder == c.cfg.ReplicaID {
				// Step down at two thirds of the lease unless renewed again, so a slow or
				// unreachable store never leaves two leaders.
				c.leaderUntil = start.Add(c.cfg.LeaseTTL * 2 / 3)
			}
		}
		if isLeader := c.leaderLocked(); isLeader != wasLeader {
			c.log.Info("leadership changed", "leader", isLeader, "epoch", c.lease.Epoch)
			changed = true
		}
		c.mu.Unlock()
	}
	if c.loadBalancing() {
		if err := c.stores.Replicas.Heartbeat(ctx, c.cfg.MgmtCluster, c.cfg.ReplicaID, c.cfg.Advertise, 3*c.cfg.Interval); err != nil {
			errs = append(errs, err.Error())
		}
		if reps, err := c.stores.Replicas.Replicas(ctx, c.cfg.MgmtCluster); err != nil {
			errs = append(errs, err.Error())
		} else {
			c.mu.Lock()
			if !sameReplicas(reps, c.replicas) {
				c.log.Info("replicas changed", "replicas", len(reps))
				c.replicas, changed = reps, true
				c.assignment = Assign(c.clusters, c.replicas)
			}
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	c.lastErr = ""
	if len(errs) > 0 {
		c.lastErr = errs[0]
	}
	c.mu.Unlock()
	if changed {
		c.notify()
	}
}

func sameReplicas(a, b []Replica) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// activePassive, leaderElection and loadBalancing report whether each job is configured
// and has its store; otherwise this server does it alone.
func (c *Coordinator) activePassive() bool  { return c.cfg.ActivePassive && c.stores.Lock != nil }
func (c *Coordinator) leaderElection() bool { return c.cfg.LeaderElection && c.stores.Lease != nil }
func (c *Coordinator) loadBalancing() bool  { return c.cfg.LoadBalancing && c.stores.Replicas != nil }

func (c *Coordinator) leaderLocked() bool {
	return c.lease.Holder == c.cfg.ReplicaID && c.now().Before(c.leaderUntil)
}

// Leader reports whether this replica leads (always, without leader election).
func (c *Coordinator) Leader() bool {
	if !c.leaderElection() {
		return true
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.leaderLocked()
}

// Active reports whether this server may translate and write, and the epoch it writes
// under. Without active/passive it is always active at epoch 1.
func (c *Coordinator) Active() (bool, uint64) {
	if !c.activePassive() {
		return true, 1
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.lockKnown && c.lock.Name == c.cfg.MgmtCluster, c.lock.Epoch
}

// Epoch is the lock epoch this server believes it holds (for the store's fence).
func (c *Coordinator) Epoch() uint64 {
	_, e := c.Active()
	return e
}

// SetClusters tells the coordinator every registered cluster, so ownership can be balanced
// (bounded load); a change that moves clusters is announced on Watch.
func (c *Coordinator) SetClusters(clusters []string) {
	cl := append([]string(nil), clusters...)
	sort.Strings(cl)
	c.mu.Lock()
	same := len(cl) == len(c.clusters)
	for i := 0; same && i < len(cl); i++ {
		same = cl[i] == c.clusters[i]
	}
	if same {
		c.mu.Unlock()
		return
	}
	old := c.assignment
	c.clusters = cl
	c.assignment = Assign(c.clusters, c.replicas)
	moved := false
	for k, v := range c.assignment {
		if o, ok := old[k]; ok && o.ID != v.ID {
			moved = true
		}
	}
	c.mu.Unlock()
	if moved {
		c.notify()
	}
}

// Owns reports whether this replica owns a workload cluster.
func (c *Coordinator) Owns(cluster string) bool {
	_, ok := c.Owner(cluster)
	return ok
}

// OwnerAddress returns the relay address of the replica owning a cluster and whether it is
// this one.
func (c *Coordinator) OwnerAddress(cluster string) (string, bool) {
	r, ok := c.Owner(cluster)
	return r.Address, ok
}

// Owner returns the replica that owns a workload cluster and whether it is this one. While
// the replica set is unknown (or balancing is off) every replica owns every cluster.
func (c *Coordinator) Owner(cluster string) (Replica, bool) {
	self := Replica{ID: c.cfg.ReplicaID, Address: c.cfg.Advertise}
	if !c.loadBalancing() {
		return self, true
	}
	c.mu.RLock()
	reps := c.replicas
	o, assigned := c.assignment[cluster]
	c.mu.RUnlock()
	if !assigned {
		var ok bool
		if o, ok = Rendezvous(cluster, reps); !ok {
			return self, true
		}
	}
	return o, o.ID == c.cfg.ReplicaID
}

// Assign gives every cluster a replica by rendezvous hashing with bounded load: clusters,
// in name order, go to their highest-ranked replica that has fewer than
// ceil(1.1·clusters/replicas) clusters. Every replica computes the same assignment from
// the same cluster and replica sets; a replica joining or leaving moves few clusters.
func Assign(clusters []string, reps []Replica) map[string]Replica {
	out := make(map[string]Replica, len(clusters))
	if len(reps) == 0 {
		return out
	}
	limit := (len(clusters)*11 + len(reps)*10 - 1) / (len(reps) * 10)
	if limit < 1 {
		limit = 1
	}
	load := map[string]int{}
	for _, cl := range clusters {
		ranked := rank(cl, reps)
		chosen := ranked[0]
		for _, r := range ranked {
			if load[r.ID] < limit {
				chosen = r
				break
			}
		}
		load[chosen.ID]++
		out[cl] = chosen
	}
	return out
}

// rank orders replicas by their rendezvous score for a cluster, best first.
func rank(cluster string, reps []Replica) []Replica {
	type scored struct {
		r Replica
		s uint64
	}
	all := make([]scored, len(reps))
	for i, r := range reps {
		all[i] = scored{r, score(cluster, r.ID)}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].s != all[j].s {
			return all[i].s > all[j].s
		}
		return all[i].r.ID < all[j].r.ID
	})
	out := make([]Replica, len(all))
	for i, a := range all {
		out[i] = a.r
	}
	return out
}

func score(cluster, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(cluster))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return mix(h.Sum64())
}

// Rendezvous picks the replica with the highest hash of (cluster, replica id): adding or
// removing a replica moves only the clusters it gains or loses.
func Rendezvous(cluster string, reps []Replica) (Replica, bool) {
	var best Replica
	var bestScore uint64
	found := false
	for _, r := range reps {
		s := score(cluster, r.ID)
		if !found || s > bestScore || (s == bestScore && r.ID < best.ID) {
			best, bestScore, found = r, s, true
		}
	}
	return best, found
}

// mix is a 64-bit finalizer (splitmix64) that spreads fnv's output.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Status is the coordinator's state for /status and `meshrelay check`.
type Status struct {
	MgmtCluster   string    `json:"mgmtCluster,omitempty"`
	ReplicaID     string    `json:"replica,omitempty"`
	Active        bool      `json:"active"`
	Lock          *Lock     `json:"lock,omitempty"`
	Leader        bool      `json:"leader"`
	LeaderElected bool      `json:"leaderElection"`
	Lease         *Lease    `json:"lease,omitempty"`
	Replicas      []Replica `json:"replicas,omitempty"`
	Error         string    `json:"error,omitempty"`
}

// Status returns the current view.
func (c *Coordinator) Status() Status {
	active, _ := c.Active()
	st := Status{MgmtCluster: c.cfg.MgmtCluster, ReplicaID: c.cfg.ReplicaID, Active: active, Leader: c.Leader(), LeaderElected: c.cfg.LeaderElection}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.lockKnown {
		l := c.lock
		st.Lock = &l
	}
	if c.cfg.LeaderElection && c.lease.Holder != "" {
		l := c.lease
		st.Lease = &l
	}
	st.Replicas = c.replicas
	st.Error = c.lastErr
	return st
}
