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
// Dial builds the client (client.go) of one Redis server, of the primary Redis Sentinel names,
// or of a Redis Cluster; Inspect reports whether that Redis can fail over (inspect.go).
//
// Every key carries the same hash tag, {<prefix>}, so all keys of a store live in one slot
// of a Redis Cluster and multi-key transactions and Lua scripts work there:
//
//	<prefix>:{<prefix>}:<kind>:<cluster>   hash: snapshot of kind for cluster (see below)
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
// A snapshot is a hash with a field per resource, "r:<key>" → the resource's hash (64 hex
// digits) followed by its body verbatim (snapshot.AppendStoredResource), and the meta fields
// "m:version", "m:epoch" and "m:hash" (the content hash). The Store remembers, per snapshot,
// the one it last wrote or read, and writes the next one as a delta against it: the changed
// resources, the removed keys and the meta fields, in one fenced Lua script that first checks
// that the stored content hash is still the one it diffed against (compare and set). When it
// is not (another server wrote since, or Redis lost data), the script changes nothing and the
// Store rewrites the whole snapshot. A change of one resource thus sends and writes one
// resource, not the snapshot. Write sends a whole batch in one pipeline. Get and List read the
// hash and verify every body's hash and the content hash.
//
// Earlier versions stored a snapshot as one string (the JSON of snapshot.EncodeSnapshot) under
// the same key. Get and List still read such a key, and the next Put replaces it with a hash.
// Configuration resources are stored in the form of snapshot.EncodeResource.
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
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Store is a snapshot.Store in Redis: snapshots and configuration. It is safe for
// concurrent use.
type Store struct {
	keys
	fence Fence
	bases *bases // shared with the fenced copies
}

// Fence names the lock holder a store writes as; the zero Fence writes unconditionally.
type Fence struct {
	// Name is the management cluster name that must hold the global lock.
	Name string
	// Epoch returns the lock epoch the server believes it holds.
	Epoch func() uint64
}

// WithReplication returns a copy of the store whose configuration writes wait for replicas
// as r says (shared by every store of a server, so it reports for all of them).
func (s *Store) WithReplication(r *Replication) *Store {
	c := *s
	c.repl = r
	return &c
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
	return &Store{keys: newKeys(client, prefix), bases: &bases{m: map[string]*snapshot.Snapshot{}}}
}

func (s *Store) snapKey(kind snapshot.Kind, cluster string) string {
	return s.prefix + string(kind) + ":" + cluster
}
func (s *Store) indexKey(kind snapshot.Kind) string { return s.prefix + "index:" + string(kind) }
func (s *Store) configKey() string                  { return s.prefix + "config" }
func (s *Store) revKey() string                     { return s.prefix + "config:rev" }

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	key := s.snapKey(kind, cluster)
	fields, err := s.c.HGetAll(ctx, key).Result()
	if isWrongType(err) {
		return s.getWhole(ctx, kind, cluster)
	}
	if err != nil {
		return nil, unavailable(err, "get %s snapshot of cluster %q", kind, cluster)
	}
	if len(fields) == 0 {
		return nil, fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, snapshot.ErrNotFound)
	}
	snap, err := decodeFields(fields, kind, cluster)
	if err != nil {
		return nil, err
	}
	s.bases.remember(kind, cluster, snap)
	return snap, nil
}

// getWhole reads a snapshot stored by an earlier version as one string.
func (s *Store) getWhole(ctx context.Context, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	b, err := s.c.Get(ctx, s.snapKey(kind, cluster)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, snapshot.ErrNotFound)
	}
	if err != nil {
		return nil, unavailable(err, "get %s snapshot of cluster %q", kind, cluster)
	}
	return decodeWhole(b, kind, cluster)
}

func isWrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

