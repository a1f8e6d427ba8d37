package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// Timings of the topologies, short so that a failover takes a few seconds.
const (
	// downAfter is the sentinels' down-after-milliseconds: a primary silent for this long
	// is subjectively down.
	downAfter = time.Second
	// failoverTimeout is the sentinels' failover-timeout (a failed failover is retried
	// after twice this).
	failoverTimeout = 3 * time.Second
	// nodeTimeout is the cluster-node-timeout of Cluster nodes: a primary unreachable for
	// this long is failed over.
	nodeTimeout = time.Second
	// readyTimeout bounds waiting for a topology to form and for a failover.
	readyTimeout = 30 * time.Second
)

// MasterName is the name the sentinels of StartSentinel monitor their primary under.
const MasterName = "mymaster"

// Sentinel is a primary and its replica, monitored by three sentinels (quorum 2).
type Sentinel struct {
	nodes            []*Server // the primary it started with, then the replica
	sentinels        []*Server
	password         string // of the data nodes
	sentinelPassword string
}

// StartSentinel starts a primary, a replica of it and three sentinels monitoring it (quorum
// 2, down-after-milliseconds 1000, failover-timeout 3000), each on a free loopback port in a
// t.TempDir(), waits until the replica is in sync and every sentinel knows the primary, the
// replica and the two other sentinels, and stops them all when the test ends. opts apply to
// the primary and the replica; WithPassword is also given to the sentinels (auth-pass).
// WithSentinelPassword protects the sentinels themselves.
func StartSentinel(t testing.TB, opts ...Option) *Sentinel {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Sentinel{password: cfg.password}
	primary := start(t, cfg)
	rcfg := cfg
	rcfg.args = append(slices.Clone(cfg.args), "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	replica := start(t, rcfg)
	s.nodes = []*Server{primary, replica}
	poll.Eventually(t, readyTimeout, "redistest: replica "+replica.Addr()+" in sync with "+primary.Addr(), func() error {
		if err := replica.query(t.Context(), func(c *redis.Client) error { return linkUp(t.Context(), c) }); err != nil {
			return err
		}
		// The primary's own view too: what `meshrelay check` counts (state=online).
		return primary.query(t.Context(), func(c *redis.Client) error {
			info, err := c.Info(t.Context(), "replication").Result()
			if err == nil && !strings.Contains(info, "state=online") {
				err = errors.New("the primary does not list its replica online yet")
			}
			return err
		})
	})

	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
		"sentinel down-after-milliseconds %[1]s %[3]d\n"+
		"sentinel failover-timeout %[1]s %[4]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		MasterName, primary.port, downAfter.Milliseconds(), failoverTimeout.Milliseconds())
	if cfg.password != "" {
		conf += fmt.Sprintf("sentinel auth-pass %s %s\n", MasterName, cfg.password)
	}
	scfg := config{sentinelConf: conf, password: cfg.sentinelPassword, tls: cfg.tls}
	s.sentinelPassword = cfg.sentinelPassword
	for range 3 {
		s.sentinels = append(s.sentinels, start(t, scfg))
	}
	for _, sen := range s.sentinels {
		poll.Eventually(t, readyTimeout, "redistest: sentinel "+sen.Addr()+" knows the primary, the replica and the other sentinels", func() error {
			return s.askSentinel(t.Context(), sen, func(sc *redis.SentinelClient) error {
				m, err := sc.Master(t.Context(), MasterName).Result()
				if err != nil {
					return err
				}
				if m["flags"] != "master" || m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
					return fmt.Errorf("SENTINEL MASTER: flags %q, %s replicas, %s other sentinels", m["flags"], m["num-slaves"], m["num-other-sentinels"])
				}
				return nil
			})
		})
	}
	return s
}

// WithSentinelPassword makes the sentinels of StartSentinel require password (their
// requirepass); SentinelClient and FailoverClient send it.
func WithSentinelPassword(password string) Option {
	return func(c *config) { c.sentinelPassword = password }
}

// SentinelAddrs are the sentinels' host:port addresses.
func (s *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, sen := range s.sentinels {
		out[i] = sen.Addr()
	}
	return out
}

// Sentinels are the sentinel processes (to stop some of them).
func (s *Sentinel) Sentinels() []*Server { return s.sentinels }

// Nodes are the data nodes: the primary it started with, then the replica.
func (s *Sentinel) Nodes() []*Server { return s.nodes }

// Node is the data node listening on addr (nil if none).
func (s *Sentinel) Node(addr string) *Server {
	for _, n := range s.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// askSentinel runs f with a new client of sentinel sen, closed when f returns.
func (s *Sentinel) askSentinel(ctx context.Context, sen *Server, f func(*redis.SentinelClient) error) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: sen.Addr(), Password: s.sentinelPassword, TLSConfig: sen.tlsConf,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer c.Close()
	return f(c)
}

// FailoverClient is a go-redis Sentinel client of the primary, closed when the test ends.
func (s *Sentinel) FailoverClient(t testing.TB) *redis.Client {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: s.SentinelAddrs(),
		SentinelPassword: s.sentinelPassword, Password: s.password, TLSConfig: s.nodes[0].tlsConf})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Primary is the primary's address as the running sentinels report it; it fails the test
