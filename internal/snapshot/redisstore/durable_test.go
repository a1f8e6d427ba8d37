package redisstore_test

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// replicated starts a primary and a replica of it (REPLICAOF), and waits until the replica
// is in sync.
func replicated(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary, replica = redistest.Start(t), redistest.Start(t)
	pc := primary.Client(t)
	// A full resynchronisation starts at once rather than after 5 s of waiting for more replicas.
	must(t, pc.ConfigSet(t.Context(), "repl-diskless-sync-delay", "0").Err())
	host, port, _ := net.SplitHostPort(primary.Addr())
	must(t, replica.Client(t).ReplicaOf(t.Context(), host, port).Err())
	poll.Eventually(t, 10*time.Second, "replica in sync", func() error {
		info, err := pc.Info(t.Context(), "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "connected_slaves:1") || !strings.Contains(info, "state=online") {
			return fmt.Errorf("primary's replication: %s", info)
		}
		return nil
	})
	return primary, replica
}

// promote makes the replica a primary, as Sentinel does after the primary died.
func promote(t *testing.T, replica *redistest.Server) *redis.Client {
	t.Helper()
	c := replica.Client(t)
	must(t, c.ReplicaOf(t.Context(), "NO", "ONE").Err())
	return c
}

// processID is the pid of the redis-server c talks to.
func processID(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(t.Context(), "server").Result()
	must(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			must(t, err)
			return pid
		}
	}
	t.Fatalf("no process_id in INFO server")
	return 0
}

func configResource(key, body string) snapshot.Resource {
	return snapshot.NewResource(key, []byte(body))
}

// The writes that must not be lost (applied configuration, the global lock with its epoch,
// revocations) wait until the replica has them. The replica is stopped (SIGSTOP) behind a
// big write that fills the connection's buffers, so the writes leave the primary only once
// it runs again: acknowledged all the same, they would be lost with a primary killed right
// after. With WAIT they are acknowledged once the replica has them, and are on the replica
// that Sentinel would promote.
func TestDurableWritesSurviveFailover(t *testing.T) {
	primary, replica := replicated(t)
	ctx := t.Context()
	pc := primary.Client(t)
	repl := redisstore.NewReplication(10*time.Second, nil)
	store := redisstore.New(pc, "").WithReplication(repl)
	lock := redisstore.NewHA(pc, "").WithReplication(repl)
	revs := redisstore.NewRevocations(pc, "").WithReplication(repl)

	must(t, store.PutConfig(ctx, configResource("cfg/before", `{"n":0}`)))
	pid := processID(t, replica.Client(t))
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	must(t, pc.Set(ctx, "filler", strings.Repeat("x", 64<<20), 0).Err())
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(300 * time.Millisecond)
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}()
	must(t, store.PutConfig(ctx, configResource("cfg/acked", `{"n":1}`)))
	l, err := lock.AcquireLockIfFree(ctx, "west", 6)
	must(t, err)
	at := time.Unix(1700000000, 0).UTC()
	must(t, revs.Revoke(ctx, "east", at))
	primary.Stop() // SIGKILL right after the acknowledgements
	<-resumed

	rc := promote(t, replica)
	after := redisstore.New(rc, "")
	cfg, _, err := after.ListConfig(ctx)
	must(t, err)
	var keys []string
	for _, r := range cfg {
		keys = append(keys, r.Key)
	}
	if strings.Join(keys, ",") != "cfg/acked,cfg/before" {
		t.Errorf("the promoted replica holds configuration %v, want cfg/acked and cfg/before", keys)
	}
	if got, err := redisstore.NewHA(rc, "").ReadLock(ctx); err != nil || got.Name != "west" || got.Epoch != l.Epoch || l.Epoch != 7 {
		t.Errorf("the promoted replica holds lock %+v (%v), want west at the acknowledged epoch %d (7)", got, err, l.Epoch)
	}
	if got, err := redisstore.NewRevocations(rc, "").Revoked(ctx); err != nil || !got["east"].Equal(at) {
		t.Errorf("the promoted replica holds revocations %v (%v), want east at %v", got, err, at)
	}
	if n := repl.Shortfalls(); n != 0 || repl.Status() != nil {
		t.Errorf("%d shortfalls (%v), want none", n, repl.Status())
	}
}

