package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// logMagic starts every state log file; the package doc has the format that follows.
const logMagic = "meshrelay-agent-state-log-v1\n"

const (
	frameHeaderLen = 8
	// maxRecordLen bounds a frame's payload: a larger length can only be damage.
	maxRecordLen = 1 << 30
	kindHeader   = 'H'
	kindDelta    = 'D'
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errTorn means the bytes end inside a frame: a write that did not finish.
var errTorn = errors.New("record incomplete")

// logHeader names the state a log's deltas apply to.
type logHeader struct {
	Version, Epoch uint64
	Hash           string // "" for no state at all
}

func headerOf(s *snapshot.Snapshot) logHeader {
	if s == nil {
		return logHeader{}
	}
	return logHeader{Version: s.Version, Epoch: s.Epoch, Hash: s.Hash}
}

// follows reports whether a log with header h continues from state s.
func (h logHeader) follows(s *snapshot.Snapshot) bool { return h == headerOf(s) }

// frame wraps payload in a frame.
func frame(payload []byte) []byte {
	b := make([]byte, frameHeaderLen, frameHeaderLen+len(payload))
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

func encodeHeader(h logHeader) []byte {
	p := []byte{kindHeader}
	p = binary.AppendUvarint(p, h.Version)
	p = binary.AppendUvarint(p, h.Epoch)
	p = appendBytes(p, []byte(h.Hash))
	return frame(p)
}

// encodeDelta frames one applied delta; its size follows the delta's, not the snapshot's.
func encodeDelta(d snapshot.Delta) []byte {
	n := 64 + len(d.Hash)
	for _, r := range d.Upserts {
		n += len(r.Key) + len(r.Hash) + len(r.Body) + 3*binary.MaxVarintLen32
	}
	for _, k := range d.Removals {
		n += len(k) + binary.MaxVarintLen32
	}
	p := make([]byte, 0, n)
	p = append(p, kindDelta)
	p = binary.AppendUvarint(p, d.Version)
	p = binary.AppendUvarint(p, d.Epoch)
	p = appendBytes(p, []byte(d.Hash))
	p = binary.AppendUvarint(p, uint64(len(d.Upserts)))
	for _, r := range d.Upserts {
		p = appendBytes(p, []byte(r.Key))
		p = appendBytes(p, []byte(r.Hash))
		p = appendBytes(p, r.Body)
	}
	p = binary.AppendUvarint(p, uint64(len(d.Removals)))
	for _, k := range d.Removals {
		p = appendBytes(p, []byte(k))
	}
	return frame(p)
}

func appendBytes(p, b []byte) []byte {
	p = binary.AppendUvarint(p, uint64(len(b)))
	return append(p, b...)
}

// nextFrame returns the payload of the frame at the start of b and the frame's length.
// It returns errTorn when b ends inside the frame and another error when the frame is
// damaged.
func nextFrame(b []byte) (payload []byte, n int, err error) {
	if len(b) < frameHeaderLen {
		return nil, 0, errTorn
	}
	size := binary.LittleEndian.Uint32(b)
	if size > maxRecordLen {
		return nil, 0, fmt.Errorf("record length %d over the limit of %d", size, maxRecordLen)
	}
	if len(b)-frameHeaderLen < int(size) {
		return nil, 0, errTorn
	}
	payload = b[frameHeaderLen : frameHeaderLen+int(size)]
	if got, want := crc32.Checksum(payload, crcTable), binary.LittleEndian.Uint32(b[4:]); got != want {
		return nil, 0, fmt.Errorf("record checksum %08x, recorded %08x", got, want)
	}
	return payload, frameHeaderLen + int(size), nil
}

// payloadReader reads the fields of a payload; the first failure sticks.
type payloadReader struct {
	b   []byte
	err error
}

func (r *payloadReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("record field truncated")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *payloadReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errors.New("record field longer than the record")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *payloadReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) { // every element takes at least one byte
		r.err = errors.New("record count longer than the record")
		return 0
	}
	return int(n)
}

func decodeHeader(p []byte) (logHeader, error) {
	if len(p) == 0 || p[0] != kindHeader {
		return logHeader{}, errors.New("first record is not a log header")
	}
	r := payloadReader{b: p[1:]}
	h := logHeader{Version: r.uvarint(), Epoch: r.uvarint(), Hash: string(r.bytes())}
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes after the log header")
	}
	return h, r.err
}

// decodeDelta decodes a delta record.
func decodeDelta(p []byte) (snapshot.Delta, error) {
	if len(p) == 0 || p[0] != kindDelta {
		return snapshot.Delta{}, errors.New("record is not a delta")
	}
	r := payloadReader{b: p[1:]}
	d := snapshot.Delta{Version: r.uvarint(), Epoch: r.uvarint(), Hash: string(r.bytes())}
	if n := r.count(); r.err == nil && n > 0 {
		d.Upserts = make([]snapshot.Resource, n)
		for i := range d.Upserts {
			// The body is copied: it outlives the buffer of the whole log.
			d.Upserts[i] = snapshot.Resource{Key: string(r.bytes()), Hash: string(r.bytes()), Body: bytes.Clone(r.bytes())}
		}
	}
	if n := r.count(); r.err == nil && n > 0 {
		d.Removals = make([]string, n)
		for i := range d.Removals {
			d.Removals[i] = string(r.bytes())
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes after the delta")
	}
	return d, r.err
}
