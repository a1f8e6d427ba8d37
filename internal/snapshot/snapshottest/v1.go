package snapshottest

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// EncodeV1 is the form in which earlier versions stored a whole snapshot: a bolt value of
// schema "1", a Redis string. It is snapshot.EncodeSnapshot as it was then, copied, so that
// the stores' migration tests keep the old format whatever happens to the encoder.
func EncodeV1(snap *snapshot.Snapshot) []byte {
	var buf bytes.Buffer
	hash, _ := json.Marshal(snap.Hash)
	fmt.Fprintf(&buf, `{"version":%d,"hash":%s,"epoch":%d,"resources":[`, snap.Version, hash, snap.Epoch)
	for i, r := range snap.Sorted() {
		if i > 0 {
			buf.WriteByte(',')
		}
		key, _ := json.Marshal(r.Key)
		h, _ := json.Marshal(r.Hash)
		fmt.Fprintf(&buf, `{"key":%s,"hash":%s,"body":`, key, h)
		buf.Write(r.Body)
		buf.WriteByte('}')
	}
	buf.WriteString(`]}`)
	return buf.Bytes()
}
