package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const td = "mesh.example"

func mustCA(t *testing.T, trustDomain string) *CA {
	t.Helper()
	ca, err := NewCA(trustDomain, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustKeyPEM(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	b, err := KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clusterCert returns a signed client certificate for cluster plus its key.
func clusterCert(t *testing.T, ca *CA, cluster string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, cluster)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.SignClusterCSR(csr, cluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tlsPair(t, certPEM, mustKeyPEM(t, key))
}

func tlsPair(t *testing.T, certPEM, keyPEM []byte) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, pair
}

func writeFiles(t *testing.T, certPEM, keyPEM []byte) (string, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := WriteKeyPair(certFile, keyFile, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func wantErr(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error = %v, want one containing %q", err, substr)
	}
}

func TestNewCAAndLoadRoundTrip(t *testing.T) {
	ca := mustCA(t, td)
	c := ca.Cert
	if c.Subject.CommonName != "meshrelay relay CA" || !c.IsCA || len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://"+td {
		t.Fatalf("unexpected CA certificate: CN=%q IsCA=%v URIs=%v", c.Subject.CommonName, c.IsCA, c.URIs)
	}
	if c.SerialNumber.BitLen() > 128 || time.Until(c.NotBefore) > -50*time.Second {
		t.Fatalf("serial %v (%d bits), NotBefore %v", c.SerialNumber, c.SerialNumber.BitLen(), c.NotBefore)
	}
	certFile, keyFile := writeFiles(t, ca.CertPEM, mustKeyPEM(t, ca.Key))
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v", fi.Mode(), err)
	}
	loaded, err := LoadCA(certFile, keyFile, td)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Public().(*ecdsa.PublicKey).Equal(ca.Key.Public()) || loaded.TrustDomain != td {
		t.Fatal("loaded CA differs from the written one")
	}
	if _, err := NewCA("Bad/Domain", time.Hour); err == nil {
		t.Fatal("NewCA accepted an invalid trust domain")
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "pki")
	ca1, created, err := LoadOrCreateCA(dir, td)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode: %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, caKeyName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v, %v", fi.Mode(), err)
	}
	if d := ca1.Cert.NotAfter.Sub(ca1.Cert.NotBefore); d < 9*365*24*time.Hour {
		t.Fatalf("CA validity %v, want about 10 years", d)
	}
	ca2, created, err := LoadOrCreateCA(dir, td)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	if !ca2.Cert.Equal(ca1.Cert) {
		t.Fatal("second call returned a different CA")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("dir holds %d entries, want 2 (no temp files left)", len(entries))
	}
}

func TestLoadOrCreateCAOnlyOneFile(t *testing.T) {
	for _, missing := range []string{caCertName, caKeyName} {
		t.Run("missing "+missing, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreateCA(dir, td); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, missing)); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateCA(dir, td)
			wantErr(t, err, filepath.Join(dir, missing)+" is missing")
			if _, err := os.Stat(filepath.Join(dir, missing)); err == nil {
				t.Fatal("the missing file was recreated")
			}
		})
	}
}

func TestLoadCAErrors(t *testing.T) {
	ca, other := mustCA(t, td), mustCA(t, td)
	_, srvCertPEM, srvKeyPEM, err := ca.IssueServer([]string{"relay"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caKey, otherKey := mustKeyPEM(t, ca.Key), mustKeyPEM(t, other.Key)
	tests := []struct {
		name            string
		certPEM, keyPEM []byte
		want            string
	}{
		{"key mismatch", ca.CertPEM, otherKey, "does not match certificate"},
		{"not a CA", srvCertPEM, srvKeyPEM, "is not a CA certificate"},
		{"garbage certificate", []byte("junk"), caKey, "ca.crt: no CERTIFICATE PEM block"},
		{"garbage key", ca.CertPEM, []byte("junk"), "ca.key: no private key PEM block"},
		{"corrupt key", ca.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), "ca.key: parse PRIVATE KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile := writeFiles(t, tt.certPEM, tt.keyPEM)
			_, err := LoadCA(certFile, keyFile, td)
			wantErr(t, err, tt.want)
		})
	}
	_, err = LoadCA(filepath.Join(t.TempDir(), "nope.crt"), "nope.key", td)
	wantErr(t, err, "nope.crt")
}

