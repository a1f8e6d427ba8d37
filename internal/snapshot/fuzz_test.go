package snapshot_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// seedSnapshots returns the input snapshots of the translate golden cases (real discovery
// inputs), sorted by cluster then case, for seed corpora.
func seedSnapshots(f *testing.F) []*snapshot.Snapshot {
	f.Helper()
	var out []*snapshot.Snapshot
	for _, c := range []string{"seed003", "vd-failover", "istio-multinetwork"} {
		ins, errs := resource.LoadInputsDir(filepath.Join("..", "translate", "testdata", c, "inputs"))
		if len(errs) > 0 {
			f.Fatalf("seed inputs of %s: %v", c, errs)
		}
		for _, k := range slices.Sorted(maps.Keys(ins)) {
			out = append(out, ins[k])
		}
	}
	return out
}

func mustJSON(f *testing.F, v any) []byte {
	f.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// sameSnapshot reports whether a and b hold the same version, epoch, hash and resources.
func sameSnapshot(a, b *snapshot.Snapshot) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Version == b.Version && a.Epoch == b.Epoch && a.Hash == b.Hash &&
		maps.EqualFunc(a.Resources, b.Resources, func(x, y snapshot.Resource) bool {
			return x.Key == y.Key && x.Hash == y.Hash && bytes.Equal(x.Body, y.Body)
		})
}

// clone copies s deeply, to compare it after an operation that must not modify it.
func clone(s *snapshot.Snapshot) *snapshot.Snapshot {
	if s == nil {
		return nil
	}
	m := make(map[string]snapshot.Resource, len(s.Resources))
	for k, r := range s.Resources {
		r.Body = bytes.Clone(r.Body)
		m[k] = r
	}
	c := *s
	c.Resources = m
	return &c
}

// FuzzApply decodes a snapshot's stored form (what redisstore and boltstore read; an
// agent's state file is the same JSON) and applies a decoded delta to it, as a receiver does
// with what it holds and what it is sent. Whatever the bytes: no panic; what decodes has
// verified hashes and survives encoding and decoding again unchanged; a refused delta leaves
// the base unchanged and says why (ErrHashMismatch for content that does not hash to what
// was announced); an accepted one gives a snapshot whose every body hashes to its
// resource's hash, with the announced content hash and version, that Diff from the base
// reproduces.
func FuzzApply(f *testing.F) {
	snaps := seedSnapshots(f)
	for i, base := range snaps {
		stored, err := snapshot.EncodeSnapshot(base)
		if err != nil {
			f.Fatal(err)
		}
		next := snaps[(i+1)%len(snaps)]
		f.Add(stored, mustJSON(f, snapshot.Diff(base.ResourceHashes(), next)))
		f.Add(stored, mustJSON(f, snapshot.Diff(nil, next)))
		f.Add([]byte(nil), mustJSON(f, snapshot.Diff(nil, base)))
		// A delta announcing the wrong content.
		bad := snapshot.Diff(nil, next)
		bad.Hash = base.Hash
		f.Add(stored, mustJSON(f, bad))
		f.Add(mustJSON(f, base.WithVersion(7, 3)), mustJSON(f, snapshot.Diff(base.ResourceHashes(), next)))
	}
	// Binary bodies (an Envoy resource's protobuf) beside JSON ones, in the base and in
	// the delta.
	bin := snapshot.New(4, 1, []snapshot.Resource{
		snapshot.NewBinaryResource("EnvoyCluster//a", []byte("\n5type.googleapis.com/envoy.config.cluster.v3.Cluster\x12\x03\n\x01a")),
		snapshot.NewBinaryResource("EnvoyCluster//b", []byte(" [1, 2] ")),
		snapshot.NewResource("ServiceEntry/ns/c", []byte(`{"c":1}`)),
	})
	binNext := snapshot.New(5, 1, append(bin.Sorted()[1:], snapshot.NewBinaryResource("EnvoyCluster//a", []byte{0x0a, 0, 0xff})))
	binStored, err := snapshot.EncodeSnapshot(bin)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(binStored, mustJSON(f, snapshot.Diff(bin.ResourceHashes(), binNext)))
	f.Add([]byte(nil), mustJSON(f, snapshot.Diff(nil, bin)))
	f.Add([]byte(`{"version":1,"hash":"","resources":[{"key":"a","hash":"x","body":1}]}`), []byte(`{"Full":true}`))
	// A resource without a body (the hash is that of no bytes) and one with body null.
	empty := snapshot.HashBytes(nil)
	f.Add([]byte(`{"version":1,"hash":"","resources":[{"key":"a","hash":"`+empty+`"}]}`),
		[]byte(`{"Version":2,"Upserts":[{"key":"b","hash":"`+snapshot.HashBytes([]byte("null"))+`","body":null}]}`))
	f.Fuzz(func(t *testing.T, stored, delta []byte) {
		base, err := snapshot.DecodeSnapshot(stored)
		if err != nil {
			base = nil // a receiver that holds nothing
		} else {
			checkStoredForm(t, base)
		}
		var d snapshot.Delta
		if json.Unmarshal(delta, &d) != nil {
			return
		}
		before := clone(base)
		got, err := snapshot.Apply(base, d)
		if !sameSnapshot(base, before) {
			t.Fatalf("Apply modified its base (err %v)", err)
		}
		if err != nil {
			if got != nil {
				t.Fatalf("Apply returned a snapshot with error %v", err)
			}
			if !errors.Is(err, snapshot.ErrHashMismatch) {
				t.Fatalf("Apply error %v does not wrap ErrHashMismatch", err)
			}
			return
		}
		if got.Version != d.Version || got.Epoch != d.Epoch || (d.Hash != "" && got.Hash != d.Hash) {
			t.Fatalf("applied snapshot v%d e%d %s, delta announced v%d e%d %s", got.Version, got.Epoch, got.Hash, d.Version, d.Epoch, d.Hash)
		}
		for k, r := range got.Resources {
			if k != r.Key || snapshot.HashBytes(r.Body) != r.Hash {
				t.Fatalf("applied snapshot stores %q under %q with hash %s of a body hashing to %s", r.Key, k, r.Hash, snapshot.HashBytes(r.Body))
			}
		}
		if fresh := snapshot.FromMap(got.Version, got.Epoch, got.Resources); fresh.Hash != got.Hash {
			t.Fatalf("applied snapshot hash %s, its resources hash to %s", got.Hash, fresh.Hash)
		}
		var held map[string]string
		if base != nil {
			held = base.ResourceHashes()
		}
		again, err := snapshot.Apply(base, snapshot.Diff(held, got))
		if err != nil || again.Hash != got.Hash {
			t.Fatalf("Diff from the base does not reproduce the applied snapshot: %v", err)
		}
	})
}

