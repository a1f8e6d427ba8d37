package relay

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/pki"
)

// A rotation is persisted in the data directory: a server restarted mid-rotation resumes
// trusting both CAs and signing with the new one; after completion it loads the new CA, and
// refuses to start with the dropped one.
func TestAuthorityRotationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	old, _, err := pki.LoadOrCreateCA(dir, "meshrelay.local")
	if err != nil {
		t.Fatal(err)
	}
	cfg := AuthorityConfig{Dir: dir, Hosts: []string{"127.0.0.1"}}
	a, err := NewAuthority(old, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	agentCert := func(a *Authority) []byte {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, "east")
		c, _, err := a.Signer().SignClusterCSR(csr, "east", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	oldLeaf := mustLeaf(t, agentCert(a))
	if _, err := a.Start(nil); err != nil {
		t.Fatal(err)
	}
	next := a.status().Next

	// Restart mid-rotation.
	b, err := NewAuthority(old, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if st := b.status(); st.Phase != PhaseTrustBoth || st.Next != next {
		t.Fatalf("after a restart mid-rotation: %+v, want trust-both to %s", st, next)
	}
	newLeaf := mustLeaf(t, agentCert(b))
	if !b.outdated(oldLeaf) || b.outdated(newLeaf) {
		t.Fatal("the old CA's certificate must be outdated and the new CA's not")
	}
	if n := strings.Count(string(b.Bundle()), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("bundle handed to agents holds %d CAs, want 2", n)
	}
	if err := b.complete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, caNextCert)); !os.IsNotExist(err) {
		t.Fatalf("the new CA's rotation file is still there: %v", err)
	}

	// Restart after completion: the data dir holds the new CA; the old one is refused.
	cur, _, err := pki.LoadOrCreateCA(dir, "meshrelay.local")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewAuthority(cur, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.status(); st.Phase != PhaseIdle || st.Current != next {
		t.Fatalf("after completion: %+v, want idle with %s", st, next)
	}
	if _, err := newLeaf.Verify(x509Opts(c)); err != nil {
		t.Fatalf("a certificate of the new CA: %v", err)
	}
	if _, err := oldLeaf.Verify(x509Opts(c)); err == nil {
		t.Fatal("a certificate of the dropped CA is trusted")
	}
	if _, err := NewAuthority(old, AuthorityConfig{Dir: dir, BYO: true, Hosts: []string{"127.0.0.1"}}, log); err == nil || !strings.Contains(err.Error(), "dropped by a rotation") {
		t.Fatalf("starting with the dropped CA: %v, want a refusal", err)
	}
}

func mustLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func x509Opts(a *Authority) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: a.Trusted(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}