// selfSignedCA makes a CA certificate for an arbitrary key type, as an
// operator bringing their own CA would.
func selfSignedCA(t *testing.T, key crypto.Signer, cn string, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestLoadCAKeyFormats(t *testing.T) {
	ecKey, _ := NewKey()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	tests := []struct {
		name   string
		key    crypto.Signer
		keyPEM []byte
	}{
		{"EC PRIVATE KEY after EC PARAMETERS", ecKey, append(
			pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)},
		{"PKCS#8 ECDSA", ecKey, mustKeyPEM(t, ecKey)},
		{"PKCS#8 RSA", rsaKey, mustKeyPEM(t, rsaKey)},
		{"PKCS#8 Ed25519", edKey, mustKeyPEM(t, edKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := selfSignedCA(t, tt.key, "byo "+tt.name, nil, nil)
			certFile, keyFile := writeFiles(t, CertPEM(cert.Raw), tt.keyPEM)
			ca, err := LoadCA(certFile, keyFile, td)
			if err != nil {
				t.Fatal(err)
			}
			leaf, _ := clusterCert(t, ca, "east")
			if err := ca.Verify(leaf, x509.ExtKeyUsageClientAuth); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoadCABundle(t *testing.T) {
	rootKey, _ := NewKey()
	interKey, _ := NewKey()
	root := selfSignedCA(t, rootKey, "byo root", nil, nil)
	inter := selfSignedCA(t, interKey, "byo intermediate", root, rootKey)
	bundle := append(CertPEM(inter.Raw), CertPEM(root.Raw)...)
	certFile, keyFile := writeFiles(t, bundle, mustKeyPEM(t, interKey))
	ca, err := LoadCA(certFile, keyFile, td)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.Equal(inter) || string(ca.CertPEM) != string(bundle) {
		t.Fatal("signer must be the first certificate and CertPEM the whole bundle")
	}
	srv, _, _, err := ca.IssueServer([]string{"relay"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Certificate) != 2 || !inter.Equal(mustParse(t, srv.Certificate[1])) {
		t.Fatalf("server chain has %d certificates, want leaf + intermediate", len(srv.Certificate))
	}
	// A verifier trusting only the root accepts the client chain.
	leaf, pair := clusterCert(t, ca, "east")
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inters.AddCert(mustParse(t, pair.Certificate[1]))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if err := ca.Verify(leaf, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignClusterCSRIgnoresRequestedNames(t *testing.T) {
	ca := mustCA(t, td)
	key, _ := NewKey()
	evil, _ := url.Parse("spiffe://" + td + "/cluster/admin")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		DNSNames:       []string{"relay.example"},
		IPAddresses:    []net.IP{net.IPv4(10, 0, 0, 1)},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{evil},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	before := time.Now()
	certPEM, notAfter, err := ca.SignClusterCSR(csrPEM, "east-1", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "east-1" || len(cert.Subject.Organization) != 0 || len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Fatalf("certificate kept requested names: %+v DNS=%v IP=%v email=%v", cert.Subject, cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != SpiffeID(td, "east-1") || SpiffeID(td, "east-1") != "spiffe://mesh.example/cluster/east-1" {
		t.Fatalf("URIs = %v", cert.URIs)
	}
	if !notAfter.Equal(cert.NotAfter) || cert.NotAfter.Sub(before) < 2*time.Hour-time.Second || cert.NotAfter.Sub(before) > 2*time.Hour+time.Second {
		t.Fatalf("NotAfter = %v (returned %v), want about %v", cert.NotAfter, notAfter, before.Add(2*time.Hour))
	}
	if skew := before.Sub(cert.NotBefore); skew < 59*time.Second || skew > 61*time.Second {
		t.Fatalf("NotBefore is %v before issuance, want 1m", skew)
	}
	if err := ca.Verify(cert, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	if err := ca.Verify(cert, x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("client certificate verified for server auth")
	}
	if name, err := ClusterFromCert(cert, td); err != nil || name != "east-1" {
		t.Fatalf("ClusterFromCert = %q, %v", name, err)
	}
}

func TestSignClusterCSRErrors(t *testing.T) {
	ca := mustCA(t, td)
	key, _ := NewKey()
	good, err := NewCSR(key, "east")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-3] ^= 0xff // inside the signature
	tests := []struct {
		name, cluster string
		csr           []byte
		validity      time.Duration
		want          string
	}{
		{"empty name", "", good, time.Hour, `invalid cluster name ""`},
		{"upper case", "East", good, time.Hour, `invalid cluster name "East"`},
		{"underscore", "a_b", good, time.Hour, `invalid cluster name "a_b"`},
		{"dot", "a.b", good, time.Hour, `invalid cluster name "a.b"`},
		{"leading dash", "-a", good, time.Hour, `invalid cluster name "-a"`},
		{"trailing dash", "a-", good, time.Hour, `invalid cluster name "a-"`},
		{"too long", strings.Repeat("a", 64), good, time.Hour, `invalid cluster name "aaaa`},
		{"not PEM", "east", []byte("junk"), time.Hour, "no CERTIFICATE REQUEST PEM block"},
		{"bad signature", "east", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), time.Hour, "CSR:"},
		{"zero validity", "east", good, 0, "validity must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ca.SignClusterCSR(tt.csr, tt.cluster, tt.validity)
			wantErr(t, err, tt.want)
		})
	}
	if _, _, err := ca.SignClusterCSR(good, strings.Repeat("a", 63), time.Hour); err != nil {
		t.Fatalf("63-character name rejected: %v", err)
	}
}

func TestClusterFromCert(t *testing.T) {
	ca, foreign := mustCA(t, td), mustCA(t, "other.example")
	key, _ := NewKey()
	withURIs := func(uris ...string) *x509.Certificate {
		tmpl := &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, u := range uris {
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, parsed)
		}
		cert, err := ca.sign(tmpl, key.Public(), time.Now(), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	good, _ := clusterCert(t, ca, "west-2")
	other, _ := clusterCert(t, foreign, "west-2")
	tests := []struct {
		name string
		cert *x509.Certificate
		want string // cluster name, or an error substring prefixed with "!"
	}{
		{"good", good, "west-2"},
		{"spiffe plus other URI", withURIs("https://example.com/x", SpiffeID(td, "a")), "a"},
		{"other trust domain", other, "!identity spiffe://other.example/cluster/west-2 is not in trust domain " + td},
		{"no URI", withURIs(), "!certificate has no spiffe identity"},
		{"non-spiffe URI", withURIs("https://mesh.example/cluster/a"), "!certificate has no spiffe identity"},
		{"two identities", withURIs(SpiffeID(td, "a"), SpiffeID(td, "b")), "!2 spiffe identities"},
		{"not a cluster path", withURIs("spiffe://" + td + "/ns/default/sa/x"), "!is not of the form"},
		{"trust domain only", withURIs("spiffe://" + td), "!is not of the form"},
		{"port", withURIs("spiffe://" + td + ":443/cluster/a"), "!not in trust domain"},
		{"query", withURIs(SpiffeID(td, "a") + "?x=1"), "!is not of the form"},
		{"nested path", withURIs(SpiffeID(td, "a/b")), `!invalid cluster name "a/b"`},
		{"bad name", withURIs(SpiffeID(td, "A")), `!invalid cluster name "A"`},
		{"nil", nil, "!no certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, err := ClusterFromCert(tt.cert, td)
			if want, ok := strings.CutPrefix(tt.want, "!"); ok {
				wantErr(t, err, want)
			} else if err != nil || name != tt.want {
				t.Fatalf("ClusterFromCert = %q, %v; want %q", name, err, tt.want)
			}
		})
	}
}

func TestVerifyRejectsOtherCA(t *testing.T) {
	ca, other := mustCA(t, td), mustCA(t, td) // same trust domain, different keys
	leaf, _ := clusterCert(t, other, "east")
	if err := ca.Verify(leaf, x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("certificate from another CA verified")
	}
	if err := other.Verify(leaf, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	want := x509.NewCertPool()
	want.AddCert(ca.Cert)
	if !ca.Pool().Equal(want) {
		t.Fatal("Pool must hold exactly the CA certificate")
	}
}

func TestIssueServerAndKeyPairFiles(t *testing.T) {
	ca := mustCA(t, td)
	tc, certPEM, keyPEM, err := ca.IssueServer([]string{"relay.example", "127.0.0.1", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := tc.Leaf
	if leaf == nil || len(tc.Certificate) != 1 || string(tc.Certificate[0]) != string(leaf.Raw) {
		t.Fatal("tls.Certificate must hold the leaf in its chain and in Leaf")
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "relay.example" || len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Fatalf("DNS=%v IP=%v", leaf.DNSNames, leaf.IPAddresses)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Fatalf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if err := ca.Verify(leaf, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := WriteKeyPair(certFile, keyFile, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Leaf == nil || !loaded.Leaf.Equal(leaf) {
		t.Fatal("LoadKeyPair did not return the written leaf")
	}
	_, err = LoadKeyPair(certFile, filepath.Join(dir, "missing.key"))
	wantErr(t, err, "missing.key")
	for _, hosts := range [][]string{nil, {"relay", ""}} {
		if _, _, _, err := ca.IssueServer(hosts, time.Hour); err == nil {
			t.Fatalf("IssueServer accepted hosts %q", hosts)
		}
	}
}

// handshake runs a TLS handshake over net.Pipe and returns the cluster the
// server authenticated plus the server's and client's errors.
func handshake(t *testing.T, ca *CA, server tls.Certificate, client []tls.Certificate) (string, error, error) {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	type result struct {
		cluster string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		srv := tls.Server(sc, &tls.Config{
			Certificates: []tls.Certificate{server},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    ca.Pool(),
			MinVersion:   tls.VersionTLS12,
		})
		err := srv.Handshake()
		var name string
		if err == nil {
			if name, err = ClusterFromCert(srv.ConnectionState().PeerCertificates[0], ca.TrustDomain); err == nil {
				_, err = srv.Write([]byte("ok"))
			}
		}
		done <- result{name, err}
		sc.Close() // unblocks the client if it still waits for data
	}()
	cli := tls.Client(cc, &tls.Config{Certificates: client, RootCAs: ca.Pool(), ServerName: "relay.example"})
	cliErr := cli.Handshake()
	if cliErr == nil { // with TLS 1.3 a rejected client certificate surfaces on the first read
		_, cliErr = io.ReadFull(cli, make([]byte, 2))
	}
	r := <-done
	return r.cluster, r.err, cliErr
}

func TestTLSHandshake(t *testing.T) {
	ca, other := mustCA(t, td), mustCA(t, td)
	server, _, _, err := ca.IssueServer([]string{"relay.example", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, good := clusterCert(t, ca, "east-1")
	_, foreign := clusterCert(t, other, "east-1")
	key, _ := NewKey()
	csr, _ := NewCSR(key, "east-1")
	expiredPEM, notAfter, err := ca.signClusterCSR(csr, "east-1", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err != nil || !notAfter.Before(time.Now()) {
		t.Fatalf("expired cert: notAfter=%v err=%v", notAfter, err)
	}
	_, expired := tlsPair(t, expiredPEM, mustKeyPEM(t, key))

	tests := []struct {
		name      string
		client    []tls.Certificate
		wantError string // server-side error substring; empty for success
	}{
		{"valid client", []tls.Certificate{good}, ""},
		{"expired client", []tls.Certificate{expired}, "expired"},
		{"client from another CA", []tls.Certificate{foreign}, "unknown authority"},
		{"no client certificate", nil, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cluster, srvErr, cliErr := handshake(t, ca, server, tt.client)
			if tt.wantError == "" {
				if srvErr != nil || cliErr != nil || cluster != "east-1" {
					t.Fatalf("cluster=%q server err=%v client err=%v", cluster, srvErr, cliErr)
				}
				return
			}
			wantErr(t, srvErr, tt.wantError)
			t.Logf("server: %v; client: %v", srvErr, cliErr)
			if cliErr == nil {
				t.Fatal("client saw no error")
			}
		})
	}
}
