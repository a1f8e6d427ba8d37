package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
)

// errSecretMissing means a TLS context names an SDS secret the gateway has not received.
var errSecretMissing = errors.New("secret not received")

// nextPEMCert returns the next CERTIFICATE block of *rest (nil when none is left).
func nextPEMCert(rest *[]byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, *rest = pem.Decode(*rest)
		if b == nil {
			return nil, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		return x509.ParseCertificate(b.Bytes)
	}
}

// secretStore holds the current secrets. TLS configurations look material up at every
// handshake, so a rotated secret is used by new connections while established ones go on.
type secretStore struct {
	cur atomic.Pointer[map[string]*secretSpec]
}

func (s *secretStore) set(m map[string]*secretSpec) { s.cur.Store(&m) }

func (s *secretStore) get(name string) *secretSpec {
	m := s.cur.Load()
	if m == nil {
		return nil
	}
	return (*m)[name]
}

func (s *secretStore) resolve(r tlsRef) (*secretSpec, error) {
	if r.inline != nil {
		return r.inline, nil
	}
	if sec := s.get(r.sds); sec != nil {
		return sec, nil
	}
	return nil, fmt.Errorf("%w: %q", errSecretMissing, r.sds)
}

func (s *secretStore) certificate(r tlsRef) (*tls.Certificate, error) {
	sec, err := s.resolve(r)
	if err != nil {
		return nil, err
	}
	if sec.cert == nil {
		return nil, fmt.Errorf("secret %q has no tls_certificate", sec.name)
	}
	return sec.cert, nil
}

func (s *secretStore) roots(r tlsRef) (*x509.CertPool, error) {
	sec, err := s.resolve(r)
	if err != nil {
		return nil, err
	}
	if sec.ca == nil {
		return nil, fmt.Errorf("secret %q has no validation_context", sec.name)
	}
	return sec.ca, nil
}

// clientTLS returns the client configuration of an upstream TLS context: SNI, the client
// certificate of its secret, and the server's chain verified against the validation
// secret's CAs (no hostname check, as Envoy without SAN matchers). Without a validation
// context the server is not verified, as in Envoy.
func (s *secretStore) clientTLS(u *upstreamTLS) *tls.Config {
	conf := &tls.Config{
		ServerName:         u.sni,
		InsecureSkipVerify: true, // the chain is verified in VerifyConnection, without a hostname
		MinVersion:         u.minVersion,
		MaxVersion:         u.maxVersion,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if !u.cert.set() {
				return &tls.Certificate{}, nil
			}
			return s.certificate(u.cert)
		},
	}
	if conf.MinVersion == 0 {
		conf.MinVersion = tls.VersionTLS12
	}
	if u.validation.set() {
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			roots, err := s.roots(u.validation)
			if err != nil {
				return err
			}
			return verifyChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth)
		}
	}
	return conf
}

func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("verify peer certificate: %w", err)
	}
	return nil
}

// serverTLS returns the server configuration of a filter chain's downstream TLS context,
// with the material current at this handshake.
func (s *secretStore) serverTLS(d *downstreamTLS) (*tls.Config, error) {
	cert, err := s.certificate(d.cert)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: d.minVersion, MaxVersion: d.maxVersion}
	if conf.MinVersion == 0 {
		conf.MinVersion = tls.VersionTLS12
	}
	switch {
	case d.validation.set():
		roots, err := s.roots(d.validation)
		if err != nil {
			return nil, err
		}
		conf.ClientCAs = roots
		conf.ClientAuth = tls.VerifyClientCertIfGiven
		if d.requireClientCert {
			conf.ClientAuth = tls.RequireAndVerifyClientCert
		}
	case d.requireClientCert:
		conf.ClientAuth = tls.RequireAnyClientCert
	}
	return conf, nil
}
