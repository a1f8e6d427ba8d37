// Package pki is meshrelay's certificate authority: it creates or loads the
// relay CA, issues serving and per-cluster client certificates with SPIFFE
// identities, and reads identities back from verified certificates.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/atomicfile"
)

// CACertName is the relay CA bundle's file in a server's data directory: agents verify the
// relay with it, and the CLI the admin API.
const CACertName = caCertName

const (
	caCertName = "relay-ca.crt"
	caKeyName  = "relay-ca.key"
	caValidity = 10 * 365 * 24 * time.Hour
	clockSkew  = time.Minute // NotBefore backdating for peers with skewed clocks
)

// CA is a certificate authority that signs relay certificates.
type CA struct {
	Cert        *x509.Certificate // signing certificate: the first of CertPEM
	Key         crypto.Signer     // private key of Cert
	CertPEM     []byte            // Cert, then the rest of a bring-your-own chain
	TrustDomain string            // SPIFFE trust domain of issued identities
}

// NewCA creates a self-signed ECDSA P-256 CA for trustDomain.
func NewCA(trustDomain string, validity time.Duration) (*CA, error) {
	return newCA(trustDomain, "meshrelay relay CA", validity, 0)
}

// NewMeshCA creates a self-signed mesh CA whose subject names its creation time, so that
// the old and the new CA of a rotation are told apart by name as well as by key.
// Its path length is 1: it signs the clusters' Istio intermediate CAs (IssueIntermediate).
func NewMeshCA(trustDomain string) (*CA, error) {
	return newCA(trustDomain, "meshrelay mesh CA "+time.Now().UTC().Format("20060102T150405Z"), caValidity, 1)
}

