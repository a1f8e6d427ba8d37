// Package snapshot holds the immutable, content-versioned snapshots that travel between
// agents and the management server (inputs up, outputs down), the delta arithmetic between
// them, and the Store interface that persists them.
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Resource is one object of a snapshot: a stable key, its canonical body and the body's hash.
//
// A body is JSON (a Kubernetes-shaped object, an input) or binary (an Envoy resource as a
// serialized google.protobuf.Any, see internal/envoyres). Every JSON form of a resource
// (MarshalJSON, the stored forms of encode.go) writes a JSON body verbatim as "body" and a
// binary one as base64 in "body64", so that both come back byte for byte with their hash.
type Resource struct {
	Key  string
	Hash string
	Body []byte
	// form records what Body is known to be: JSON that can be copied verbatim into a JSON
	// form (instead of having encoding/json scan and compact it again, which dominated an
	// agent's cost of persisting its state), binary, or not known (a literal Resource).
	form bodyForm
}

type bodyForm uint8

const (
	formUnknown bodyForm = iota // checked with json.Valid when encoded, refused if not JSON
	formJSON                    // valid JSON, without surrounding white space
	formBinary                  // any bytes, written as base64 in JSON forms
)

// NewResource returns a Resource with its hash computed from body. A JSON body is first put
// in the form encoding/json itself produces (compact, with <, > and & escaped), so that the
// body and its hash survive any trip through encoding/json unchanged.
func NewResource(key string, body []byte) Resource {
	body, ok := canonical(body)
	f := formUnknown
	if ok {
		f = formJSON
	}
	return Resource{Key: key, Hash: HashBytes(body), Body: body, form: f}
}

// NewBinaryResource returns a Resource whose body is binary (not JSON): it is hashed and
// kept as given, never canonicalised, and the JSON forms carry it as base64.
func NewBinaryResource(key string, body []byte) Resource {
	return Resource{Key: key, Hash: HashBytes(body), Body: body, form: formBinary}
}

// Binary reports whether r's body is known to be binary (NewBinaryResource, or read back
// from a form that recorded it so).
func (r Resource) Binary() bool { return r.form == formBinary }

// verbatimJSON reports whether body is valid JSON that a JSON decoder gives back byte for
// byte (no white space around the value).
func verbatimJSON(body []byte) bool {
	if len(body) == 0 || isSpace(body[0]) || isSpace(body[len(body)-1]) {
		return false
	}
	return json.Valid(body)
}

