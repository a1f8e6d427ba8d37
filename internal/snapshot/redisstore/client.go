package redisstore

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// DefaultPrefix is the key prefix used when a constructor is given an empty one.
const DefaultPrefix = "meshrelay"

// Options configure the client Dial builds.
type Options struct {
	// Addr is host:port of the Redis server; Password its AUTH password ("" for none).
	Addr, Password string
	// TLS, when not nil, connects over TLS with this configuration.
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

// Dial returns a client of the Redis server of o, shared by the stores of every job. Like
// redis.NewClient, it does no I/O: connections are made on first use. The caller closes it.
func Dial(o Options) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: o.Addr, Password: o.Password, TLSConfig: o.TLS,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		MaxRetries: o.MaxRetries, DialerRetries: o.DialerRetries})
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
