package snapshot_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

func res(key, body string) snapshot.Resource { return snapshot.NewResource(key, []byte(body)) }

// abc is a small snapshot used by several tests.
func abc() []snapshot.Resource {
	return []snapshot.Resource{
		res("a", `{"n":1}`),
		res("b", `{"n":2}`),
		res("c", `{"n":3}`),
	}
}

func keysOf(rs []snapshot.Resource) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Key
	}
	return out
}

func TestNewHashOrderIndependent(t *testing.T) {
	base := abc()
	want := snapshot.New(1, 0, base).Hash
	perms := [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}}
	for _, p := range perms {
		rs := []snapshot.Resource{base[p[0]], base[p[1]], base[p[2]]}
		if got := snapshot.New(1, 0, rs).Hash; got != want {
			t.Errorf("order %v: hash %s, want %s", p, got, want)
		}
	}
	// Version and epoch are not content.
	if got := snapshot.New(7, 3, base).Hash; got != want {
		t.Errorf("hash depends on version/epoch: %s != %s", got, want)
	}
	m := map[string]snapshot.Resource{}
	for _, r := range base {
		m[r.Key] = r
	}
	if got := snapshot.FromMap(1, 0, m).Hash; got != want {
		t.Errorf("FromMap hash %s, want %s", got, want)
	}
	if got := snapshot.New(0, 0, nil).Hash; got != snapshot.EmptyHash {
		t.Errorf("empty snapshot hash %s, want EmptyHash %s", got, snapshot.EmptyHash)
	}
	if want == snapshot.EmptyHash {
		t.Error("non-empty snapshot has EmptyHash")
	}
}

// TestHashDefinition pins the content hash to its definition (SHA-256 over key, NUL,
// resource hash, NUL in key order): stores and agents of other versions compare it.
func TestHashDefinition(t *testing.T) {
	rs := abc()
	h := sha256.New()
	for _, r := range rs {
		fmt.Fprintf(h, "%s\x00%s\x00", r.Key, r.Hash)
	}
	want := hex.EncodeToString(h.Sum(nil))
	shuffled := []snapshot.Resource{rs[2], rs[0], rs[1]}
	for name, s := range map[string]*snapshot.Snapshot{"sorted": snapshot.New(1, 0, rs), "shuffled": snapshot.New(1, 0, shuffled)} {
		if s.Hash != want {
			t.Errorf("%s: hash %s, want %s", name, s.Hash, want)
		}
		if got := s.Keys(); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("%s: keys %v", name, got)
		}
		s.Keys()[0] = "changed" // Keys is the caller's copy
		if got := keysOf(s.Sorted()); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("%s: sorted %v after a caller changed its keys", name, got)
		}
	}
	if want := hex.EncodeToString(sha256.New().Sum(nil)); snapshot.EmptyHash != want {
		t.Errorf("EmptyHash %s, want %s", snapshot.EmptyHash, want)
	}
}

