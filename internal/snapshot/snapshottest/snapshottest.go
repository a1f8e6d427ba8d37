// Package snapshottest is a conformance suite for snapshot.Store implementations.
package snapshottest

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Run tests the semantics of every snapshot.Store method. newStore must return an empty
// store on each call; each subtest calls it once.
func Run(t *testing.T, newStore func(t *testing.T) snapshot.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s snapshot.Store)
	}{
		{"GetMissing", testGetMissing},
		{"RoundTrip", testRoundTrip},
		{"RoundTripEmpty", testRoundTripEmpty},
		{"PutReplaces", testPutReplaces},
		{"List", testList},
		{"Delete", testDelete},
		{"Concurrent", testConcurrent},
		{"SmallChanges", testSmallChanges},
		{"WriteBatch", testWriteBatch},
		{"Config", testConfig},
		{"ConfigConcurrent", testConfigConcurrent},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Bodies whose bytes a store must keep as they are: whitespace, characters that
// encoding/json escapes by default, unicode, nesting, scalars.
var bodies = []string{
	`{"name": "web",  "port": 8080}`,
	`{"url":"http://svc/?a=1&b=<2>","note":"x\u2028y","ünï":"çødé"}`,
	`[1, 2.50, {"nested": [true, false, null]}]`,
	`"just a string"`,
	`42`,
}

func resources(prefix string) []snapshot.Resource {
	out := make([]snapshot.Resource, len(bodies))
	for i, b := range bodies {
		out[i] = snapshot.NewResource(fmt.Sprintf("%s/%d", prefix, i), []byte(b))
	}
	return out
}

func put(t *testing.T, s snapshot.Store, kind snapshot.Kind, cluster string, snap *snapshot.Snapshot) {
	t.Helper()
	if err := s.Put(t.Context(), kind, cluster, snap); err != nil {
		t.Fatalf("Put(%s, %q): %v", kind, cluster, err)
	}
}

func get(t *testing.T, s snapshot.Store, kind snapshot.Kind, cluster string) *snapshot.Snapshot {
	t.Helper()
	got, err := s.Get(t.Context(), kind, cluster)
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", kind, cluster, err)
	}
	return got
}

func list(t *testing.T, s snapshot.Store, kind snapshot.Kind) map[string]*snapshot.Snapshot {
	t.Helper()
	got, err := s.List(t.Context(), kind)
	if err != nil {
		t.Fatalf("List(%s): %v", kind, err)
	}
	return got
}

func wantNotFound(t *testing.T, s snapshot.Store, kind snapshot.Kind, cluster string) {
	t.Helper()
	got, err := s.Get(t.Context(), kind, cluster)
	if !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("Get(%s, %q) = %v, %v; want ErrNotFound", kind, cluster, got, err)
	}
}

// sameSnapshot checks that got has the version, epoch, hash and resources of want.
func sameSnapshot(t *testing.T, what string, got, want *snapshot.Snapshot) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil snapshot", what)
	}
	if got.Version != want.Version || got.Epoch != want.Epoch || got.Hash != want.Hash {
		t.Fatalf("%s: version/epoch/hash = %d/%d/%s, want %d/%d/%s", what,
			got.Version, got.Epoch, got.Hash, want.Version, want.Epoch, want.Hash)
	}
	if got.Len() != want.Len() {
		t.Fatalf("%s: %d resources %v, want %d %v", what, got.Len(), got.Keys(), want.Len(), want.Keys())
	}
	for k, w := range want.Resources {
		sameResource(t, fmt.Sprintf("%s: resource %s", what, k), got.Resources[k], w)
	}
}

func sameResource(t *testing.T, what string, got, want snapshot.Resource) {
	t.Helper()
	if got.Key != want.Key || got.Hash != want.Hash || !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("%s = {%q %s %s}, want {%q %s %s}", what, got.Key, got.Hash, got.Body, want.Key, want.Hash, want.Body)
	}
}

func testGetMissing(t *testing.T, s snapshot.Store) {
	wantNotFound(t, s, snapshot.Input, "nowhere")
	wantNotFound(t, s, snapshot.Output, "nowhere")
}

