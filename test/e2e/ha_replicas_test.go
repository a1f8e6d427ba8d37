package e2e

// Replicas of one management cluster sharing Redis (seeds 001 and 002): a replica killed,
// the leader killed, agents balanced over the replicas.

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// replicaFlags are the flags of replica id of one management cluster on a shared Redis.
func replicaFlags(redisAddr, id, relay string, balancing bool) []string {
	f := []string{"--redis-address", redisAddr, "--leader-election", "--replica-id", id, "--advertise-address", relay}
	if balancing {
		f = append(f, "--cluster-load-balancing")
	}
	return append(f, haServerFlags...)
}

// startReplicas starts replicas ids (the first generates the relay CA the others share; all
// read one config dir) and waits until each sees all of them when balancing.
func startReplicas(h *harness, redisAddr string, ids, clusters []string, balancing bool) []*mgmt {
	h.t.Helper()
	return startReplicasAt(h, redisAddr, ids, nil, clusters, balancing)
}

// startReplicasAt is startReplicas with the relay address of each replica given (relays[i]
// for ids[i]; a free loopback port when relays is nil); each advertises its own.
func startReplicasAt(h *harness, redisAddr string, ids, relays, clusters []string, balancing bool) []*mgmt {
	h.t.Helper()
	var reps []*mgmt
	for i, id := range ids {
		relay := h.addr()
		if relays != nil {
			relay = relays[i]
		}
		o := mgmtOpts{relay: relay, clusters: clusters, args: replicaFlags(redisAddr, id, relay, balancing)}
		if i > 0 {
			o.caFrom, o.config = reps[0], reps[0].config
		}
		reps = append(reps, h.startMgmt(id, o))
	}
	if balancing {
		waitReplicaSet(h.t, reps, ids)
	}
	return reps
}

// waitReplicaSet waits until every given replica sees exactly the replica ids.
func waitReplicaSet(t *testing.T, reps []*mgmt, ids []string) {
	t.Helper()
	want := strings.Join(sortedCopy(ids), ",")
	poll.Eventually(t, 20*time.Second, "replicas see each other", func() error {
		for _, r := range reps {
			st, err := r.stat()
			if err != nil {
				return err
			}
			var got []string
			for _, x := range st.HA.Replicas {
				got = append(got, x.ID)
			}
			if g := strings.Join(sortedCopy(got), ","); g != want {
				return fmt.Errorf("%s sees replicas %s, want %s", r.name, g, want)
			}
		}
		return nil
	})
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// owners computes each cluster's owning replica id with the product's assignment
// (rendezvous hashing with bounded load).
func owners(clusters, ids []string) map[string]string {
	reps := make([]ha.Replica, len(ids))
	for i, id := range ids {
		reps[i] = ha.Replica{ID: id}
	}
	sorted := append([]string(nil), clusters...)
	sort.Strings(sorted)
	out := map[string]string{}
	for c, r := range ha.Assign(sorted, reps) {
		out[c] = r.ID
	}
	return out
}

// placement returns, for every cluster connected (push and pull) to one of reps, the id of
// the replica holding it, and an error if a cluster is connected to several.
func placement(reps []*mgmt) (map[string]string, map[string]time.Time, error) {
	at := map[string]string{}
	since := map[string]time.Time{}
	for _, r := range reps {
		st, err := r.stat()
		if err != nil {
			return nil, nil, err
		}
		for c, conn := range st.Connections {
			if conn.Push == 0 || conn.Pull == 0 {
				continue
			}
			if prev, dup := at[c]; dup {
				return nil, nil, fmt.Errorf("cluster %s connected to %s and %s", c, prev, st.HA.Replica)
			}
			at[c], since[c] = st.HA.Replica, conn.Since
		}
	}
	return at, since, nil
}

// placedAsOwned is nil when every cluster is connected to exactly its owner.
func placedAsOwned(reps []*mgmt, want map[string]string) error {
	at, _, err := placement(reps)
	if err != nil {
		return err
	}
	var wrong []string
	for c, o := range want {
		if at[c] != o {
			wrong = append(wrong, fmt.Sprintf("%s on %q, owner %s", c, at[c], o))
		}
	}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		return fmt.Errorf("%d clusters misplaced: %s", len(wrong), strings.Join(wrong, "; "))
	}
	return nil
}

