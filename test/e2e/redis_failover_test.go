package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// lockKey is the key of the global lock under the default prefix: every key of the store
// shares its hash slot.
const lockKey = "meshrelay:{meshrelay}:activelock"

// redisTopology is a replicated Redis the servers connect to, and how to fail it over.
type redisTopology struct {
	flags  []string              // the servers' connection flags
	client redis.UniversalClient // the test's own client, following the failover
	// failover kills (SIGKILL) the primary that holds the store's slot, and returns when a
	// replica serves it.
	failover func()
}

// Through Sentinel: the Redis primary is killed during a stream of applies to the active
// server. The servers follow Sentinel to the promoted replica, agents keep receiving, every
// acknowledged apply is in the store and reaches every agent, and there is one writer:
// every epoch agents applied belongs to one server, and no agent's epoch goes back.
func TestRedisSentinelFailoverKeepsAppliedConfig(t *testing.T) {
	s := redistest.StartSentinel(t)
	redisFailover(t, redisTopology{
		flags:  []string{"--redis-sentinel-addresses", strings.Join(s.SentinelAddrs(), ","), "--redis-master-name", redistest.MasterName},
		client: s.FailoverClient(t),
		failover: func() {
			old := s.KillPrimary(t)
			s.WaitFailover(t, old.Addr())
		},
	})
}

// The same through a Redis Cluster, killing the primary of the slot that holds the lock and
// every other key of the store.
func TestRedisClusterFailoverKeepsAppliedConfig(t *testing.T) {
	c := redistest.StartCluster(t)
	redisFailover(t, redisTopology{
		flags:  []string{"--redis-cluster-addresses", strings.Join(c.Addrs(), ",")},
		client: c.ClusterClient(t),
		failover: func() {
			old := c.KillPrimaryOf(t, lockKey)
			c.WaitFailover(t, lockKey, old)
		},
	})
}

// applyResult is one apply of the stream.
type applyResult struct {
	name string
	at   time.Time
	err  string // "" when acknowledged
}

func redisFailover(t *testing.T, topo redisTopology) {
	h := newHarness(t)
	clusters := []string{"a", "b"}
	args := func(name string) []string {
		return append(append([]string{"--mgmt-cluster-name", name}, topo.flags...), haServerFlags...)
	}
	west := h.startMgmt("west", mgmtOpts{clusters: clusters, args: args("west")})
	east := h.startMgmt("east", mgmtOpts{clusters: clusters, caFrom: west, args: args("east")})
	a := h.startAgentAt("a", west.relay, west.dataDir)
	b := h.startAgentAt("b", west.relay, west.dataDir)
	writeFile(t, filepath.Join(a.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 8080))
	poll.Eventually(t, 30*time.Second, "blue reaches b", func() error { return outputHas(t, b, seKey("service-blue")) })

	// A stream of applies to the active server until stop.
	ctx, stop := context.WithCancel(t.Context())
	var mu sync.Mutex // guards results
	var results []applyResult
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			name := fmt.Sprintf("chg-%03d", i)
			f := filepath.Join(h.dir, name+".yaml")
			if err := os.WriteFile(f, []byte(extraVD(name, "service-blue")), 0o644); err != nil {
				return
			}
			_, errOut, err := cli(t, "apply", "-f", f, "--server", west.admin)
			r := applyResult{name: name, at: time.Now()}
			if err != nil {
				r.err = strings.TrimSpace(errOut) + " (" + err.Error() + ")"
			}
			mu.Lock()
			results = append(results, r)
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	acked := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.err == "" && r.at.After(after) {
				n++
			}
		}
		return n
	}
	poll.Until(t, 20*time.Second, "3 applies acknowledged", func() bool { return acked(time.Time{}) >= 3 })

	killed := time.Now()
	topo.failover()
	promoted := time.Since(killed)
	poll.Until(t, 30*time.Second, "3 applies acknowledged after the failover", func() bool { return acked(killed) >= 3 })
	writing := time.Since(killed)
	stop()
	wg.Wait()

	var ok, refused []applyResult
	for _, r := range results {
		if r.err == "" {
			ok = append(ok, r)
		} else {
			refused = append(refused, r)
		}
	}
	t.Logf("primary killed: replica promoted after %v, applies acknowledged again after %v; %d applies acknowledged, %d refused",
		promoted.Round(time.Millisecond), writing.Round(time.Millisecond), len(ok), len(refused))
	if n := len(refused); n > 0 { // refused loudly while no primary answered
		t.Logf("refused from %v to %v after the kill, e.g. %s: %s", refused[0].at.Sub(killed).Round(time.Millisecond),
			refused[n-1].at.Sub(killed).Round(time.Millisecond), refused[n-1].name, refused[n-1].err)
	}

	// Every acknowledged change is in the store, at once (not only after a restore), and
	// reaches every agent.
	store := redisstore.New(topo.client, "")
	cfg, _, err := store.ListConfig(t.Context())
	if err != nil {
		t.Fatalf("read the stored configuration: %v", err)
	}
	stored := map[string]bool{}
	for _, r := range cfg {
		stored[r.Key] = true
	}
	var lost []string
	for _, r := range ok {
		if !stored["VirtualDestination/default/"+r.name] {
			lost = append(lost, r.name)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged applies are not in the store after the failover: %v", len(lost), len(ok), lost)
	}
	for _, ag := range []*agent{a, b} {
		poll.Eventually(t, 30*time.Second, "every acknowledged change reaches "+ag.cluster, func() error {
			for _, r := range ok {
				if err := outputHas(t, ag, seKey(r.name)); err != nil {
					return err
				}
			}
			return nil
		})
		if err := checkHistory(ag, true); err != nil {
			t.Error(err)
		}
	}

	// One writer: each epoch was held by one server, and every epoch an agent applied was
	// one a server held.
	holders := map[uint64]map[string]bool{}
	for _, m := range []*mgmt{west, east} {
		for _, e := range activeEpochs(t, m.p) {
			if holders[e] == nil {
				holders[e] = map[string]bool{}
			}
			holders[e][m.name] = true
		}
	}
	for e, hs := range holders {
		if len(hs) > 1 {
			t.Errorf("epoch %d was held by %d servers: %v", e, len(hs), keysOf(hs))
		}
	}
	for _, ag := range []*agent{a, b} {
		hist, err := appliedHistory(ag)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range hist {
			if holders[x.Epoch] == nil {
				t.Errorf("agent %s applied an output of epoch %d, which no server held (%v)", ag.cluster, x.Epoch, holders)
				break
			}
		}
	}
	t.Logf("epochs held: %v", holders)
}

// activeEpochLine matches the server's log line of a lock it holds.
var activeEpochLine = regexp.MustCompile(`msg="global lock" .*holder=(\S+) epoch=(\d+) active=true`)

// raisedEpochLine matches the line of a lock its holder raised.
var raisedEpochLine = regexp.MustCompile(`msg="global lock epoch raised above what agents or earlier locks hold" .*epoch=(\d+)`)

// activeEpochs are the epochs under which the server of p held the global lock, from its log.
func activeEpochs(t *testing.T, p *proc.Process) []uint64 {
	t.Helper()
	f, err := os.Open(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m []string
		if m = activeEpochLine.FindStringSubmatch(sc.Text()); m != nil {
			m = m[1:]
		} else if m = raisedEpochLine.FindStringSubmatch(sc.Text()); m == nil {
			continue
		}
		e, err := strconv.ParseUint(m[len(m)-1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
