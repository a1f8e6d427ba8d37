package boltstore

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/snapshottest"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// bigSnapshot has n resources of about size bytes each.
func bigSnapshot(version uint64, n, size int) *snapshot.Snapshot {
	rs := make([]snapshot.Resource, n)
	for i := range rs {
		body := fmt.Sprintf(`{"name":"r%d","pad":%q}`, i, strings.Repeat("x", size))
		rs[i] = snapshot.NewResource(fmt.Sprintf("Cluster//r%04d", i), []byte(body))
	}
	return snapshot.New(version, 1, rs)
}

func changed(snap *snapshot.Snapshot, version uint64, key, body string) *snapshot.Snapshot {
	m := make(map[string]snapshot.Resource, snap.Len())
	for k, r := range snap.Resources {
		m[k] = r
	}
	m[key] = snapshot.NewResource(key, []byte(body))
	return snapshot.FromMap(version, snap.Epoch, m)
}

// pagesAllocated returns the bytes of pages the write transactions of fn allocated: what
// they wrote to the file.
func pagesAllocated(s *Store, fn func()) int64 {
	alloc := func() int64 { st := s.db.Stats(); return st.TxStats.GetPageAlloc() }
	before := alloc()
	fn()
	return alloc() - before
}

// commits returns how many write transactions fn committed: each commit increments the
// transaction id in the file's meta page.
func commits(t *testing.T, s *Store, fn func()) int {
	t.Helper()
	txid := func() int {
		var id int
		must(t, s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }))
		return id
	}
	before := txid()
	fn()
	return txid() - before
}

// TestSmallChangeWritesLittle: a change of one resource of a 2 MB snapshot writes a few
// pages of the file, not the snapshot.
func TestSmallChangeWritesLittle(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const n, size = 1000, 2000
	snap := bigSnapshot(1, n, size)
	whole := pagesAllocated(s, func() { must(t, s.Put(ctx, snapshot.Output, "east", snap)) })
	if whole < n*size {
		t.Fatalf("the first Put wrote %d bytes of pages for a snapshot of %d bytes: the measure misses writes", whole, n*size)
	}
	next := changed(snap, 2, "Cluster//r0500", `{"changed":true}`)
	small := pagesAllocated(s, func() { must(t, s.Put(ctx, snapshot.Output, "east", next)) })
	restamp := pagesAllocated(s, func() { must(t, s.Put(ctx, snapshot.Output, "east", next.WithVersion(3, 2))) })
	t.Logf("whole snapshot: %d bytes of pages; one changed resource: %d; same content, new version: %d", whole, small, restamp)
	if small > whole/20 || restamp > whole/20 {
		t.Fatalf("a change of one resource wrote %d bytes of pages, a new version %d, the whole snapshot %d: not proportional to the change", small, restamp, whole)
	}
	got, err := s.Get(ctx, snapshot.Output, "east")
	must(t, err)
	if got.Hash != next.Hash || got.Version != 3 || got.Epoch != 2 {
		t.Fatalf("after the changes: version %d epoch %d hash %s, want 3 2 %s", got.Version, got.Epoch, got.Hash, next.Hash)
	}
}

// TestWriteIsOneTransaction: a batch of many snapshots (a reconciler's flush) is one commit,
// so one fsync; Put of each would be as many.
func TestWriteIsOneTransaction(t *testing.T) {
	s := openTemp(t)
	var batch []snapshot.Write
	for i := range 20 {
		batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: fmt.Sprintf("c%02d", i), Snap: bigSnapshot(1, 10, 100)})
	}
	batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: "c00"}) // and a delete
	n := commits(t, s, func() {
		for i, err := range s.Write(t.Context(), batch) {
			if err != nil {
				t.Fatalf("item %d: %v", i, err)
			}
		}
	})
	if n != 1 {
		t.Fatalf("a batch of %d items took %d commits, want 1", len(batch), n)
	}
	idx, err := s.Index(t.Context(), snapshot.Output)
	must(t, err)
	if len(idx) != 19 || idx["c00"] != "" {
		t.Fatalf("index after the batch has %d clusters (c00: %q), want 19 without c00", len(idx), idx["c00"])
	}
}

