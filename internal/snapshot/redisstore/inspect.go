package redisstore

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Topology is what a client sees of the Redis deployment behind it, for `meshrelay check`:
// whether it can fail over without stopping the management servers.
type Topology struct {
	Mode string // ModeSingle, ModeSentinel or ModeCluster
	// Primary is the address of the primary holding the keys of the prefix.
	Primary string
	// Replicas is the number of replicas in sync with Primary (state=online in its INFO
	// replication).
	Replicas int
	// Sentinel mode: how many sentinels were given, how many answered, their quorum, and
	// the primary's flags as they report them (master, s_down, o_down, ...).
	Sentinels, SentinelsAnswering, Quorum int
	MasterFlags                           string
	// Cluster mode: the hash slot of the prefix and cluster_state as its primary reports it.
	Slot         int64
	ClusterState string
	// Problems are why Redis cannot serve or cannot fail over; none when sound. A single
	// server without replicas is not one (it never fails over); a Sentinel or Cluster
	// primary without a replica in sync is: a failover has nothing to promote, and the
	// writes exist on one node only.
	Problems []string
}

// Inspect reports the topology of the Redis that client (from Dial(o)) reaches, for the
// keys under prefix. It asks the sentinels of o themselves in Sentinel mode. What it
// cannot learn is in Problems.
func Inspect(ctx context.Context, o Options, client redis.UniversalClient, prefix string) Topology {
	t := Topology{Mode: o.Mode()}
	k := newKeys(client, prefix)
	node := client
	switch t.Mode {
	case ModeSentinel:
		t.inspectSentinels(ctx, o)
	case ModeCluster:
		cc, ok := client.(*redis.ClusterClient)
		if !ok {
			t.problem("not a cluster client")
			return t
		}
		slot, err := cc.ClusterKeySlot(ctx, k.lockKey()).Result()
		if err != nil {
			t.problem("CLUSTER KEYSLOT: %v", err)
			return t
		}
		t.Slot = slot
		primary, err := cc.MasterForKey(ctx, k.lockKey())
		if err != nil {
			t.problem("find the primary of slot %d: %v", slot, err)
			return t
		}
		node = primary
		info, err := primary.ClusterInfo(ctx).Result()
		if err != nil {
			t.problem("CLUSTER INFO on %s: %v", primary.Options().Addr, err)
			return t
		}
		if t.ClusterState = infoField(info, "cluster_state"); t.ClusterState != "ok" {
			t.problem("cluster_state is %q on %s: the cluster does not serve every slot", t.ClusterState, primary.Options().Addr)
		}
	}
	info, err := node.Info(ctx, "replication").Result()
	if err != nil {
		t.problem("INFO replication: %v", err)
		return t
	}
	if t.Mode == ModeCluster {
		t.Primary = node.(*redis.Client).Options().Addr
	} else if t.Mode == ModeSingle {
		t.Primary = o.Addr
	}
	if role := infoField(info, "role"); role != "master" {
		t.problem("%s is a %s, not a primary: it refuses writes", t.Primary, role)
	}
	for line := range strings.Lines(info) {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			t.Replicas++
		}
	}
	if t.Mode != ModeSingle && t.Replicas == 0 {
		t.problem("no replica in sync with the primary %s: a failover has nothing to promote and every write exists on one node only", t.Primary)
	}
	return t
}

// inspectSentinels asks every sentinel of o about the primary.
func (t *Topology) inspectSentinels(ctx context.Context, o Options) {
	t.Sentinels = len(o.SentinelAddrs)
	named := map[string]int{}
	var flags []string
	var errs []string
	for _, addr := range o.SentinelAddrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, Password: o.SentinelPassword, TLSConfig: o.TLS,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout, MaxRetries: -1, DialerRetries: 1})
		m, err := sc.Master(ctx, o.MasterName).Result()
		_ = sc.Close()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
			continue
		}
		t.SentinelsAnswering++
		named[net.JoinHostPort(m["ip"], m["port"])]++
		if q, err := strconv.Atoi(m["quorum"]); err == nil && q > t.Quorum {
			t.Quorum = q
		}
		if !slices.Contains(flags, m["flags"]) {
			flags = append(flags, m["flags"])
		}
	}
	t.MasterFlags = strings.Join(flags, " | ")
	for addr, n := range named {
		if t.Primary == "" || n > named[t.Primary] {
			t.Primary = addr
		}
	}
	if len(named) > 1 {
		t.problem("the sentinels name different primaries (%v)", named)
	}
	switch {
	case t.SentinelsAnswering == 0:
		t.problem("no sentinel of %d answers about %s: %s", t.Sentinels, o.MasterName, strings.Join(errs, "; "))
	case t.SentinelsAnswering < t.Quorum:
		t.problem("%d of %d sentinels answer, fewer than their quorum %d: they cannot agree that the primary failed (%s)", t.SentinelsAnswering, t.Sentinels, t.Quorum, strings.Join(errs, "; "))
	}
	for _, f := range flags {
		for _, down := range []string{"s_down", "o_down"} {
			if strings.Contains(","+f+",", ","+down+",") {
				t.problem("the sentinels flag the primary %s %s", t.Primary, f)
			}
		}
	}
}

func (t *Topology) problem(format string, args ...any) {
	t.Problems = append(t.Problems, fmt.Sprintf(format, args...))
}

// String says what the topology is, e.g. "sentinel: primary 127.0.0.1:6379 with 1
// replica in sync; 3 of 3 sentinels answer (quorum 2), flags master".
func (t Topology) String() string {
	var b strings.Builder
	switch t.Mode {
	case ModeSentinel:
		fmt.Fprintf(&b, "sentinel: primary %s with %d replica(s) in sync; %d of %d sentinels answer (quorum %d), flags %s",
			orNone(t.Primary), t.Replicas, t.SentinelsAnswering, t.Sentinels, t.Quorum, orNone(t.MasterFlags))
	case ModeCluster:
		fmt.Fprintf(&b, "cluster: slot %d on primary %s with %d replica(s) in sync, cluster_state %s", t.Slot, orNone(t.Primary), t.Replicas, orNone(t.ClusterState))
	default:
		fmt.Fprintf(&b, "single server %s with %d replica(s) in sync (no failover)", orNone(t.Primary), t.Replicas)
	}
	if len(t.Problems) > 0 {
		b.WriteString("; " + strings.Join(t.Problems, "; "))
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
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
