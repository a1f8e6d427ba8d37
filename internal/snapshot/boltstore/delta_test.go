package boltstore

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/boltstore/boltstoretest"
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

// padded is a JSON body of about size bytes.
func padded(name string, size int) []byte {
	return []byte(fmt.Sprintf(`{"name":%q,"pad":%q}`, name, strings.Repeat("x", size)))
}

// TestSmallChangeBesideBigResourcesWritesLittle: in snapshots shaped like a cluster's output
// in the relay benchmark (a 190 KB ServiceEntry, a dozen 16 KB endpoint lists, small Envoy
// clusters and a listener), changing one small resource writes a few pages, not the big bodies
// beside it. bbolt rewrites a modified leaf in full and puts at least two entries in a leaf,
// so the listener, next to the ServiceEntry in key order, shared its leaf in schema "2".
func TestSmallChangeBesideBigResourcesWritesLittle(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const bigSize = 190_000
	rs := []snapshot.Resource{
		snapshot.NewResource("EnvoyListener//gateway", padded("gateway", 300)),
		snapshot.NewResource("ServiceEntry/default/vd-big", padded("vd-big", bigSize)),
	}
	for i := range 12 {
		name := fmt.Sprintf("cla%02d", i)
		rs = append(rs, snapshot.NewResource("EnvoyClusterLoadAssignment//"+name, padded(name, 16_000)))
	}
	for i := range 16 {
		name := fmt.Sprintf("c%02d", i)
		rs = append(rs, snapshot.NewResource("EnvoyCluster//"+name, padded(name, 300)))
	}
	snap := snapshot.New(1, 1, rs)
	clusters := []string{"east", "north", "south", "west"}
	var batch []snapshot.Write
	for _, c := range clusters {
		batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: c, Snap: snap})
	}
	whole := pagesAllocated(s, func() {
		for _, err := range s.Write(ctx, batch) {
			must(t, err)
		}
	})
	if whole < int64(len(clusters)*bigSize) {
		t.Fatalf("the first write of %d snapshots wrote %d bytes of pages, less than their big resources: the measure misses writes", len(clusters), whole)
	}

	small := changed(snap, 2, "EnvoyListener//gateway", string(padded("gateway-v2", 300)))
	smallBytes := pagesAllocated(s, func() { must(t, s.Put(ctx, snapshot.Output, "north", small)) })
	bigChange := changed(small, 3, "ServiceEntry/default/vd-big", string(padded("vd-big-v2", bigSize)))
	bigBytes := pagesAllocated(s, func() { must(t, s.Put(ctx, snapshot.Output, "north", bigChange)) })
	pageSize := int64(s.db.Info().PageSize)
	t.Logf("%d snapshots: %d bytes of pages; one 300-byte resource changed: %d (%d pages); the %d KB one changed: %d",
		len(clusters), whole, smallBytes, smallBytes/pageSize, bigSize/1000, bigBytes)
	if bigBytes < bigSize {
		t.Fatalf("changing the %d-byte resource wrote %d bytes of pages: the measure misses writes", bigSize, bigBytes)
	}
	if smallBytes > 8*pageSize {
		t.Fatalf("changing one 300-byte resource wrote %d bytes of pages (%d pages, want at most 8): the pages of the big resources beside it were rewritten", smallBytes, smallBytes/pageSize)
	}
	for _, c := range clusters {
		want := snap
		if c == "north" {
			want = bigChange
		}
		got, err := s.Get(ctx, snapshot.Output, c)
		must(t, err)
		if got.Hash != want.Hash || got.Version != want.Version {
			t.Fatalf("%s after the changes: version %d hash %s, want %d %s", c, got.Version, got.Hash, want.Version, want.Hash)
		}
	}
	wantLayout(t, s)
}

