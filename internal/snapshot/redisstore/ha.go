package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/ha"
)

// HA keeps in Redis what the management servers coordinate through (internal/ha): the
// global lock with its fencing epochs, the leader lease of each management cluster's
// replicas, and the replica set. It is safe for concurrent use.
type HA struct{ keys }

// WithReplication returns a copy of the store whose lock writes wait for replicas as r
// says (shared by every store of a server, so it reports for all of them).
func (s *HA) WithReplication(r *Replication) *HA {
	c := *s
	c.repl = r
	return &c
}

var (
	_ ha.LockStore    = (*HA)(nil)
	_ ha.LeaseStore   = (*HA)(nil)
	_ ha.ReplicaStore = (*HA)(nil)
)

// NewHA returns the coordination store under prefix (DefaultPrefix when empty). It does
// no I/O; the caller owns client and closes it.
func NewHA(client redis.UniversalClient, prefix string) *HA {
	return &HA{keys: newKeys(client, prefix)}
}

func (s *HA) lockEpochKey() string { return s.prefix + "activelock:epoch" }

// aboveLua defines above(floor), the epoch a new or raised holder takes: the next value of
// the counter KEYS[2], moved above floor when the counter is not already there (the store
// lost its data), and the counter with it.
const aboveLua = `
local function above(floor)
  local e = redis.call('INCR', KEYS[2])
  if e <= floor then
    e = floor + 1
    redis.call('SET', KEYS[2], e)
  end
  return e
end
`

// acquireLock takes the lock for ARGV[1] when nobody holds it; it returns the holder either
// way, and whether it wrote anything (always, when ARGV[1] holds the lock). ARGV[3] is the
// highest epoch the caller knows of (of agents, outputs, locks): the counter KEYS[2] is
// first moved up to it, whoever holds the lock, and a lock below the counter is taken, or
// raised by its holder (and only by it), above it. So after the store lost its data, a
// server knowing of a newer epoch makes the holder go above it at its next round.
var acquireLock = redis.NewScript(aboveLua + `
local wrote = 0
local floor = tonumber(ARGV[3])
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
if floor > counter then
  redis.call('SET', KEYS[2], floor)
  wrote = 1
else
  floor = counter
end
local cur = redis.call('HMGET', KEYS[1], 'name', 'epoch')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'epoch', above(floor), 'since', ARGV[2])
  wrote = 1
elseif cur[1] == ARGV[1] and tonumber(cur[2]) < floor then
  redis.call('HSET', KEYS[1], 'epoch', above(floor))
  wrote = 1
elseif cur[1] == ARGV[1] then
  -- The holder's round: a write, so that waiting for a replica afterwards covers the lock
  -- it holds (taken or raised by an earlier round that no replica acknowledged).
  redis.call('HSET', KEYS[1], 'renewed', ARGV[2])
  wrote = 1
end
local l = redis.call('HMGET', KEYS[1], 'name', 'epoch', 'since')
l[4] = wrote
return l
`)

// switchLock gives the lock to ARGV[1] with a new epoch, whoever held it: above the
// counter and above the lock's current epoch (should the counter alone have been lost).
var switchLock = redis.NewScript(aboveLua + `
local e = above(tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0'))
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'epoch', e, 'since', ARGV[2])
local l = redis.call('HMGET', KEYS[1], 'name', 'epoch', 'since')
l[4] = 1
return l
`)

func parseLock(v any) (ha.Lock, error) {
	vals, ok := v.([]any)
	if !ok || len(vals) < 3 || vals[0] == nil {
		return ha.Lock{}, nil
	}
	name, _ := vals[0].(string)
	es, _ := vals[1].(string)
	ss, _ := vals[2].(string)
	epoch, err := strconv.ParseUint(es, 10, 64)
	if err != nil {
		return ha.Lock{}, fmt.Errorf("decode lock epoch %q: %w", es, err)
	}
	ms, _ := strconv.ParseInt(ss, 10, 64)
	return ha.Lock{Name: name, Epoch: epoch, Since: time.UnixMilli(ms).UTC()}, nil
}

// AcquireLockIfFree takes the global lock for name when nobody holds it and returns the
// holder (name itself, or whoever already held it). floor is the highest epoch the caller
// knows agents or outputs to carry: the lock is taken above it, a lock name holds below it
// is raised above it, and a lock someone else holds below it is raised by its holder at its
// next call (the epoch counter records the floor).
//
// What it changed, and the lock name holds, waits for a replica (durable.go): when none
// acknowledged it in time, it fails with ErrNotReplicated, so that name does not start
// writing under an epoch a Redis failover could hand to another server; it holds the lock
// on the primary, and a later call that reaches a replica returns it.
func (s *HA) AcquireLockIfFree(ctx context.Context, name string, floor uint64) (ha.Lock, error) {
	v, err := s.lockScript(ctx, "acquire global lock", acquireLock, name, time.Now().UnixMilli(), floor)
	if err != nil {
		return ha.Lock{}, err
	}
	return parseLock(v)
}

// SwitchLock moves the global lock to name with a new, higher epoch (`switch-active`). When
// no replica acknowledged the switch in time, it returns the lock the primary now holds and
// an error wrapping ErrNotReplicated.
func (s *HA) SwitchLock(ctx context.Context, name string) (ha.Lock, error) {
	v, err := s.lockScript(ctx, "switch global lock", switchLock, name, time.Now().UnixMilli())
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return ha.Lock{}, err
	}
	l, perr := parseLock(v)
	if perr != nil {
		return ha.Lock{}, perr
	}
	return l, err
}

