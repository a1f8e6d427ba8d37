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

// Revoke records that the relay certificates of cluster issued before at are revoked. It is
// not fenced: any management server may revoke, and a revocation only refuses more.
func (s *Revocations) Revoke(ctx context.Context, cluster string, at time.Time) error {
	if err := s.c.HSet(ctx, s.revokedKey(), cluster, strconv.FormatInt(at.Unix(), 10)).Err(); err != nil {
		return unavailable(err, "revoke cluster %s", cluster)
	}
	return nil
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