func decodeWhole(b []byte, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	snap, err := snapshot.DecodeSnapshot(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	return snap, nil
}

// Fields of a snapshot's hash.
const (
	fieldVersion = "m:version"
	fieldEpoch   = "m:epoch"
	fieldHash    = "m:hash"
	fieldRes     = "r:" // followed by the resource key
)

// decodeFields reads a snapshot's hash and verifies every body and the content hash.
func decodeFields(fields map[string]string, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	fail := func(err error) (*snapshot.Snapshot, error) {
		return nil, fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	version, err := strconv.ParseUint(fields[fieldVersion], 10, 64)
	if err != nil {
		return fail(fmt.Errorf("field %s: %w", fieldVersion, err))
	}
	epoch, err := strconv.ParseUint(fields[fieldEpoch], 10, 64)
	if err != nil {
		return fail(fmt.Errorf("field %s: %w", fieldEpoch, err))
	}
	m := make(map[string]snapshot.Resource, len(fields))
	for f, v := range fields {
		key, ok := strings.CutPrefix(f, fieldRes)
		if !ok {
			continue
		}
		r, err := snapshot.DecodeStoredResource(key, []byte(v))
		if err != nil {
			return fail(err)
		}
		m[key] = r
	}
	snap, err := snapshot.Assemble(version, epoch, fields[fieldHash], m)
	if err != nil {
		return fail(err)
	}
	return snap, nil
}

// putSnapshot writes a snapshot's hash. KEYS[2] is the snapshot, KEYS[3] the index; ARGV[3]
// the cluster, ARGV[4] the content hash the delta was computed against ("" for a whole
// snapshot: the key is replaced), ARGV[5..7] the new content hash, version and epoch, ARGV[8]
// the number n of resources to set, then n field/value pairs, then the fields to remove. It
// returns 1, or 0 without writing anything when the stored content hash is not ARGV[4].
var putSnapshot = redis.NewScript(fenceLua + `
if ARGV[4] == '' then
  redis.call('DEL', KEYS[2])
elseif redis.call('TYPE', KEYS[2])['ok'] ~= 'hash' or redis.call('HGET', KEYS[2], 'm:hash') ~= ARGV[4] then
  return 0
end
local i = 9
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[j])
end
redis.call('HSET', KEYS[2], 'm:version', ARGV[6], 'm:epoch', ARGV[7], 'm:hash', ARGV[5])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
return 1
`)

var deleteSnapshot = redis.NewScript(fenceLua + `
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[3])
return 1
`)

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) error {
	return s.Write(ctx, []snapshot.Write{{Kind: kind, Cluster: cluster, Snap: snap}})[0]
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, kind snapshot.Kind, cluster string) error {
	return s.Write(ctx, []snapshot.Write{{Kind: kind, Cluster: cluster}})[0]
}

// call is one script call of a Write batch.
type call struct {
	item   int // index in the batch
	script *redis.Script
	keys   []string
	args   []any
	base   *snapshot.Snapshot // what a delta was computed against; nil for a whole write
	moved  bool               // Redis no longer held base: the delta was not applied
	cmd    *redis.Cmd
}

// Write implements snapshot.Store: every item is one fenced script call, and the batch is one
// pipeline. Items whose delta found another base in Redis are written whole in a second
// pipeline (as are all items when Redis had not loaded the script yet).
func (s *Store) Write(ctx context.Context, batch []snapshot.Write) []error {
	errs := make([]error, len(batch))
	name, epoch := s.fence.args()
	calls := make([]*call, 0, len(batch))
	for i, w := range batch {
		c := &call{item: i, keys: []string{s.lockKey(), s.snapKey(w.Kind, w.Cluster), s.indexKey(w.Kind)}}
		if w.Snap == nil {
			c.script, c.args = deleteSnapshot, []any{name, epoch, w.Cluster}
		} else {
			c.base = s.bases.get(w.Kind, w.Cluster)
			var err error
			if c.script, c.args, err = putArgs(name, epoch, w.Cluster, c.base, w.Snap); err != nil {
				errs[i] = fmt.Errorf("encode %s snapshot of cluster %q: %w", w.Kind, w.Cluster, err)
				continue
			}
		}
		calls = append(calls, c)
	}
	retry, loaded := s.runCalls(ctx, batch, calls, errs)
	if len(retry) == 0 {
		return errs
	}
	if !loaded {
		if err := putSnapshot.Load(ctx, s.c).Err(); err != nil {
			for _, c := range retry {
				errs[c.item] = unavailable(err, "load script")
			}
			return errs
		}
		if err := deleteSnapshot.Load(ctx, s.c).Err(); err != nil {
			for _, c := range retry {
				errs[c.item] = unavailable(err, "load script")
			}
			return errs
		}
	}
	whole := retry[:0]
	for _, c := range retry {
		w := batch[c.item]
		if c.moved { // the delta's base was not in Redis: write it whole
			c.base, c.moved = nil, false
			var err error
			if _, c.args, err = putArgs(name, epoch, w.Cluster, nil, w.Snap); err != nil {
				errs[c.item] = fmt.Errorf("encode %s snapshot of cluster %q: %w", w.Kind, w.Cluster, err)
				continue
			}
		}
		whole = append(whole, c)
	}
	if again, _ := s.runCalls(ctx, batch, whole, errs); len(again) > 0 {
		for _, c := range again {
			w := batch[c.item]
			errs[c.item] = unavailable(errors.New("redis dropped the script or the base again"), "put %s snapshot of cluster %q", w.Kind, w.Cluster)
		}
	}
	return errs
}

// runCalls sends calls in one pipeline and records each outcome in errs (and the stores'
// bases). It returns the calls to send again: deltas whose base Redis no longer held, and
// calls of a script Redis had not loaded (loaded is false when there were such).
func (s *Store) runCalls(ctx context.Context, batch []snapshot.Write, calls []*call, errs []error) (retry []*call, loaded bool) {
	loaded = true
	if len(calls) == 0 {
		return nil, loaded
	}
	s.pipeline(ctx, calls)
	for _, c := range calls {
		w := batch[c.item]
		what := "put"
		if w.Snap == nil {
			what = "delete"
		}
		err := c.cmd.Err()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			loaded = false
			retry = append(retry, c)
			continue
		}
		if err != nil {
			s.bases.forget(w.Kind, w.Cluster)
			errs[c.item] = writeErr(err, "%s %s snapshot of cluster %q", what, w.Kind, w.Cluster)
			continue
		}
		if n, _ := c.cmd.Int(); n == 0 {
			c.moved = true
			retry = append(retry, c)
			continue
		}
		errs[c.item] = nil
		s.bases.remember(w.Kind, w.Cluster, w.Snap) // nil: forgotten
	}
	return retry, loaded
}

