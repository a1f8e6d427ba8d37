package relaywire

import (
	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

func toProto(d snapshot.Delta, baseHash string) *relayv1.SnapshotDelta {
	m := &relayv1.SnapshotDelta{Version: d.Version, Hash: d.Hash, Epoch: d.Epoch, Full: d.Full, Removals: d.Removals}
	if !d.Full {
		m.BaseHash = baseHash
	}
	for _, r := range d.Upserts {
		m.Upserts = append(m.Upserts, &relayv1.Resource{Key: r.Key, Hash: r.Hash, Body: r.Body})
	}
	return m
}

// ToProto converts a delta to its wire form; baseHash is what the receiver is assumed to hold.
func ToProto(d snapshot.Delta, baseHash string) *relayv1.SnapshotDelta { return toProto(d, baseHash) }

func fromProto(m *relayv1.SnapshotDelta) snapshot.Delta {
	d := snapshot.Delta{Version: m.GetVersion(), Hash: m.GetHash(), Epoch: m.GetEpoch(), Full: m.GetFull(), Removals: m.GetRemovals()}
	for _, r := range m.GetUpserts() {
		d.Upserts = append(d.Upserts, snapshot.Resource{Key: r.GetKey(), Hash: r.GetHash(), Body: r.GetBody()})
	}
	return d
}

// FromProto converts a wire delta.
func FromProto(m *relayv1.SnapshotDelta) snapshot.Delta { return fromProto(m) }
