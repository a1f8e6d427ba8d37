package redistest

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// TestSentinelFailover: a write through the sentinels reaches the replica; after the
// primary is killed the sentinels promote the replica, which holds the write, and the
// Sentinel client writes to it; the restarted old primary rejoins as its replica.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	began := time.Now()
	s := StartSentinel(t, WithPassword("data-secret"), WithSentinelPassword("sentinel-secret"))
	t.Logf("started in %v", time.Since(began).Round(time.Millisecond))
	ctx := t.Context()
	c := s.FailoverClient(t)
	if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want the replica to acknowledge", n, err)
	}
	old := s.Primary(t)
	if old != s.Nodes()[0].Addr() {
		t.Fatalf("sentinels name %s as the primary, want the first node %s", old, s.Nodes()[0].Addr())
	}
	began = time.Now()
	killed := s.KillPrimary(t)
	if killed.running() {
		t.Fatal("the killed primary still runs")
	}
	now := s.WaitFailover(t, old)
	t.Logf("failed over in %v", time.Since(began).Round(time.Millisecond))
	if now != s.Nodes()[1].Addr() {
		t.Fatalf("new primary %s, want the replica %s", now, s.Nodes()[1].Addr())
	}
	poll.Eventually(t, readyTimeout, "write through the sentinels after the failover", func() error {
		return c.Set(ctx, "k2", "v2", 0).Err()
	})
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v1" {
		t.Fatalf("k after the failover = %q, %v; want v1", got, err)
	}
	began = time.Now()
	killed.Restart(t)
	s.WaitReplicas(t, 1)
	t.Logf("old primary back as a replica in %v", time.Since(began).Round(time.Millisecond))
	if got, err := killed.Client(t).Get(ctx, "k2").Result(); err != nil || got != "v2" {
		t.Fatalf("the restarted old primary has k2 = %q, %v; want v2 replicated from the new primary", got, err)
	}
}

// TestClusterFailover: the cluster serves a key from one of three primaries; after that
// primary is killed its replica serves the slot with the key, and the restarted node rejoins.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	began := time.Now()
	c := StartCluster(t)
	t.Logf("started in %v", time.Since(began).Round(time.Millisecond))
	ctx := t.Context()
	cc := c.ClusterClient(t)
	const key = "meshrelay:{meshrelay}:activelock"
	if err := cc.Set(ctx, "other", "v0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// SET and WAIT on one connection of the key's primary: WAIT counts the replicas that
	// acknowledged this connection's writes (a cluster client sends a keyless WAIT to any node).
	var wait *redis.Cmd
	if _, err := c.PrimaryOf(t, key).Client(t).Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, "v1", 0)
		wait = p.Do(ctx, "WAIT", 1, 5000)
		return nil
	}); err != nil || wait.Val() != int64(1) {
		t.Fatalf("SET and WAIT 1 on the key's primary = %d, %v; want the replica to acknowledge", wait.Val(), err)
	}
	if slot, other := c.Slot(t, key), c.Slot(t, "other"); slot == other {
		t.Fatalf("CLUSTER KEYSLOT gives %d for both keys", slot)
	}
	began = time.Now()
	old := c.KillPrimaryOf(t, key)
	now := c.WaitFailover(t, key, old)
	t.Logf("failed over in %v", time.Since(began).Round(time.Millisecond))
	if now == old {
		t.Fatal("WaitFailover returned the killed node")
	}
	poll.Eventually(t, readyTimeout, "read through the cluster client after the failover", func() error {
		got, err := cc.Get(ctx, key).Result()
		if err != nil {
			return err
		}
		if got != "v1" {
			return errors.New("key = " + got + ", want v1")
		}
		return nil
	})
	began = time.Now()
	old.Restart(t)
	c.waitOK(t)
	t.Logf("old primary back as a replica in %v", time.Since(began).Round(time.Millisecond))
	info, err := old.Client(t).Info(ctx, "replication").Result()
	if err != nil || infoField(info, "role") != "slave" {
		t.Fatalf("restarted node: role %q (%v), want a replica", infoField(info, "role"), err)
	}
}
