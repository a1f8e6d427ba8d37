package redisstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
	"github.com/meshrelay/meshrelay/internal/snapshot/snapshottest"
)

func TestBadItemAlone(t *testing.T) {
	srv := redistest.Start(t)
	snapshottest.BadItemAlone(t, redisstore.New(srv.Client(t), ""))
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

// changed returns snap with version, where set replaces or adds bodies and drop removes keys.
func changed(snap *snapshot.Snapshot, version uint64, set map[string]string, drop ...string) *snapshot.Snapshot {
	m := make(map[string]snapshot.Resource, snap.Len())
	for k, r := range snap.Resources {
		m[k] = r
	}
	for k, b := range set {
		m[k] = snapshot.NewResource(k, []byte(b))
	}
	for _, k := range drop {
		delete(m, k)
	}
	return snapshot.FromMap(version, snap.Epoch, m)
}

// inputBytes is what the Redis server has read from its clients so far.
func inputBytes(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(t.Context(), "stats").Result()
	must(t, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_net_input_bytes:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(t, err)
			return n
		}
	}
	t.Fatalf("no total_net_input_bytes in INFO stats:\n%s", info)
	return 0
}

// stored checks what a store that never wrote (so holds no base) reads back.
func stored(t *testing.T, c redis.UniversalClient, what string, kind snapshot.Kind, cluster string, want *snapshot.Snapshot) {
	t.Helper()
	got, err := redisstore.New(c, "").Get(t.Context(), kind, cluster)
	if err != nil {
		t.Fatalf("%s: Get: %v", what, err)
	}
	if got.Hash != want.Hash || got.Version != want.Version || got.Epoch != want.Epoch || got.Len() != want.Len() {
		t.Fatalf("%s: stored version %d epoch %d hash %s (%d resources), want %d %d %s (%d)", what,
			got.Version, got.Epoch, got.Hash, got.Len(), want.Version, want.Epoch, want.Hash, want.Len())
	}
	for k, r := range want.Resources {
		if !bytes.Equal(got.Resources[k].Body, r.Body) {
			t.Fatalf("%s: resource %s = %s, want %s", what, k, got.Resources[k].Body, r.Body)
		}
	}
}

// TestSmallChangeSendsLittle: Redis receives (total_net_input_bytes) about the size of the
// change for a change of one resource of a 2 MB snapshot, not the snapshot.
func TestSmallChangeSendsLittle(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := redisstore.New(c, "")
	ctx := t.Context()
	const n, size = 1000, 2000
	snap := bigSnapshot(1, n, size)
	before := inputBytes(t, c)
	must(t, s.Put(ctx, snapshot.Output, "east", snap))
	whole := inputBytes(t, c) - before
	if whole < n*size {
		t.Fatalf("the first Put sent %d bytes for a snapshot of %d bytes: the measure misses writes", whole, n*size)
	}
	next := changed(snap, 2, map[string]string{"Cluster//r0500": `{"changed":true}`}, "Cluster//r0007")
	before = inputBytes(t, c)
	must(t, s.Put(ctx, snapshot.Output, "east", next))
	small := inputBytes(t, c) - before
	t.Logf("whole snapshot: %d bytes sent; one changed and one removed resource: %d bytes", whole, small)
	if small > whole/100 {
		t.Fatalf("a change of two resources sent %d bytes, the whole snapshot %d: not proportional to the change", small, whole)
	}
	stored(t, c, "after the small change", snapshot.Output, "east", next)
}

// TestDeltaBaseMoved: a store whose base is no longer what Redis holds (another server
// wrote, Redis lost its data) writes the whole snapshot instead of a delta, so Redis holds
// exactly the last snapshot put.
func TestDeltaBaseMoved(t *testing.T) {
	srv := redistest.Start(t)
	testDeltaBaseMoved(t, srv.Client(t))
}

func testDeltaBaseMoved(t *testing.T, c redis.UniversalClient) {
	a, b := redisstore.New(c, ""), redisstore.New(c, "")
	ctx := t.Context()
	v1 := bigSnapshot(1, 20, 50)
	must(t, a.Put(ctx, snapshot.Output, "east", v1))
	v2 := changed(v1, 2, map[string]string{"b/only": `"written by b"`, "Cluster//r0001": `"b"`}, "Cluster//r0002")
	must(t, b.Put(ctx, snapshot.Output, "east", v2))
	v3 := changed(v1, 3, map[string]string{"Cluster//r0003": `"a"`}) // a still diffs against v1
	must(t, a.Put(ctx, snapshot.Output, "east", v3))
	stored(t, c, "after another writer", snapshot.Output, "east", v3)

	flushAll(t, c) // Redis lost everything
	v4 := changed(v3, 4, map[string]string{"Cluster//r0004": `"a"`})
	must(t, a.Put(ctx, snapshot.Output, "east", v4))
	stored(t, c, "after Redis lost its data", snapshot.Output, "east", v4)
	idx, err := a.Index(ctx, snapshot.Output)
	must(t, err)
	if idx["east"] != v4.Hash {
		t.Fatalf("index after Redis lost its data = %v, want east → %s", idx, v4.Hash)
	}

	scriptFlush(t, c) // a restarted Redis has no scripts either
	v5 := changed(v4, 5, map[string]string{"Cluster//r0005": `"a"`})
	must(t, a.Put(ctx, snapshot.Output, "east", v5))
	stored(t, c, "after Redis forgot its scripts", snapshot.Output, "east", v5)
}