// pipelineBytes bounds the argument bytes of one pipeline: a batch of deltas is one
// pipeline, while a batch of whole snapshots (the first write of every cluster) is cut into
// pipelines of about this size, each answered well within the client's read timeout.
const pipelineBytes = 8 << 20

// pipeline sends the calls in pipelines of about pipelineBytes; each call's reply or error is
// in its cmd (a call without a reply gets its pipeline's error).
func (s *Store) pipeline(ctx context.Context, calls []*call) {
	for len(calls) > 0 {
		n, size := 0, 0
		for n < len(calls) && (n == 0 || size < pipelineBytes) {
			for _, a := range calls[n].args {
				if b, ok := a.([]byte); ok {
					size += len(b)
				}
			}
			n++
		}
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls[:n] {
				c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
			}
			return nil
		})
		for _, c := range calls[:n] {
			if err != nil && c.cmd.Err() == nil && c.cmd.Val() == nil { // failed before a reply
				c.cmd.SetErr(err)
			}
		}
		calls = calls[n:]
	}
}

// putArgs returns the script and its arguments that move the stored snapshot from base (nil:
// unknown, write it whole) to snap. Only new and changed resources are encoded.
func putArgs(name string, epoch uint64, cluster string, base, snap *snapshot.Snapshot) (*redis.Script, []any, error) {
	baseHash := ""
	var upserts []snapshot.Resource
	var removals []string
	if base == nil {
		upserts = make([]snapshot.Resource, 0, len(snap.Resources))
	} else {
		baseHash = base.Hash
		for k := range base.Resources {
			if _, ok := snap.Resources[k]; !ok {
				removals = append(removals, k)
			}
		}
	}
	for k, r := range snap.Resources {
		if base != nil && base.Resources[k].Hash == r.Hash {
			continue
		}
		upserts = append(upserts, r)
	}
	args := make([]any, 0, 8+2*len(upserts)+len(removals))
	args = append(args, name, epoch, cluster, baseHash, snap.Hash,
		strconv.FormatUint(snap.Version, 10), strconv.FormatUint(snap.Epoch, 10), len(upserts))
	for _, r := range upserts {
		v, err := snapshot.AppendStoredResource(nil, r)
		if err != nil {
			return nil, nil, err
		}
		args = append(args, fieldRes+r.Key, v)
	}
	for _, k := range removals {
		args = append(args, fieldRes+k)
	}
	return putSnapshot, args, nil
}

// bases remembers, per snapshot, the one this store (and its fenced copies) last wrote or
// read: what the next Put computes its delta against.
type bases struct {
	mu sync.Mutex // guards m
	m  map[string]*snapshot.Snapshot
}

func baseKey(kind snapshot.Kind, cluster string) string { return string(kind) + "\x00" + cluster }

func (b *bases) get(kind snapshot.Kind, cluster string) *snapshot.Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[baseKey(kind, cluster)]
}

// remember records snap as the stored snapshot; nil forgets it.
func (b *bases) remember(kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if snap == nil {
		delete(b.m, baseKey(kind, cluster))
		return
	}
	b.m[baseKey(kind, cluster)] = snap
}