func TestNewHashChangesWithContent(t *testing.T) {
	base := snapshot.New(1, 0, abc())
	tests := []struct {
		name string
		rs   []snapshot.Resource
	}{
		{"body changed", []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":20}`), res("c", `{"n":3}`)}},
		{"one byte of a string", []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":2}`), res("c", `{"n":4}`)}},
		{"key renamed", []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":2}`), res("d", `{"n":3}`)}},
		{"resource removed", []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":2}`)}},
		{"resource added", append(abc(), res("d", `{}`))},
		{"bodies swapped", []snapshot.Resource{res("a", `{"n":2}`), res("b", `{"n":1}`), res("c", `{"n":3}`)}},
		{"non-JSON body", []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":2}`), res("c", `n=3`)}},
	}
	seen := map[string]string{base.Hash: "base"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := snapshot.New(1, 0, tc.rs).Hash
			if prev, dup := seen[h]; dup {
				t.Fatalf("hash %s equals the hash of %q", h, prev)
			}
			seen[h] = tc.name
		})
	}
}

func TestNewLaterDuplicateWins(t *testing.T) {
	s := snapshot.New(1, 0, []snapshot.Resource{res("a", `1`), res("a", `2`)})
	if s.Len() != 1 || string(s.Resources["a"].Body) != `2` {
		t.Fatalf("got %d resources, a=%s; want 1 resource with body 2", s.Len(), s.Resources["a"].Body)
	}
}

func TestNewResourceCanonicalizesJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"compact stays", `{"a":1}`, `{"a":1}`},
		{"whitespace", "{ \"a\" :\n\t1 ,  \"b\": [ 1, 2 ] }", `{"a":1,"b":[1,2]}`},
		{"html characters", `{"q":"a<b>&c"}`, `{"q":"a\u003cb\u003e\u0026c"}`},
		{"line separators", "{\"s\":\"x\u2028y\u2029z\"}", `{"s":"x\u2028y\u2029z"}`},
		{"scalar", ` 42 `, `42`},
		{"string scalar", ` "s" `, `"s"`},
		{"not JSON kept verbatim", `a: b <x>`, `a: b <x>`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := snapshot.NewResource("k", []byte(tc.in))
			if string(r.Body) != tc.want {
				t.Errorf("body %s, want %s", r.Body, tc.want)
			}
			if r.Hash != snapshot.HashBytes([]byte(tc.want)) {
				t.Errorf("hash %s is not the hash of the canonical body", r.Hash)
			}
			if r.Key != "k" {
				t.Errorf("key %q", r.Key)
			}
		})
	}
	// Differently written equal JSON gives one hash.
	a := res("k", `{"a": 1, "b": "<&>"}`)
	b := res("k", "{\n  \"a\":1,\n  \"b\":\"\\u003c\\u0026\\u003e\"\n}")
	if a.Hash != b.Hash {
		t.Errorf("equal JSON, different hashes: %s (%s) vs %s (%s)", a.Hash, a.Body, b.Hash, b.Body)
	}
}

// The body and hashes survive encoding/json in both directions: what NewResource produced is
// exactly what json.Marshal writes and what json.Unmarshal reads back.
func TestSnapshotHashSurvivesJSON(t *testing.T) {
	rs := []snapshot.Resource{
		res("html", `{"url": "http://svc/?a=1&b=<2>"}`),
		res("space", "{\n  \"name\": \"web\",\n  \"port\": 8080\n}"),
		res("unicode", "{\"note\":\"x\u2028y\",\"ünï\":\"çødé\"}"),
		res("nested", `[1, 2.50, {"nested": [true, false, null]}]`),
		res("scalar", `"just a string"`),
	}
	s := snapshot.New(4, 2, rs)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got snapshot.Snapshot
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, b)
	}
	if got.Hash != s.Hash {
		t.Fatalf("hash %s after round trip, want %s", got.Hash, s.Hash)
	}
	for k, r := range s.Resources {
		g := got.Resources[k]
		if !bytes.Equal(g.Body, r.Body) || g.Hash != r.Hash {
			t.Errorf("resource %s: body %s hash %s, want %s %s", k, g.Body, g.Hash, r.Body, r.Hash)
		}
		if snapshot.HashBytes(g.Body) != g.Hash {
			t.Errorf("resource %s: decoded body does not match its hash", k)
		}
	}
	// A second trip is byte-identical.
	b2, err := json.Marshal(&got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("second marshal differs:\n%s\n%s", b, b2)
	}
}

func TestSnapshotJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		s    *snapshot.Snapshot
	}{
		{"empty", snapshot.New(0, 0, nil)},
		{"versioned", snapshot.New(12, 0, abc())},
		{"with epoch", snapshot.New(3, 9, abc())},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			var got snapshot.Snapshot
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.Version != tc.s.Version || got.Epoch != tc.s.Epoch || got.Hash != tc.s.Hash {
				t.Errorf("got version %d epoch %d hash %s, want %d %d %s", got.Version, got.Epoch, got.Hash, tc.s.Version, tc.s.Epoch, tc.s.Hash)
			}
			if !slices.Equal(got.Keys(), tc.s.Keys()) {
				t.Errorf("keys %v, want %v", got.Keys(), tc.s.Keys())
			}
		})
	}
}

