package redisstore

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// DefaultPrefix is the key prefix used when a constructor is given an empty one.
const DefaultPrefix = "meshrelay"

// keys is the key space of one prefix in one Redis, which the store of every job shares.
type keys struct {
	c      redis.UniversalClient
	prefix string // "<prefix>:{<prefix>}:"
}

func newKeys(client redis.UniversalClient, prefix string) keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return keys{c: client, prefix: prefix + ":{" + prefix + "}:"}
}

// lockKey is the global lock (ha.go), which fenced writes check.
func (k keys) lockKey() string { return k.prefix + "activelock" }

// unavailable wraps a Redis client error so that it matches snapshot.ErrUnavailable too.
func unavailable(err error, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %w", fmt.Sprintf(format, args...), snapshot.ErrUnavailable, err)
}