// TestReadsStringSnapshots: snapshots an earlier version stored as strings are read by Get
// and List, and the next Put stores them as hashes.
func TestReadsStringSnapshots(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := t.Context()
	old := map[string]*snapshot.Snapshot{
		"east": bigSnapshot(3, 10, 40),
		"west": snapshot.New(2, 1, []snapshot.Resource{snapshot.NewResource("Listener//l", []byte(`{"x":"<&>", "y": [1, 2]}`))}),
	}
	for cluster, snap := range old {
		must(t, c.Set(ctx, "meshrelay:{meshrelay}:output:"+cluster, snapshottest.EncodeV1(snap), 0).Err())
		must(t, c.HSet(ctx, "meshrelay:{meshrelay}:index:output", cluster, snap.Hash).Err())
	}
	s := redisstore.New(c, "")
	for cluster, want := range old {
		stored(t, c, "Get of the string of "+cluster, snapshot.Output, cluster, want)
	}
	all, err := s.List(ctx, snapshot.Output)
	must(t, err)
	for cluster, want := range old {
		if g := all[cluster]; g == nil || g.Hash != want.Hash || g.Version != want.Version || g.Epoch != want.Epoch {
			t.Fatalf("List[%s] = %+v, want version %d hash %s", cluster, g, want.Version, want.Hash)
		}
	}
	next := changed(old["east"], 4, map[string]string{"Cluster//r0001": `{"new":1}`})
	must(t, s.Put(ctx, snapshot.Output, "east", next))
	if typ := c.Type(ctx, "meshrelay:{meshrelay}:output:east").Val(); typ != "hash" {
		t.Fatalf("after a Put the snapshot is a %s, want a hash", typ)
	}
	stored(t, c, "Put over a string", snapshot.Output, "east", next)
	stored(t, c, "the other string, untouched", snapshot.Output, "west", old["west"])
}

// TestFencedBatch: a batch of a server that does not hold the global lock is refused item
// by item with ErrFenced and changes nothing, whether its items would be deltas or whole
// snapshots; the holder's batch goes through.
func TestFencedBatch(t *testing.T) {
	srv := redistest.Start(t)
	testFencedBatch(t, srv.Client(t))
}

func testFencedBatch(t *testing.T, c redis.UniversalClient) {
	ctx := t.Context()
	must(t, c.HSet(ctx, "meshrelay:{meshrelay}:activelock", "name", "east", "epoch", 2).Err())
	holder := redisstore.New(c, "").WithFence(redisstore.Fence{Name: "east", Epoch: func() uint64 { return 2 }})
	v1 := bigSnapshot(1, 10, 40)
	must(t, holder.Put(ctx, snapshot.Output, "a", v1))
	must(t, holder.Put(ctx, snapshot.Output, "b", v1))

	// A former holder that wrote v1 itself (so diffs against it) and believes in epoch 1.
	former := redisstore.New(c, "").WithFence(redisstore.Fence{Name: "east", Epoch: func() uint64 { return 1 }})
	_, err := former.Get(ctx, snapshot.Output, "a") // read: it now holds a as its base
	must(t, err)
	stale := changed(v1, 2, map[string]string{"Cluster//r0001": `"stale"`})
	batch := []snapshot.Write{
		{Kind: snapshot.Output, Cluster: "a", Snap: stale},   // a delta
		{Kind: snapshot.Output, Cluster: "new", Snap: stale}, // a whole snapshot
		{Kind: snapshot.Output, Cluster: "b"},                // a delete
	}
	for i, err := range former.Write(ctx, batch) {
		if !errors.Is(err, snapshot.ErrFenced) {
			t.Errorf("fenced item %d (%s) = %v, want ErrFenced", i, batch[i].Cluster, err)
		}
	}
	stored(t, c, "a after the fenced batch", snapshot.Output, "a", v1)
	stored(t, c, "b after the fenced batch", snapshot.Output, "b", v1)
	if _, err := holder.Get(ctx, snapshot.Output, "new"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("a fenced put of a new snapshot was stored: %v", err)
	}

	for i, err := range holder.Write(ctx, batch) {
		if err != nil {
			t.Fatalf("holder's item %d: %v", i, err)
		}
	}
	stored(t, c, "a after the holder's batch", snapshot.Output, "a", stale)
	stored(t, c, "new after the holder's batch", snapshot.Output, "new", stale)
	if _, err := holder.Get(ctx, snapshot.Output, "b"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("b after the holder's delete: %v, want ErrNotFound", err)
	}
}

// TestWriteLargeBatch: a batch of whole snapshots larger than one pipeline is sent in several
// and every item is stored.
func TestWriteLargeBatch(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := redisstore.New(c, "")
	var batch []snapshot.Write
	for i := range 30 {
		batch = append(batch, snapshot.Write{Kind: snapshot.Output, Cluster: fmt.Sprintf("c%02d", i), Snap: bigSnapshot(uint64(i+1), 100, 10_000)})
	}
	for i, err := range s.Write(t.Context(), batch) {
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	for _, w := range batch {
		stored(t, c, w.Cluster+" after the batch", w.Kind, w.Cluster, w.Snap)
	}
}