func (b *bases) forget(kind snapshot.Kind, cluster string) { b.remember(kind, cluster, nil) }

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
	cmds := make([]*redis.MapStringStringCmd, len(clusters))
	// Snapshots of an earlier version are WRONGTYPE; other errors may be on no command at all.
	_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, cluster := range clusters {
			cmds[i] = p.HGetAll(ctx, s.snapKey(kind, cluster))
		}
		return nil
	})
	if err != nil && !isWrongType(err) {
		return nil, unavailable(err, "list %s snapshots", kind)
	}
	var whole []string
	for i, cluster := range clusters {
		fields, err := cmds[i].Result()
		if isWrongType(err) {
			whole = append(whole, cluster)
			continue
		}
		if err != nil {
			return nil, unavailable(err, "list %s snapshot of cluster %q", kind, cluster)
		}
		if len(fields) == 0 { // deleted meanwhile
			continue
		}
		snap, err := decodeFields(fields, kind, cluster)
		if err != nil {
			return nil, err
		}
		out[cluster] = snap
		s.bases.remember(kind, cluster, snap)
	}
	if err := s.listWhole(ctx, kind, whole, out); err != nil {
		return nil, err
	}
	return out, nil
}

// listWhole reads into out the snapshots of clusters stored by an earlier version as strings.
func (s *Store) listWhole(ctx context.Context, kind snapshot.Kind, clusters []string, out map[string]*snapshot.Snapshot) error {
	if len(clusters) == 0 {
		return nil
	}
	cmds := make([]*redis.StringCmd, len(clusters))
	// Vanished values are redis.Nil; other errors may be on no command at all.
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, cluster := range clusters {
			cmds[i] = p.Get(ctx, s.snapKey(kind, cluster))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) {
		return unavailable(err, "list %s snapshots", kind)
	}
	for i, cluster := range clusters {
		b, err := cmds[i].Bytes()
		if errors.Is(err, redis.Nil) || isWrongType(err) { // deleted, or rewritten meanwhile
			continue
		}
		if err != nil {
			return unavailable(err, "list %s snapshot of cluster %q", kind, cluster)
		}
		if out[cluster], err = decodeWhole(b, kind, cluster); err != nil {
			return err
		}
	}
	return nil
}

// putConfig stores ARGV[5] under field ARGV[3] of KEYS[2] and increments KEYS[3], unless
// the stored resource already has hash ARGV[4]: then it returns 0 and writes the stored
// value again, unchanged, so that waiting for a replica afterwards covers it too (an earlier
// write of it may not have reached one).
var putConfig = redis.NewScript(fenceLua + `
local cur = redis.call('HGET', KEYS[2], ARGV[3])
if cur then
  local ok, r = pcall(cjson.decode, cur)
  if ok and type(r) == 'table' and r.hash == ARGV[4] then
    redis.call('HSET', KEYS[2], ARGV[3], cur)
    return 0
  end
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
redis.call('INCR', KEYS[3])
return 1
`)

// deleteConfig removes field ARGV[3] of KEYS[2] and increments KEYS[3] if it was there.
var deleteConfig = redis.NewScript(fenceLua + `
if redis.call('HDEL', KEYS[2], ARGV[3]) == 0 then return 0 end
redis.call('INCR', KEYS[3])
return 1
`)

// PutConfig implements snapshot.Store. Storing a resource with the hash already stored does
// not change the revision. Applied configuration must not be lost: the write waits for a
// replica (durable.go), and fails with ErrNotReplicated when none acknowledged it in time.
func (s *Store) PutConfig(ctx context.Context, r snapshot.Resource) error {
	b, err := snapshot.EncodeResource(r)
	if err != nil {
		return fmt.Errorf("encode config resource %s: %w", r.Key, err)
	}
	keys := []string{s.lockKey(), s.configKey(), s.revKey()}
	name, epoch := s.fence.args()
	what := "put config resource " + r.Key
	return s.durable(ctx, what, func(c redis.Cmdable) (bool, error) {
		if err := putConfig.Run(ctx, c, keys, name, epoch, r.Key, r.Hash, b).Err(); err != nil {
			return false, writeErr(err, "%s", what)
		}
		return true, nil
	})
}

// DeleteConfig implements snapshot.Store. A deletion waits for a replica like PutConfig.
func (s *Store) DeleteConfig(ctx context.Context, key string) error {
	name, epoch := s.fence.args()
	what := "delete config resource " + key
	var n int
	err := s.durable(ctx, what, func(c redis.Cmdable) (bool, error) {
		var err error
		if n, err = deleteConfig.Run(ctx, c, []string{s.lockKey(), s.configKey(), s.revKey()}, name, epoch, key).Int(); err != nil {
			return false, writeErr(err, "%s", what)
		}
		return n == 1, nil
	})
	if err != nil {
		return err
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