// when they disagree or fewer than a quorum (2) answer.
func (s *Sentinel) Primary(t testing.TB) string {
	t.Helper()
	addr, err := s.primary(t)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return addr
}

func (s *Sentinel) primary(t testing.TB) (string, error) {
	seen := map[string]int{}
	var errs []error
	for _, sen := range s.sentinels {
		if !sen.running() {
			continue
		}
		var a []string
		err := s.askSentinel(t.Context(), sen, func(sc *redis.SentinelClient) (err error) {
			a, err = sc.GetMasterAddrByName(t.Context(), MasterName).Result()
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("sentinel %s: %w", sen.Addr(), err))
			continue
		}
		seen[strings.Join(a, ":")]++
	}
	if len(seen) > 1 {
		return "", fmt.Errorf("the sentinels disagree on the primary: %v", seen)
	}
	for a, n := range seen {
		if n >= 2 {
			return a, nil
		}
	}
	return "", fmt.Errorf("fewer than 2 sentinels name the primary (%v): %w", seen, errors.Join(errs...))
}

// KillPrimary kills (SIGKILL) the primary the sentinels name and returns it; Restart brings
// it back (the sentinels then make it a replica of the new primary).
func (s *Sentinel) KillPrimary(t testing.TB) *Server {
	t.Helper()
	addr := s.Primary(t)
	n := s.Node(addr)
	if n == nil {
		t.Fatalf("redistest: the sentinels name %s, not a node of this topology", addr)
	}
	n.Stop()
	return n
}

// WaitFailover waits until the sentinels name a primary other than old and that node
// answers as a primary, and returns its address.
func (s *Sentinel) WaitFailover(t testing.TB, old string) string {
	t.Helper()
	var addr string
	poll.Eventually(t, readyTimeout, "redistest: sentinels fail over from "+old, func() error {
		a, err := s.primary(t)
		if err != nil {
			return err
		}
		if a == old {
			return errors.New("the sentinels still name " + old)
		}
		n := s.Node(a)
		if n == nil {
			return fmt.Errorf("the sentinels name %s, not a node of this topology", a)
		}
		var role []any
		err = n.query(t.Context(), func(c *redis.Client) (err error) {
			role, err = c.Do(t.Context(), "ROLE").Slice()
			return err
		})
		if err != nil {
			return err
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s answers ROLE %v", a, role)
		}
		addr = a
		return nil
	})
	return addr
}

// WaitReplicas waits until the primary the sentinels name has n replicas in sync (as after
// Restart of a killed primary).
func (s *Sentinel) WaitReplicas(t testing.TB, n int) {
	t.Helper()
	poll.Eventually(t, readyTimeout, fmt.Sprintf("redistest: %d replicas in sync", n), func() error {
		a, err := s.primary(t)
		if err != nil {
			return err
		}
		up := 0
		for _, node := range s.nodes {
			if node.Addr() == a || !node.running() {
				continue
			}
			var info string
			err := node.query(t.Context(), func(c *redis.Client) (err error) {
				info, err = c.Info(t.Context(), "replication").Result()
				return err
			})
			if err == nil && infoField(info, "master_port") == strings.TrimPrefix(a, "127.0.0.1:") && infoField(info, "master_link_status") == "up" {
				up++
			}
		}
		if up < n {
			return fmt.Errorf("%d of %d replicas of %s in sync", up, n, a)
		}
		return nil
	})
}

// linkUp is nil when the replica c is in sync with its primary.
func linkUp(ctx context.Context, c *redis.Client) error {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if st := infoField(info, "master_link_status"); st != "up" {
		return fmt.Errorf("master_link_status %q", st)
	}
	return nil
}

// infoField is the value of field in the text of INFO or CLUSTER INFO.
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// Cluster is a Redis Cluster of three primaries with one replica each.
type Cluster struct {
	nodes    []*Server
	password string
}

// StartCluster starts six cluster nodes (cluster-node-timeout 1000 ms), each on a free
// loopback port in a t.TempDir(), makes them a cluster of three primaries with one replica
// each (redis-cli --cluster create --cluster-replicas 1), waits until every node reports
// cluster_state:ok and every replica is in sync, and stops them all when the test ends.
// opts apply to every node.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	cfg.cluster = true
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: redis-cli is not on PATH (%v); install it, e.g. apt-get install -y redis-server", err)
	}
	c := &Cluster{password: cfg.password}
	for range 6 {
		c.nodes = append(c.nodes, start(t, cfg))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if cfg.tls != nil {
		args = append(args, "--tls", "--cacert", cfg.tls.CA)
	}
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.WaitDelay = time.Second
	if cfg.password != "" {
		cmd.Env = append(cmd.Environ(), "REDISCLI_AUTH="+cfg.password)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v; output:\n%s", err, out)
	}
	c.waitOK(t)
	return c
}

