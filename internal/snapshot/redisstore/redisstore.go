// Package redisstore keeps in Redis what several management server replicas share. Each job
// has its own type, and all of them share one client and one key prefix:
//
//   - Store: snapshots and configuration (a snapshot.Store);
//   - HA: the global lock, the leader leases and the replica set (ha.LockStore,
//     ha.LeaseStore, ha.ReplicaStore; ha.go);
//   - Certs: the mesh identities the leader issues (certs.go);
//   - Revocations: the revoked relay certificates of clusters (revoked.go);
//   - Plane: each server's view of its agents (plane.go).
//
// Dial builds the client (client.go).
//
// Every key carries the same hash tag, {<prefix>}, so all keys of a store live in one slot
// of a Redis Cluster and multi-key transactions and Lua scripts work there:
//
//	<prefix>:{<prefix>}:<kind>:<cluster>   snapshot of kind for cluster (JSON)
//	<prefix>:{<prefix>}:index:<kind>       hash: cluster → content hash of its snapshot of kind
//	<prefix>:{<prefix>}:config             hash: resource key → JSON of snapshot.Resource
//	<prefix>:{<prefix>}:config:rev         configuration revision, INCRed on every change
//	<prefix>:{<prefix>}:activelock         the global lock naming the management server that may write (ha.go)
//	<prefix>:{<prefix>}:plane, plane:views each server's view of its agents (plane.go)
//	<prefix>:{<prefix>}:leader:<group>...  leader leases, replicas:<group>... replica sets (ha.go)
//	<prefix>:{<prefix>}:meshcerts          hash: cluster → its mesh identity (certs.go)
//	<prefix>:{<prefix>}:revoked            hash: cluster → revocation time (revoked.go)
//
// With a Fence (WithFence on Store and Certs), every write runs in a Lua script that first
// checks that the global lock still names this server with the epoch it holds, so a server
// that lost the lock cannot overwrite anything, even before it notices.
//
// Snapshots and configuration resources are stored in the form of snapshot.EncodeSnapshot
// and snapshot.EncodeResource (JSON with resource bodies verbatim).
//
// Errors other than a missing key or an undecodable value wrap snapshot.ErrUnavailable as
// well as the error of the Redis client.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Store is a snapshot.Store in Redis: snapshots and configuration. It is safe for
// concurrent use.
type Store struct {
	keys
	fence Fence
}

// Fence names the lock holder a store writes as; the zero Fence writes unconditionally.
type Fence struct {
	// Name is the management cluster name that must hold the global lock.
	Name string
	// Epoch returns the lock epoch the server believes it holds.
	Epoch func() uint64
}

// WithFence returns a copy of the store whose writes are fenced by the global lock.
func (s *Store) WithFence(f Fence) *Store {
	c := *s
	c.fence = f
	return &c
}

// args are the fence's arguments to fenceLua.
func (f Fence) args() (string, uint64) {
	if f.Name == "" || f.Epoch == nil {
		return "", 0
	}
	return f.Name, f.Epoch()
}

// fenceLua checks the fence; KEYS[1] is the lock, ARGV[1] the name ("" = unfenced) and
// ARGV[2] the epoch.
const fenceLua = `
if ARGV[1] ~= '' then
  local n = redis.call('HGET', KEYS[1], 'name')
  local e = redis.call('HGET', KEYS[1], 'epoch')
  if n ~= ARGV[1] or tonumber(e) ~= tonumber(ARGV[2]) then
    return redis.error_reply('FENCED the global lock is held by ' .. tostring(n) .. ' at epoch ' .. tostring(e))
  end
end
`

// writeErr classifies a write error: fenced writes wrap snapshot.ErrFenced.
func writeErr(err error, format string, args ...any) error {
	if strings.HasPrefix(err.Error(), "FENCED ") {
		return fmt.Errorf("%s: %w: %s", fmt.Sprintf(format, args...), snapshot.ErrFenced, strings.TrimPrefix(err.Error(), "FENCED "))
	}
	return unavailable(err, format, args...)
}

var _ snapshot.Store = (*Store)(nil)

// New returns a store that keeps its keys under prefix (DefaultPrefix when empty). It does
// no I/O; the caller owns client and closes it.
func New(client redis.UniversalClient, prefix string) *Store {
	return &Store{keys: newKeys(client, prefix)}
}

func (s *Store) snapKey(kind snapshot.Kind, cluster string) string {
	return s.prefix + string(kind) + ":" + cluster
}
func (s *Store) indexKey(kind snapshot.Kind) string { return s.prefix + "index:" + string(kind) }
func (s *Store) configKey() string                  { return s.prefix + "config" }
func (s *Store) revKey() string                     { return s.prefix + "config:rev" }

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	b, err := s.c.Get(ctx, s.snapKey(kind, cluster)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, snapshot.ErrNotFound)
	}
	if err != nil {
		return nil, unavailable(err, "get %s snapshot of cluster %q", kind, cluster)
	}
	return decodeSnapshot(b, kind, cluster)
}