func TestSnapshotMarshalSortsResources(t *testing.T) {
	s := snapshot.New(1, 0, []snapshot.Resource{res("z", `1`), res("a", `2`), res("m", `3`)})
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Resources []snapshot.Resource `json:"resources"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if got := keysOf(w.Resources); !slices.Equal(got, []string{"a", "m", "z"}) {
		t.Errorf("wire order %v, want sorted", got)
	}
}

func TestSnapshotUnmarshalRejectsWrongHash(t *testing.T) {
	good, err := json.Marshal(snapshot.New(5, 1, abc()))
	if err != nil {
		t.Fatal(err)
	}
	otherHash := snapshot.New(5, 1, []snapshot.Resource{res("a", `{}`)}).Hash
	tests := []struct {
		name string
		edit func(m map[string]any)
	}{
		{"recorded hash of other content", func(m map[string]any) { m["hash"] = otherHash }},
		{"recorded hash garbage", func(m map[string]any) { m["hash"] = "deadbeef" }},
		{"resource dropped", func(m map[string]any) {
			m["resources"] = m["resources"].([]any)[1:]
		}},
		{"resource hash changed", func(m map[string]any) {
			m["resources"].([]any)[0].(map[string]any)["hash"] = snapshot.HashBytes([]byte(`{"n":9}`))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(good, &m); err != nil {
				t.Fatal(err)
			}
			tc.edit(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var s snapshot.Snapshot
			err = json.Unmarshal(b, &s)
			if !errors.Is(err, snapshot.ErrHashMismatch) {
				t.Fatalf("got %v, want an error wrapping ErrHashMismatch", err)
			}
		})
	}
	// A snapshot without a recorded hash is accepted and hashed.
	var s snapshot.Snapshot
	if err := json.Unmarshal([]byte(`{"version":1,"resources":[]}`), &s); err != nil {
		t.Fatal(err)
	}
	if s.Hash != snapshot.EmptyHash {
		t.Errorf("hash %s, want EmptyHash", s.Hash)
	}
}

// A stored snapshot whose body was altered (corruption, a hand edit) but whose recorded
// resource and snapshot hashes were kept must not decode: the content hash is only worth
// something if it covers the bodies.
func TestSnapshotUnmarshalRejectsTamperedBody(t *testing.T) {
	b, err := json.Marshal(snapshot.New(5, 1, abc()))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(b, []byte(`{"n":2}`), []byte(`{"n":7}`), 1)
	if bytes.Equal(tampered, b) {
		t.Fatal("test did not alter the body")
	}
	var s snapshot.Snapshot
	if err := json.Unmarshal(tampered, &s); !errors.Is(err, snapshot.ErrHashMismatch) {
		t.Fatalf("got %v (resource b body %s, hash %s), want ErrHashMismatch", err, s.Resources["b"].Body, s.Resources["b"].Hash)
	}
}

func TestDiffFromNothingIsFull(t *testing.T) {
	s := snapshot.New(3, 2, []snapshot.Resource{res("c", `3`), res("a", `1`), res("b", `2`)})
	d := snapshot.Diff(nil, s)
	if !d.Full {
		t.Fatal("Diff(nil) is not full")
	}
	if got := keysOf(d.Upserts); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("upserts %v, want all resources sorted", got)
	}
	if len(d.Removals) != 0 {
		t.Errorf("removals %v in a full delta", d.Removals)
	}
	if d.Version != 3 || d.Epoch != 2 || d.Hash != s.Hash {
		t.Errorf("delta version %d epoch %d hash %s, want 3 2 %s", d.Version, d.Epoch, d.Hash, s.Hash)
	}
	if d.Empty() {
		t.Error("a full delta reports Empty")
	}
	// A full delta of an empty snapshot is still full (it clears the receiver) and not Empty.
	e := snapshot.Diff(nil, snapshot.New(1, 0, nil))
	if !e.Full || e.Empty() || len(e.Upserts) != 0 {
		t.Errorf("full delta of empty snapshot: %+v, Empty()=%v", e, e.Empty())
	}
}

func TestDiff(t *testing.T) {
	h := func(body string) string { return res("", body).Hash }
	next := snapshot.New(2, 0, []snapshot.Resource{res("a", `1`), res("b", `2`), res("c", `3`), res("e", `5`)})
	tests := []struct {
		name     string
		held     map[string]string
		upserts  []string
		removals []string
	}{
		{"holds everything", map[string]string{"a": h(`1`), "b": h(`2`), "c": h(`3`), "e": h(`5`)}, nil, nil},
		{"holds nothing (empty map)", map[string]string{}, []string{"a", "b", "c", "e"}, nil},
		{"one changed", map[string]string{"a": h(`1`), "b": h(`9`), "c": h(`3`), "e": h(`5`)}, []string{"b"}, nil},
		{"one added", map[string]string{"a": h(`1`), "b": h(`2`), "e": h(`5`)}, []string{"c"}, nil},
		{"removed, sorted", map[string]string{"a": h(`1`), "b": h(`2`), "c": h(`3`), "e": h(`5`), "z": h(`0`), "d": h(`4`), "0": h(`0`)}, nil, []string{"0", "d", "z"}},
		{"all kinds", map[string]string{"e": h(`1`), "c": h(`3`), "x": h(`x`), "f": h(`f`)}, []string{"a", "b", "e"}, []string{"f", "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := snapshot.Diff(tc.held, next)
			if d.Full {
				t.Error("delta from a held map is full")
			}
			if got := keysOf(d.Upserts); !slices.Equal(got, tc.upserts) && !(len(got) == 0 && len(tc.upserts) == 0) {
				t.Errorf("upserts %v, want %v", got, tc.upserts)
			}
			for _, u := range d.Upserts {
				if u.Hash != next.Resources[u.Key].Hash || !bytes.Equal(u.Body, next.Resources[u.Key].Body) {
					t.Errorf("upsert %s does not carry the new resource", u.Key)
				}
			}
			if !slices.Equal(d.Removals, tc.removals) && !(len(d.Removals) == 0 && len(tc.removals) == 0) {
				t.Errorf("removals %v, want %v", d.Removals, tc.removals)
			}
			if wantEmpty := len(tc.upserts) == 0 && len(tc.removals) == 0; d.Empty() != wantEmpty {
				t.Errorf("Empty() = %v, want %v", d.Empty(), wantEmpty)
			}
			if d.Hash != next.Hash || d.Version != next.Version {
				t.Errorf("delta hash/version %s/%d, want %s/%d", d.Hash, d.Version, next.Hash, next.Version)
			}
		})
	}
}

func TestDiffIdenticalIsEmpty(t *testing.T) {
	a := snapshot.New(1, 0, abc())
	b := snapshot.New(9, 0, abc()) // other version, same content
	if d := snapshot.Diff(a.ResourceHashes(), b); !d.Empty() {
		t.Errorf("diff of identical content: %+v", d)
	}
	e := snapshot.New(1, 0, nil)
	if d := snapshot.Diff(e.ResourceHashes(), e); !d.Empty() {
		t.Errorf("diff of empty to empty: %+v", d)
	}
}

// randomStep changes cur by random additions, changes and removals.
func randomStep(rng *rand.Rand, cur map[string]snapshot.Resource, version uint64) *snapshot.Snapshot {
	next := maps.Clone(cur)
	for range rng.IntN(6) {
		key := fmt.Sprintf("r%02d", rng.IntN(30))
		switch rng.IntN(3) {
		case 0, 1: // add or change
			next[key] = res(key, fmt.Sprintf(`{"v":%d,"s":"<%d & %d>"}`, rng.IntN(5), rng.IntN(3), version))
		case 2:
			delete(next, key)
		}
	}
	return snapshot.FromMap(version, 0, next)
}

func TestApplyDiffReproducesRandomSequences(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Two receivers: one follows every step, one restarts from random earlier states.
	var history []*snapshot.Snapshot
	var state *snapshot.Snapshot // receiver state, starts with nothing
	sender := map[string]snapshot.Resource{}
	for i := range 200 {
		next := randomStep(rng, sender, uint64(i+1))
		sender = next.Resources

		var held map[string]string
		if state != nil {
			held = state.ResourceHashes()
		}
		got, err := snapshot.Apply(state, snapshot.Diff(held, next))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got.Hash != next.Hash || got.Version != next.Version {
			t.Fatalf("step %d: applied hash/version %s/%d, want %s/%d", i, got.Hash, got.Version, next.Hash, next.Version)
		}
		if !slices.Equal(got.Keys(), next.Keys()) {
			t.Fatalf("step %d: keys %v, want %v", i, got.Keys(), next.Keys())
		}
		state = got

		// From an older base straight to next.
		if len(history) > 0 {
			base := history[rng.IntN(len(history))]
			got, err := snapshot.Apply(base, snapshot.Diff(base.ResourceHashes(), next))
			if err != nil {
				t.Fatalf("step %d from version %d: %v", i, base.Version, err)
			}
			if got.Hash != next.Hash {
				t.Fatalf("step %d from version %d: hash %s, want %s", i, base.Version, got.Hash, next.Hash)
			}
		}
		history = append(history, next)
	}
}

func TestApplyFull(t *testing.T) {
	base := snapshot.New(1, 0, []snapshot.Resource{res("old", `0`), res("a", `1`)})
	next := snapshot.New(2, 5, abc())
	got, err := snapshot.Apply(base, snapshot.Diff(nil, next))
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != next.Hash || got.Epoch != 5 {
		t.Errorf("full delta over a base: hash %s epoch %d, want %s 5", got.Hash, got.Epoch, next.Hash)
	}
	if _, ok := got.Resources["old"]; ok {
		t.Error("full delta kept a resource of the base")
	}
}

func TestApplyWrongBase(t *testing.T) {
	assumed := snapshot.New(1, 0, abc())
	next := snapshot.New(2, 0, []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":22}`), res("c", `{"n":3}`)})
	d := snapshot.Diff(assumed.ResourceHashes(), next)
	tests := []struct {
		name string
		base *snapshot.Snapshot
	}{
		{"nil base", nil},
		{"empty base", snapshot.New(1, 0, nil)},
		{"extra resource", snapshot.New(1, 0, append(abc(), res("x", `{}`)))},
		{"other body", snapshot.New(1, 0, []snapshot.Resource{res("a", `{"n":11}`), res("b", `{"n":2}`), res("c", `{"n":3}`)})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := snapshot.Apply(tc.base, d)
			if !errors.Is(err, snapshot.ErrHashMismatch) {
				t.Fatalf("got %v, %v; want an error wrapping ErrHashMismatch", got, err)
			}
			if got != nil {
				t.Error("a snapshot was returned with the error")
			}
		})
	}
}