// With its replica gone, a primary that had one refuses to report a write that must not be
// lost as done: apply fails with ErrNotReplicated (saying that the write is on the primary),
// the shortfall is counted and kept until a later write reaches a replica again. Taking the
// lock fails the same way (its holder does not write under an epoch a failover may lose).
func TestWriteWithoutReplicaFailsLoudly(t *testing.T) {
	primary, replica := replicated(t)
	ctx := t.Context()
	pc := primary.Client(t)
	repl := redisstore.NewReplication(time.Second, nil)
	store := redisstore.New(pc, "").WithReplication(repl)
	lock := redisstore.NewHA(pc, "").WithReplication(repl)
	must(t, store.PutConfig(ctx, configResource("cfg/1", `{"n":1}`)))

	replica.Stop()
	poll.Eventually(t, 10*time.Second, "primary sees the replica gone", func() error {
		info, err := pc.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "connected_slaves:0") {
			return fmt.Errorf("replica still connected (%v)", err)
		}
		return nil
	})
	err := store.PutConfig(ctx, configResource("cfg/2", `{"n":2}`))
	if !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("apply without a replica: %v, want ErrNotReplicated", err)
	}
	if !strings.Contains(err.Error(), "put config resource cfg/2") || !strings.Contains(err.Error(), "is on the redis primary") {
		t.Errorf("the error %q does not name the write and where it is", err)
	}
	st := repl.Status()
	if st == nil || st.Write != "put config resource cfg/2" || st.Wanted != 1 || st.Acked != 0 {
		t.Fatalf("replication status %+v, want the shortfall of cfg/2", st)
	}
	// The same resource again: still not on a replica, so still refused.
	if err := store.PutConfig(ctx, configResource("cfg/2", `{"n":2}`)); !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Errorf("the same apply again without a replica: %v, want ErrNotReplicated", err)
	}
	if err := store.DeleteConfig(ctx, "cfg/1"); !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Errorf("a delete without a replica: %v, want ErrNotReplicated", err)
	}
	if _, err := lock.AcquireLockIfFree(ctx, "west", 0); !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Errorf("taking the lock without a replica: %v, want ErrNotReplicated", err)
	}
	if l, err := lock.ReadLock(ctx); err != nil || l.Name != "west" || l.Epoch != 1 {
		t.Errorf("the primary holds lock %+v (%v), want west at epoch 1", l, err)
	}
	if n := repl.Shortfalls(); n != 4 {
		t.Errorf("%d shortfalls counted, want 4", n)
	}

	// The replica returns: the next write reaches it and the shortfall clears.
	replica.Restart(t)
	host, port, _ := net.SplitHostPort(primary.Addr())
	must(t, replica.Client(t).ReplicaOf(ctx, host, port).Err())
	poll.Eventually(t, 10*time.Second, "apply reaches the replica again", func() error {
		return store.PutConfig(ctx, configResource("cfg/3", `{"n":3}`))
	})
	if l, err := lock.AcquireLockIfFree(ctx, "west", 0); err != nil || l.Name != "west" || l.Epoch != 1 {
		t.Errorf("the holder's next round: %+v, %v; want west at epoch 1", l, err)
	}
	if st := repl.Status(); st != nil {
		t.Errorf("replication status %+v after a write reached the replica, want none", st)
	}
}

// A lone Redis, never seen with a replica, is not waited on: writes succeed.
func TestLoneNodeWaitsForNoReplica(t *testing.T) {
	srv := redistest.Start(t)
	repl := redisstore.NewReplication(5*time.Second, nil)
	store := redisstore.New(srv.Client(t), "").WithReplication(repl)
	for i := range 3 {
		must(t, store.PutConfig(t.Context(), configResource(fmt.Sprintf("cfg/%d", i), `{}`)))
	}
	// Waiting for a replica that is not there would have been a shortfall.
	if n := repl.Shortfalls(); n != 0 {
		t.Errorf("%d shortfalls on a lone node", n)
	}
}

