package pki

import (
	"sort"
	"sync"
	"time"
)

// MeshBundle is a cluster's mesh identity and the CA bundle that verifies every cluster's.
type MeshBundle struct {
	CertPEM, KeyPEM, CAPEM []byte
	NotAfter               time.Time
}

// MeshIssuer hands out each cluster's mesh identity, issuing it once and again when two
// thirds of its lifetime have passed. Between rotations it returns the same bytes, so
// translation stays deterministic. Safe for concurrent use.
type MeshIssuer struct {
	ca       *CA
	validity time.Duration
	now      func() time.Time

	mu     sync.Mutex // guards issued
	issued map[string]issuedBundle
}

type issuedBundle struct {
	MeshBundle
	renewAt time.Time
}

// NewMeshIssuer returns an issuer signing with ca.
func NewMeshIssuer(ca *CA, validity time.Duration) *MeshIssuer {
	return &MeshIssuer{ca: ca, validity: validity, now: time.Now, issued: map[string]issuedBundle{}}
}

// Bundles returns the current identity of every named cluster, issuing or rotating as
// needed; clusters not named are forgotten. A cluster whose certificate cannot be issued
// is left out.
func (m *MeshIssuer) Bundles(clusters []string) map[string]MeshBundle {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make(map[string]MeshBundle, len(clusters))
	keep := map[string]issuedBundle{}
	for _, c := range clusters {
		b, ok := m.issued[c]
		if !ok || !now.Before(b.renewAt) {
			cert, key, notAfter, err := m.ca.IssueMesh(c, m.validity)
			if err != nil {
				continue
			}
			b = issuedBundle{MeshBundle: MeshBundle{CertPEM: cert, KeyPEM: key, CAPEM: m.ca.CertPEM, NotAfter: notAfter}, renewAt: now.Add(notAfter.Sub(now) * 2 / 3)}
		}
		keep[c] = b
		out[c] = b.MeshBundle
	}
	m.issued = keep
	return out
}

// NextRotation is when the earliest issued identity is due for renewal (zero when none).
func (m *MeshIssuer) NextRotation() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var times []time.Time
	for _, b := range m.issued {
		times = append(times, b.renewAt)
	}
	if len(times) == 0 {
		return time.Time{}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	return times[0]
}

// Adopt takes over identities issued before (by another replica, read from the store), so
// a new leader does not re-issue what is still valid. validity is what they were issued for.
func (m *MeshIssuer) Adopt(bundles map[string]MeshBundle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c, b := range bundles {
		if cur, ok := m.issued[c]; ok && !cur.NotAfter.Before(b.NotAfter) {
			continue
		}
		issued := b.NotAfter.Add(-m.validity)
		m.issued[c] = issuedBundle{MeshBundle: b, renewAt: issued.Add(m.validity * 2 / 3)}
	}
}