func testRoundTrip(t *testing.T, s snapshot.Store) {
	want := snapshot.New(7, 3, resources("r"))
	put(t, s, snapshot.Output, "east", want)
	got := get(t, s, snapshot.Output, "east")
	sameSnapshot(t, "Get after Put", got, want)
	for k, r := range got.Resources {
		if snapshot.HashBytes(r.Body) != r.Hash {
			t.Errorf("resource %s: body %s no longer has hash %s", k, r.Body, r.Hash)
		}
	}
	wantNotFound(t, s, snapshot.Input, "east")
}

func testRoundTripEmpty(t *testing.T, s snapshot.Store) {
	want := snapshot.New(1, 0, nil)
	put(t, s, snapshot.Input, "empty", want)
	got := get(t, s, snapshot.Input, "empty")
	sameSnapshot(t, "Get after Put", got, want)
	if got.Hash != snapshot.EmptyHash {
		t.Fatalf("hash %s, want EmptyHash", got.Hash)
	}
}

func testPutReplaces(t *testing.T, s snapshot.Store) {
	put(t, s, snapshot.Input, "east", snapshot.New(1, 0, resources("old")))
	want := snapshot.New(2, 0, resources("new")[:2])
	put(t, s, snapshot.Input, "east", want)
	sameSnapshot(t, "Get after second Put", get(t, s, snapshot.Input, "east"), want)
	if n := len(list(t, s, snapshot.Input)); n != 1 {
		t.Fatalf("List after replacing: %d snapshots, want 1", n)
	}
}

func testList(t *testing.T, s snapshot.Store) {
	if got := list(t, s, snapshot.Input); len(got) != 0 {
		t.Fatalf("List of empty store = %v", got)
	}
	want := map[snapshot.Kind]map[string]*snapshot.Snapshot{
		snapshot.Input: {
			"a":           snapshot.New(1, 0, resources("in-a")),
			"b":           snapshot.New(2, 0, resources("in-b")[1:]),
			"with:colons": snapshot.New(3, 0, nil),
		},
		snapshot.Output: {
			"b": snapshot.New(4, 9, resources("out-b")),
			"c": snapshot.New(5, 9, resources("out-c")[:1]),
		},
	}
	for kind, m := range want {
		for cluster, snap := range m {
			put(t, s, kind, cluster, snap)
		}
	}
	for kind, m := range want {
		got := list(t, s, kind)
		if len(got) != len(m) {
			t.Fatalf("List(%s) has clusters %v, want %v", kind, sortedKeys(got), sortedKeys(m))
		}
		for cluster, snap := range m {
			sameSnapshot(t, fmt.Sprintf("List(%s)[%q]", kind, cluster), got[cluster], snap)
		}
	}
}

func testDelete(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	in, out := snapshot.New(1, 0, resources("in")), snapshot.New(1, 1, resources("out"))
	put(t, s, snapshot.Input, "a", in)
	put(t, s, snapshot.Input, "b", in)
	put(t, s, snapshot.Output, "a", out)
	if err := s.Delete(ctx, snapshot.Input, "a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, s, snapshot.Input, "a")
	sameSnapshot(t, "output of a after deleting its input", get(t, s, snapshot.Output, "a"), out)
	if got := list(t, s, snapshot.Input); len(got) != 1 || got["b"] == nil {
		t.Fatalf("List(input) after Delete has clusters %v, want [b]", sortedKeys(got))
	}
	if got := list(t, s, snapshot.Output); len(got) != 1 || got["a"] == nil {
		t.Fatalf("List(output) after deleting input has clusters %v, want [a]", sortedKeys(got))
	}
	if err := s.Delete(ctx, snapshot.Input, "a"); err != nil {
		t.Fatalf("Delete of a missing snapshot: %v", err)
	}
	if err := s.Delete(ctx, snapshot.Output, "never"); err != nil {
		t.Fatalf("Delete of a never stored snapshot: %v", err)
	}
	put(t, s, snapshot.Input, "a", in)
	sameSnapshot(t, "Get after Put of a deleted snapshot", get(t, s, snapshot.Input, "a"), in)
}

func testConcurrent(t *testing.T, s snapshot.Store) {
	const n = 16
	want := snapshot.New(1, 0, resources("c"))
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			cluster := fmt.Sprintf("c%d", i)
			errs <- s.Put(t.Context(), snapshot.Input, cluster, want)
			_, err := s.List(t.Context(), snapshot.Input)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Put/List: %v", err)
		}
	}
	if got := list(t, s, snapshot.Input); len(got) != n {
		t.Fatalf("List after %d concurrent Puts has %d clusters", n, len(got))
	}
}