func newCA(trustDomain, commonName string, validity time.Duration, maxPathLen int) (*CA, error) {
	if err := validateTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	if validity <= 0 {
		return nil, fmt.Errorf("CA validity must be positive, got %v", validity)
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	ca := &CA{Cert: tmpl, Key: key, TrustDomain: trustDomain} // self-signed: tmpl is its own parent
	if ca.Cert, err = ca.sign(tmpl, key.Public(), tmpl.NotBefore, tmpl.NotAfter); err != nil {
		return nil, err
	}
	ca.CertPEM = CertPEM(ca.Cert.Raw)
	return ca, nil
}

// LoadCA loads a PEM CA certificate (or a bundle whose first certificate is
// the signer) and its PEM private key ("EC PRIVATE KEY" or PKCS#8 "PRIVATE KEY").
func LoadCA(certFile, keyFile, trustDomain string) (*CA, error) {
	if err := validateTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	certs, err := readPEM(certFile, parseCerts)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	key, err := readPEM(keyFile, parseKey)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	ca, err := caFrom(certs, key, trustDomain)
	if err != nil {
		return nil, fmt.Errorf("load CA %s, %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

// ParseCA parses a PEM CA certificate (or a bundle whose first certificate is the signer)
// and its PEM private key, as LoadCA does with files.
func ParseCA(certPEM, keyPEM []byte, trustDomain string) (*CA, error) {
	if err := validateTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return caFrom(certs, key, trustDomain)
}

// caFrom checks that certs[0] is a CA valid now whose key is key.
func caFrom(certs []*x509.Certificate, key crypto.Signer, trustDomain string) (*CA, error) {
	cert := certs[0]
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return nil, fmt.Errorf("%q is not a CA certificate", cert.Subject)
	case time.Now().After(cert.NotAfter):
		return nil, fmt.Errorf("CA certificate expired at %s", cert.NotAfter.Format(time.RFC3339))
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("the key does not match certificate")
	}
	var all []byte
	for _, c := range certs {
		all = append(all, CertPEM(c.Raw)...)
	}
	return &CA{Cert: cert, Key: key, CertPEM: all, TrustDomain: trustDomain}, nil
}

// readPEM reads file and parses it, naming the file in errors.
func readPEM[T any](file string, parse func([]byte) (T, error)) (v T, err error) {
	b, err := os.ReadFile(file) // os errors name the file already
	if err == nil {
		if v, err = parse(b); err != nil {
			err = fmt.Errorf("%s: %w", file, err)
		}
	}
	return v, err
}

// LoadOrCreateCA loads <dir>/relay-ca.crt and <dir>/relay-ca.key, or, when
// neither exists, creates a 10-year CA and writes it there (created = true).
func LoadOrCreateCA(dir, trustDomain string) (ca *CA, created bool, err error) {
	return LoadOrCreateCAFiles(filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName), trustDomain)
}

// LoadOrCreateCAFiles loads a CA from certFile and keyFile, or, when neither exists,
// creates a 10-year CA and writes it there (created = true).
func LoadOrCreateCAFiles(certFile, keyFile, trustDomain string) (ca *CA, created bool, err error) {
	dir := filepath.Dir(certFile)
	caCertName, caKeyName := filepath.Base(certFile), filepath.Base(keyFile)
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err = LoadCA(certFile, keyFile, trustDomain)
		return ca, false, err
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, false, certErr
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, false, keyErr
	case certErr == nil || keyErr == nil:
		missing := keyFile
		if certErr != nil {
			missing = certFile
		}
		return nil, false, fmt.Errorf("incomplete CA in %s: %s is missing; restore it or remove both %s and %s to create a new CA",
			dir, missing, caCertName, caKeyName)
	}
	if ca, err = NewCA(trustDomain, caValidity); err != nil {
		return nil, false, err
	}
	keyPEM, err := KeyPEM(ca.Key)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create CA directory: %w", err)
	}
	if err := WriteKeyPair(certFile, keyFile, ca.CertPEM, keyPEM); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// IssueServer issues a serving certificate for hosts (IP addresses or DNS
// names). The tls.Certificate has Leaf set and its chain starts with the leaf;
// certPEM holds the same chain.
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (tc tls.Certificate, certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 || slices.Contains(hosts, "") || validity <= 0 {
		return tc, nil, nil, fmt.Errorf("server certificate needs non-empty hosts and a positive validity, got %q, %v", hosts, validity)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	key, err := NewKey()
	if err != nil {
		return tc, nil, nil, err
	}
	now := time.Now()
	leaf, err := ca.sign(tmpl, key.Public(), now.Add(-clockSkew), now.Add(validity))
	if err != nil {
		return tc, nil, nil, err
	}
	if keyPEM, err = KeyPEM(key); err != nil {
		return tc, nil, nil, err
	}
	chain, certPEM := ca.chain(leaf)
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, certPEM, keyPEM, nil
}

// IssuedAt is when a certificate this package issued was signed (to the second): its
// NotBefore is backdated by the allowed clock skew.
func IssuedAt(cert *x509.Certificate) time.Time { return cert.NotBefore.Add(clockSkew) }

// SignClusterCSR signs a PEM CSR for cluster. Only the CSR's public key is
// used: the certificate gets CN=cluster and the single URI SAN
// SpiffeID(ca.TrustDomain, cluster). certPEM holds the leaf followed by any
// intermediates of a bring-your-own CA chain.
func (ca *CA) SignClusterCSR(csrPEM []byte, cluster string, validity time.Duration) (certPEM []byte, notAfter time.Time, err error) {
	if validity <= 0 {
		return nil, time.Time{}, fmt.Errorf("client certificate validity must be positive, got %v", validity)
	}
	now := time.Now()
	return ca.signClusterCSR(csrPEM, cluster, now.Add(-clockSkew), now.Add(validity))
}

func (ca *CA) signClusterCSR(csrPEM []byte, cluster string, notBefore, notAfter time.Time) ([]byte, time.Time, error) {
	if err := validateCluster(cluster); err != nil {
		return nil, time.Time{}, err
	}
	pub, err := csrPublicKey(csrPEM)
	if err != nil {
		return nil, time.Time{}, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cluster},
		URIs:        []*url.URL{{Scheme: "spiffe", Host: ca.TrustDomain, Path: "/cluster/" + cluster}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cert, err := ca.sign(tmpl, pub, notBefore, notAfter)
	if err != nil {
		return nil, time.Time{}, err
	}
	_, out := ca.chain(cert)
	return out, cert.NotAfter, nil
}

// csrPublicKey returns the public key of a PEM CSR whose signature checks; nothing else of
// the CSR is used.
func csrPublicKey(csrPEM []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, errors.New("CSR: no CERTIFICATE REQUEST PEM block found")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	return csr.PublicKey, nil
}

// sign signs tmpl for pub, with notAfter clamped to the CA's own NotAfter.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("empty validity window %s..%s", notBefore.Format(time.RFC3339), notAfter.Format(time.RFC3339))
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)) // random 128-bit serial
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter, tmpl.BasicConstraintsValid = serial, notBefore, notAfter, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// chain returns leaf followed by the CA certificates that are not self-signed
// (intermediates of a bring-your-own chain), as DER and as PEM.
func (ca *CA) chain(leaf *x509.Certificate) ([][]byte, []byte) {
	der, out := [][]byte{leaf.Raw}, CertPEM(leaf.Raw)
	certs, _ := parseCerts(ca.CertPEM)
	for _, c := range certs {
		if !bytes.Equal(c.RawIssuer, c.RawSubject) {
			der, out = append(der, c.Raw), append(out, CertPEM(c.Raw)...)
		}
	}
	return der, out
}

// Pool returns a pool holding every certificate of ca.CertPEM.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	return pool
}

