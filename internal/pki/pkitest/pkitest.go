// Package pkitest issues certificates for tests with internal/pki's own issuance, the way the
// product issues them: a CA, a serving certificate for loopback, a cluster's client
// certificate signed from its CSR, and a gateway's certificate. Tests that need an odd
// certificate (another CA, a server certificate used as a client one) build it from these
// same calls with another CA or other hosts.
package pkitest

import (
	"crypto"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/pki"
)

// Validity is how long every certificate of the kit is valid.
const Validity = time.Hour

// Pair is an issued certificate: ready for crypto/tls (Leaf set) and as PEM for files.
type Pair struct {
	TLS     tls.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// CA is a new CA of trustDomain, failing the test on error.
func CA(t testing.TB, trustDomain string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(trustDomain, Validity)
	if err != nil {
		t.Fatalf("new CA of %s: %v", trustDomain, err)
	}
	return ca
}

// Server is a serving certificate of ca for hosts (names or IP addresses).
func Server(t testing.TB, ca *pki.CA, hosts ...string) Pair {
	t.Helper()
	cert, certPEM, keyPEM, err := ca.IssueServer(hosts, Validity)
	if err != nil {
		t.Fatalf("issue server certificate for %v: %v", hosts, err)
	}
	return Pair{TLS: cert, CertPEM: certPEM, KeyPEM: keyPEM}
}

// Cluster is the client certificate of cluster, signed by ca from a CSR as registration does.
func Cluster(t testing.TB, ca *pki.CA, cluster string) Pair {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, cluster)
	if err != nil {
		t.Fatalf("CSR of cluster %s: %v", cluster, err)
	}
	certPEM, _, err := ca.SignClusterCSR(csr, cluster, Validity)
	if err != nil {
		t.Fatalf("sign CSR of cluster %s: %v", cluster, err)
	}
	return pair(t, certPEM, key)
}

// Gateway is the certificate of gateway node of cluster, signed by ca from a CSR as
// 'meshrelay gateway issue-cert' does.
func Gateway(t testing.TB, ca *pki.CA, cluster, node string) Pair {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewGatewayCSR(key, node)
	if err != nil {
		t.Fatalf("CSR of gateway %s: %v", node, err)
	}
	certPEM, _, err := ca.SignGatewayCSR(csr, cluster, node, Validity)
	if err != nil {
		t.Fatalf("sign CSR of gateway %s/%s: %v", cluster, node, err)
	}
	return pair(t, certPEM, key)
}

// Write writes the pair into dir as certName and keyName and returns their paths.
func (p Pair) Write(t testing.TB, dir, certName, keyName string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyPair(certFile, keyFile, p.CertPEM, p.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func pair(t testing.TB, certPEM []byte, key crypto.Signer) Pair {
	t.Helper()
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("key pair: %v", err)
	}
	return Pair{TLS: cert, CertPEM: certPEM, KeyPEM: keyPEM}
}

// CAFile writes the certificate of ca into a temporary directory of the test and returns its
// path, for clients configured with a CA file.
func CAFile(t testing.TB, ca *pki.CA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(f, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