// TestResourceMovesAcrossTheThreshold: a resource that grows past a quarter page moves to a
// bucket of its own, and back when it shrinks; removing it removes its bucket.
func TestResourceMovesAcrossTheThreshold(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const key = "ServiceEntry/default/vd-grows"
	other := snapshot.NewResource("EnvoyCluster//c", padded("c", 100))
	sizes := []int{100, 5_000, 100_000, 10, 3_000}
	for i, size := range sizes {
		snap := snapshot.New(uint64(i+1), 1, []snapshot.Resource{other, snapshot.NewResource(key, padded("grows", size))})
		must(t, s.Put(ctx, snapshot.Output, "east", snap))
		got, err := s.Get(ctx, snapshot.Output, "east")
		must(t, err)
		if got.Hash != snap.Hash || !bytes.Equal(got.Resources[key].Body, snap.Resources[key].Body) {
			t.Fatalf("body of %d bytes: stored snapshot %s, want %s", size, got.Hash, snap.Hash)
		}
		wantLayout(t, s)
	}
	gone := snapshot.New(uint64(len(sizes)+1), 1, []snapshot.Resource{other})
	must(t, s.Put(ctx, snapshot.Output, "east", gone))
	must(t, s.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(snapBucket(snapshot.Output)).Bucket([]byte("east")).Bucket(bucketRes)
		if k, _ := rb.Cursor().Seek([]byte(key)); bytes.Equal(k, []byte(key)) {
			t.Errorf("%s is still stored after its removal", key)
		}
		return nil
	}))
	got, err := s.Get(ctx, snapshot.Output, "east")
	must(t, err)
	if got.Hash != gone.Hash {
		t.Fatalf("after the removal: stored %s, want %s", got.Hash, gone.Hash)
	}
}

