package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"time"
)

// IssueMesh issues the mesh identity of a cluster's gateways: a certificate usable both to
// serve (the failover gateway terminating mTLS) and as a client (a primary's gateway
// connecting to a remote one), with the URI SAN spiffe://<td>/cluster/<name>.
func (ca *CA) IssueMesh(cluster string, validity time.Duration) (certPEM, keyPEM []byte, notAfter time.Time, err error) {
	if err := validateCluster(cluster); err != nil {
		return nil, nil, time.Time{}, err
	}
	key, err := NewKey()
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("generate mesh key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cluster, OrganizationalUnit: []string{"meshrelay mesh"}},
		URIs:        []*url.URL{{Scheme: "spiffe", Host: ca.TrustDomain, Path: "/cluster/" + cluster}},
		DNSNames:    []string{cluster + ".mesh." + ca.TrustDomain},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	cert, err := ca.sign(tmpl, key.Public(), now.Add(-clockSkew), now.Add(validity))
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	keyPEM, err = KeyPEM(key)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	_, certPEM = ca.chain(cert)
	return certPEM, keyPEM, cert.NotAfter, nil
}
