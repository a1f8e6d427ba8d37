package redisstore_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// TestTopologies runs the store's conformance suite and the tests of its Lua scripts and
// transactions (the global lock and its epochs, fenced batches, deltas, leases, replicas,
// mesh certificates, revocations, plane views) against a real Sentinel topology and a real
// Redis Cluster, through Dial in each mode, with passwords. A Redis Cluster refuses with
// CROSSSLOT any script or transaction whose keys span hash slots, so the Cluster run also
// checks that every key a script touches stays in one slot.
func TestTopologies(t *testing.T) {
	tests := []struct {
		name string
		f    func(*testing.T, redis.UniversalClient)
	}{
		{"conformance", testConformance},
		{"lock epoch", testLockEpochAboveFloor},
		{"fenced batch", testFencedBatch},
		{"delta base moved", testDeltaBaseMoved},
		{"coordination", testCoordination},
	}
	run := func(t *testing.T, c redis.UniversalClient) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				flushAll(t, c)
				tc.f(t, c)
			})
		}
	}
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		s := redistest.StartSentinel(t, redistest.WithPassword("data-secret"), redistest.WithSentinelPassword("sentinel-secret"))
		run(t, dial(t, redisstore.Options{SentinelAddrs: s.SentinelAddrs(), MasterName: redistest.MasterName,
			Password: "data-secret", SentinelPassword: "sentinel-secret"}))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		cl := redistest.StartCluster(t, redistest.WithPassword("data-secret"))
		run(t, dial(t, redisstore.Options{ClusterAddrs: cl.Addrs()[:2], Password: "data-secret"}))
		t.Run("keys in one slot", func(t *testing.T) { testKeysInOneSlot(t, cl) })
	})
}

// testKeysInOneSlot: every key the stores write, with the default prefix, is in the slot of
// {meshrelay}, as the real cluster computes it (CLUSTER KEYSLOT). The keys are collected
// from a single server, which accepts keys in any slot.
func testKeysInOneSlot(t *testing.T, cl *redistest.Cluster) {
	c := redistest.Start(t).Client(t)
	testCoordination(t, c)
	s := redisstore.New(c, "")
	ctx := t.Context()
	snap := snapshot.New(1, 0, []snapshot.Resource{snapshot.NewResource("a", []byte(`{}`))})
	must(t, s.Put(ctx, snapshot.Input, "east", snap))
	must(t, s.Put(ctx, snapshot.Output, "west", snap))
	must(t, s.PutConfig(ctx, snapshot.NewResource("cfg/a", []byte(`{"a":1}`))))
	keys, err := c.Keys(ctx, "*").Result()
	must(t, err)
	slices.Sort(keys)
	var missing []string
	for _, k := range []string{"activelock", "activelock:epoch", "leader:west", "leader:west:epoch", "replicas:west", "replicas:west:address",
		"meshcerts", "revoked", "plane", "plane:views", "input:east", "output:west", "index:input", "index:output", "config", "config:rev"} {
		if !slices.Contains(keys, "meshrelay:{meshrelay}:"+k) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("keys %q were not written under meshrelay:{meshrelay}:; keys: %q", missing, keys)
	}
	want := cl.Slot(t, "{meshrelay}")
	for _, k := range keys {
		if got := cl.Slot(t, k); got != want {
			t.Errorf("key %q is in slot %d, not %d with the other keys", k, got, want)
		}
	}
}