// wantLayout checks that every resource stored in s has the place schema "3" gives it: a
// stored form of s.long bytes or more in a bucket of its own, a shorter one a value.
func wantLayout(t *testing.T, s *Store) {
	t.Helper()
	must(t, s.db.View(func(tx *bolt.Tx) error {
		for _, kind := range []snapshot.Kind{snapshot.Input, snapshot.Output} {
			kb := tx.Bucket(snapBucket(kind))
			err := kb.ForEach(func(cluster, _ []byte) error {
				rb := kb.Bucket(cluster).Bucket(bucketRes)
				return rb.ForEach(func(k, v []byte) error {
					switch form := storedForm(rb, k, v); {
					case form == nil:
						return fmt.Errorf("%s of %s: resource %s has no stored form", kind, cluster, k)
					case (v == nil) != (len(form) >= s.long):
						return fmt.Errorf("%s of %s: resource %s of %d bytes stored in a bucket of its own: %v, want %v (from %d bytes)",
							kind, cluster, k, len(form), v == nil, len(form) >= s.long, s.long)
					}
					return nil
				})
			})
			if err != nil {
				return err
			}
		}
		return nil
	}))
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

// writeOld writes a store file of an old schema with boltstoretest.WriteOld: configuration
// cfg at revision 7.
func writeOld(t *testing.T, path, schema string, snaps map[snapshot.Kind]map[string]*snapshot.Snapshot, cfg snapshot.Resource) {
	t.Helper()
	must(t, boltstoretest.WriteOld(path, schema, boltstoretest.Contents{Snapshots: snaps, Config: []snapshot.Resource{cfg}, ConfigRev: 7}))
}

// TestMigratesSchema1: a file of schema "1" opens as schema "3" with every snapshot, the
// configuration and its revision, and takes small changes afterwards.
func TestMigratesSchema1(t *testing.T) { testMigrates(t, schemaWhole) }

// TestMigratesSchema2: the same for a file of schema "2" (every resource a value of its
// cluster's res bucket, long ones included).
func TestMigratesSchema2(t *testing.T) { testMigrates(t, schemaFlat) }

func testMigrates(t *testing.T, old string) {
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
			"big":  bigSnapshot(9, 5, 190_000),
		},
	}
	cfg := snapshot.NewResource("RouteTable/ns/r", []byte(`{"kind":"RouteTable"}`))
	writeOld(t, path, old, snaps, cfg)

	for round := range 2 { // migrated, then opened again as schema 3
		s, err := Open(path)
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		if from, to, ok := s.Migrated(); ok != (round == 0) || (ok && (from != old || to != schema)) {
			t.Errorf("round %d: Migrated() = %q, %q, %v; want %q, %q, %v", round, from, to, ok, old, schema, round == 0)
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
		wantLayout(t, s)
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
	writeOld(t, path, schemaWhole, map[snapshot.Kind]map[string]*snapshot.Snapshot{snapshot.Input: {"good": good}}, snapshot.NewResource("c", []byte(`{}`)))
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

// TestWrittenStateMatchesTheFile: a Put diffs against what this process wrote before (in
// memory), not against the file. Through random changes (resources added, changed across the
// bucket threshold, removed; snapshots deleted and written again; a transaction that fails
// and rolls back), what a fresh Open reads is always exactly the last snapshot written.
func TestWrittenStateMatchesTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 16))
	want := map[string]*snapshot.Snapshot{}
	current := map[string]map[string]snapshot.Resource{}
	ctx := t.Context()
	version := uint64(0)
	body := func() string {
		size := []int{10, 900, 1100, 3000}[rng.IntN(4)] // both sides of the 1 KiB threshold
		return fmt.Sprintf(`{"v":%d,"pad":%q}`, rng.IntN(1000), strings.Repeat("y", size))
	}
	for step := range 300 {
		var batch []snapshot.Write
		for _, c := range []string{"a", "b", "c"} {
			if rng.IntN(3) == 0 {
				continue
			}
			version++
			if rng.IntN(10) == 0 {
				batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: c})
				delete(current, c)
				continue
			}
			m := map[string]snapshot.Resource{}
			for k, r := range current[c] {
				m[k] = r
			}
			for range 1 + rng.IntN(3) {
				k := fmt.Sprintf("Kind//r%d", rng.IntN(8))
				if rng.IntN(4) == 0 {
					delete(m, k)
				} else {
					m[k] = snapshot.NewResource(k, []byte(body()))
				}
			}
			current[c] = m
			batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: c, Snap: snapshot.FromMap(version, 1, m)})
		}
		failing := step%50 == 49
		if failing {
			// bbolt refuses a key this long: the transaction, with every item before it,
			// rolls back.
			long := strings.Repeat("k", bolt.MaxKeySize+1)
			batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: "d", Snap: snapshot.New(version, 1,
				[]snapshot.Resource{snapshot.NewResource(long, []byte(`{}`))})})
		}
		errs := s.Write(ctx, batch)
		for i, w := range batch {
			switch {
			case failing && errs[i] == nil:
				t.Fatalf("step %d: item %d of a transaction that failed reported no error", step, i)
			case failing:
				// rolled back: the file holds what it held
			case errs[i] != nil:
				t.Fatalf("step %d: write %s: %v", step, w.Cluster, errs[i])
			case w.Snap == nil:
				delete(want, w.Cluster)
			default:
				want[w.Cluster] = w.Snap
			}
		}
		if failing {
			current = map[string]map[string]snapshot.Resource{}
			for c, w := range want {
				current[c] = w.Resources
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.List(ctx, snapshot.Output)
	if err != nil {
		t.Fatal(err) // a resource missing or left stale would fail the snapshot's hash here
	}
	if len(got) != len(want) {
		t.Fatalf("the file holds %d snapshots, want %d", len(got), len(want))
	}
	for c, w := range want {
		if g := got[c]; g == nil || g.Hash != w.Hash || g.Version != w.Version || g.Len() != w.Len() {
			t.Errorf("cluster %s: the file holds %v, want version %d (%.12s, %d resources)", c, g, w.Version, w.Hash, w.Len())
		}
	}
}
