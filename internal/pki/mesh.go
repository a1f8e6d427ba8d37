package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"slices"
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

// IssueIntermediate issues a cluster's Istio workload CA: an intermediate CA under ca
// (path length 0: it signs workload certificates only) with the URI SAN
// spiffe://<td>/cluster/<name>, for Istio's plugged-in `cacerts` Secret. chainPEM is the
// intermediate followed by ca's chain up to its root (Istio's cert-chain.pem).
func (ca *CA) IssueIntermediate(cluster string, validity time.Duration) (certPEM, keyPEM, chainPEM []byte, notAfter time.Time, err error) {
	if err := validateCluster(cluster); err != nil {
		return nil, nil, nil, time.Time{}, err
	}
	if ca.Cert.MaxPathLen == 0 && ca.Cert.MaxPathLenZero {
		return nil, nil, nil, time.Time{}, fmt.Errorf("mesh CA %q has path length 0, so it cannot sign an intermediate CA: rotate to a new mesh CA (`meshrelay ca rotate mesh` generates one with path length 1)",
			ca.Cert.Subject.CommonName)
	}
	key, err := NewKey()
	if err != nil {
		return nil, nil, nil, time.Time{}, fmt.Errorf("generate istio CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "meshrelay istio CA " + cluster, Organization: []string{"meshrelay"}, Locality: []string{cluster}},
		URIs:           []*url.URL{{Scheme: "spiffe", Host: ca.TrustDomain, Path: "/cluster/" + cluster}},
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		IsCA:           true,
		MaxPathLenZero: true,
	}
	cert, err := ca.sign(tmpl, key.Public(), now.Add(-clockSkew), now.Add(validity))
	if err != nil {
		return nil, nil, nil, time.Time{}, err
	}
	if keyPEM, err = KeyPEM(key); err != nil {
		return nil, nil, nil, time.Time{}, err
	}
	certPEM = CertPEM(cert.Raw)
	return certPEM, keyPEM, append(slices.Clone(certPEM), ca.CertPEM...), cert.NotAfter, nil
}
