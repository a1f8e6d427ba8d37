// Package boltstore is the durable snapshot.Store of a single management server: one bbolt
// (go.etcd.io/bbolt) file in the server's data directory, <data-dir>/store.db.
//
// Every write is one bbolt transaction, committed and fsynced before the method returns, so a
// configuration resource that PutConfig (`meshrelay apply`) accepted survives the process
// being killed. bbolt takes an exclusive lock on the file: a second process that opens it
// fails after a short wait with ErrLocked instead of writing beside the first.
//
// Layout (every value in the form of snapshot.EncodeSnapshot / snapshot.EncodeResource):
//
//	input    bucket: cluster → input snapshot
//	output   bucket: cluster → output snapshot
//	input.hash, output.hash  buckets: cluster → content hash of its snapshot (for Index)
//	config   bucket: resource key → configuration resource
//	meta     bucket: "schema" → "1"; "config.rev" → configuration revision (8 bytes, big endian)
//
// The configuration revision is stored, so it keeps growing across restarts.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// FileName is the store's file in the data directory.
const FileName = "store.db"

// lockTimeout is how long Open waits for another process to release the file.
const lockTimeout = time.Second

// schema is the layout version written in the meta bucket.
const schema = "1"

// ErrLocked means another process (another management server on the same data directory)
// holds the store's file.
var ErrLocked = errors.New("store file is locked by another process")

var (
	bucketConfig = []byte("config")
	bucketMeta   = []byte("meta")
	keySchema    = []byte("schema")
	keyRev       = []byte("config.rev")
)

func snapBucket(kind snapshot.Kind) []byte { return []byte(kind) }
func hashBucket(kind snapshot.Kind) []byte { return []byte(string(kind) + ".hash") }

// Store is a snapshot.Store in a bbolt file. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

var _ snapshot.Store = (*Store)(nil)

// Open opens (creating it, mode 0600) the store file at path and takes its lock; it fails
// with ErrLocked when another process holds it. The caller closes the store.
func Open(path string) (*Store, error) {
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if os.IsNotExist(statErr) {
		// The file is new: make its directory entry durable too.
		if err := syncDir(filepath.Dir(path)); err != nil {
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
		case string(v) != schema:
			return fmt.Errorf("store schema %q, this version of meshrelay reads %q", v, schema)
		}
		return nil
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
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

// Path is the store's file.
func (s *Store) Path() string { return s.db.Path() }

// Get implements snapshot.Store.
func (s *Store) Get(_ context.Context, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	var snap *snapshot.Snapshot
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(snapBucket(kind)).Get([]byte(cluster))
		if b == nil {
			return fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, snapshot.ErrNotFound)
		}
		var err error
		snap, err = decodeSnapshot(b, kind, cluster)
		return err
	})
	return snap, err
}

func decodeSnapshot(b []byte, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	snap, err := snapshot.DecodeSnapshot(b) // copies: b is only valid inside the transaction
	if err != nil {
		return nil, fmt.Errorf("decode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	return snap, nil
}

// Put implements snapshot.Store.
func (s *Store) Put(_ context.Context, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) error {
	b, err := snapshot.EncodeSnapshot(snap)
	if err != nil {
		return fmt.Errorf("encode %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(snapBucket(kind)).Put([]byte(cluster), b); err != nil {
			return err
		}
		return tx.Bucket(hashBucket(kind)).Put([]byte(cluster), []byte(snap.Hash))
	})
	if err != nil {
		return fmt.Errorf("put %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	return nil
}

// Delete implements snapshot.Store.
func (s *Store) Delete(_ context.Context, kind snapshot.Kind, cluster string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(snapBucket(kind)).Delete([]byte(cluster)); err != nil {
			return err
		}
		return tx.Bucket(hashBucket(kind)).Delete([]byte(cluster))
	})
	if err != nil {
		return fmt.Errorf("delete %s snapshot of cluster %q: %w", kind, cluster, err)
	}
	return nil
}

// List implements snapshot.Store.
func (s *Store) List(_ context.Context, kind snapshot.Kind) (map[string]*snapshot.Snapshot, error) {
	out := map[string]*snapshot.Snapshot{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(snapBucket(kind)).ForEach(func(k, v []byte) error {
			snap, err := decodeSnapshot(v, kind, string(k))
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