// testCoordination exercises the scripts and transactions of the coordination stores.
func testCoordination(t *testing.T, c redis.UniversalClient) {
	ctx := t.Context()
	h := redisstore.NewHA(c, "")
	lease := func(id string) string {
		t.Helper()
		l, err := h.AcquireLease(ctx, "west", id, 10*time.Second)
		must(t, err)
		return l.Holder
	}
	if got := lease("r1"); got != "r1" {
		t.Fatalf("free lease taken by %s, want r1", got)
	}
	if got := lease("r2"); got != "r1" {
		t.Fatalf("held lease taken by %s, want r1 to keep it", got)
	}
	must(t, h.ReleaseLease(ctx, "west", "r1"))
	if got := lease("r2"); got != "r2" {
		t.Fatalf("released lease taken by %s, want r2", got)
	}
	if l, err := h.ReadLease(ctx, "west"); err != nil || l.Holder != "r2" || l.Epoch != 2 {
		t.Fatalf("lease = %+v, %v; want r2 at epoch 2", l, err)
	}

	must(t, h.Heartbeat(ctx, "west", "r1", "10.0.0.1:9900", 10*time.Second))
	must(t, h.Heartbeat(ctx, "west", "r2", "10.0.0.2:9900", 10*time.Second))
	must(t, h.Leave(ctx, "west", "r1"))
	if rs, err := h.Replicas(ctx, "west"); err != nil || len(rs) != 1 || rs[0].ID != "r2" || rs[0].Address != "10.0.0.2:9900" {
		t.Fatalf("replicas = %+v, %v; want r2 at 10.0.0.2:9900", rs, err)
	}

	l, err := h.AcquireLockIfFree(ctx, "west", 0)
	must(t, err)
	holder := redisstore.NewCerts(c, "").WithFence(redisstore.Fence{Name: "west", Epoch: func() uint64 { return l.Epoch }})
	other := redisstore.NewCerts(c, "").WithFence(redisstore.Fence{Name: "east", Epoch: func() uint64 { return l.Epoch }})
	must(t, holder.PutMeshCert(ctx, "a", []byte(`{"cert":"a"}`)))
	if err := other.PutMeshCert(ctx, "b", []byte(`{"cert":"b"}`)); !errors.Is(err, snapshot.ErrFenced) {
		t.Fatalf("mesh certificate put by a server without the lock: %v, want ErrFenced", err)
	}
	if m, err := holder.MeshCerts(ctx); err != nil || len(m) != 1 || string(m["a"]) != `{"cert":"a"}` {
		t.Fatalf("mesh certificates = %q, %v; want a only", m, err)
	}

	rv := redisstore.NewRevocations(c, "")
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	must(t, rv.Revoke(ctx, "east", at))
	if m, err := rv.Revoked(ctx); err != nil || !m["east"].Equal(at) {
		t.Fatalf("revocations = %v, %v", m, err)
	}

	pl := redisstore.NewPlane(c, "")
	must(t, pl.PutPlaneView(ctx, "s1", []byte(`{"v":1}`), 10*time.Second))
	must(t, pl.PutPlaneView(ctx, "s2", []byte(`{"v":2}`), 10*time.Second))
	must(t, pl.LeavePlane(ctx, "s2"))
	if m, err := pl.PlaneViews(ctx); err != nil || len(m) != 1 || string(m["s1"]) != `{"v":1}` {
		t.Fatalf("plane views = %q, %v; want s1 only", m, err)
	}
}

// dial is Dial with the test's options, closed when the test ends.
func dial(t *testing.T, o redisstore.Options) redis.UniversalClient {
	t.Helper()
	c, err := redisstore.Dial(o)
	must(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// flushAll empties Redis, every primary of a Cluster.
func flushAll(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	if cc, ok := c.(*redis.ClusterClient); ok {
		must(t, cc.ForEachMaster(t.Context(), func(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() }))
		return
	}
	must(t, c.FlushAll(t.Context()).Err())
}

// scriptFlush makes Redis forget its scripts, every primary of a Cluster.
func scriptFlush(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	if cc, ok := c.(*redis.ClusterClient); ok {
		must(t, cc.ForEachMaster(t.Context(), func(ctx context.Context, m *redis.Client) error { return m.ScriptFlush(ctx).Err() }))
		return
	}
	must(t, c.ScriptFlush(t.Context()).Err())
}
