// Package boltstore is the durable snapshot.Store of a single management server: one bbolt
// (go.etcd.io/bbolt) file in the server's data directory, <data-dir>/store.db.
//
// Every write is one bbolt transaction, committed and fsynced before the method returns, so a
// configuration resource that PutConfig (`meshrelay apply`) accepted survives the process
// being killed. bbolt takes an exclusive lock on the file: a second process that opens it
// fails after a short wait with ErrLocked instead of writing beside the first.
//
// Layout (schema "3"):
//
//	input, output  buckets: cluster → a bucket holding
//	    meta  version (8 bytes, big endian), epoch (8 bytes), content hash (64 hex digits)
//	    res   bucket: resource key → its stored form: resource hash (64 hex digits) followed
//	          by its body, when that is shorter than a quarter of a page (1 KiB);
//	          resource key → a bucket of its own holding "v" → the stored form, when longer
//	input.hash, output.hash  buckets: cluster → content hash of its snapshot (for Index)
//	config   bucket: resource key → configuration resource (snapshot.EncodeResource)
//	meta     bucket: "schema" → "3"; "config.rev" → configuration revision (8 bytes, big endian)
//
// A Put of a snapshot writes only what differs from the stored one: it walks the stored
// resource keys beside the snapshot's sorted keys, compares the stored hash of each (without
// reading the body), and puts the changed resources, deletes the removed ones and rewrites
// the meta entry and the index. Once this process has written a cluster's snapshot, it keeps
// the stored hashes in memory (bbolt's lock makes it the file's only writer) and the next Put
// diffs against them, touching only what changed; a transaction that fails drops what it
// would have left there. Write applies a batch of Puts and Deletes in one transaction:
// one fsync for a whole flush of the reconciler. Crash safety is bbolt's transaction: a crash
// before the commit leaves the previous state, after it the new one, never a mixture.
//
// Why big resources get a bucket each: bbolt rewrites every leaf it modifies in full at the
// commit, and a leaf holds at least two entries however big they are. With a 190 KB body in
// the same leaf as a small resource, changing the small one rewrote the big one. A nested
// bucket that is not inline (a value of a quarter page or more never is) is a 16-byte header
// in its parent's leaf, with its own pages: rewriting the parent does not touch them. So a
// change writes its own bytes and a few small pages (ADR 0013).
//
// Open migrates older files in one transaction: schema "1" kept every snapshot as one value
// (the form of snapshot.EncodeSnapshot), verified as it is read; schema "2" had every stored
// form as a value in res, and its long values move to buckets of their own, byte for byte
// (reads verify them as always).
//
// The configuration revision is stored, so it keeps growing across restarts.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/meshrelay/meshrelay/internal/atomicfile"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// FileName is the store's file in the data directory.
const FileName = "store.db"

// lockTimeout is how long Open waits for another process to release the file.
const lockTimeout = time.Second

// schema is the layout version written in the meta bucket; schemaWhole and schemaFlat are
// the previous ones, which Open migrates.
const (
	schema      = "3"
	schemaFlat  = "2"
	schemaWhole = "1"
)

// ErrLocked means another process (another management server on the same data directory)
// holds the store's file.
var ErrLocked = errors.New("store file is locked by another process")

var (
	bucketConfig = []byte("config")
	bucketMeta   = []byte("meta")
	keySchema    = []byte("schema")
	keyRev       = []byte("config.rev")
	// In a cluster's bucket: its meta entry and its bucket of resources.
	keySnapMeta = []byte("meta")
	bucketRes   = []byte("res")
	// In the bucket of a long resource: its stored form.
	keyBody = []byte("v")
)

// metaLen is the size of a snapshot's meta entry: version, epoch, content hash.
const metaLen = 8 + 8 + 64

func snapBucket(kind snapshot.Kind) []byte { return []byte(kind) }
func hashBucket(kind snapshot.Kind) []byte { return []byte(string(kind) + ".hash") }

