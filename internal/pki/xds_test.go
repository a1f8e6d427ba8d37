package pki

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestGatewayCertificate: a CSR signed for a gateway names exactly its cluster and node, is
// for client auth, verifies against the CA, and ParseMeshPeer reads it back; a cluster's mesh
// identity parses without a node.
func TestGatewayCertificate(t *testing.T) {
	ca, err := NewCA("example.org", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	csr, err := NewGatewayCSR(key, "east-gw-0")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignGatewayCSR(csr, "east", "east-gw-0", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ParseCertPEM(certPEM)
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://example.org/cluster/east/gateway/east-gw-0" {
		t.Errorf("URIs %v", cert.URIs)
	}
	if err := VerifyChain([]*x509.Certificate{cert}, ca.Pool(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("client auth: %v", err)
	}
	if err := VerifyChain([]*x509.Certificate{cert}, ca.Pool(), x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("a gateway certificate verifies for server auth")
	}
	if p, err := ParseMeshPeer(cert); err != nil || p != (MeshPeer{"example.org", "east", "east-gw-0"}) {
		t.Errorf("ParseMeshPeer: %+v %v", p, err)
	}
	mesh, _, _, _ := ca.IssueMesh("east", time.Minute)
	mc, _ := ParseCertPEM(mesh)
	if p, err := ParseMeshPeer(mc); err != nil || p != (MeshPeer{"example.org", "east", ""}) {
		t.Errorf("ParseMeshPeer of the mesh identity: %+v %v", p, err)
	}
	for _, bad := range []struct{ cluster, node, want string }{
		{"East", "gw", "invalid cluster name"}, {"east", "", "invalid gateway node"}, {"east", "a/b", "invalid gateway node"},
	} {
		if _, _, err := ca.SignGatewayCSR(csr, bad.cluster, bad.node, time.Minute); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s/%s: %v, want %q", bad.cluster, bad.node, err, bad.want)
		}
	}
	if _, _, err := ca.SignGatewayCSR([]byte("junk"), "east", "gw", time.Minute); err == nil || !strings.Contains(err.Error(), "CSR") {
		t.Errorf("junk CSR: %v", err)
	}
	for _, u := range []string{"spiffe://example.org/cluster/east/gateway/", "spiffe://example.org/cluster/east/x", "spiffe://example.org/ns/east",
		"spiffe://example.org/cluster/east/gateway/a/gateway/b"} {
		id, _ := url.Parse(u)
		if p, err := ParseMeshPeer(&x509.Certificate{URIs: []*url.URL{id}}); err == nil {
			t.Errorf("%s parses as %+v", u, p)
		}
	}
}