// Verify checks that cert chains to the CA and is valid now for usage.
func (ca *CA) Verify(cert *x509.Certificate, usage x509.ExtKeyUsage) error {
	if cert == nil {
		return errors.New("no certificate")
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// ClusterFromCert returns the cluster name of the certificate's single
// spiffe://<trustDomain>/cluster/<name> identity. It does not verify cert.
func ClusterFromCert(cert *x509.Certificate, trustDomain string) (string, error) {
	if cert == nil {
		return "", errors.New("no certificate")
	}
	var ids []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ids = append(ids, u)
		}
	}
	switch {
	case len(ids) == 0:
		return "", errors.New("certificate has no spiffe identity")
	case len(ids) > 1:
		return "", fmt.Errorf("certificate has %d spiffe identities, want exactly one", len(ids))
	}
	id := ids[0]
	if id.Host != trustDomain || trustDomain == "" {
		return "", fmt.Errorf("identity %s is not in trust domain %s", id, trustDomain)
	}
	name, ok := strings.CutPrefix(id.Path, "/cluster/")
	if !ok || id.String() != SpiffeID(trustDomain, name) { // no port, user, query, fragment or escapes
		return "", fmt.Errorf("identity %s is not of the form %s", id, SpiffeID(trustDomain, "<name>"))
	}
	if err := validateCluster(name); err != nil {
		return "", fmt.Errorf("identity %s: %w", id, err)
	}
	return name, nil
}

// SpiffeID returns "spiffe://<trustDomain>/cluster/<cluster>".
func SpiffeID(trustDomain, cluster string) string {
	return "spiffe://" + trustDomain + "/cluster/" + cluster
}

// NewKey generates an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// NewCSR returns a PEM certificate request with CN=cluster signed by key.
func NewCSR(key crypto.Signer, cluster string) ([]byte, error) {
	if err := validateCluster(cluster); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cluster}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// WriteKeyPair atomically writes the key (mode 0600), then the certificate
// (mode 0644).
func WriteKeyPair(certFile, keyFile string, certPEM, keyPEM []byte) error {
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key %s: %w", keyFile, err)
	}
	if err := atomicfile.Write(certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate %s: %w", certFile, err)
	}
	return nil
}

// LoadKeyPair loads a PEM certificate chain and private key, with Leaf set.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err == nil && cert.Leaf == nil {
		cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key pair %s, %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// KeyPEM encodes key as PKCS#8 "PRIVATE KEY" PEM.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CertPEM encodes a DER certificate as PEM.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCertPEM parses the first CERTIFICATE block of b.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
			}
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block found")
	}
	return certs, nil
}

// parseKey returns the first private key of b; other blocks (such as the
// "EC PARAMETERS" written by openssl ecparam) are skipped.
func parseKey(b []byte) (crypto.Signer, error) {
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		var key any
		var err error
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		if signer, ok := key.(crypto.Signer); ok {
			return signer, nil
		}
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	return nil, errors.New("no private key PEM block found")
}

var (
	clusterName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`) // DNS-1123 label
	trustDomain = regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)
)

// ValidateCluster checks that name is a cluster name (a DNS label).
func ValidateCluster(name string) error { return validateCluster(name) }

func validateCluster(name string) error {
	if !clusterName.MatchString(name) {
		return fmt.Errorf("invalid cluster name %q: want 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

func validateTrustDomain(td string) error {
	if !trustDomain.MatchString(td) {
		return fmt.Errorf("invalid trust domain %q: want 1 to 255 lowercase letters, digits, '.', '-' or '_'", td)
	}
	return nil
}