// Store is a snapshot.Store in a bbolt file. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
	// long is the length from which a resource's stored form gets a bucket of its own: a
	// quarter of the file's page, from which bbolt never inlines a bucket in its parent.
	long int
	// migratedFrom is the schema of the file when Open migrated it, else "".
	migratedFrom string

	// mu serializes Write and guards written.
	mu sync.Mutex
	// written is what this process's committed writes left stored for a snapshot (by kind
	// and cluster): bbolt's lock makes it the file's only writer, so a Put diffs the new
	// snapshot with it in memory, in O(change), instead of reading every stored resource's
	// hash (and the page of every big one). Absent (first write after Open, after a failed
	// transaction): the Put reads the bucket as before.
	written map[writtenKey]*stored
}

type writtenKey struct {
	kind    snapshot.Kind
	cluster string
}

// stored is what a cluster's resource bucket holds: each resource's hash, and which
// resources have a bucket of their own.
type stored struct {
	hashes map[string]string
	nested map[string]bool
}

var _ snapshot.Store = (*Store)(nil)

// Open opens (creating it, mode 0600) the store file at path and takes its lock; it fails
// with ErrLocked when another process holds it. The caller closes the store.
func Open(path string) (*Store, error) {
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// As etcd opens its bbolt file: map 1 GiB of address space up front (not memory),
		// so that a growing file is not re-mapped, which copies every open node out of the
		// old mapping inside a commit; keep the free-page list in a map and rebuild it at
		// open instead of writing it at every commit.
		InitialMmapSize: 1 << 30,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db, long: db.Info().PageSize / 4, written: map[writtenKey]*stored{}}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if os.IsNotExist(statErr) {
		// The file is new: make its directory entry durable too.
		if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketConfig, bucketMeta,
			snapBucket(snapshot.Input), snapBucket(snapshot.Output), hashBucket(snapshot.Input), hashBucket(snapshot.Output)} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, []byte(schema))
		case string(v) == schemaWhole:
			if err := s.migrateWhole(tx); err != nil {
				return fmt.Errorf("migrate store schema %s to %s: %w", schemaWhole, schema, err)
			}
			s.migratedFrom = schemaWhole
			return meta.Put(keySchema, []byte(schema))
		case string(v) == schemaFlat:
			if err := s.migrateFlat(tx); err != nil {
				return fmt.Errorf("migrate store schema %s to %s: %w", schemaFlat, schema, err)
			}
			s.migratedFrom = schemaFlat
			return meta.Put(keySchema, []byte(schema))
		case string(v) != schema:
			return fmt.Errorf("store schema %q, this version of meshrelay reads %q (and migrates %q and %q)", v, schema, schemaWhole, schemaFlat)
		}
		return nil
	})
}

// migrateWhole rewrites the snapshots of schema "1" (one value per cluster) in the current
// layout, inside the caller's transaction.
func (s *Store) migrateWhole(tx *bolt.Tx) error {
	for _, kind := range []snapshot.Kind{snapshot.Input, snapshot.Output} {
		snaps := map[string]*snapshot.Snapshot{}
		err := tx.Bucket(snapBucket(kind)).ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("%s bucket holds a bucket %q, want schema %s values", kind, k, schemaWhole)
			}
			snap, err := snapshot.DecodeSnapshot(v) // copies
			if err != nil {
				return fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, k, err)
			}
			snaps[string(k)] = snap
			return nil
		})
		if err != nil {
			return err
		}
		if err := tx.DeleteBucket(snapBucket(kind)); err != nil {
			return fmt.Errorf("drop %s bucket: %w", kind, err)
		}
		if _, err := tx.CreateBucket(snapBucket(kind)); err != nil {
			return fmt.Errorf("create %s bucket: %w", kind, err)
		}
		for cluster, snap := range snaps {
			ops, _, err := s.plan(nil, snap)
			if err != nil {
				return fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, err)
			}
			if err := s.putTx(tx, kind, cluster, snap, ops); err != nil {
				return err
			}
		}
	}
	return nil
}

