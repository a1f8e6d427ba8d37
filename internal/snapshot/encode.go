package snapshot

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// This file is the stored form of snapshots and configuration resources shared by the
// persistent stores (redisstore, boltstore): the JSON of MarshalJSON, except that every
// resource body is written verbatim, whether or not the resource was built by NewResource
// (json.Marshal would compact such a body and escape <, > and &, which changes its hash),
// and a binary body is written as base64 in "body64" (Resource.MarshalJSON). Decoding
// verifies every hash (UnmarshalJSON).
//
// The stores that keep a snapshot resource by resource (boltstore's schemas 2 and 3, redisstore's
// hash per cluster) store each resource as its hash (64 hex digits) followed by its body
// verbatim (AppendStoredResource, DecodeStoredResource), so that a store can compare the
// stored hash of a key with the new one without decoding the body, and write only what
// changed; a binary body follows a zero byte (binaryMark), which no JSON text starts with,
// so that values written before binary bodies existed read as they always did. A body is
// checked with json.Valid only when its form is not known (Resource.form); reading always
// verifies every body's hash.

// EncodeSnapshot returns the stored form of snap.
func EncodeSnapshot(snap *Snapshot) ([]byte, error) {
	var buf bytes.Buffer
	hash, _ := json.Marshal(snap.Hash)
	fmt.Fprintf(&buf, `{"version":%d,"hash":%s,"epoch":%d,"resources":[`, snap.Version, hash, snap.Epoch)
	for i, r := range snap.Sorted() {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := appendResource(&buf, r); err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.Key, err)
		}
	}
	buf.WriteString(`]}`)
	return buf.Bytes(), nil
}

// DecodeSnapshot reads the stored form of a snapshot and checks its hashes.
func DecodeSnapshot(b []byte) (*Snapshot, error) {
	snap := new(Snapshot)
	if err := json.Unmarshal(b, snap); err != nil {
		return nil, err
	}
	return snap, nil
}

// EncodeResource returns the stored form of r: its JSON with a JSON body verbatim (a nil
// body is written as null) and a binary body as base64 ("body64").
func EncodeResource(r Resource) ([]byte, error) {
	var buf bytes.Buffer
	if err := appendResource(&buf, r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeResource reads the stored form of a resource.
func DecodeResource(b []byte) (Resource, error) {
	var r Resource
	if err := r.UnmarshalJSON(b); err != nil {
		return Resource{}, err
	}
	return r, nil
}

func appendResource(buf *bytes.Buffer, r Resource) error {
	b, err := r.appendJSON(buf.AvailableBuffer())
	if err != nil {
		return err
	}
	buf.Write(b)
	return nil
}

// hashLen is the length of a resource hash: hex SHA-256.
const hashLen = 64

// binaryMark follows the hash in the per-resource stored form of a binary body.
const binaryMark = 0

// AppendStoredResource appends the per-resource stored form of r to b: its hash, then its
// body (after binaryMark for a binary body). A body of unknown form is checked here (and
// refused when it is not JSON).
func AppendStoredResource(b []byte, r Resource) ([]byte, error) {
	switch {
	case len(r.Hash) != hashLen:
		return nil, fmt.Errorf("resource %s: hash %q is not a hex SHA-256", r.Key, r.Hash)
	case len(r.Body) == 0:
		return nil, fmt.Errorf("resource %s: no body", r.Key)
	}
	verbatim, err := r.jsonBody()
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", r.Key, err)
	}
	b = append(b, r.Hash...)
	if !verbatim {
		b = append(b, binaryMark)
	}
	return append(b, r.Body...), nil
}

// DecodeStoredResource reads the per-resource stored form v of the resource key and verifies
// its body's hash. The resource does not share memory with v.
func DecodeStoredResource(key string, v []byte) (Resource, error) {
	if len(v) <= hashLen {
		return Resource{}, fmt.Errorf("decode resource %s: %d bytes, want a hash and a body", key, len(v))
	}
	hash, body, form := string(v[:hashLen]), v[hashLen:], formJSON
	if body[0] == binaryMark {
		body, form = body[1:], formBinary
	}
	body = bytes.Clone(body)
	if got := HashBytes(body); got != hash {
		return Resource{}, fmt.Errorf("decode resource %s: body hash %s, recorded %s: %w", key, got, hash, ErrHashMismatch)
	}
	// The writer checked the body (AppendStoredResource) and the hash says it is unchanged.
	return Resource{Key: key, Hash: hash, Body: body, form: form}, nil
}

// StoredHashIs reports whether the resource in the per-resource stored form v has the
// given hash, without reading its body.
func StoredHashIs(v []byte, hash string) bool {
	return len(v) > hashLen && string(v[:hashLen]) == hash
}

// Assemble builds the snapshot a store read resource by resource and checks its content
// hash against the recorded one. It takes ownership of m.
func Assemble(version, epoch uint64, hash string, m map[string]Resource) (*Snapshot, error) {
	s := FromMap(version, epoch, m)
	if s.Hash != hash {
		return nil, fmt.Errorf("snapshot version %d: content hash %s, recorded %s: %w", version, s.Hash, hash, ErrHashMismatch)
	}
	return s, nil
}