// lockScript runs a lock script as a write that must not be lost; it returns the script's
// reply (the lock, and whether it wrote) even when no replica acknowledged it.
func (s *HA) lockScript(ctx context.Context, what string, script *redis.Script, args ...any) (any, error) {
	var v any
	err := s.durable(ctx, what, func(c redis.Cmdable) (bool, error) {
		var err error
		if v, err = script.Run(ctx, c, []string{s.lockKey(), s.lockEpochKey()}, args...).Result(); err != nil {
			return false, unavailable(err, "%s", what)
		}
		vals, _ := v.([]any)
		wrote := len(vals) == 4 && vals[3] == int64(1)
		return wrote, nil
	})
	return v, err
}

// ReadLock returns the holder of the global lock (zero Lock when nobody holds it).
func (s *HA) ReadLock(ctx context.Context) (ha.Lock, error) {
	v, err := s.c.HMGet(ctx, s.lockKey(), "name", "epoch", "since").Result()
	if err != nil {
		return ha.Lock{}, unavailable(err, "read global lock")
	}
	return parseLock(v)
}

func (s *HA) leaseKey(group string) string      { return s.prefix + "leader:" + group }
func (s *HA) leaseEpochKey(group string) string { return s.prefix + "leader:" + group + ":epoch" }

// acquireLease: KEYS[1] lease, KEYS[2] epoch counter; ARGV[1] id, ARGV[2] ttl ms. The value
// is "<id> <epoch>". A holder renews its own lease; anyone takes a free one.
var acquireLease = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local id, e = string.match(cur, '^(%S+) (%d+)$')
  if id == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return cur
end
local e = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. ' ' .. e
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
`)

// releaseLease deletes the lease if ARGV[1] holds it.
var releaseLease = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(%S+) ') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

func parseLease(v string) ha.Lease {
	id, e, _ := strings.Cut(v, " ")
	epoch, _ := strconv.ParseUint(e, 10, 64)
	return ha.Lease{Holder: id, Epoch: epoch}
}

// AcquireLease takes or renews the leader lease of group for id for ttl and returns the
// holder; id leads when the holder is id. Every new holder gets a higher epoch.
func (s *HA) AcquireLease(ctx context.Context, group, id string, ttl time.Duration) (ha.Lease, error) {
	v, err := acquireLease.Run(ctx, s.c, []string{s.leaseKey(group), s.leaseEpochKey(group)}, id, ttl.Milliseconds()).Text()
	if err != nil {
		return ha.Lease{}, unavailable(err, "acquire leader lease of %s", group)
	}
	return parseLease(v), nil
}

// ReleaseLease gives up the lease if id holds it (a clean shutdown).
func (s *HA) ReleaseLease(ctx context.Context, group, id string) error {
	if err := releaseLease.Run(ctx, s.c, []string{s.leaseKey(group)}, id).Err(); err != nil {
		return unavailable(err, "release leader lease of %s", group)
	}
	return nil
}

// ReadLease returns the current holder of group's lease (zero when none).
func (s *HA) ReadLease(ctx context.Context, group string) (ha.Lease, error) {
	v, err := s.c.Get(ctx, s.leaseKey(group)).Result()
	if errors.Is(err, redis.Nil) {
		return ha.Lease{}, nil
	}
	if err != nil {
		return ha.Lease{}, unavailable(err, "read leader lease of %s", group)
	}
	return parseLease(v), nil
}

func (s *HA) replicasKey(group string) string { return s.prefix + "replicas:" + group }
func (s *HA) replicaAddrKey(group string) string {
	return s.prefix + "replicas:" + group + ":address"
}

// Heartbeat advertises replica id at address for ttl, and drops replicas whose
// advertisement expired.
func (s *HA) Heartbeat(ctx context.Context, group, id, address string, ttl time.Duration) error {
	now := time.Now()
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.replicasKey(group), redis.Z{Score: float64(now.Add(ttl).UnixMilli()), Member: id})
		p.HSet(ctx, s.replicaAddrKey(group), id, address)
		p.ZRemRangeByScore(ctx, s.replicasKey(group), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
		return nil
	})
	if err != nil {
		return unavailable(err, "heartbeat replica %s", id)
	}
	return nil
}

// Leave removes replica id (a clean shutdown).
func (s *HA) Leave(ctx context.Context, group, id string) error {
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.replicasKey(group), id)
		p.HDel(ctx, s.replicaAddrKey(group), id)
		return nil
	})
	if err != nil {
		return unavailable(err, "remove replica %s", id)
	}
	return nil
}

// Replicas lists the live replicas of group, sorted by id.
func (s *HA) Replicas(ctx context.Context, group string) ([]ha.Replica, error) {
	ids, err := s.c.ZRangeByScore(ctx, s.replicasKey(group), &redis.ZRangeBy{Min: strconv.FormatInt(time.Now().UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, unavailable(err, "list replicas")
	}
	if len(ids) == 0 {
		return nil, nil
	}
	addrs, err := s.c.HMGet(ctx, s.replicaAddrKey(group), ids...).Result()
	if err != nil {
		return nil, unavailable(err, "list replica addresses")
	}
	out := make([]ha.Replica, 0, len(ids))
	for i, id := range ids {
		a, _ := addrs[i].(string)
		out = append(out, ha.Replica{ID: id, Address: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
