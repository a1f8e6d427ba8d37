package ha

import (
	"context"
	"time"
)

// Lock is the global lock naming the management server allowed to write.
type Lock struct {
	Name  string    `json:"name"`
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since"`
}

// Lease is the holder of a leader lease.
type Lease struct {
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
}

// Replica is a live replica of a management cluster.
type Replica struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// LockStore keeps the global lock between management clusters, with fencing epochs.
type LockStore interface {
	// AcquireLockIfFree takes the lock for name when nobody holds it and returns the
	// holder. floor is the highest epoch the caller knows of: a free lock is taken above
	// it, a lock name holds below it is raised above it.
	AcquireLockIfFree(ctx context.Context, name string, floor uint64) (Lock, error)
	// ReadLock returns the holder (zero Lock when nobody holds it).
	ReadLock(ctx context.Context) (Lock, error)
}

// LeaseStore elects the leader among the replicas of one management cluster (group).
type LeaseStore interface {
	// AcquireLease takes or renews group's lease for id for ttl and returns the holder;
	// every new holder gets a higher epoch.
	AcquireLease(ctx context.Context, group, id string, ttl time.Duration) (Lease, error)
	// ReleaseLease gives up the lease if id holds it (a clean shutdown).
	ReleaseLease(ctx context.Context, group, id string) error
}

// ReplicaStore keeps the advertisements of the live replicas of a management cluster.
type ReplicaStore interface {
	// Heartbeat advertises replica id at address for ttl.
	Heartbeat(ctx context.Context, group, id, address string, ttl time.Duration) error
	// Leave removes replica id (a clean shutdown).
	Leave(ctx context.Context, group, id string) error
	// Replicas lists the live replicas of group, sorted by id.
	Replicas(ctx context.Context, group string) ([]Replica, error)
}

// Stores are what a Coordinator coordinates through. A nil one leaves its job to this
// server alone: without Lock it is always active, without Lease always the leader, and
// without Replicas it owns every cluster.
type Stores struct {
	Lock     LockStore    // the global lock, with Config.ActivePassive
	Lease    LeaseStore   // the leader lease, with Config.LeaderElection
	Replicas ReplicaStore // the replica set, with Config.LoadBalancing
}
