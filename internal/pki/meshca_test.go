package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A rotation goes trust → sign → none, each step persisted: a server opening the data
// directory at any step resumes it, and the retired CA is refused afterwards.
func TestMeshAuthorityRotation(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := MeshCAFiles(dir)
	old, _, err := LoadOrCreateCAFiles(certFile, keyFile, td)
	if err != nil {
		t.Fatal(err)
	}
	next, err := NewMeshCA(td)
	if err != nil {
		t.Fatal(err)
	}
	a, err := OpenMeshAuthority(dir, old)
	if err != nil {
		t.Fatal(err)
	}
	reopen := func() *MeshAuthority {
		t.Helper()
		ca, err := LoadCA(certFile, keyFile, td)
		if err != nil {
			t.Fatal(err)
		}
		b, err := OpenMeshAuthority(dir, ca)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	check := func(name string, a *MeshAuthority, phase string, signer *CA, trust ...*CA) {
		t.Helper()
		var want []byte
		for _, c := range trust {
			want = append(want, c.CertPEM...)
		}
		if p, _ := a.Phase(); p != phase || Fingerprint(a.Signer()) != Fingerprint(signer) || !bytes.Equal(a.Trust(), want) {
			t.Fatalf("%s: phase %q signer %q trust %d bytes; want %q %q %d bytes", name, p, a.Signer().Cert.Subject.CommonName, len(a.Trust()), phase, signer.Cert.Subject.CommonName, len(want))
		}
	}
	check("start", a, PhaseNone, old, old)
	if err := a.Sign(); !errors.Is(err, ErrRotationPhase) {
		t.Fatalf("sign without a rotation: %v, want ErrRotationPhase", err)
	}
	if err := a.Begin(next); err != nil {
		t.Fatal(err)
	}
	check("trust", a, PhaseTrust, old, old, next)
	check("trust, reopened", reopen(), PhaseTrust, old, old, next)
	if err := a.Begin(nil); err != nil { // resumed by a second run of the command
		t.Fatalf("begin again: %v", err)
	}
	other, _ := NewMeshCA(td)
	if err := a.Begin(other); !errors.Is(err, ErrRotationPhase) {
		t.Fatalf("begin with another CA during a rotation: %v, want ErrRotationPhase", err)
	}
	if err := a.Finish(); !errors.Is(err, ErrRotationPhase) {
		t.Fatalf("finish in phase trust: %v, want ErrRotationPhase", err)
	}
	if err := a.Sign(); err != nil {
		t.Fatal(err)
	}
	check("sign", a, PhaseSign, next, old, next)
	check("sign, reopened", reopen(), PhaseSign, next, old, next)
	if err := a.Finish(); err != nil {
		t.Fatal(err)
	}
	check("done", a, PhaseNone, next, next)
	check("done, reopened", reopen(), PhaseNone, next, next)
	if retired, _ := filepath.Glob(certFile + ".retired-*"); len(retired) != 1 {
		t.Fatalf("retired files %v, want one", retired)
	}
	if _, err := OpenMeshAuthority(dir, old); err == nil {
		t.Fatal("a server started with the retired mesh CA was not refused")
	}
}

// The issuer re-issues identities that the signer did not issue, and hands out the trust
// bundle as it is now, without re-issuing when only the bundle changed.
func TestMeshIssuerSetCA(t *testing.T) {
	old, next := mustCA(t, td), mustCA(t, td)
	m := NewMeshIssuer(old, time.Hour)
	first := m.Bundles([]string{"east"})["east"]
	both := append(append([]byte{}, old.CertPEM...), next.CertPEM...)
	m.SetCA(old, both)
	trusting := m.Bundles([]string{"east"})["east"]
	if !bytes.Equal(trusting.CertPEM, first.CertPEM) || !bytes.Equal(trusting.CAPEM, both) {
		t.Fatal("a new trust bundle re-issued the identity or was not handed out")
	}
	m.SetCA(next, both)
	signed := m.Bundles([]string{"east"})["east"]
	leaf, err := ParseCertPEM(signed.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(next.Cert); err != nil {
		t.Fatalf("identity after the signer changed: %v", err)
	}
}

// The Istio workload CA: an intermediate of the mesh CA that verifies up to it, renewed at
// two thirds of its lifetime with the same root, and issued again when the signer changes.
func TestMeshIssuerIstioCA(t *testing.T) {
	root, err := NewMeshCA(td)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMeshIssuer(root, time.Hour)
	m.IssueIstioCAs(30 * time.Minute)
	now := time.Now()
	m.now = func() time.Time { return now }
	first := m.Bundles([]string{"east"})["east"].Istio
	if first == nil {
		t.Fatalf("no Istio CA: %v", m.IstioError())
	}
	verify := func(ist *IstioCA) *x509.Certificate {
		t.Helper()
		certs, err := parseCerts(ist.ChainPEM)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := ParseCertPEM(ist.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !leaf.IsCA || !leaf.MaxPathLenZero || !bytes.Equal(certs[0].Raw, leaf.Raw) {
			t.Fatalf("ca-cert.pem: IsCA %v MaxPathLenZero %v, first of cert-chain.pem %v", leaf.IsCA, leaf.MaxPathLenZero, bytes.Equal(certs[0].Raw, leaf.Raw))
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ist.RootPEM)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
			t.Fatalf("ca-cert.pem does not verify up to root-cert.pem: %v", err)
		}
		return leaf
	}
	first1 := verify(first)
	if !bytes.Equal(first.RootPEM, root.CertPEM) {
		t.Fatal("root-cert.pem is not the mesh CA")
	}
	now = now.Add(19 * time.Minute) // before two thirds: the same
	if again := m.Bundles([]string{"east"})["east"].Istio; !bytes.Equal(again.CertPEM, first.CertPEM) {
		t.Fatal("Istio CA renewed before two thirds of its lifetime")
	}
	now = now.Add(2 * time.Minute) // past two thirds, before expiry: renewed, same root
	renewed := m.Bundles([]string{"east"})["east"].Istio
	if bytes.Equal(renewed.CertPEM, first.CertPEM) || !now.Before(first1.NotAfter) {
		t.Fatal("Istio CA not renewed after two thirds of its lifetime, before it expires")
	}
	verify(renewed)
	if !bytes.Equal(renewed.RootPEM, first.RootPEM) {
		t.Fatal("the renewed Istio CA has another root")
	}
	// A path-length-0 mesh CA (the relay-style CAs of older data directories) cannot sign it.
	old := mustCA(t, td)
	m2 := NewMeshIssuer(old, time.Hour)
	m2.IssueIstioCAs(time.Hour)
	if b := m2.Bundles([]string{"east"})["east"]; b.Istio != nil || m2.IstioError() == nil {
		t.Fatal("a path-length-0 mesh CA issued an Istio CA")
	}
	next, _ := NewMeshCA(td)
	m.SetCA(next, append(slices.Clone(root.CertPEM), next.CertPEM...))
	rotated := m.Bundles([]string{"east"})["east"].Istio
	if leaf := verify(rotated); leaf.CheckSignatureFrom(next.Cert) != nil {
		t.Fatal("the Istio CA was not issued again by the new signer")
	}
}