// checkStoredForm checks a decoded snapshot: verified hashes, and unchanged through its
// stored form and its JSON form.
func checkStoredForm(t *testing.T, s *snapshot.Snapshot) {
	t.Helper()
	for k, r := range s.Resources {
		if k != r.Key || snapshot.HashBytes(r.Body) != r.Hash {
			t.Fatalf("decoded snapshot keeps %q with hash %s of a body hashing to %s", k, r.Hash, snapshot.HashBytes(r.Body))
		}
	}
	enc, err := snapshot.EncodeSnapshot(s)
	if err != nil {
		t.Fatalf("a decoded snapshot does not encode: %v", err)
	}
	back, err := snapshot.DecodeSnapshot(enc)
	if err != nil || !sameSnapshot(s, back) {
		t.Fatalf("stored form does not round-trip: %v\n%s", err, enc)
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("a decoded snapshot does not marshal: %v", err)
	}
	var again snapshot.Snapshot
	if err := json.Unmarshal(js, &again); err != nil || !sameSnapshot(s, &again) {
		t.Fatalf("JSON form does not round-trip: %v\n%s", err, js)
	}
}

// FuzzBinaryBody: a binary body (NewBinaryResource), whatever its bytes (valid JSON, JSON
// with white space around it, protobuf), keeps its bytes, its hash and its form through
// every form that carries resources: the stored snapshot and resource (base64 "body64"),
// the JSON of a snapshot and of a resource, the per-resource stored form of the stores, and
// a delta applied by a receiver, whose result again survives the stored form. A JSON body
// beside it stays verbatim in the JSON forms.
func FuzzBinaryBody(f *testing.F) {
	f.Add([]byte("\n5type.googleapis.com/envoy.config.cluster.v3.Cluster\x12\x03\n\x01x"))
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(" [1, 2] "))
	f.Add([]byte{0})
	f.Add([]byte("\xff\xfe<&>\u2028"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) == 0 {
			return // the stored forms refuse an empty body, binary or not
		}
		bin := snapshot.NewBinaryResource("EnvoyCluster//x", body)
		if !bin.Binary() || !bytes.Equal(bin.Body, body) || bin.Hash != snapshot.HashBytes(body) {
			t.Fatalf("NewBinaryResource changed its body or hash: %q %s", bin.Body, bin.Hash)
		}
		js := snapshot.NewResource("ServiceEntry/ns/x", []byte(`{"b": "<&>"}`))
		s := snapshot.New(3, 2, []snapshot.Resource{bin, js})
		same := func(what string, got snapshot.Resource) {
			t.Helper()
			if got.Key != bin.Key || got.Hash != bin.Hash || !bytes.Equal(got.Body, body) || !got.Binary() {
				t.Fatalf("%s: binary body came back as %q (binary %v, hash %s)", what, got.Body, got.Binary(), got.Hash)
			}
		}
		checkStoredForm(t, s)
		enc, err := snapshot.EncodeSnapshot(s)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(enc, []byte(`"body":`+string(js.Body))) {
			t.Fatalf("stored form does not keep the JSON body verbatim: %s", enc)
		}
		back, err := snapshot.DecodeSnapshot(enc)
		if err != nil {
			t.Fatal(err)
		}
		same("stored snapshot", back.Resources[bin.Key])
		r, err := snapshot.EncodeResource(bin)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := snapshot.DecodeResource(r)
		if err != nil {
			t.Fatal(err)
		}
		same("stored resource", rb)
		jr, err := json.Marshal(bin)
		if err != nil {
			t.Fatal(err)
		}
		var jb snapshot.Resource
		if err := json.Unmarshal(jr, &jb); err != nil {
			t.Fatal(err)
		}
		same("resource JSON", jb)
		v, err := snapshot.AppendStoredResource(nil, bin)
		if err != nil {
			t.Fatal(err)
		}
		if !snapshot.StoredHashIs(v, bin.Hash) {
			t.Fatal("per-resource stored form does not start with the hash")
		}
		sr, err := snapshot.DecodeStoredResource(bin.Key, v)
		if err != nil {
			t.Fatal(err)
		}
		same("per-resource stored form", sr)
		applied, err := snapshot.Apply(nil, snapshot.Diff(nil, s))
		if err != nil || applied.Hash != s.Hash {
			t.Fatalf("Apply: %v", err)
		}
		checkStoredForm(t, applied)
	})
}
