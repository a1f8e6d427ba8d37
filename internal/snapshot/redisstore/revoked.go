package redisstore

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Revocations keeps the times before which each cluster's relay certificates are revoked,
// shared by every replica and management server (a relay.Revocations). It is safe for
// concurrent use.
type Revocations struct{ keys }

// NewRevocations returns the revocation list under prefix (DefaultPrefix when empty). It
// does no I/O; the caller owns client and closes it.
func NewRevocations(client redis.UniversalClient, prefix string) *Revocations {
	return &Revocations{keys: newKeys(client, prefix)}
}

func (s *Revocations) revokedKey() string { return s.prefix + "revoked" }

// WithReplication returns a copy of the store whose revocations wait for replicas as r
// says (shared by every store of a server, so it reports for all of them).
func (s *Revocations) WithReplication(r *Replication) *Revocations {
	c := *s
	c.repl = r
	return &c
}

// Revoke records that the relay certificates of cluster issued before at are revoked. It is
// not fenced: any management server may revoke, and a revocation only refuses more. A
// revocation must not be lost (a failover would let the revoked certificates in again): it
// waits for a replica (durable.go), and fails with ErrNotReplicated when none acknowledged
// it in time.
func (s *Revocations) Revoke(ctx context.Context, cluster string, at time.Time) error {
	what := "revoke cluster " + cluster
	return s.durable(ctx, what, func(c redis.Cmdable) (bool, error) {
		if err := c.HSet(ctx, s.revokedKey(), cluster, strconv.FormatInt(at.Unix(), 10)).Err(); err != nil {
			return false, unavailable(err, "%s", what)
		}
		return true, nil
	})
}

// Revoked returns every cluster's revocation time.
func (s *Revocations) Revoked(ctx context.Context) (map[string]time.Time, error) {
	m, err := s.c.HGetAll(ctx, s.revokedKey()).Result()
	if err != nil {
		return nil, unavailable(err, "read revocations")
	}
	out := make(map[string]time.Time, len(m))
	for c, v := range m {
		if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[c] = time.Unix(sec, 0).UTC()
		}
	}
	return out, nil
}
