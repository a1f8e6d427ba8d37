package redisstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// DefaultPrefix is the key prefix used when a constructor is given an empty one.
const DefaultPrefix = "meshrelay"

// The connection modes of Options.
const (
	ModeSingle   = "single"   // one Redis server (Addr)
	ModeSentinel = "sentinel" // the primary that Redis Sentinel names (SentinelAddrs, MasterName)
	ModeCluster  = "cluster"  // a Redis Cluster (ClusterAddrs)
)

// clusterReload is how often a Cluster client reloads the slot map while it is used:
// go-redis's default of a minute would keep sending the slot of a failed-over primary to
// the dead node (it reloads on MOVED, not on connection errors).
const clusterReload = time.Second

// Options configure the client Dial builds. Exactly one mode is given: Addr (one server),
// SentinelAddrs with MasterName (Sentinel), or ClusterAddrs (Cluster). Error messages name
// the command-line flags of the fields (--redis-address, ...), which every command that
// connects to Redis shares.
type Options struct {
	// Addr is host:port of a single Redis server.
	Addr string
	// SentinelAddrs are host:port of Redis Sentinels that monitor the primary MasterName;
	// the client asks them for the current primary, and again after a failover.
	SentinelAddrs []string
	MasterName    string
	// SentinelPassword authenticates to the sentinels (their requirepass); Password is the
	// data nodes'. It is ignored in the other modes.
	SentinelPassword string
	// ClusterAddrs are host:port of some nodes of a Redis Cluster (the client discovers the
	// others).
	ClusterAddrs []string
	// Password is the AUTH password of the Redis servers ("" for none).
	Password string
	// TLS, when not nil, connects over TLS with this configuration, to every node (and
	// sentinel). An empty ServerName verifies each node's certificate against the host it
	// is dialed at.
	TLS *tls.Config
	// Timeout bounds each dial, read and write (go-redis's defaults when zero).
	Timeout time.Duration
	// MaxRetries is how many times a failed command is retried: go-redis's MaxRetries
	// (0 for its default of 3, -1 for none).
	MaxRetries int
	// DialerRetries is how many times a failed dial is retried: go-redis's DialerRetries
	// (0 for its default of 5).
	DialerRetries int
}

// Mode is the connection mode of o (ModeSingle, ModeSentinel or ModeCluster), or "" when
// no mode, or more than one, is given.
func (o Options) Mode() string {
	var modes []string
	if o.Addr != "" {
		modes = append(modes, ModeSingle)
	}
	if len(o.SentinelAddrs) > 0 {
		modes = append(modes, ModeSentinel)
	}
	if len(o.ClusterAddrs) > 0 {
		modes = append(modes, ModeCluster)
	}
	if len(modes) != 1 {
		return ""
	}
	return modes[0]
}

// Given reports whether any connection mode is given (valid or not).
func (o Options) Given() bool {
	return o.Addr != "" || len(o.SentinelAddrs) > 0 || len(o.ClusterAddrs) > 0 || o.MasterName != ""
}

// Validate checks that exactly one connection mode is given, completely, with well-formed
// addresses.
func (o Options) Validate() error {
	var given []string
	if o.Addr != "" {
		given = append(given, "--redis-address")
	}
	if len(o.SentinelAddrs) > 0 {
		given = append(given, "--redis-sentinel-addresses")
	}
	if len(o.ClusterAddrs) > 0 {
		given = append(given, "--redis-cluster-addresses")
	}
	var errs []error
	switch len(given) {
	case 0:
		errs = append(errs, errors.New("no Redis given: set --redis-address (one server), --redis-sentinel-addresses with --redis-master-name (Sentinel) or --redis-cluster-addresses (Cluster)"))
	case 1:
	default:
		errs = append(errs, fmt.Errorf("%s exclude each other: give one Redis connection mode (one server, Sentinel or Cluster)", strings.Join(given, " and ")))
	}
	if len(o.SentinelAddrs) > 0 && o.MasterName == "" {
		errs = append(errs, errors.New("--redis-sentinel-addresses needs --redis-master-name, the name the sentinels monitor the primary under"))
	}
	if o.MasterName != "" && len(o.SentinelAddrs) == 0 {
		errs = append(errs, errors.New("--redis-master-name needs --redis-sentinel-addresses"))
	}
	for _, f := range []struct {
		flag  string
		addrs []string
	}{{"--redis-address", []string{o.Addr}}, {"--redis-sentinel-addresses", o.SentinelAddrs}, {"--redis-cluster-addresses", o.ClusterAddrs}} {
		for _, a := range f.addrs {
			if a == "" && f.flag == "--redis-address" {
				continue
			}
			if err := checkHostPort(a); err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", f.flag, a, err))
			}
		}
	}
	return errors.Join(errs...)
}

// checkHostPort accepts host:port with a non-empty host and port.
func checkHostPort(a string) error {
	i := strings.LastIndexByte(a, ':')
	if i <= 0 || i == len(a)-1 {
		return errors.New("want host:port")
	}
	return nil
}

// String names the Redis of o as status pages and logs show it: "redis HOST:PORT", "redis
// sentinel MASTER via HOST:PORT,...", "redis cluster via HOST:PORT,...".
func (o Options) String() string {
	switch o.Mode() {
	case ModeSentinel:
		return "redis sentinel " + o.MasterName + " via " + strings.Join(o.SentinelAddrs, ",")
	case ModeCluster:
		return "redis cluster via " + strings.Join(o.ClusterAddrs, ",")
	}
	return "redis " + o.Addr
}

// Dial returns a client of the Redis of o, shared by the stores of every job: a client of
// one server, a Sentinel client of the primary (go-redis's failover client: it asks the
// sentinels for the primary and follows a failover) or a Cluster client. Like
// redis.NewClient, it does no I/O: connections are made on first use. The caller closes
// it.
func Dial(o Options) (redis.UniversalClient, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	switch o.Mode() {
	case ModeSentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs,
			SentinelPassword: o.SentinelPassword, Password: o.Password, TLSConfig: o.TLS,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
			MaxRetries: o.MaxRetries, DialerRetries: o.DialerRetries}), nil
	case ModeCluster:
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.ClusterAddrs, Password: o.Password, TLSConfig: o.TLS,
			DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
			MaxRetries: o.MaxRetries, DialerRetries: o.DialerRetries, ClusterStateReloadInterval: clusterReload}), nil
	}
	return redis.NewClient(&redis.Options{Addr: o.Addr, Password: o.Password, TLSConfig: o.TLS,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		MaxRetries: o.MaxRetries, DialerRetries: o.DialerRetries}), nil
}

// keys is the key space of one prefix in one Redis, which the store of every job shares.
type keys struct {
	c      redis.UniversalClient
	prefix string       // "<prefix>:{<prefix>}:"
	repl   *Replication // how the writes that must not be lost wait for replicas (durable.go)
}

func newKeys(client redis.UniversalClient, prefix string) keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return keys{c: client, prefix: prefix + ":{" + prefix + "}:", repl: NewReplication(0, nil)}
}

// lockKey is the global lock (ha.go), which fenced writes check.
func (k keys) lockKey() string { return k.prefix + "activelock" }

// unavailable wraps a Redis client error so that it matches snapshot.ErrUnavailable too.
func unavailable(err error, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %w", fmt.Sprintf(format, args...), snapshot.ErrUnavailable, err)
}