// change returns a copy of snap's resources with version and epoch, where set replaces or
// adds resources (key → body) and drop removes keys.
func change(snap *snapshot.Snapshot, version, epoch uint64, set map[string]string, drop ...string) *snapshot.Snapshot {
	m := make(map[string]snapshot.Resource, snap.Len()+len(set))
	for k, r := range snap.Resources {
		m[k] = r
	}
	for k, b := range set {
		m[k] = snapshot.NewResource(k, []byte(b))
	}
	for _, k := range drop {
		delete(m, k)
	}
	return snapshot.FromMap(version, epoch, m)
}

// sameStored checks that Get, List and Index all give want for kind and cluster.
func sameStored(t *testing.T, s snapshot.Store, what string, kind snapshot.Kind, cluster string, want *snapshot.Snapshot) {
	t.Helper()
	sameSnapshot(t, what+": Get", get(t, s, kind, cluster), want)
	sameSnapshot(t, what+": List", list(t, s, kind)[cluster], want)
	for k, r := range get(t, s, kind, cluster).Resources {
		if snapshot.HashBytes(r.Body) != r.Hash {
			t.Fatalf("%s: resource %s: body %s no longer has hash %s", what, k, r.Body, r.Hash)
		}
	}
	idx, err := s.Index(t.Context(), kind)
	if err != nil {
		t.Fatalf("%s: Index(%s): %v", what, kind, err)
	}
	if idx[cluster] != want.Hash {
		t.Fatalf("%s: Index(%s)[%q] = %s, want %s", what, kind, cluster, idx[cluster], want.Hash)
	}
}

// testSmallChanges puts a sequence of small changes of one snapshot (the stores write such a
// change as a delta against the stored snapshot): after each, the store holds exactly the
// last snapshot put, removed keys are gone, and a snapshot of another cluster is untouched.
func testSmallChanges(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	other := snapshot.New(1, 1, resources("other"))
	put(t, s, snapshot.Output, "other", other)
	snap := snapshot.New(1, 1, resources("r"))
	put(t, s, snapshot.Output, "east", snap)
	steps := []struct {
		name string
		next func(*snapshot.Snapshot) *snapshot.Snapshot
	}{
		{"change one body", func(p *snapshot.Snapshot) *snapshot.Snapshot {
			return change(p, 2, 1, map[string]string{"r/1": `{"changed": 1}`})
		}},
		{"add a resource", func(p *snapshot.Snapshot) *snapshot.Snapshot {
			return change(p, 3, 1, map[string]string{"r/new": `{"new": "<&>"}`})
		}},
		{"remove a resource", func(p *snapshot.Snapshot) *snapshot.Snapshot { return change(p, 4, 1, nil, "r/0") }},
		{"same content, new version and epoch", func(p *snapshot.Snapshot) *snapshot.Snapshot { return p.WithVersion(5, 2) }},
		{"change, add and remove at once", func(p *snapshot.Snapshot) *snapshot.Snapshot {
			return change(p, 6, 2, map[string]string{"r/2": `[3]`, "r/0": `"back"`}, "r/new", "r/4")
		}},
		{"a key back to an earlier body", func(p *snapshot.Snapshot) *snapshot.Snapshot {
			return change(p, 7, 2, map[string]string{"r/1": bodies[1]})
		}},
		{"remove everything", func(p *snapshot.Snapshot) *snapshot.Snapshot { return snapshot.New(8, 2, nil) }},
		{"add again", func(p *snapshot.Snapshot) *snapshot.Snapshot { return snapshot.New(9, 2, resources("r")[:2]) }},
	}
	for _, step := range steps {
		next := step.next(snap)
		put(t, s, snapshot.Output, "east", next)
		sameStored(t, s, step.name, snapshot.Output, "east", next)
		snap = next
	}
	// Deleted and put again: nothing of before may come back.
	if err := s.Delete(ctx, snapshot.Output, "east"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, s, snapshot.Output, "east")
	again := change(snapshot.New(10, 2, nil), 10, 2, map[string]string{"r/9": `{}`})
	put(t, s, snapshot.Output, "east", again)
	sameStored(t, s, "put after delete", snapshot.Output, "east", again)
	sameStored(t, s, "the other cluster", snapshot.Output, "other", other)
}

