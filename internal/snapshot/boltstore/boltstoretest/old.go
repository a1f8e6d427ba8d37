// Package boltstoretest writes store files in the layouts of earlier versions of boltstore,
// for the tests of its migrations (the package's own tests and the end-to-end tests that
// start a server on an old data directory). It writes with bbolt directly, as those versions
// did, so that the old layouts stay fixed whatever happens to boltstore.
package boltstoretest

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/snapshottest"
)

// Contents is what a store file holds.
type Contents struct {
	Snapshots map[snapshot.Kind]map[string]*snapshot.Snapshot
	Config    []snapshot.Resource
	// ConfigRev is the configuration revision.
	ConfigRev uint64
}

// WriteOld creates the store file at path (which must not exist) holding c in the layout of
// schema "1" (every snapshot one value, snapshottest.EncodeV1) or "2" (a bucket per
// cluster: "meta" → version, epoch, content hash; "res" bucket: resource key → hash and
// body, every resource a value).
func WriteOld(path, schema string, c Contents) error {
	if schema != "1" && schema != "2" {
		return fmt.Errorf("write store schema %q: only 1 and 2 are old layouts", schema)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return fmt.Errorf("write store schema %s: %w", schema, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if err := meta.Put([]byte("schema"), []byte(schema)); err != nil {
			return err
		}
		if err := meta.Put([]byte("config.rev"), binary.BigEndian.AppendUint64(nil, c.ConfigRev)); err != nil {
			return err
		}
		cfg, err := tx.CreateBucket([]byte("config"))
		if err != nil {
			return err
		}
		for _, r := range c.Config {
			b, err := snapshot.EncodeResource(r)
			if err != nil {
				return err
			}
			if err := cfg.Put([]byte(r.Key), b); err != nil {
				return err
			}
		}
		for _, kind := range []snapshot.Kind{snapshot.Input, snapshot.Output} {
			sb, err := tx.CreateBucket([]byte(kind))
			if err != nil {
				return err
			}
			hb, err := tx.CreateBucket([]byte(string(kind) + ".hash"))
			if err != nil {
				return err
			}
			for cluster, snap := range c.Snapshots[kind] {
				if schema == "1" {
					err = sb.Put([]byte(cluster), snapshottest.EncodeV1(snap))
				} else {
					err = putFlat(sb, cluster, snap)
				}
				if err != nil {
					return fmt.Errorf("%s snapshot of cluster %q: %w", kind, cluster, err)
				}
				if err := hb.Put([]byte(cluster), []byte(snap.Hash)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write store schema %s at %s: %w", schema, path, err)
	}
	return nil
}

// putFlat writes snap as schema "2" did.
func putFlat(sb *bolt.Bucket, cluster string, snap *snapshot.Snapshot) error {
	cb, err := sb.CreateBucket([]byte(cluster))
	if err != nil {
		return err
	}
	meta := binary.BigEndian.AppendUint64(nil, snap.Version)
	meta = binary.BigEndian.AppendUint64(meta, snap.Epoch)
	if err := cb.Put([]byte("meta"), append(meta, snap.Hash...)); err != nil {
		return err
	}
	rb, err := cb.CreateBucket([]byte("res"))
	if err != nil {
		return err
	}
	for _, r := range snap.Sorted() {
		if err := rb.Put([]byte(r.Key), append([]byte(r.Hash), r.Body...)); err != nil {
			return err
		}
	}
	return nil
}
