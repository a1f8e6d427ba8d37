package snapshot

import (
	"encoding/json"
	"testing"
)

// TestMarshalJSONFastPathMatchesEncodingJSON: the verbatim encoding of known-valid bodies
// gives exactly the bytes encoding/json gives, and decodes back to the same snapshot.
func TestMarshalJSONFastPathMatchesEncodingJSON(t *testing.T) {
	s := New(7, 3, []Resource{
		NewResource("ServiceEntry/ns/a", []byte(`{ "b": [1, 2, "<&>"], "a": {"x": null} }`)),
		NewResource("Secret/ns/k\u2028\"q", []byte(`"plain string"`)),
		NewResource("Listener//l", []byte(`{}`)),
	})
	fast, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	slow, err := json.Marshal(wire{Version: s.Version, Hash: s.Hash, Epoch: s.Epoch, Resources: s.Sorted()})
	if err != nil {
		t.Fatal(err)
	}
	if string(fast) != string(slow) {
		t.Fatalf("fast encoding differs:\n%s\n%s", fast, slow)
	}
	var back Snapshot
	if err := json.Unmarshal(fast, &back); err != nil {
		t.Fatal(err)
	}
	if back.Hash != s.Hash || back.Version != 7 || back.Epoch != 3 || back.Len() != 3 {
		t.Fatalf("round trip gave %+v", back)
	}
	// A body that is not JSON still makes encoding fail, as encoding/json always did.
	bad := New(1, 0, []Resource{NewResource("X//y", []byte("not json"))})
	if _, err := json.Marshal(bad); err == nil {
		t.Fatal("a snapshot with a non-JSON body encoded")
	}
}

// A value of the per-resource stored form written before binary bodies (hash, then the
// JSON body) reads as JSON; a binary body is marked, and the mark is not part of the body.
func TestStoredResourceForms(t *testing.T) {
	js := NewResource("ServiceEntry/ns/a", []byte(`{"a":1}`))
	old := append([]byte(js.Hash), js.Body...) // as every version before wrote it
	got, err := DecodeStoredResource(js.Key, old)
	if err != nil || got.form != formJSON || string(got.Body) != `{"a":1}` {
		t.Fatalf("old value read as %q form %d: %v", got.Body, got.form, err)
	}
	if v, err := AppendStoredResource(nil, js); err != nil || string(v) != string(old) {
		t.Fatalf("a JSON body is stored as %q, %v; want %q", v, err, old)
	}
	bin := NewBinaryResource("EnvoyCluster//a", []byte(`{"a":1}`)) // JSON-looking bytes, declared binary
	v, err := AppendStoredResource(nil, bin)
	if err != nil || v[hashLen] != binaryMark {
		t.Fatalf("binary body stored as %q, %v", v, err)
	}
	got, err = DecodeStoredResource(bin.Key, v)
	if err != nil || got.form != formBinary || string(got.Body) != `{"a":1}` || got.Hash != bin.Hash {
		t.Fatalf("binary value read as %q form %d: %v", got.Body, got.form, err)
	}
}