// writeV1 writes a store file of schema "1" with bbolt directly.
func writeV1(t *testing.T, path string, snaps map[snapshot.Kind]map[string]*snapshot.Snapshot, cfg snapshot.Resource) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	must(t, err)
	defer db.Close()
	must(t, db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if err := meta.Put([]byte("schema"), []byte("1")); err != nil {
			return err
		}
		if err := meta.Put([]byte("config.rev"), []byte{0, 0, 0, 0, 0, 0, 0, 7}); err != nil {
			return err
		}
		c, err := tx.CreateBucket([]byte("config"))
		if err != nil {
			return err
		}
		b, err := snapshot.EncodeResource(cfg)
		if err != nil {
			return err
		}
		if err := c.Put([]byte(cfg.Key), b); err != nil {
			return err
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
			for cluster, snap := range snaps[kind] {
				if err := sb.Put([]byte(cluster), snapshottest.EncodeV1(snap)); err != nil {
					return err
				}
				if err := hb.Put([]byte(cluster), []byte(snap.Hash)); err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

// TestMigratesSchema1: a file of schema "1" opens as schema "2" with every snapshot, the
// configuration and its revision, and takes small changes afterwards.
func TestMigratesSchema1(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), FileName)
	snaps := map[snapshot.Kind]map[string]*snapshot.Snapshot{
		snapshot.Input: {
			"east":  snapshot.New(3, 0, []snapshot.Resource{snapshot.NewResource("Service/ns/a", []byte(`{"port":80}`))}),
			"empty": snapshot.New(1, 0, nil),
		},
		snapshot.Output: {
			"east": bigSnapshot(4, 50, 300),
			"west": snapshot.New(2, 2, []snapshot.Resource{snapshot.NewResource("Listener//l", []byte(`{"x":"<&>", "y": [1, 2]}`))}),
		},
	}
	cfg := snapshot.NewResource("RouteTable/ns/r", []byte(`{"kind":"RouteTable"}`))
	writeV1(t, path, snaps, cfg)

	for round := range 2 { // migrated, then opened again as schema 2
		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		must(t, s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketMeta).Get(keySchema); string(v) != schema {
				t.Errorf("round %d: schema %q after Open, want %q", round, v, schema)
			}
			return nil
		}))
		for kind, want := range snaps {
			got, err := s.List(ctx, kind)
			must(t, err)
			if len(got) != len(want) {
				t.Fatalf("round %d: List(%s) has %d clusters, want %d", round, kind, len(got), len(want))
			}
			idx, err := s.Index(ctx, kind)
			must(t, err)
			for cluster, w := range want {
				g := got[cluster]
				if g == nil || g.Hash != w.Hash || g.Version != w.Version || g.Epoch != w.Epoch || g.Len() != w.Len() {
					t.Fatalf("round %d: %s of %s = %+v, want version %d epoch %d hash %s", round, kind, cluster, g, w.Version, w.Epoch, w.Hash)
				}
				for k, r := range w.Resources {
					if !bytes.Equal(g.Resources[k].Body, r.Body) {
						t.Fatalf("round %d: %s of %s: resource %s = %s, want %s", round, kind, cluster, k, g.Resources[k].Body, r.Body)
					}
				}
				if idx[cluster] != w.Hash {
					t.Fatalf("round %d: Index(%s)[%s] = %s, want %s", round, kind, cluster, idx[cluster], w.Hash)
				}
			}
		}
		rs, rev, err := s.ListConfig(ctx)
		must(t, err)
		if rev != 7 || len(rs) != 1 || rs[0].Hash != cfg.Hash {
			t.Fatalf("round %d: config after migration: revision %d, %v", round, rev, rs)
		}
		next := changed(snaps[snapshot.Output]["east"], uint64(5+round), "Cluster//r0001", `{"after":"migration"}`)
		must(t, s.Put(ctx, snapshot.Output, "east", next))
		got, err := s.Get(ctx, snapshot.Output, "east")
		must(t, err)
		if got.Hash != next.Hash || got.Len() != next.Len() {
			t.Fatalf("round %d: Put after migration stored hash %s (%d resources), want %s (%d)", round, got.Hash, got.Len(), next.Hash, next.Len())
		}
		snaps[snapshot.Output]["east"] = next
		must(t, s.Close())
	}
}

// TestCorruptSchema1RefusesToOpen: a schema "1" value that does not decode fails Open with
// the cluster named, and leaves the file as it was (the migration is one transaction).
func TestCorruptSchema1RefusesToOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	good := snapshot.New(1, 0, []snapshot.Resource{snapshot.NewResource("a", []byte(`{}`))})
	writeV1(t, path, map[snapshot.Kind]map[string]*snapshot.Snapshot{snapshot.Input: {"good": good}}, snapshot.NewResource("c", []byte(`{}`)))
	db, err := bolt.Open(path, 0o600, nil)
	must(t, err)
	must(t, db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("output")).Put([]byte("broken"), []byte(`{"version":1,"hash":"x","resources":[{"key":"k","hash":"00","body":{}}]}`))
	}))
	must(t, db.Close())

	s, err := Open(path)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a schema 1 file with a corrupt snapshot succeeded")
	}
	if !strings.Contains(err.Error(), `"broken"`) || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("Open = %v, want a migration error naming cluster \"broken\"", err)
	}
	db, err = bolt.Open(path, 0o600, nil)
	must(t, err)
	defer db.Close()
	must(t, db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("schema")); string(v) != "1" {
			t.Errorf("schema after a failed migration = %q, want 1", v)
		}
		if v := tx.Bucket([]byte("input")).Get([]byte("good")); v == nil {
			t.Error("the schema 1 value of cluster good is gone after a failed migration")
		}
		return nil
	}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteCutsLargeBatches: a batch of whole snapshots larger than txBytes (made small
// here) is cut into
// several transactions (not held in memory at once), and every item is stored.
func TestWriteCutsLargeBatches(t *testing.T) {
	s := openTemp(t)
	defer func(was int) { txBytes = was }(txBytes)
	txBytes = 1_000_000
	var batch []snapshot.Write
	for i := range 24 { // 24 × 10 × 10 KB: about three transactions' worth
		batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: fmt.Sprintf("c%02d", i), Snap: bigSnapshot(1, 10, 10_000)})
	}
	n := commits(t, s, func() {
		for i, err := range s.Write(t.Context(), batch) {
			if err != nil {
				t.Fatalf("item %d: %v", i, err)
			}
		}
	})
	if n != 3 {
		t.Fatalf("a batch of %d snapshots of 100 KB took %d commits, want 3 (transactions of %d bytes)", len(batch), n, txBytes)
	}
	all, err := s.List(t.Context(), snapshot.Output)
	must(t, err)
	for _, w := range batch {
		if got := all[w.Cluster]; got == nil || got.Hash != w.Snap.Hash {
			t.Fatalf("%s after the batch: %v, want hash %s", w.Cluster, got, w.Snap.Hash)
		}
	}
}