// canonicalJSON reports whether body is valid JSON already in the form NewResource gives
// it (compact, with <, > and & escaped) and valid UTF-8: the form encoding/json leaves
// unchanged when it writes the body inside another document.
func canonicalJSON(body []byte) bool {
	if !verbatimJSON(body) || !utf8.Valid(body) {
		return false
	}
	c, ok := canonical(body)
	return ok && bytes.Equal(c, body)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// jsonBody returns how a JSON form writes r's body: verbatim (JSON), as base64 (binary), or
// an error for a body of unknown form that is not JSON.
func (r Resource) jsonBody() (verbatim bool, err error) {
	switch {
	case r.form == formJSON || len(r.Body) == 0:
		return true, nil
	case r.form == formBinary:
		return false, nil
	case json.Valid(r.Body):
		return true, nil
	}
	return false, errors.New("body is not valid JSON")
}

// appendJSON appends the JSON form of r: {"key","hash","body"} with a JSON body verbatim
// (null when there is none), or {"key","hash","body64"} with a binary body in base64.
func (r Resource) appendJSON(b []byte) ([]byte, error) {
	verbatim, err := r.jsonBody()
	if err != nil {
		return nil, err
	}
	b = append(b, `{"key":`...)
	b = appendJSONString(b, r.Key)
	b = append(b, `,"hash":`...)
	b = appendJSONString(b, r.Hash)
	switch {
	case !verbatim:
		b = append(b, `,"body64":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.Body)
		b = append(b, '"')
	case len(r.Body) == 0:
		b = append(b, `,"body":null`...)
	default:
		b = append(b, `,"body":`...)
		b = append(b, r.Body...)
	}
	return append(b, '}'), nil
}

// MarshalJSON writes the JSON form of r (see Resource). encoding/json compacts what it
// returns, as it always compacted a JSON body; a body of unknown form that is not JSON is
// refused.
func (r Resource) MarshalJSON() ([]byte, error) {
	b, err := r.appendJSON(make([]byte, 0, len(r.Key)+len(r.Hash)+len(r.Body)*4/3+48))
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", r.Key, err)
	}
	return b, nil
}

// UnmarshalJSON reads the JSON form of a resource: a "body" is kept verbatim as JSON, a
// "body64" as binary. It does not verify the hash (Snapshot.UnmarshalJSON and Apply do).
func (r *Resource) UnmarshalJSON(b []byte) error {
	var w struct {
		Key    string          `json:"key"`
		Hash   string          `json:"hash"`
		Body   json.RawMessage `json:"body"`
		Body64 *[]byte         `json:"body64"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Resource{Key: w.Key, Hash: w.Hash, Body: w.Body}
	switch {
	case w.Body64 != nil && w.Body != nil:
		return fmt.Errorf("resource %s: both body and body64", w.Key)
	case w.Body64 != nil:
		r.Body, r.form = *w.Body64, formBinary
	case len(w.Body) > 0:
		r.form = formJSON // decoded as a JSON value
	}
	return nil
}

func canonical(body []byte) ([]byte, bool) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		return body, false // not JSON: kept verbatim
	}
	var out bytes.Buffer
	json.HTMLEscape(&out, buf.Bytes())
	return out.Bytes(), true
}

// HashBytes is the hex SHA-256 of b.
func HashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Snapshot is an immutable set of resources with a version and a content hash. The hash
// depends only on the resources; the version grows each time the content changes. Epoch is
// the fencing epoch an output snapshot was produced under (0 for inputs).
//
// Snapshots must not be modified after New returns them.
type Snapshot struct {
	Version   uint64              `json:"version"`
	Hash      string              `json:"hash"`
	Epoch     uint64              `json:"epoch,omitempty"`
	Resources map[string]Resource `json:"-"`
	// keys are the keys of Resources in order, kept by New and FromMap, which sort them for
	// the hash anyway, so that Keys, Sorted and Diff (once per agent a change goes to) do
	// not sort them again.
	keys []string
}

// New builds a snapshot from resources; later duplicates of a key replace earlier ones.
func New(version, epoch uint64, resources []Resource) *Snapshot {
	m := make(map[string]Resource, len(resources))
	for _, r := range resources {
		m[r.Key] = r
	}
	if !strictlySorted(resources) {
		return FromMap(version, epoch, m)
	}
	// Sorted without duplicates (what a translation gives): the slice is the hash's order.
	keys := make([]string, len(resources))
	for i, r := range resources {
		keys[i] = r.Key
	}
	return build(version, epoch, m, keys)
}

// FromMap builds a snapshot taking ownership of m.
func FromMap(version, epoch uint64, m map[string]Resource) *Snapshot {
	return build(version, epoch, m, sortedKeys(m))
}

// build makes the snapshot of m, whose keys in order are keys. Its content hash is SHA-256
// over key, NUL, resource hash, NUL for every resource in key order, gathered in one buffer
// and hashed at once (a write per field to the hash converted and copied each, and
// allocated).
func build(version, epoch uint64, m map[string]Resource, keys []string) *Snapshot {
	size := 0
	for _, k := range keys {
		size += len(k) + 2 + sha256.Size*2 // resource hashes are hex SHA-256
	}
	b := make([]byte, 0, size)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, m[k].Hash...)
		b = append(b, 0)
	}
	sum := sha256.Sum256(b)
	return &Snapshot{Version: version, Epoch: epoch, Hash: hex.EncodeToString(sum[:]), Resources: m, keys: keys}
}

// EmptyHash is the content hash of a snapshot with no resources.
var EmptyHash = build(0, 0, nil, nil).Hash

func strictlySorted(rs []Resource) bool {
	for i := 1; i < len(rs); i++ {
		if rs[i-1].Key >= rs[i].Key {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]Resource) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WithVersion returns a copy of s that carries another version and epoch; the resources are
// shared (they are immutable).
func (s *Snapshot) WithVersion(version, epoch uint64) *Snapshot {
	c := *s
	c.Version = version
	c.Epoch = epoch
	return &c
}

// Keys returns the resource keys in sorted order.
func (s *Snapshot) Keys() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.sortedKeys())
}

// sortedKeys is Keys without the copy: callers must not modify it.
func (s *Snapshot) sortedKeys() []string {
	if len(s.keys) == len(s.Resources) {
		return s.keys
	}
	return sortedKeys(s.Resources) // a literal Snapshot (tests)
}

// Sorted returns the resources ordered by key.
func (s *Snapshot) Sorted() []Resource {
	if s == nil {
		return nil
	}
	keys := s.sortedKeys()
	out := make([]Resource, len(keys))
	for i, k := range keys {
		out[i] = s.Resources[k]
	}
	return out
}

// ResourceHashes returns key → content hash for every resource.
func (s *Snapshot) ResourceHashes() map[string]string {
	if s == nil {
		return map[string]string{}
	}
	m := make(map[string]string, len(s.Resources))
	for k, r := range s.Resources {
		m[k] = r.Hash
	}
	return m
}

// Len is the number of resources; a nil snapshot has none.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Resources)
}

// Delta is what moves a receiver that holds BaseHashes to a snapshot.
type Delta struct {
	Version  uint64
	Hash     string
	Epoch    uint64
	Upserts  []Resource
	Removals []string
	// Full means Upserts is the whole snapshot: the receiver drops everything else.
	Full bool
}