// testWriteBatch writes puts and deletes of several clusters and both kinds in batches.
func testWriteBatch(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	if errs := s.Write(ctx, nil); len(errs) != 0 {
		t.Fatalf("Write of an empty batch = %v", errs)
	}
	a1, b1 := snapshot.New(1, 3, resources("a")), snapshot.New(1, 3, resources("b"))
	in := snapshot.New(4, 0, resources("in"))
	write := func(batch ...snapshot.Write) {
		t.Helper()
		errs := s.Write(ctx, batch)
		if len(errs) != len(batch) {
			t.Fatalf("Write of %d items returned %d errors", len(batch), len(errs))
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Write item %d (%s %q): %v", i, batch[i].Kind, batch[i].Cluster, err)
			}
		}
	}
	write(snapshot.Write{Kind: snapshot.Output, Cluster: "a", Snap: a1},
		snapshot.Write{Kind: snapshot.Output, Cluster: "b", Snap: b1},
		snapshot.Write{Kind: snapshot.Input, Cluster: "a", Snap: in},
		snapshot.Write{Kind: snapshot.Output, Cluster: "gone", Snap: b1})
	sameStored(t, s, "first batch", snapshot.Output, "a", a1)
	sameStored(t, s, "first batch", snapshot.Output, "b", b1)
	sameStored(t, s, "first batch", snapshot.Input, "a", in)
	sameStored(t, s, "first batch", snapshot.Output, "gone", b1)

	// Small changes to some, a delete, a delete of a missing snapshot, and a delete then a
	// put of the same cluster: applied in order.
	a2 := change(a1, 2, 3, map[string]string{"a/0": `{"a": 2}`})
	c1 := snapshot.New(1, 3, resources("c")[:1])
	write(snapshot.Write{Kind: snapshot.Output, Cluster: "a", Snap: a2},
		snapshot.Write{Kind: snapshot.Output, Cluster: "gone"},
		snapshot.Write{Kind: snapshot.Output, Cluster: "never"},
		snapshot.Write{Kind: snapshot.Output, Cluster: "c"},
		snapshot.Write{Kind: snapshot.Output, Cluster: "c", Snap: c1})
	sameStored(t, s, "second batch", snapshot.Output, "a", a2)
	sameStored(t, s, "second batch (untouched)", snapshot.Output, "b", b1)
	sameStored(t, s, "second batch (untouched)", snapshot.Input, "a", in)
	sameStored(t, s, "second batch (delete, put)", snapshot.Output, "c", c1)
	wantNotFound(t, s, snapshot.Output, "gone")
	if got := list(t, s, snapshot.Output); len(got) != 3 {
		t.Fatalf("List(output) after the second batch has clusters %v, want [a b c]", sortedKeys(got))
	}
	if idx, err := s.Index(ctx, snapshot.Output); err != nil || len(idx) != 3 {
		t.Fatalf("Index(output) after the second batch = %v, %v; want a, b and c", idx, err)
	}
}

// BadItemAlone checks a store that encodes what it stores: in a batch, a snapshot with a
// body that is not JSON is refused with an error naming its cluster, without writing
// anything of it, and the other items of the batch are stored.
func BadItemAlone(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	old := snapshot.New(1, 0, resources("r"))
	put(t, s, snapshot.Output, "bad", old)
	bad := change(old, 2, 0, map[string]string{"r/0": `{"fine": true}`, "r/x": `not json`})
	good := snapshot.New(1, 0, resources("g"))
	errs := s.Write(ctx, []snapshot.Write{
		{Kind: snapshot.Output, Cluster: "bad", Snap: bad},
		{Kind: snapshot.Output, Cluster: "good", Snap: good},
	})
	if len(errs) != 2 || errs[0] == nil || errs[1] != nil {
		t.Fatalf("Write of a bad and a good snapshot = %v, want an error for the first only", errs)
	}
	if !bytes.Contains([]byte(errs[0].Error()), []byte(`"bad"`)) {
		t.Errorf("error %q does not name the cluster", errs[0])
	}
	sameStored(t, s, "the refused snapshot's cluster", snapshot.Output, "bad", old)
	sameStored(t, s, "the other item", snapshot.Output, "good", good)
}