// Addrs are the nodes' host:port addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Nodes are the cluster's nodes.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Node is the node listening on addr (nil if none).
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// ClusterClient is a go-redis cluster client, closed when the test ends. It reloads the
// slot map every second when used (go-redis's default of a minute would keep sending a
// failed-over slot to the dead node).
func (c *Cluster) ClusterClient(t testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Password: c.password, ClusterStateReloadInterval: time.Second, TLSConfig: c.nodes[0].tlsConf,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Slot is the hash slot of key, as the cluster computes it (CLUSTER KEYSLOT).
func (c *Cluster) Slot(t testing.TB, key string) int64 {
	t.Helper()
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		var slot int64
		err := n.query(t.Context(), func(c *redis.Client) (err error) {
			slot, err = c.ClusterKeySlot(t.Context(), key).Result()
			return err
		})
		if err != nil {
			t.Fatalf("redistest: CLUSTER KEYSLOT %s on %s: %v", key, n.Addr(), err)
		}
		return slot
	}
	t.Fatal("redistest: no cluster node runs")
	return 0
}

// PrimaryOf is the node that serves key's slot, as a running node reports it.
func (c *Cluster) PrimaryOf(t testing.TB, key string) *Server {
	t.Helper()
	n, err := c.primaryOf(t, c.Slot(t, key))
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return n
}

func (c *Cluster) primaryOf(t testing.TB, slot int64) (*Server, error) {
	var errs []error
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		var slots []redis.ClusterSlot
		err := n.query(t.Context(), func(c *redis.Client) (err error) {
			slots, err = c.ClusterSlots(t.Context()).Result()
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("CLUSTER SLOTS on %s: %w", n.Addr(), err))
			continue
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				if p := c.Node(r.Nodes[0].Addr); p != nil {
					return p, nil
				}
				return nil, fmt.Errorf("slot %d is served by %s, not a node of this cluster", slot, r.Nodes[0].Addr)
			}
		}
		return nil, fmt.Errorf("%s reports no node for slot %d", n.Addr(), slot)
	}
	return nil, fmt.Errorf("no running node answers CLUSTER SLOTS: %w", errors.Join(errs...))
}

// KillPrimaryOf kills (SIGKILL) the primary serving key's slot and returns it; Restart
// brings it back as a replica of the node that took over.
func (c *Cluster) KillPrimaryOf(t testing.TB, key string) *Server {
	t.Helper()
	n := c.PrimaryOf(t, key)
	n.Stop()
	return n
}

// WaitFailover waits until a running node other than old serves key's slot and every
// running node reports cluster_state:ok, and returns the new primary.
func (c *Cluster) WaitFailover(t testing.TB, key string, old *Server) *Server {
	t.Helper()
	slot := c.Slot(t, key)
	var p *Server
	poll.Eventually(t, readyTimeout, "redistest: cluster fails over slot "+strconv.FormatInt(slot, 10)+" from "+old.Addr(), func() error {
		n, err := c.primaryOf(t, slot)
		if err != nil {
			return err
		}
		if n == old || !n.running() {
			return fmt.Errorf("slot %d still served by %s", slot, n.Addr())
		}
		if err := c.stateOK(t); err != nil {
			return err
		}
		p = n
		return nil
	})
	return p
}

// waitOK waits until every running node reports cluster_state:ok and knows all six nodes,
// and every replica is in sync.
func (c *Cluster) waitOK(t testing.TB) {
	t.Helper()
	poll.Eventually(t, readyTimeout, "redistest: cluster formed", func() error {
		if err := c.stateOK(t); err != nil {
			return err
		}
		replicas := 0
		for _, n := range c.nodes {
			var info string
			err := n.query(t.Context(), func(c *redis.Client) (err error) {
				info, err = c.Info(t.Context(), "replication").Result()
				return err
			})
			if err != nil {
				return err
			}
			if infoField(info, "role") != "slave" {
				// The primary's own view too: what `meshrelay check` counts (state=online).
				if online := strings.Count(info, "state=online"); online != 1 {
					return fmt.Errorf("primary %s: %d replicas online", n.Addr(), online)
				}
				continue
			}
			if st := infoField(info, "master_link_status"); st != "up" {
				return fmt.Errorf("replica %s: master_link_status %q", n.Addr(), st)
			}
			replicas++
		}
		if replicas != 3 {
			return fmt.Errorf("%d replicas, want 3", replicas)
		}
		return nil
	})
}

// stateOK is nil when every running node reports cluster_state:ok and knows all nodes.
func (c *Cluster) stateOK(t testing.TB) error {
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		var info string
		err := n.query(t.Context(), func(c *redis.Client) (err error) {
			info, err = c.ClusterInfo(t.Context()).Result()
			return err
		})
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.Addr(), err)
		}
		if st, known := infoField(info, "cluster_state"), infoField(info, "cluster_known_nodes"); st != "ok" || known != strconv.Itoa(len(c.nodes)) {
			return fmt.Errorf("%s: cluster_state %q, %s known nodes", n.Addr(), st, known)
		}
	}
	return nil
}