// migrateFlat moves the long stored forms of schema "2" (every resource a value of the
// cluster's res bucket) to buckets of their own, byte for byte, inside the caller's
// transaction.
func (s *Store) migrateFlat(tx *bolt.Tx) error {
	for _, kind := range []snapshot.Kind{snapshot.Input, snapshot.Output} {
		kb := tx.Bucket(snapBucket(kind))
		var clusters [][]byte
		err := kb.ForEach(func(k, v []byte) error {
			if v != nil {
				return fmt.Errorf("%s bucket holds a value under %q, want a cluster's bucket", kind, k)
			}
			clusters = append(clusters, bytes.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, cluster := range clusters {
			rb := kb.Bucket(cluster).Bucket(bucketRes)
			if rb == nil {
				continue
			}
			long := map[string][]byte{}
			err := rb.ForEach(func(k, v []byte) error {
				if v == nil {
					return fmt.Errorf("%s snapshot of cluster %q: resource %s is a bucket, want a schema %s value", kind, cluster, k, schemaFlat)
				}
				if len(v) >= s.long {
					long[string(k)] = bytes.Clone(v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			for k, v := range long {
				if err := rb.Delete([]byte(k)); err != nil {
					return fmt.Errorf("%s snapshot of cluster %q: resource %s: %w", kind, cluster, k, err)
				}
				if err := putLong(rb, []byte(k), v); err != nil {
					return fmt.Errorf("%s snapshot of cluster %q: resource %s: %w", kind, cluster, k, err)
				}
			}
		}
	}
	return nil
}

// putLong puts the stored form v of the resource k in a bucket of its own in rb (creating
// it, or replacing the form it holds).
func putLong(rb *bolt.Bucket, k, v []byte) error {
	b, err := rb.CreateBucketIfNotExists(k)
	if err != nil {
		return err
	}
	return b.Put(keyBody, v)
}

// storedForm is the stored form of the resource k of a res bucket: the value itself, or
// (when the value is nil: k is a bucket) the value in k's bucket. It is nil when k's bucket
// holds none.
func storedForm(rb *bolt.Bucket, k, v []byte) []byte {
	if v != nil {
		return v
	}
	if b := rb.Bucket(k); b != nil {
		return b.Get(keyBody)
	}
	return nil
}

// Close releases the file and its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.db.Path(), err)
	}
	return nil
}

// Migrated reports the schema the file had when Open migrated it to the current one (and
// which that is), or ok false when Open found the current schema or created the file.
func (s *Store) Migrated() (from, to string, ok bool) {
	return s.migratedFrom, schema, s.migratedFrom != ""
}

// Path is the store's file.
func (s *Store) Path() string { return s.db.Path() }

// Get implements snapshot.Store.
func (s *Store) Get(_ context.Context, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	var snap *snapshot.Snapshot
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(snapBucket(kind)).Bucket([]byte(cluster))
		if cb == nil {
			return fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, snapshot.ErrNotFound)
		}
		var err error
		snap, err = readSnapshot(cb, kind, cluster)
		return err
	})
	return snap, err
}

// readSnapshot reads and verifies the snapshot in a cluster's bucket; it copies every byte
// (the bucket's memory is only valid inside the transaction).
func readSnapshot(cb *bolt.Bucket, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	meta := cb.Get(keySnapMeta)
	if len(meta) != metaLen {
		return nil, fmt.Errorf("decode %s snapshot of cluster %q: meta entry of %d bytes, want %d", kind, cluster, len(meta), metaLen)
	}
	version, epoch, hash := binary.BigEndian.Uint64(meta), binary.BigEndian.Uint64(meta[8:]), string(meta[16:])
	m := map[string]snapshot.Resource{}
	if rb := cb.Bucket(bucketRes); rb != nil {
		err := rb.ForEach(func(k, v []byte) error {
			r, err := snapshot.DecodeStoredResource(string(k), storedForm(rb, k, v))
			if err != nil {
				return err
			}
			m[r.Key] = r
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, cluster, err)
		}
	}
	snap, err := snapshot.Assemble(version, epoch, hash, m)
	if err != nil {
		return nil, fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	return snap, nil
}

// ops is what a Put changes in a cluster's resource bucket: the stored form of every new or
// changed resource (key → value), the keys of removed ones, and which of those keys are now
// stored in a bucket of their own.
type ops struct {
	put    map[string][]byte
	drop   [][]byte
	nested map[string]bool
}

// plan compares the stored resources (rb, nil when the cluster has none) with snap, key by
// key in sorted order, reading only the stored hashes, and encodes what changed. It writes
// nothing, so a resource that does not encode leaves the store as it was. It also returns
// what the bucket holds once the ops are applied.
func (s *Store) plan(rb *bolt.Bucket, snap *snapshot.Snapshot) (ops, *stored, error) {
	keys := snap.Keys()
	o := ops{put: map[string][]byte{}, nested: map[string]bool{}}
	after := &stored{hashes: make(map[string]string, len(keys)), nested: map[string]bool{}}
	i := 0
	if rb != nil {
		c := rb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			for i < len(keys) && keys[i] < string(k) {
				o.put[keys[i]] = nil // new key
				i++
			}
			if i < len(keys) && keys[i] == string(k) {
				if !snapshot.StoredHashIs(storedForm(rb, k, v), snap.Resources[keys[i]].Hash) {
					o.put[keys[i]] = nil
					o.nested[keys[i]] = v == nil
				} else if v == nil {
					after.nested[keys[i]] = true
				}
				i++
				continue
			}
			o.drop = append(o.drop, bytes.Clone(k))
			o.nested[string(k)] = v == nil
		}
	}
	for ; i < len(keys); i++ {
		o.put[keys[i]] = nil
	}
	for _, k := range keys {
		after.hashes[k] = snap.Resources[k].Hash
	}
	if err := s.encode(o, snap, after); err != nil {
		return ops{}, nil, err
	}
	return o, after, nil
}

// planFrom is plan for a bucket whose content this process wrote (was): it compares the
// hashes in memory and touches only what changed; was becomes what the bucket holds once
// the ops are applied (the caller forgets it if the transaction fails).
func (s *Store) planFrom(was *stored, snap *snapshot.Snapshot) (ops, *stored, error) {
	o := ops{put: map[string][]byte{}, nested: map[string]bool{}}
	for k, r := range snap.Resources {
		if h, ok := was.hashes[k]; ok && h == r.Hash {
			continue
		}
		o.put[k] = nil
		o.nested[k] = was.nested[k]
	}
	for k := range was.hashes {
		if _, ok := snap.Resources[k]; !ok {
			o.drop = append(o.drop, []byte(k))
			o.nested[k] = was.nested[k]
		}
	}
	if err := s.encode(o, snap, nil); err != nil {
		return ops{}, nil, err
	}
	for _, k := range o.drop {
		delete(was.hashes, string(k))
		delete(was.nested, string(k))
	}
	for k, v := range o.put {
		was.hashes[k] = snap.Resources[k].Hash
		was.nested[k] = len(v) >= s.long
	}
	return o, was, nil
}

// encode fills in the stored form of every resource o puts, and records in after (when not
// nil) which of them get a bucket of their own.
func (s *Store) encode(o ops, snap *snapshot.Snapshot, after *stored) error {
	for k := range o.put {
		v, err := snapshot.AppendStoredResource(nil, snap.Resources[k])
		if err != nil {
			return err
		}
		o.put[k] = v
		if after != nil && len(v) >= s.long {
			after.nested[k] = true
		}
	}
	return nil
}

// putTx applies planned ops and writes the snapshot's meta entry and index entry. A stored
// form of s.long bytes or more goes in a bucket of its own, a shorter one in rb itself.
func (s *Store) putTx(tx *bolt.Tx, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot, o ops) error {
	cb, err := tx.Bucket(snapBucket(kind)).CreateBucketIfNotExists([]byte(cluster))
	if err != nil {
		return fmt.Errorf("put %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	rb, err := cb.CreateBucketIfNotExists(bucketRes)
	if err != nil {
		return fmt.Errorf("put %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	for _, k := range o.drop {
		if err := deleteRes(rb, k, o.nested[string(k)]); err != nil {
			return fmt.Errorf("put %s snapshot of cluster %q: delete resource %s: %w", kind, cluster, k, err)
		}
	}
	for k, v := range o.put {
		if err := putRes(rb, []byte(k), v, o.nested[k], len(v) >= s.long); err != nil {
			return fmt.Errorf("put %s snapshot of cluster %q: resource %s: %w", kind, cluster, k, err)
		}
	}
	meta := make([]byte, 0, metaLen)
	meta = binary.BigEndian.AppendUint64(meta, snap.Version)
	meta = binary.BigEndian.AppendUint64(meta, snap.Epoch)
	meta = append(meta, snap.Hash...)
	if len(meta) != metaLen {
		return fmt.Errorf("put %s snapshot of cluster %q: content hash %q is not a hex SHA-256", kind, cluster, snap.Hash)
	}
	if err := cb.Put(keySnapMeta, meta); err != nil {
		return fmt.Errorf("put %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	if err := tx.Bucket(hashBucket(kind)).Put([]byte(cluster), []byte(snap.Hash)); err != nil {
		return fmt.Errorf("put %s snapshot of cluster %q: index: %w", kind, cluster, err)
	}
	return nil
}

// putRes stores the stored form v of the resource k in rb, as a value or, when long, in a
// bucket of its own, replacing what is stored (in a bucket when nested).
func putRes(rb *bolt.Bucket, k, v []byte, nested, long bool) error {
	switch {
	case long && !nested:
		if err := rb.Delete(k); err != nil { // the short value stored before, if any
			return err
		}
	case !long && nested:
		if err := rb.DeleteBucket(k); err != nil {
			return err
		}
	}
	if long {
		return putLong(rb, k, v)
	}
	return rb.Put(k, v)
}

// deleteRes deletes the resource k from rb: its bucket when nested, else its value.
func deleteRes(rb *bolt.Bucket, k []byte, nested bool) error {
	if nested {
		return rb.DeleteBucket(k)
	}
	return rb.Delete(k)
}

func deleteTx(tx *bolt.Tx, kind snapshot.Kind, cluster string) error {
	err := tx.Bucket(snapBucket(kind)).DeleteBucket([]byte(cluster))
	if err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
		return fmt.Errorf("delete %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	if err := tx.Bucket(hashBucket(kind)).Delete([]byte(cluster)); err != nil {
		return fmt.Errorf("delete %s snapshot of cluster %q: index: %w", kind, cluster, err)
	}
	return nil
}

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) error {
	return s.Write(ctx, []snapshot.Write{{Kind: kind, Cluster: cluster, Snap: snap}})[0]
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, kind snapshot.Kind, cluster string) error {
	return s.Write(ctx, []snapshot.Write{{Kind: kind, Cluster: cluster}})[0]
}

// txBytes bounds the resource bytes one transaction of Write puts: a batch of small changes
// is one transaction, while a batch of whole snapshots (the first write of every cluster)
// is cut into transactions of about this size rather than held in memory at once. (A
// variable for tests.)
var txBytes = 16 << 20

// Write implements snapshot.Store: the batch is one transaction, committed (and fsynced)
// once, unless it puts more than txBytes, when it takes a transaction per txBytes. A snapshot
// with a resource that does not encode is refused alone, before anything of it is written;
// an error of bbolt itself fails (rolls back) its transaction and the items after it.
func (s *Store) Write(_ context.Context, batch []snapshot.Write) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make([]error, len(batch))
	for next := 0; next < len(batch); {
		first := next
		err := s.db.Update(func(tx *bolt.Tx) error {
			next = first
			written := 0
			for next < len(batch) && written < txBytes {
				i, w := next, batch[next]
				next++
				wk := writtenKey{w.Kind, w.Cluster}
				if w.Snap == nil {
					delete(s.written, wk)
					if err := deleteTx(tx, w.Kind, w.Cluster); err != nil {
						return err
					}
					continue
				}
				var o ops
				var after *stored
				var err error
				if was := s.written[wk]; was != nil {
					o, after, err = s.planFrom(was, w.Snap)
				} else {
					var rb *bolt.Bucket
					if cb := tx.Bucket(snapBucket(w.Kind)).Bucket([]byte(w.Cluster)); cb != nil {
						rb = cb.Bucket(bucketRes)
					}
					o, after, err = s.plan(rb, w.Snap)
				}
				if err != nil {
					errs[i] = fmt.Errorf("encode %s snapshot of cluster %q: %w", w.Kind, w.Cluster, err)
					continue
				}
				s.written[wk] = after
				if err := s.putTx(tx, w.Kind, w.Cluster, w.Snap, o); err != nil {
					return err
				}
				for _, v := range o.put {
					written += len(v)
				}
			}
			return nil
		})
		if err != nil {
			// Rolled back: what this transaction's items left in memory is not what the file
			// holds; their next Put reads the bucket.
			for i := first; i < next; i++ {
				delete(s.written, writtenKey{batch[i].Kind, batch[i].Cluster})
			}
			for i := first; i < len(batch); i++ {
				errs[i] = fmt.Errorf("write %d snapshots: %w", len(batch)-first, err)
			}
			break
		}
	}
	return errs
}

// List implements snapshot.Store.
func (s *Store) List(_ context.Context, kind snapshot.Kind) (map[string]*snapshot.Snapshot, error) {
	out := map[string]*snapshot.Snapshot{}
	err := s.db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket(snapBucket(kind))
		return kb.ForEach(func(k, _ []byte) error {
			cb := kb.Bucket(k)
			if cb == nil {
				return fmt.Errorf("%s bucket holds a value under %q, want a cluster's bucket", kind, k)
			}
			snap, err := readSnapshot(cb, kind, string(k))
			if err != nil {
				return err
			}
			out[string(k)] = snap
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s snapshots: %w", kind, err)
	}
	return out, nil
}

// Exclusive reports that only this process writes the store: bbolt holds the file locked
// (a management server that reads it need not poll it for other servers' writes).
func (s *Store) Exclusive() bool { return true }

// Index implements snapshot.Store.
func (s *Store) Index(_ context.Context, kind snapshot.Kind) (map[string]string, error) {
	out := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(hashBucket(kind)).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read %s index: %w", kind, err)
	}
	return out, nil
}

// PutConfig implements snapshot.Store. Storing a resource with the hash already stored does
// not change the revision.
func (s *Store) PutConfig(_ context.Context, r snapshot.Resource) error {
	b, err := snapshot.EncodeResource(r)
	if err != nil {
		return fmt.Errorf("encode config resource %s: %w", r.Key, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		cfg := tx.Bucket(bucketConfig)
		if cur := cfg.Get([]byte(r.Key)); cur != nil {
			if old, err := snapshot.DecodeResource(cur); err == nil && old.Hash == r.Hash {
				return nil
			}
		}
		if err := cfg.Put([]byte(r.Key), b); err != nil {
			return err
		}
		return bumpRev(tx)
	})
	if err != nil {
		return fmt.Errorf("put config resource %s: %w", r.Key, err)
	}
	return nil
}

// DeleteConfig implements snapshot.Store.
func (s *Store) DeleteConfig(_ context.Context, key string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		cfg := tx.Bucket(bucketConfig)
		if cfg.Get([]byte(key)) == nil {
			return fmt.Errorf("config resource %s: %w", key, snapshot.ErrNotFound)
		}
		if err := cfg.Delete([]byte(key)); err != nil {
			return err
		}
		return bumpRev(tx)
	})
	if errors.Is(err, snapshot.ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("delete config resource %s: %w", key, err)
	}
	return nil
}

func bumpRev(tx *bolt.Tx) error {
	rev, err := readRev(tx)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keyRev, binary.BigEndian.AppendUint64(nil, rev+1))
}

func readRev(tx *bolt.Tx) (uint64, error) {
	v := tx.Bucket(bucketMeta).Get(keyRev)
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, fmt.Errorf("decode config revision: %d bytes, want 8", len(v))
}

// ListConfig implements snapshot.Store; the resources and the revision come from one
// transaction.
func (s *Store) ListConfig(_ context.Context) ([]snapshot.Resource, uint64, error) {
	var out []snapshot.Resource
	var rev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if rev, err = readRev(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketConfig).ForEach(func(k, v []byte) error {
			r, err := snapshot.DecodeResource(v) // copies the body
			if err != nil {
				return fmt.Errorf("decode config resource %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list config: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, rev, nil
}

// ConfigRevision implements snapshot.Store.
func (s *Store) ConfigRevision(_ context.Context) (uint64, error) {
	var rev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		rev, err = readRev(tx)
		return err
	})
	return rev, err
}

// Ping implements snapshot.Store: the file is open.
func (s *Store) Ping(context.Context) error {
	return s.db.View(func(*bolt.Tx) error { return nil })
}