// twoPerReplica names four clusters, two owned by each of the two replicas.
func twoPerReplica(ids []string) []string {
	var clusters []string
	per := map[string]int{}
	for i := 0; len(clusters) < 4; i++ {
		c := fmt.Sprintf("cluster-%d", i)
		if o := owners([]string{c}, ids)[c]; per[o] < 2 {
			per[o]++
			clusters = append(clusters, c)
		}
	}
	return clusters
}

// A replica holding agents is killed (kill -9, Redis intact): its agents come back through
// the surviving replica, which serves the same outputs: no agent's output hash changes, no
// version goes backwards, and changes keep flowing.
func TestHAReplicaKilled(t *testing.T) {
	rs := redistest.Start(t)
	h := newHarness(t)
	ids := []string{"replica-1", "replica-2"}
	clusters := twoPerReplica(ids)
	own := owners(clusters, ids)
	reps := startReplicas(h, rs.Addr(), ids, clusters, true)
	r1, r2 := reps[0], reps[1]
	// Every agent is configured with replica 1's address; balancing redirects two to replica 2.
	var agents []*agent
	for i, c := range clusters {
		a := h.startAgentAt(c, r1.relay, r1.dataDir)
		writeFile(t, filepath.Join(a.discovery, "svc.yaml"), serviceYAML(fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.%d.0.1", i+1), 8080))
		agents = append(agents, a)
	}
	poll.Eventually(t, 30*time.Second, "agents on their owners", func() error { return placedAsOwned(reps, own) })
	poll.Eventually(t, 30*time.Second, "every service everywhere", func() error {
		for _, a := range agents {
			for i := range clusters {
				if err := outputHas(t, a, seKey(fmt.Sprintf("svc-%d", i))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	poll.Eventually(t, 10*time.Second, "in sync on their owners", func() error {
		for _, r := range reps {
			var mine []string
			for c, o := range own {
				if o == r.name {
					mine = append(mine, c)
				}
			}
			if err := r.allInSync(mine...); err != nil {
				return err
			}
		}
		return nil
	})
	// Each of the two agents replica 2 owns was redirected once or twice (push and pull).
	if v := metricSum(t, r1.admin, "meshrelay_relay_redirects_total"); v < 2 {
		t.Fatalf("replica-1 redirected %v streams, want at least 2", v)
	}
	before := map[string]haAgentStatus{}
	for _, a := range agents {
		st, err := agentStat(a)
		if err != nil {
			t.Fatal(err)
		}
		before[a.cluster] = st
	}

	r2.p.Kill()
	killed := time.Now()
	poll.Eventually(t, 30*time.Second, "replica-2's agents back on replica-1", func() error {
		for _, a := range agents {
			st, err := agentStat(a)
			if err != nil {
				return err
			}
			if !st.Connected || st.Server != r1.relay {
				return fmt.Errorf("agent %s: connected %v to %s", a.cluster, st.Connected, st.Server)
			}
		}
		return r1.allInSync(clusters...)
	})
	t.Logf("replica killed: its agents reconnected to the surviving replica and were in sync after %s", time.Since(killed).Round(time.Millisecond))
	for _, a := range agents {
		st, _ := agentStat(a)
		b := before[a.cluster]
		if st.OutputHash != b.OutputHash {
			t.Errorf("agent %s output changed when a replica died: %.12s → %.12s", a.cluster, b.OutputHash, st.OutputHash)
		}
		if st.OutputVersion < b.OutputVersion {
			t.Errorf("agent %s output version went back from %d to %d", a.cluster, b.OutputVersion, st.OutputVersion)
		}
		if st.OutputVersion != b.OutputVersion {
			t.Logf("agent %s output version moved from %d to %d with the same content", a.cluster, b.OutputVersion, st.OutputVersion)
		}
		if err := checkHistory(a, true); err != nil {
			t.Error(err)
		}
	}
	// The survivor translates every cluster now.
	writeFile(t, filepath.Join(agents[0].discovery, "svc-4.yaml"), serviceYAML("svc-4", "10.9.0.1", 8080))
	for _, a := range agents {
		poll.Eventually(t, 20*time.Second, "svc-4 reaches "+a.cluster, func() error { return outputHas(t, a, seKey("svc-4")) })
	}
	for _, a := range agents {
		if err := checkHistory(a, true); err != nil {
			t.Error(err)
		}
	}
}

// The leader replica is killed (kill -9): another replica leads within the lease, with a
// strictly higher lease epoch, and there is never more than one leader.
func TestHALeaderKilled(t *testing.T) {
	rs := redistest.Start(t)
	h := newHarness(t)
	ids := []string{"replica-1", "replica-2", "replica-3"}
	reps := startReplicas(h, rs.Addr(), ids, []string{"a"}, false)
	const lease = 2 * time.Second

	// leaderOf polls the live replicas: exactly one leads, and every one names it holder.
	leaderOf := func(live []*mgmt) (*mgmt, uint64, error) {
		var leader *mgmt
		var epoch uint64
		holders := map[string]bool{}
		for _, r := range live {
			st, err := r.stat()
			if err != nil {
				return nil, 0, err
			}
			if st.HA.Lease == nil {
				return nil, 0, fmt.Errorf("%s knows no lease", r.name)
			}
			holders[st.HA.Lease.Holder] = true
			if st.HA.Leader {
				if leader != nil {
					t.Errorf("two leaders at once: %s and %s", leader.name, r.name)
				}
				leader, epoch = r, st.HA.Lease.Epoch
			}
		}
		if leader == nil || len(holders) != 1 || !holders[leader.name] {
			return nil, 0, fmt.Errorf("no agreed leader (holders %v)", keysOf(holders))
		}
		return leader, epoch, nil
	}
	var leader *mgmt
	var epoch uint64
	poll.Eventually(t, 20*time.Second, "one leader", func() (err error) {
		leader, epoch, err = leaderOf(reps)
		return err
	})
	live := reps
	for round := 1; round <= 2; round++ {
		t.Logf("leader %s at lease epoch %d", leader.name, epoch)
		leader.p.Kill()
		killed := time.Now()
		var rest []*mgmt
		for _, r := range live {
			if r != leader {
				rest = append(rest, r)
			}
		}
		live = rest
		old := epoch
		poll.Eventually(t, 10*lease, "a new leader", func() (err error) {
			leader, epoch, err = leaderOf(live)
			return err
		})
		took := time.Since(killed)
		t.Logf("leader killed (round %d): %s leads at epoch %d after %s (lease %s)", round, leader.name, epoch, took.Round(time.Millisecond), lease)
		if epoch <= old {
			t.Fatalf("lease epoch did not grow: %d after %d", epoch, old)
		}
	}
}

// Agents are spread over the replicas by rendezvous hashing, each connected to its owner;
// a fourth replica takes over only the clusters it now owns and no other agent reconnects.
func TestHABalancing(t *testing.T) {
	const n = 30
	rs := redistest.Start(t)
	h := newHarness(t)
	ids := []string{"replica-1", "replica-2", "replica-3"}
	var clusters []string
	for i := range n {
		clusters = append(clusters, fmt.Sprintf("cluster-%02d", i))
	}
	reps := startReplicas(h, rs.Addr(), ids, clusters, true)
	own := owners(clusters, ids)
	var agents []*agent
	started := time.Now()
	for _, c := range clusters {
		agents = append(agents, h.launchAgent(c, reps[0].relay, reps[0].dataDir, "--log-level", "warn"))
	}
	for _, a := range agents {
		h.agentUp(a, 0)
	}
	poll.Every(t, 90*time.Second, 250*time.Millisecond, "every agent on its owner", func() error { return placedAsOwned(reps, own) })
	t.Logf("%d agents placed on their owners %s after starting them", n, time.Since(started).Round(time.Millisecond))
	poll.Every(t, 30*time.Second, 250*time.Millisecond, "all in sync", func() error {
		for _, r := range reps {
			var mine []string
			for c, o := range own {
				if o == r.name {
					mine = append(mine, c)
				}
			}
			if err := r.allInSync(mine...); err != nil {
				return err
			}
		}
		return nil
	})
	count := func(own map[string]string, ids []string) string {
		per := map[string]int{}
		for _, o := range own {
			per[o]++
		}
		var parts []string
		for _, id := range ids {
			parts = append(parts, fmt.Sprintf("%s=%d", id, per[id]))
		}
		return strings.Join(parts, " ")
	}
	t.Logf("balancing over 3 replicas: %s", count(own, ids))

	reconnects := func() map[string]float64 {
		m := map[string]float64{}
		for _, a := range agents {
			m[a.cluster] = mustMetric(t, a.admin, "meshrelay_agent_reconnects_total")
		}
		return m
	}
	_, sinceBefore, err := placement(reps)
	if err != nil {
		t.Fatal(err)
	}
	rcBefore := reconnects()

	// A fourth replica joins.
	ids4 := append(append([]string(nil), ids...), "replica-4")
	relay := h.addr()
	r4 := h.startMgmt("replica-4", mgmtOpts{relay: relay, config: reps[0].config, caFrom: reps[0], args: replicaFlags(rs.Addr(), "replica-4", relay, true)})
	joined := time.Now()
	reps = append(reps, r4)
	waitReplicaSet(t, reps, ids4)
	own4 := owners(clusters, ids4)
	var moving []string
	for _, c := range clusters {
		if own4[c] != own[c] {
			moving = append(moving, c) // mostly to the new replica; bounded load may shift a few more
		}
	}
	poll.Every(t, 60*time.Second, 250*time.Millisecond, "agents on their new owners", func() error { return placedAsOwned(reps, own4) })
	t.Logf("fourth replica: %d of %d agents moved to it in %s; balancing over 4 replicas: %s", len(moving), n, time.Since(joined).Round(time.Millisecond), count(own4, ids4))
	sleep(t, 2*time.Second) // late flaps would show now
	_, sinceAfter, err := placement(reps)
	if err != nil {
		t.Fatal(err)
	}
	rcAfter := reconnects()
	movingSet := keySet(moving)
	for _, c := range clusters {
		if movingSet[c] {
			if rcAfter[c] <= rcBefore[c] {
				t.Errorf("agent %s should have moved to replica-4 but never reconnected", c)
			}
			continue
		}
		if rcAfter[c] != rcBefore[c] || !sinceAfter[c].Equal(sinceBefore[c]) {
			t.Errorf("agent %s reconnected (%v → %v reconnects, connected since %s → %s) although its owner %s did not change",
				c, rcBefore[c], rcAfter[c], sinceBefore[c], sinceAfter[c], own[c])
		}
	}
	if err := placedAsOwned(reps, own4); err != nil {
		t.Fatal(err)
	}

	// Evenness, as DESIGN §6 asks ("spreads agents evenly"): 30 agents over 3 replicas should
	// give each 10±2.
	per := map[string]int{}
	for _, o := range own {
		per[o]++
	}
	for _, id := range ids {
		if per[id] < n/3-2 || per[id] > n/3+2 {
			t.Fatalf("--cluster-load-balancing is not even: %s on 3 replicas (want 10±2 each)", count(own, ids))
		}
	}
}