func decodeSnapshot(b []byte, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	snap, err := snapshot.DecodeSnapshot(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	return snap, nil
}

var putSnapshot = redis.NewScript(fenceLua + `
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
return 1
`)

var deleteSnapshot = redis.NewScript(fenceLua + `
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[3])
return 1
`)

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) error {
	b, err := snapshot.EncodeSnapshot(snap)
	if err != nil {
		return fmt.Errorf("encode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	name, epoch := s.fence.args()
	keys := []string{s.lockKey(), s.snapKey(kind, cluster), s.indexKey(kind)}
	if err := putSnapshot.Run(ctx, s.c, keys, name, epoch, b, cluster, snap.Hash).Err(); err != nil {
		return writeErr(err, "put %s snapshot of cluster %q", kind, cluster)
	}
	return nil
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, kind snapshot.Kind, cluster string) error {
	name, epoch := s.fence.args()
	keys := []string{s.lockKey(), s.snapKey(kind, cluster), s.indexKey(kind)}
	if err := deleteSnapshot.Run(ctx, s.c, keys, name, epoch, cluster).Err(); err != nil {
		return writeErr(err, "delete %s snapshot of cluster %q", kind, cluster)
	}
	return nil
}

// Index implements snapshot.Store: cluster → content hash, in one round trip.
func (s *Store) Index(ctx context.Context, kind snapshot.Kind) (map[string]string, error) {
	m, err := s.c.HGetAll(ctx, s.indexKey(kind)).Result()
	if err != nil {
		return nil, unavailable(err, "read %s index", kind)
	}
	return m, nil
}

// List implements snapshot.Store. Clusters whose snapshot is deleted between reading the
// index and reading the values are left out.
func (s *Store) List(ctx context.Context, kind snapshot.Kind) (map[string]*snapshot.Snapshot, error) {
	clusters, err := s.c.HKeys(ctx, s.indexKey(kind)).Result()
	if err != nil {
		return nil, unavailable(err, "list %s clusters", kind)
	}
	out := make(map[string]*snapshot.Snapshot, len(clusters))
	if len(clusters) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(clusters))
	// Vanished values are redis.Nil; other errors may be on no command at all.
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, cluster := range clusters {
			cmds[i] = p.Get(ctx, s.snapKey(kind, cluster))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable(err, "list %s snapshots", kind)
	}
	for i, cluster := range clusters {
		b, err := cmds[i].Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, unavailable(err, "list %s snapshot of cluster %q", kind, cluster)
		}
		if out[cluster], err = decodeSnapshot(b, kind, cluster); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// putConfig stores ARGV[3] under field ARGV[1] of KEYS[1] and increments KEYS[2], unless the
// stored resource already has hash ARGV[2].
var putConfig = redis.NewScript(fenceLua + `
local cur = redis.call('HGET', KEYS[2], ARGV[3])
if cur then
  local ok, r = pcall(cjson.decode, cur)
  if ok and type(r) == 'table' and r.hash == ARGV[4] then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
redis.call('INCR', KEYS[3])
return 1
`)

// deleteConfig removes field ARGV[1] of KEYS[1] and increments KEYS[2] if it was there.
var deleteConfig = redis.NewScript(fenceLua + `
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then return 0 end
redis.call('INCR', KEYS[3])
return 1
`)

// PutConfig implements snapshot.Store. Storing a resource with the hash already stored does
// not change the revision.
func (s *Store) PutConfig(ctx context.Context, r snapshot.Resource) error {
	b, err := snapshot.EncodeResource(r)
	if err != nil {
		return fmt.Errorf("encode config resource %s: %w", r.Key, err)
	}
	keys := []string{s.lockKey(), s.configKey(), s.revKey()}
	name, epoch := s.fence.args()
	if err := putConfig.Run(ctx, s.c, keys, name, epoch, r.Key, r.Hash, b).Err(); err != nil {
		return writeErr(err, "put config resource %s", r.Key)
	}
	return nil
}

// DeleteConfig implements snapshot.Store.
func (s *Store) DeleteConfig(ctx context.Context, key string) error {
	name, epoch := s.fence.args()
	n, err := deleteConfig.Run(ctx, s.c, []string{s.lockKey(), s.configKey(), s.revKey()}, name, epoch, key).Int()
	if err != nil {
		return writeErr(err, "delete config resource %s", key)
	}
	if n == 0 {
		return fmt.Errorf("config resource %s: %w", key, snapshot.ErrNotFound)
	}
	return nil
}

// ListConfig implements snapshot.Store. The resources and the revision are read in one
// transaction.
func (s *Store) ListConfig(ctx context.Context) ([]snapshot.Resource, uint64, error) {
	var vals *redis.StringSliceCmd
	var rev *redis.StringCmd
	// A missing revision is redis.Nil; other errors may be on no command at all.
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		vals = p.HVals(ctx, s.configKey())
		rev = p.Get(ctx, s.revKey())
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, unavailable(err, "list config")
	}
	n, err := parseRev(rev)
	if err != nil {
		return nil, 0, err
	}
	out := make([]snapshot.Resource, len(vals.Val()))
	for i, v := range vals.Val() {
		if out[i], err = snapshot.DecodeResource([]byte(v)); err != nil {
			return nil, 0, fmt.Errorf("decode config resource: %w", err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, n, nil
}

// ConfigRevision implements snapshot.Store.
func (s *Store) ConfigRevision(ctx context.Context) (uint64, error) {
	return parseRev(s.c.Get(ctx, s.revKey()))
}

// parseRev reads a revision; a missing counter is revision 0.
func parseRev(cmd *redis.StringCmd) (uint64, error) {
	v, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable(err, "read config revision")
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("decode config revision %q: %w", v, err)
	}
	return n, nil
}

// Ping implements snapshot.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return unavailable(err, "ping redis")
	}
	return nil
}
