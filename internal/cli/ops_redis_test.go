package cli

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// redisCheck runs the Redis checks of `meshrelay check` with args and returns its
// "redis failover" line (failing the test if there is none).
func redisCheck(t *testing.T, args ...string) checkResult {
	t.Helper()
	var rf redisFlags
	cmd := &cobra.Command{}
	rf.register(cmd, false)
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	results := redisChecks(t.Context(), rf)
	for _, r := range results {
		if r.Check == "redis failover" {
			return r
		}
	}
	t.Fatalf("no redis failover check in %+v", results)
	return checkResult{}
}

// failsWith polls the check until it fails with a detail containing want.
func failsWith(t *testing.T, want string, args ...string) {
	t.Helper()
	poll.Eventually(t, 15*time.Second, "check fails with "+want, func() error {
		r := redisCheck(t, args...)
		if r.OK || !strings.Contains(r.Detail, want) {
			return fmt.Errorf("redis failover: ok %v, %s", r.OK, r.Detail)
		}
		return nil
	})
}

// TestCheckSentinel: check connects through the sentinels and passes while the primary
// has a replica in sync and every sentinel answers; it fails when the replica is gone, when
// the sentinels flag the primary down, and when fewer than a quorum of sentinels answer.
func TestCheckSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t, redistest.WithPassword("data-secret"), redistest.WithSentinelPassword("sentinel-secret"))
	args := []string{"--redis-sentinel-addresses", strings.Join(s.SentinelAddrs(), ","), "--redis-master-name", redistest.MasterName,
		"--redis-password", "data-secret", "--redis-sentinel-password", "sentinel-secret"}
	r := redisCheck(t, args...)
	want := fmt.Sprintf("sentinel: primary %s with 1 replica(s) in sync; 3 of 3 sentinels answer (quorum 2), flags master", s.Primary(t))
	if !r.OK || r.Detail != want {
		t.Fatalf("healthy: ok %v, %q; want ok, %q", r.OK, r.Detail, want)
	}
	if r := redisCheck(t, append(slices.Clone(args[:len(args)-2]), "--redis-sentinel-password", "wrong")...); r.OK {
		t.Fatalf("check with a wrong sentinel password passes: %s", r.Detail)
	}

	s.Nodes()[1].Stop()
	failsWith(t, "no replica in sync with the primary "+s.Primary(t), args...)
	s.Nodes()[0].Stop() // no replica left to promote: the primary stays down
	failsWith(t, "o_down", args...)
	s.Sentinels()[0].Stop()
	s.Sentinels()[1].Stop()
	failsWith(t, "1 of 3 sentinels answer, fewer than their quorum 2", args...)
}

// TestCheckCluster: check connects to the cluster and passes while the primary of the
// store's slot has a replica in sync and cluster_state is ok; it fails once a failover left
// that primary without a replica, and when another shard is lost (cluster_state fail).
func TestCheckCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.WithPassword("data-secret"))
	args := []string{"--redis-cluster-addresses", cl.Addrs()[0], "--redis-password", "data-secret", "--redis-prefix", "meshrelay"}
	const key = "{meshrelay}"
	r := redisCheck(t, args...)
	want := fmt.Sprintf("cluster: slot %d on primary %s with 1 replica(s) in sync, cluster_state ok", cl.Slot(t, key), cl.PrimaryOf(t, key).Addr())
	if !r.OK || r.Detail != want {
		t.Fatalf("healthy: ok %v, %q; want ok, %q", r.OK, r.Detail, want)
	}

	old := cl.KillPrimaryOf(t, key)
	now := cl.WaitFailover(t, key, old)
	failsWith(t, "no replica in sync with the primary "+now.Addr(), args...)

	// Lose another shard, primary and replica: the cluster no longer serves every slot.
	other := ""
	for i := 0; other == ""; i++ {
		if k := fmt.Sprint("k", i); cl.PrimaryOf(t, k) != now {
			other = k
		}
	}
	dead := cl.KillPrimaryOf(t, other)
	cl.WaitFailover(t, other, dead).Stop()
	failsWith(t, `cluster_state is "fail"`, args...)
}
