package pkitest

import (
	"crypto/x509"
	"slices"
	"testing"

	"github.com/meshrelay/meshrelay/internal/pki"
)

// The kit's certificates are what the product would issue: each verifies against its CA
// for its use and names what it was issued for.
func TestIssued(t *testing.T) {
	ca := CA(t, "kit.test")
	srv := Server(t, ca, "127.0.0.1", "relay.kit.test")
	if err := ca.Verify(srv.TLS.Leaf, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("server certificate: %v", err)
	}
	if !slices.Contains(srv.TLS.Leaf.DNSNames, "relay.kit.test") || len(srv.TLS.Leaf.IPAddresses) != 1 {
		t.Errorf("server certificate names %v %v", srv.TLS.Leaf.DNSNames, srv.TLS.Leaf.IPAddresses)
	}
	east := Cluster(t, ca, "east")
	if err := ca.Verify(east.TLS.Leaf, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("cluster certificate: %v", err)
	}
	if c, err := pki.ClusterFromCert(east.TLS.Leaf, "kit.test"); err != nil || c != "east" {
		t.Errorf("cluster certificate names %q, %v", c, err)
	}
	gw := Gateway(t, ca, "east", "gw-a")
	peer, err := pki.ParseMeshPeer(gw.TLS.Leaf)
	if err != nil {
		t.Fatalf("gateway certificate: %v", err)
	}
	if peer.Cluster != "east" || peer.Node != "gw-a" {
		t.Errorf("gateway certificate of %+v", peer)
	}
	if err := ca.Verify(Cluster(t, CA(t, "kit.test"), "east").TLS.Leaf, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("a certificate of another CA verified")
	}
	certFile, keyFile := east.Write(t, t.TempDir(), "tls.crt", "tls.key")
	if _, err := pki.LoadKeyPair(certFile, keyFile); err != nil {
		t.Error(err)
	}
}