// replicaOf is the node of the cluster that replicates primary.
func replicaOf(t *testing.T, c *redistest.Cluster, primary *redistest.Server) *redistest.Server {
	t.Helper()
	info, err := primary.Client(t).Info(t.Context(), "replication").Result()
	must(t, err)
	for _, line := range strings.Split(info, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "slave0:")
		if !ok {
			continue
		}
		var ip, port string
		for _, kv := range strings.Split(v, ",") {
			k, val, _ := strings.Cut(kv, "=")
			switch k {
			case "ip":
				ip = val
			case "port":
				port = val
			}
		}
		if n := c.Node(net.JoinHostPort(ip, port)); n != nil {
			return n
		}
	}
	t.Fatalf("%s reports no replica of this cluster: %s", primary.Addr(), info)
	return nil
}

// In a Redis Cluster the write and its WAIT go to the primary that holds the store's slot:
// with that primary's replica stopped, the write falls short (WAIT sent to another node
// would have answered at once), and once it runs again writes reach it.
func TestDurableWriteClusterWaitsOnTheSlotsPrimary(t *testing.T) {
	c := redistest.StartCluster(t)
	ctx := t.Context()
	repl := redisstore.NewReplication(300*time.Millisecond, nil)
	store := redisstore.New(c.ClusterClient(t), "").WithReplication(repl)
	must(t, store.PutConfig(ctx, configResource("cfg/1", `{"n":1}`)))

	replica := replicaOf(t, c, c.PrimaryOf(t, "meshrelay:{meshrelay}:activelock"))
	pid := processID(t, replica.Client(t))
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	err := store.PutConfig(ctx, configResource("cfg/2", `{"n":2}`))
	must(t, syscall.Kill(pid, syscall.SIGCONT))
	if !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("a write while the slot's replica is stopped: %v, want ErrNotReplicated", err)
	}
	poll.Eventually(t, 10*time.Second, "writes reach the replica again", func() error {
		return store.PutConfig(ctx, configResource("cfg/3", `{"n":3}`))
	})
	if st := repl.Status(); st != nil {
		t.Errorf("replication status %+v after a write reached the replica, want none", st)
	}
}

// Through Sentinel: what was acknowledged before the primary was killed is on the primary
// Sentinel promotes, and the promoted primary, alone, takes writes without waiting (it was
// never seen with a replica). (A primary that gets a replica back waits again:
// TestWriteWithoutReplicaFailsLoudly.)
func TestDurableWritesSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	ctx := t.Context()
	fc := s.FailoverClient(t)
	repl := redisstore.NewReplication(5*time.Second, nil)
	store := redisstore.New(fc, "").WithReplication(repl)
	lock := redisstore.NewHA(fc, "").WithReplication(repl)
	must(t, store.PutConfig(ctx, configResource("cfg/1", `{"n":1}`)))
	l, err := lock.AcquireLockIfFree(ctx, "west", 0)
	must(t, err)

	killed := time.Now()
	old := s.KillPrimary(t)
	s.WaitFailover(t, old.Addr())
	t.Logf("failover after %v", time.Since(killed).Round(time.Millisecond))
	poll.Eventually(t, 20*time.Second, "a write through Sentinel after the failover", func() error {
		return store.PutConfig(ctx, configResource("cfg/2", `{"n":2}`))
	})
	cfg, _, err := store.ListConfig(ctx)
	must(t, err)
	if len(cfg) != 2 {
		t.Errorf("after the failover the store holds %d resources, want cfg/1 and cfg/2", len(cfg))
	}
	if got, err := lock.ReadLock(ctx); err != nil || got != l {
		t.Errorf("after the failover the lock is %+v (%v), want %+v", got, err, l)
	}

	if n := repl.Shortfalls(); n != 0 {
		t.Errorf("%d shortfalls, want none", n)
	}
}
