package failoverbench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
)

// masterName is the name the sentinels of the redis-failover scenario monitor.
const masterName = "meshrelay"

// sentinelGroup is a Redis primary, its replica and three sentinels, as child processes.
type sentinelGroup struct {
	primary, replica *bench.Child
	primaryAt        string
	sentinels        []string // host:port
}

// redisNode starts a redis-server on a free loopback port with its data in dir.
func (f *failoverRun) redisNode(name string, extra ...string) (*bench.Child, string, error) {
	addr, err := bench.Loopback()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(f.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", err
	}
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--dir", dir, "--appendonly", "no"}, extra...)
	c, err := f.p.StartBinary(bin, name, args...)
	return c, addr, err
}

// redisDo runs one command on the Redis (or sentinel) at addr.
func redisDo(ctx context.Context, addr string, args ...any) (any, error) {
	c, err := redisstore.Dial(redisstore.Options{Addr: addr, Timeout: time.Second, MaxRetries: -1})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.Do(ctx, args...).Result()
}

// startSentinel starts the primary, the replica and three sentinels (quorum 2, primary down
// after 1 s, failover timeout 3 s), and waits until every sentinel knows the replica and the
// other sentinels.
func (f *failoverRun) startSentinel(ctx context.Context) (*sentinelGroup, error) {
	g := &sentinelGroup{}
	var err error
	if g.primary, g.primaryAt, err = f.redisNode("redis-primary", "--repl-diskless-sync-delay", "0"); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(g.primaryAt)
	if g.replica, _, err = f.redisNode("redis-replica", "--replicaof", host, port); err != nil {
		return nil, err
	}
	for i := range 3 {
		addr, err := bench.Loopback()
		if err != nil {
			return nil, err
		}
		_, sport, _ := net.SplitHostPort(addr)
		dir := filepath.Join(f.dir, fmt.Sprintf("sentinel-%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %[3]s 1000\nsentinel failover-timeout %[3]s 3000\n",
			sport, dir, masterName, host, port)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			return nil, err
		}
		if _, err := f.p.StartBinary(bin, fmt.Sprintf("sentinel-%d", i), conf, "--sentinel"); err != nil {
			return nil, err
		}
		g.sentinels = append(g.sentinels, addr)
	}
	err = bench.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		for _, s := range g.sentinels {
			reps, err := redisDo(ctx, s, "SENTINEL", "REPLICAS", masterName)
			if err != nil {
				return false, nil
			}
			others, err := redisDo(ctx, s, "SENTINEL", "SENTINELS", masterName)
			if err != nil {
				return false, nil
			}
			if r, _ := reps.([]any); len(r) != 1 {
				return false, nil
			}
			if o, _ := others.([]any); len(o) != 2 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("sentinels: %w", err)
	}
	f.redisFlags = []string{"--redis-sentinel-addresses", strings.Join(g.sentinels, ","), "--redis-master-name", masterName}
	return g, nil
}

// promotedPrimary is the primary a majority of the sentinels names, once it answers ROLE
// as a primary; "" until then.
func (g *sentinelGroup) promotedPrimary(ctx context.Context) string {
	votes := map[string]int{}
	for _, s := range g.sentinels {
		v, err := redisDo(ctx, s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)
		if a, ok := v.([]any); err == nil && ok && len(a) == 2 {
			votes[net.JoinHostPort(fmt.Sprint(a[0]), fmt.Sprint(a[1]))]++
		}
	}
	for addr, n := range votes {
		if n < 2 || addr == g.primaryAt {
			continue
		}
		role, err := redisDo(ctx, addr, "ROLE")
		if r, ok := role.([]any); err == nil && ok && len(r) > 0 && r[0] == "master" {
			return addr
		}
	}
	return ""
}

// applyMarker applies marker id through the server's admin API.
func (f *failoverRun) applyMarker(ctx context.Context, s *relayServer, id string) error {
	token, err := tokenfile.Read(filepath.Join(s.data, configapi.TokenFileName))
	if err != nil {
		return err
	}
	c, err := configapi.NewClient("http://"+s.admin, token, "") // --admin-plaintext
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := c.Apply(ctx, "bench", []byte(sim.MarkerRouteTable("bench-redis-failover", id)))
	if err == nil && len(res.Errors) > 0 {
		err = fmt.Errorf("apply refused: %s", strings.Join(res.Errors, "; "))
	}
	return err
}

// redisFailover: the server's Redis is a Sentinel group; its primary is killed (SIGKILL).
// From the kill: the sentinels promote the replica, the server writes again (an apply is
// acknowledged: it went through the lock's fence on the new primary), and that change
// reaches every agent.
func (f *failoverRun) redisFailover(ctx context.Context) FailoverRun {
	if err := f.setup(); err != nil {
		return failed(err)
	}
	g, err := f.startSentinel(ctx)
	if err != nil {
		return failed(err)
	}
	relay, err := bench.Loopback()
	if err != nil {
		return failed(err)
	}
	s, err := f.startServer(ctx, "server", relay, "--mgmt-cluster-name", "bench")
	if err != nil {
		return failed(err)
	}
	f.servers = append(f.servers, s)
	if err := f.startSim(relay); err != nil {
		return failed(err)
	}
	if err := f.waitSynced(ctx); err != nil {
		return failed(fmt.Errorf("initial sync: %w", err))
	}
	if err := f.applyMarker(ctx, s, "before"); err != nil {
		return failed(fmt.Errorf("apply before the kill: %w", err))
	}
	time.Sleep(2 * time.Second)
	n := f.o.World.Clusters
	res := FailoverRun{Affected: n}

	t0 := time.Now()
	g.primary.Kill()
	err = bench.WaitFor(ctx, f.o.Timeout, 20*time.Millisecond, func() (bool, error) {
		return g.promotedPrimary(ctx) != "", nil
	})
	if err != nil {
		res.Error = fmt.Sprintf("sentinels promote the replica: %v", err)
		return res
	}
	res.PromotedMs = float64(time.Since(t0)) / 1e6
	var id string
	var last error
	err = bench.WaitFor(ctx, f.o.Timeout, 50*time.Millisecond, func() (bool, error) {
		id = "after-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		last = f.applyMarker(ctx, s, id)
		return last == nil, nil
	})
	if err != nil {
		res.Error = fmt.Sprintf("the server writes again: %v (last apply: %v)", err, last)
		return res
	}
	res.WritingMs = float64(time.Since(t0)) / 1e6
	var got map[string]int64
	err = bench.WaitFor(ctx, f.o.Timeout, 20*time.Millisecond, func() (bool, error) {
		if f.sim.Exited() {
			return false, fmt.Errorf("simulated agents exited: %s", bench.LogTail(f.sim, 2000))
		}
		got = nil
		if err := bench.GetJSON(ctx, "http://"+f.simAPI+"/markers?id="+id, &got); err != nil {
			return false, err
		}
		return len(got) >= n, nil
	})
	if err != nil {
		res.Error = fmt.Sprintf("the change applied after the kill reached %d of %d agents: %v", len(got), n, err)
		return res
	}
	var lastAt int64
	for _, at := range got {
		lastAt = max(lastAt, at)
	}
	res.ChangeReachedMs = float64(time.Unix(0, lastAt).Sub(t0)) / 1e6
	res.InSyncMs = res.ChangeReachedMs
	res.ContentChanges, res.EpochOnly, res.FewerResources, _ = f.outputChanges(ctx, t0)
	return res
}