// Diff computes the delta from a receiver holding held (key → hash) to s. When held is nil
// the delta is full. Upserts and removals are sorted by key.
func Diff(held map[string]string, s *Snapshot) Delta {
	d := Delta{Version: s.Version, Hash: s.Hash, Epoch: s.Epoch}
	if held == nil {
		d.Full = true
		d.Upserts = s.Sorted()
		return d
	}
	for _, k := range s.sortedKeys() {
		r := s.Resources[k]
		if held[k] != r.Hash {
			d.Upserts = append(d.Upserts, r)
		}
	}
	for k := range held {
		if _, ok := s.Resources[k]; !ok {
			d.Removals = append(d.Removals, k)
		}
	}
	slices.Sort(d.Removals)
	return d
}

// Empty reports whether the delta changes nothing.
func (d Delta) Empty() bool { return !d.Full && len(d.Upserts) == 0 && len(d.Removals) == 0 }

// ErrHashMismatch means a delta applied to the receiver's state did not produce the content
// the sender announced: the receiver's base differs from what the sender assumed.
var ErrHashMismatch = fmt.Errorf("snapshot hash mismatch")

// Apply applies d to base (which may be nil) and checks the result against d.Hash.
func Apply(base *Snapshot, d Delta) (*Snapshot, error) {
	m := make(map[string]Resource, base.Len()+len(d.Upserts))
	if !d.Full && base != nil {
		for k, r := range base.Resources {
			m[k] = r
		}
	}
	for _, k := range d.Removals {
		delete(m, k)
	}
	for _, r := range d.Upserts {
		if got := HashBytes(r.Body); got != r.Hash {
			return nil, fmt.Errorf("resource %s: body hash %s does not match announced %s: %w", r.Key, got, r.Hash, ErrHashMismatch)
		}
		// The relay protocol and the agent's state log carry bodies as bytes: a body that
		// is not JSON in the form encoding/json gives back byte for byte (canonical, as
		// NewResource makes it) is binary (an Envoy resource), so that every JSON form
		// carries it as base64 and it keeps its hash.
		if canonicalJSON(r.Body) {
			r.form = formJSON
		} else {
			r.form = formBinary
		}
		m[r.Key] = r
	}
	s := FromMap(d.Version, d.Epoch, m)
	if d.Hash != "" && s.Hash != d.Hash {
		return nil, fmt.Errorf("applied delta to version %d gives hash %s, sender announced %s: %w", d.Version, s.Hash, d.Hash, ErrHashMismatch)
	}
	return s, nil
}

// wire is the JSON form of a snapshot: resources as a sorted list.
type wire struct {
	Version   uint64     `json:"version"`
	Hash      string     `json:"hash"`
	Epoch     uint64     `json:"epoch,omitempty"`
	Resources []Resource `json:"resources"`
}

// MarshalJSON encodes the snapshot with its resources sorted by key, in the form
// encoding/json gives the wire struct. Bodies known to be valid JSON (every JSON body of a
// snapshot built by NewResource, Apply or UnmarshalJSON) are copied verbatim, binary bodies
// are written as base64 ("body64").
func (s *Snapshot) MarshalJSON() ([]byte, error) {
	rs := s.Sorted()
	size := 64 + len(s.Hash)
	for _, r := range rs {
		if r.form == formUnknown {
			// Let encoding/json check (and refuse, or compact) it, as it always did.
			return json.Marshal(wire{Version: s.Version, Hash: s.Hash, Epoch: s.Epoch, Resources: rs})
		}
		size += len(r.Key) + len(r.Hash) + len(r.Body)*4/3 + 40
	}
	b := make([]byte, 0, size)
	b = append(b, `{"version":`...)
	b = strconv.AppendUint(b, s.Version, 10)
	b = append(b, `,"hash":`...)
	b = appendJSONString(b, s.Hash)
	if s.Epoch != 0 {
		b = append(b, `,"epoch":`...)
		b = strconv.AppendUint(b, s.Epoch, 10)
	}
	b = append(b, `,"resources":`...)
	if rs == nil {
		return append(b, "null}"...), nil
	}
	b = append(b, '[')
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = r.appendJSON(b); err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.Key, err)
		}
	}
	return append(b, "]}"...), nil
}

// appendJSONString appends s as encoding/json writes a string.
func appendJSONString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil { // cannot happen for a string
		panic(err)
	}
	return append(b, q...)
}

// UnmarshalJSON decodes a snapshot and verifies its content hash.
func (s *Snapshot) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	for _, r := range w.Resources {
		if len(r.Body) == 0 {
			// Encoding writes a missing body as null, which does not match the hash of no
			// bytes: such a snapshot could not be read back once stored.
			return fmt.Errorf("decoded resource %s: no body", r.Key)
		}
		if got := HashBytes(r.Body); got != r.Hash {
			return fmt.Errorf("decoded resource %s: body hash %s, recorded %s: %w", r.Key, got, r.Hash, ErrHashMismatch)
		}
	}
	n := New(w.Version, w.Epoch, w.Resources)
	if w.Hash != "" && n.Hash != w.Hash {
		return fmt.Errorf("decoded snapshot version %d: content hash %s, recorded %s: %w", w.Version, n.Hash, w.Hash, ErrHashMismatch)
	}
	*s = *n
	return nil
}
