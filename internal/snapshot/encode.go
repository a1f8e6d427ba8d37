package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// This file is the stored form of snapshots and configuration resources shared by the
// persistent stores (redisstore, boltstore): the JSON of MarshalJSON, except that every
// resource body is written verbatim, whether or not the resource was built by NewResource
// (json.Marshal would compact such a body and escape <, > and &, which changes its hash).
// Decoding verifies every hash (UnmarshalJSON).

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

// EncodeResource returns the stored form of r: its JSON with the body verbatim (a nil body
// is written as null).
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
	if err := json.Unmarshal(b, &r); err != nil {
		return Resource{}, err
	}
	r.validJSON = len(r.Body) > 0 // decoded as a JSON value
	return r, nil
}

func appendResource(buf *bytes.Buffer, r Resource) error {
	body := []byte(r.Body)
	if len(body) == 0 {
		body = []byte("null")
	} else if !json.Valid(body) {
		return errors.New("body is not valid JSON")
	}
	key, _ := json.Marshal(r.Key)
	hash, _ := json.Marshal(r.Hash)
	fmt.Fprintf(buf, `{"key":%s,"hash":%s,"body":`, key, hash)
	buf.Write(body)
	buf.WriteByte('}')
	return nil
}