func listConfig(t *testing.T, s snapshot.Store) ([]snapshot.Resource, uint64) {
	t.Helper()
	res, rev, err := s.ListConfig(t.Context())
	if err != nil {
		t.Fatalf("ListConfig: %v", err)
	}
	cheap, err := s.ConfigRevision(t.Context())
	if err != nil {
		t.Fatalf("ConfigRevision: %v", err)
	}
	if cheap != rev {
		t.Fatalf("ConfigRevision = %d, ListConfig revision = %d", cheap, rev)
	}
	return res, rev
}

func wantConfig(t *testing.T, what string, got, want []snapshot.Resource) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: ListConfig has %d resources, want %d", what, len(got), len(want))
	}
	for i := range want {
		sameResource(t, fmt.Sprintf("%s: ListConfig[%d]", what, i), got[i], want[i])
	}
}

func testConfig(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	putConfig := func(r snapshot.Resource) {
		t.Helper()
		if err := s.PutConfig(ctx, r); err != nil {
			t.Fatalf("PutConfig(%s): %v", r.Key, err)
		}
	}
	got, rev := listConfig(t, s)
	wantConfig(t, "empty store", got, nil)

	rs := resources("cfg") // keys cfg/0 … cfg/4
	for _, i := range []int{3, 0, 4, 1, 2} {
		putConfig(rs[i])
		_, next := listConfig(t, s)
		if next <= rev {
			t.Fatalf("revision after adding %s = %d, was %d", rs[i].Key, next, rev)
		}
		rev = next
	}
	got, _ = listConfig(t, s)
	wantConfig(t, "after PutConfig", got, rs)

	putConfig(snapshot.NewResource(rs[2].Key, []byte(bodies[2]))) // identical content
	if _, next := listConfig(t, s); next != rev {
		t.Fatalf("identical PutConfig changed the revision from %d to %d", rev, next)
	}

	rs[2] = snapshot.NewResource(rs[2].Key, []byte(`{"changed": true}`))
	putConfig(rs[2])
	got, next := listConfig(t, s)
	if next <= rev {
		t.Fatalf("revision after changing %s = %d, was %d", rs[2].Key, next, rev)
	}
	rev = next
	wantConfig(t, "after changing a resource", got, rs)

	if err := s.DeleteConfig(ctx, rs[1].Key); err != nil {
		t.Fatalf("DeleteConfig: %v", err)
	}
	rs = append(rs[:1], rs[2:]...)
	got, next = listConfig(t, s)
	if next <= rev {
		t.Fatalf("revision after DeleteConfig = %d, was %d", next, rev)
	}
	rev = next
	wantConfig(t, "after DeleteConfig", got, rs)

	if err := s.DeleteConfig(ctx, "cfg/1"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("DeleteConfig of a missing key = %v, want ErrNotFound", err)
	}
	if _, next := listConfig(t, s); next != rev {
		t.Fatalf("DeleteConfig of a missing key changed the revision from %d to %d", rev, next)
	}
}

func testConfigConcurrent(t *testing.T, s snapshot.Store) {
	const n = 16
	_, rev := listConfig(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			r := snapshot.NewResource(fmt.Sprintf("k%02d", i), []byte(bodies[i%len(bodies)]))
			errs <- s.PutConfig(t.Context(), r)
			errs <- s.PutConfig(t.Context(), r) // identical: no new revision
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent PutConfig: %v", err)
		}
	}
	got, next := listConfig(t, s)
	if len(got) != n || next <= rev {
		t.Fatalf("after %d concurrent new resources: %d resources, revision %d → %d", n, len(got), rev, next)
	}
	for _, r := range got {
		if err := s.PutConfig(t.Context(), r); err != nil {
			t.Fatalf("PutConfig(%s): %v", r.Key, err)
		}
	}
	if _, again := listConfig(t, s); again != next {
		t.Fatalf("putting every resource again unchanged moved the revision from %d to %d", next, again)
	}
}

func testPing(t *testing.T, s snapshot.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
