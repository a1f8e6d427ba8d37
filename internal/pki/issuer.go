package pki

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// MeshBundle is a cluster's mesh identity and the CA bundle that verifies every cluster's.
type MeshBundle struct {
	CertPEM, KeyPEM, CAPEM []byte
	NotAfter               time.Time
	// Istio is the cluster's Istio workload CA (nil unless IssueIstioCAs).
	Istio *IstioCA `json:",omitempty"`
}

// IstioCA is a cluster's Istio workload CA, an intermediate of the mesh CA, as Istio's
// plugged-in `cacerts` Secret holds it.
type IstioCA struct {
	CertPEM  []byte    `json:"cert"`  // ca-cert.pem
	KeyPEM   []byte    `json:"key"`   // ca-key.pem
	ChainPEM []byte    `json:"chain"` // cert-chain.pem: the intermediate, then the mesh CA's chain
	RootPEM  []byte    `json:"root"`  // root-cert.pem: every mesh CA trusted now
	NotAfter time.Time `json:"notAfter"`
}

// MeshIssuer hands out each cluster's mesh identity, issuing it once and again when two
// thirds of its lifetime have passed. Between rotations it returns the same bytes, so
// translation stays deterministic. Safe for concurrent use.
type MeshIssuer struct {
	validity time.Duration
	now      func() time.Time

	mu            sync.Mutex // guards the fields below
	ca            *CA        // signs
	trust         []byte     // the CA bundle every cluster gets (CAPEM)
	issued        map[string]issuedBundle
	istioValidity time.Duration // 0: no Istio workload CAs
	istioErr      error         // of the last Istio CA that could not be issued
}

type issuedBundle struct {
	MeshBundle
	renewAt      time.Time
	by           *CA // the signer it was checked against (nil: not yet, e.g. adopted)
	istioRenewAt time.Time
	istioBy      *CA
}

// IssueIstioCAs makes Bundles issue every cluster an Istio workload CA valid for validity
// (renewed at two thirds, and when the signer changes); 0 turns it off.
func (m *MeshIssuer) IssueIstioCAs(validity time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.istioValidity = validity
}

// IstioError is why the last Istio workload CA could not be issued (nil: all were).
func (m *MeshIssuer) IstioError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.istioErr
}

// NewMeshIssuer returns an issuer signing with ca and handing out ca's bundle as the trust.
func NewMeshIssuer(ca *CA, validity time.Duration) *MeshIssuer {
	return &MeshIssuer{ca: ca, trust: ca.CertPEM, validity: validity, now: time.Now, issued: map[string]issuedBundle{}}
}

// SetCA changes the signer and the trust bundle (a mesh CA rotation): identities the new
// signer did not issue are issued again at the next Bundles; the others keep their bytes.
func (m *MeshIssuer) SetCA(signer *CA, trust []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ca, m.trust = signer, trust
}

// signedBy reports whether certPEM's leaf verifies against ca's certificate.
func signedBy(certPEM []byte, ca *CA) bool {
	leaf, err := ParseCertPEM(certPEM)
	return err == nil && leaf.CheckSignatureFrom(ca.Cert) == nil
}

// Expiries returns when each cluster's mesh certificate issued so far expires; it issues
// nothing.
func (m *MeshIssuer) Expiries() map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]time.Time, len(m.issued))
	for c, b := range m.issued {
		out[c] = b.NotAfter
	}
	return out
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
		if ok && b.by != m.ca && signedBy(b.CertPEM, m.ca) {
			b.by = m.ca // checked once per signer, not at every translation
		}
		if !ok || !now.Before(b.renewAt) || b.by != m.ca {
			cert, key, notAfter, err := m.ca.IssueMesh(c, m.validity)
			if err != nil {
				continue
			}
			prev := b // its Istio CA has a lifetime of its own
			b = issuedBundle{MeshBundle: MeshBundle{CertPEM: cert, KeyPEM: key, NotAfter: notAfter, Istio: prev.Istio},
				renewAt: now.Add(notAfter.Sub(now) * 2 / 3), by: m.ca, istioRenewAt: prev.istioRenewAt, istioBy: prev.istioBy}
		}
		b.CAPEM = m.trust
		b.Istio = m.istioLocked(c, &b, now)
		keep[c] = b
		out[c] = b.MeshBundle
	}
	m.issued = keep
	return out
}

// istioLocked returns the cluster's Istio CA with the current roots, issuing or renewing it
// as needed (nil when off or when it cannot be issued: istioErr says why).
func (m *MeshIssuer) istioLocked(c string, b *issuedBundle, now time.Time) *IstioCA {
	if m.istioValidity <= 0 {
		return nil
	}
	if b.Istio != nil && b.istioBy != m.ca && signedBy(b.Istio.CertPEM, m.ca) {
		b.istioBy = m.ca
	}
	if b.Istio == nil || !now.Before(b.istioRenewAt) || b.istioBy != m.ca {
		cert, key, chain, notAfter, err := m.ca.IssueIntermediate(c, m.istioValidity)
		if err != nil {
			m.istioErr = fmt.Errorf("istio CA of cluster %s: %w", c, err)
			return nil
		}
		m.istioErr = nil
		b.Istio = &IstioCA{CertPEM: cert, KeyPEM: key, ChainPEM: chain, NotAfter: notAfter}
		b.istioRenewAt, b.istioBy = now.Add(notAfter.Sub(now)*2/3), m.ca
	}
	ist := *b.Istio
	ist.RootPEM = m.trust
	return &ist
}

// NextRotation is when the earliest issued identity is due for renewal (zero when none).
func (m *MeshIssuer) NextRotation() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var times []time.Time
	for _, b := range m.issued {
		times = append(times, b.renewAt)
		if b.Istio != nil {
			times = append(times, b.istioRenewAt)
		}
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
		ib := issuedBundle{MeshBundle: b, renewAt: issued.Add(m.validity * 2 / 3)}
		if b.Istio != nil {
			ib.istioRenewAt = b.Istio.NotAfter.Add(-m.istioValidity / 3)
		}
		m.issued[c] = ib
	}
}
