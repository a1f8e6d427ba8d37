package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// The identities of the xDS link between an agent and its gateways (docs/adr/0007): the
// agent serves with its cluster's mesh identity, spiffe://<td>/cluster/<cluster>, and each
// gateway presents spiffe://<td>/cluster/<cluster>/gateway/<node>, both from the mesh CA.

var gatewayNode = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9._]{0,251}[a-zA-Z0-9])?$`)

// ValidateGatewayNode checks a gateway's node id (its xDS node id, named in its certificate).
func ValidateGatewayNode(node string) error {
	if !gatewayNode.MatchString(node) {
		return fmt.Errorf("invalid gateway node %q: want 1 to 253 letters, digits, '-', '.' or '_', starting and ending with a letter or digit", node)
	}
	return nil
}

// GatewayID returns "spiffe://<trustDomain>/cluster/<cluster>/gateway/<node>".
func GatewayID(trustDomain, cluster, node string) string {
	return SpiffeID(trustDomain, cluster) + "/gateway/" + node
}

// SignGatewayCSR signs a PEM CSR for the gateway node of cluster: only the CSR's public key
// is used; the certificate is for client authentication, with CN=node and the single URI SAN
// GatewayID(ca.TrustDomain, cluster, node). certPEM holds the leaf and any intermediates.
func (ca *CA) SignGatewayCSR(csrPEM []byte, cluster, node string, validity time.Duration) (certPEM []byte, notAfter time.Time, err error) {
	if err := validateCluster(cluster); err != nil {
		return nil, time.Time{}, err
	}
	if err := ValidateGatewayNode(node); err != nil {
		return nil, time.Time{}, err
	}
	if validity <= 0 {
		return nil, time.Time{}, fmt.Errorf("gateway certificate validity must be positive, got %v", validity)
	}
	pub, err := csrPublicKey(csrPEM)
	if err != nil {
		return nil, time.Time{}, err
	}
	id, err := url.Parse(GatewayID(ca.TrustDomain, cluster, node))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("gateway identity: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: node, OrganizationalUnit: []string{"meshrelay gateway"}},
		URIs:        []*url.URL{id},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	now := time.Now()
	cert, err := ca.sign(tmpl, pub, now.Add(-clockSkew), now.Add(validity))
	if err != nil {
		return nil, time.Time{}, err
	}
	_, out := ca.chain(cert)
	return out, cert.NotAfter, nil
}

// NewGatewayCSR returns a PEM certificate request with CN=node signed by key.
func NewGatewayCSR(key crypto.Signer, node string) ([]byte, error) {
	if err := ValidateGatewayNode(node); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MeshPeer is what a mesh certificate's single spiffe identity names: its trust domain, its
// cluster and, for a gateway's certificate, its node (empty for a cluster's mesh identity).
type MeshPeer struct {
	TrustDomain, Cluster, Node string
}

// ParseMeshPeer reads the single spiffe identity of cert, which must be
// spiffe://<td>/cluster/<cluster> or spiffe://<td>/cluster/<cluster>/gateway/<node>. It does
// not verify cert.
func ParseMeshPeer(cert *x509.Certificate) (MeshPeer, error) {
	if cert == nil {
		return MeshPeer{}, errors.New("no certificate")
	}
	var ids []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ids = append(ids, u)
		}
	}
	if len(ids) != 1 {
		return MeshPeer{}, fmt.Errorf("certificate has %d spiffe identities, want exactly one", len(ids))
	}
	id := ids[0]
	rest, ok := strings.CutPrefix(id.Path, "/cluster/")
	if !ok || validateTrustDomain(id.Host) != nil {
		return MeshPeer{}, fmt.Errorf("identity %s is not of the form spiffe://<trust domain>/cluster/<name>[/gateway/<node>]", id)
	}
	p := MeshPeer{TrustDomain: id.Host}
	p.Cluster, p.Node, _ = strings.Cut(rest, "/gateway/")
	if err := validateCluster(p.Cluster); err != nil {
		return MeshPeer{}, fmt.Errorf("identity %s: %w", id, err)
	}
	want := SpiffeID(p.TrustDomain, p.Cluster)
	if p.Node != "" || strings.Contains(rest, "/gateway/") {
		if err := ValidateGatewayNode(p.Node); err != nil {
			return MeshPeer{}, fmt.Errorf("identity %s: %w", id, err)
		}
		want = GatewayID(p.TrustDomain, p.Cluster, p.Node)
	}
	if id.String() != want { // no port, user, query, fragment or escapes
		return MeshPeer{}, fmt.Errorf("identity %s is not of the form %s", id, want)
	}
	return p, nil
}

// VerifyChain checks that chain[0] chains to roots through the rest of chain and is valid
// now for usage.
func VerifyChain(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// CAFile is a PEM CA bundle kept in a file, read again when its size or modification time
// changes (a rotated mesh CA is trusted without a restart). A bundle that fails to load
// keeps the previous one. Safe for concurrent use.
type CAFile struct {
	file string

	mu    sync.Mutex // guards pool, stamp and err
	pool  *x509.CertPool
	stamp string
	err   error
}

// LoadCAFile reads the bundle once; an error stops the caller at start.
func LoadCAFile(file string) (*CAFile, error) {
	c := &CAFile{file: file}
	pool, err := readPool(file)
	if err != nil {
		return nil, err
	}
	c.pool, c.stamp = pool, fileStamp(file)
	return c, nil
}

// Pool returns the bundle in service, reading the file again when it changed.
func (c *CAFile) Pool() *x509.CertPool {
	stamp := fileStamp(c.file)
	c.mu.Lock()
	defer c.mu.Unlock()
	if stamp != c.stamp {
		c.stamp = stamp
		if pool, err := readPool(c.file); err != nil {
			c.err = fmt.Errorf("reload: %w; the previous CA bundle stays in service", err)
		} else {
			c.pool, c.err = pool, nil
		}
	}
	return c.pool
}

// Err is why the file's current content is not in service (nil when it is).
func (c *CAFile) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func readPool(file string) (*x509.CertPool, error) {
	certs, err := readPEM(file, parseCerts)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

func fileStamp(file string) string {
	fi, err := os.Stat(file)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d@%d", fi.Size(), fi.ModTime().UnixNano())
}
