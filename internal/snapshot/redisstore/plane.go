package redisstore

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Plane keeps the servers' views of their agents (a plane.Store). Every management server
// sharing the store publishes its view of the agents connected to it, so that any server
// can report the whole plane (`meshrelay check`):
//
//	<prefix>:{<prefix>}:plane          sorted set: server id → expiry of its view (Unix ms)
//	<prefix>:{<prefix>}:plane:views    hash: server id → its view (JSON, opaque here)
//
// Views are not fenced: passive servers publish theirs too. It is safe for concurrent use.
type Plane struct{ keys }

// NewPlane returns the store of views under prefix (DefaultPrefix when empty). It does no
// I/O; the caller owns client and closes it.
func NewPlane(client redis.UniversalClient, prefix string) *Plane {
	return &Plane{keys: newKeys(client, prefix)}
}

func (s *Plane) planeKey() string      { return s.prefix + "plane" }
func (s *Plane) planeViewsKey() string { return s.prefix + "plane:views" }

// putPlaneView: KEYS[1] expiries, KEYS[2] views; ARGV[1] id, ARGV[2] view, ARGV[3] expiry
// (ms), ARGV[4] now (ms). It also drops the views that expired.
var putPlaneView = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
for _, id in ipairs(dead) do
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
return 1
`)

// PutPlaneView publishes server id's view for ttl.
func (s *Plane) PutPlaneView(ctx context.Context, id string, view []byte, ttl time.Duration) error {
	now := time.Now()
	err := putPlaneView.Run(ctx, s.c, []string{s.planeKey(), s.planeViewsKey()}, id, view,
		now.Add(ttl).UnixMilli(), now.UnixMilli()).Err()
	if err != nil {
		return unavailable(err, "publish plane view of %s", id)
	}
	return nil
}

// PlaneViews returns the views that have not expired, by server id.
func (s *Plane) PlaneViews(ctx context.Context) (map[string][]byte, error) {
	ids, err := s.c.ZRangeByScore(ctx, s.planeKey(), &redis.ZRangeBy{Min: strconv.FormatInt(time.Now().UnixMilli()+1, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, unavailable(err, "list plane views")
	}
	out := make(map[string][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	vals, err := s.c.HMGet(ctx, s.planeViewsKey(), ids...).Result()
	if err != nil {
		return nil, unavailable(err, "read plane views")
	}
	for i, id := range ids {
		if v, ok := vals[i].(string); ok {
			out[id] = []byte(v)
		}
	}
	return out, nil
}

// LeavePlane removes server id's view (a clean shutdown).
func (s *Plane) LeavePlane(ctx context.Context, id string) error {
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.planeKey(), id)
		p.HDel(ctx, s.planeViewsKey(), id)
		return nil
	})
	if err != nil {
		return unavailable(err, "remove plane view of %s", id)
	}
	return nil
}