func TestApplyTamperedBody(t *testing.T) {
	base := snapshot.New(1, 0, abc())
	next := snapshot.New(2, 0, []snapshot.Resource{res("a", `{"n":1}`), res("b", `{"n":22}`), res("c", `{"n":3}`)})
	tests := []struct {
		name string
		edit func(d *snapshot.Delta)
	}{
		{"body changed, hash kept", func(d *snapshot.Delta) { d.Upserts[0].Body = []byte(`{"n":23}`) }},
		{"hash changed, body kept", func(d *snapshot.Delta) { d.Upserts[0].Hash = res("", `{"n":23}`).Hash }},
		{"announced hash wrong", func(d *snapshot.Delta) { d.Hash = base.Hash }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := snapshot.Diff(base.ResourceHashes(), next)
			d.Upserts = slices.Clone(d.Upserts)
			tc.edit(&d)
			if _, err := snapshot.Apply(base, d); !errors.Is(err, snapshot.ErrHashMismatch) {
				t.Fatalf("got %v, want an error wrapping ErrHashMismatch", err)
			}
		})
	}
	// The untouched delta applies; the base is not modified by any of the attempts.
	if _, err := snapshot.Apply(base, snapshot.Diff(base.ResourceHashes(), next)); err != nil {
		t.Fatal(err)
	}
	if base.Hash != snapshot.New(1, 0, abc()).Hash || snapshot.FromMap(1, 0, base.Resources).Hash != base.Hash {
		t.Error("Apply modified its base")
	}
}

func TestSnapshotAccessorsOnNil(t *testing.T) {
	var s *snapshot.Snapshot
	if s.Len() != 0 || s.Keys() != nil || len(s.Sorted()) != 0 {
		t.Error("nil snapshot accessors")
	}
	if m := s.ResourceHashes(); m == nil || len(m) != 0 {
		t.Errorf("nil ResourceHashes = %v, want empty non-nil map", m)
	}
}

func TestWithVersionSharesContent(t *testing.T) {
	s := snapshot.New(1, 1, abc())
	c := s.WithVersion(8, 2)
	if c.Version != 8 || c.Epoch != 2 || c.Hash != s.Hash || s.Version != 1 || s.Epoch != 1 {
		t.Errorf("WithVersion: copy %d/%d/%s, original %d/%d", c.Version, c.Epoch, c.Hash, s.Version, s.Epoch)
	}
}
