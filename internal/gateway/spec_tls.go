package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

const (
	tlsTransportSocket = "envoy.transport_sockets.tls"
	rawTransportSocket = "envoy.transport_sockets.raw_buffer"
)

// secretSpec is a parsed SDS Secret: a certificate with its key and/or trusted CAs.
type secretSpec struct {
	name string
	cert *tls.Certificate
	ca   *x509.CertPool
	// caCount is the number of certificates in ca (for status).
	caCount int
}

// tlsRef names TLS material: an SDS secret by name, or material given inline.
type tlsRef struct {
	sds    string
	inline *secretSpec
}

func (r tlsRef) set() bool { return r.sds != "" || r.inline != nil }

func (r tlsRef) String() string {
	switch {
	case r.sds != "":
		return "sds:" + r.sds
	case r.inline != nil:
		return "inline"
	}
	return ""
}

// tlsCommon is what both TLS contexts share.
type tlsCommon struct {
	cert       tlsRef // certificate presented to the peer
	validation tlsRef // CAs the peer's certificate must chain to
	minVersion uint16
	maxVersion uint16
}

// upstreamTLS originates TLS to an endpoint.
type upstreamTLS struct {
	tlsCommon
	sni string
}

// key identifies the configuration, so that an endpoint keeps its connection pool while
// its TLS settings are unchanged (material rotation does not change the key).
func (u *upstreamTLS) key() string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf("sni=%s cert=%s ca=%s v=%d-%d", u.sni, u.cert, u.validation, u.minVersion, u.maxVersion)
}

// downstreamTLS terminates TLS on a listener's filter chain.
type downstreamTLS struct {
	tlsCommon
	requireClientCert bool
	requireSNI        bool
}

func parseSecret(s *tlsv3.Secret) (*secretSpec, error) {
	out := &secretSpec{name: s.GetName()}
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		c, err := parseTLSCertificate(t.TlsCertificate)
		if err != nil {
			return nil, err
		}
		out.cert = c
	case *tlsv3.Secret_ValidationContext:
		pool, n, err := parseValidationContext(t.ValidationContext)
		if err != nil {
			return nil, err
		}
		out.ca, out.caCount = pool, n
	case *tlsv3.Secret_SessionTicketKeys, *tlsv3.Secret_GenericSecret:
		// accepted, not used
	default:
		return nil, errors.New("secret has no type")
	}
	return out, nil
}

func parseTLSCertificate(c *tlsv3.TlsCertificate) (*tls.Certificate, error) {
	if c.GetPrivateKeyProvider() != nil || c.GetPkcs12() != nil {
		return nil, errors.New("tls_certificate: only certificate_chain and private_key are supported")
	}
	chain, err := dataSource(c.GetCertificateChain())
	if err != nil {
		return nil, fmt.Errorf("certificate_chain: %w", err)
	}
	key, err := dataSource(c.GetPrivateKey())
	if err != nil {
		return nil, fmt.Errorf("private_key: %w", err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("tls_certificate: %w", err)
	}
	return &cert, nil
}

func parseValidationContext(v *tlsv3.CertificateValidationContext) (*x509.CertPool, int, error) {
	if len(v.GetMatchTypedSubjectAltNames()) > 0 || len(v.GetMatchSubjectAltNames()) > 0 ||
		len(v.GetVerifyCertificateHash()) > 0 || len(v.GetVerifyCertificateSpki()) > 0 || v.GetCrl() != nil {
		return nil, 0, errors.New("validation_context: subject alt name, hash, spki and crl checks are not supported")
	}
	if v.GetTrustedCa() == nil {
		return nil, 0, errors.New("validation_context: trusted_ca is required")
	}
	pemBytes, err := dataSource(v.GetTrustedCa())
	if err != nil {
		return nil, 0, fmt.Errorf("trusted_ca: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	rest := pemBytes
	for {
		cert, err := nextPEMCert(&rest)
		if err != nil {
			return nil, 0, fmt.Errorf("trusted_ca: %w", err)
		}
		if cert == nil {
			break
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, 0, errors.New("trusted_ca: no certificate")
	}
	return pool, n, nil
}

// dataSource returns inline bytes or strings; files and environment variables are not
// read (the gateway takes all of its material from xDS).
func dataSource(d *corev3.DataSource) ([]byte, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case nil:
		return nil, errors.New("missing")
	}
	return nil, errors.New("only inline_bytes and inline_string data sources are supported")
}

func parseCommonTLS(c *tlsv3.CommonTlsContext) (tlsCommon, error) {
	var out tlsCommon
	certs := c.GetTlsCertificateSdsSecretConfigs()
	inline := c.GetTlsCertificates()
	switch {
	case len(certs)+len(inline) > 1:
		return out, errors.New("common_tls_context: at most one certificate is supported")
	case len(certs) == 1:
		out.cert = tlsRef{sds: certs[0].GetName()}
		if out.cert.sds == "" {
			return out, errors.New("common_tls_context: sds secret config without a name")
		}
	case len(inline) == 1:
		tc, err := parseTLSCertificate(inline[0])
		if err != nil {
			return out, err
		}
		out.cert = tlsRef{inline: &secretSpec{name: "inline", cert: tc}}
	}
	switch v := c.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		out.validation = tlsRef{sds: v.ValidationContextSdsSecretConfig.GetName()}
		if out.validation.sds == "" {
			return out, errors.New("validation_context_sds_secret_config without a name")
		}
	case *tlsv3.CommonTlsContext_ValidationContext:
		pool, n, err := parseValidationContext(v.ValidationContext)
		if err != nil {
			return out, err
		}
		out.validation = tlsRef{inline: &secretSpec{name: "inline", ca: pool, caCount: n}}
	case nil:
	default:
		return out, errors.New("common_tls_context: only validation_context and validation_context_sds_secret_config are supported")
	}
	if p := c.GetTlsParams(); p != nil {
		var err error
		if out.minVersion, err = tlsVersion(p.GetTlsMinimumProtocolVersion()); err != nil {
			return out, err
		}
		if out.maxVersion, err = tlsVersion(p.GetTlsMaximumProtocolVersion()); err != nil {
			return out, err
		}
	}
	return out, nil
}

func tlsVersion(v tlsv3.TlsParameters_TlsProtocol) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLS_AUTO:
		return 0, nil
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10, nil
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls_params: unknown protocol version %v", v)
}

// parseTransportSocket returns the upstream TLS of a cluster transport socket, nil for
// plaintext (no socket or raw_buffer).
func parseUpstreamSocket(ts *corev3.TransportSocket) (*upstreamTLS, error) {
	if ts == nil || ts.GetName() == rawTransportSocket {
		return nil, nil
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := unpackTyped(ts.GetTypedConfig(), ctx); err != nil {
		return nil, fmt.Errorf("transport socket %q: %w", ts.GetName(), err)
	}
	common, err := parseCommonTLS(ctx.GetCommonTlsContext())
	if err != nil {
		return nil, err
	}
	return &upstreamTLS{tlsCommon: common, sni: ctx.GetSni()}, nil
}

// parseDownstreamSocket returns the TLS a filter chain terminates, nil for plaintext.
func parseDownstreamSocket(ts *corev3.TransportSocket) (*downstreamTLS, error) {
	if ts == nil || ts.GetName() == rawTransportSocket {
		return nil, nil
	}
	ctx := &tlsv3.DownstreamTlsContext{}
	if err := unpackTyped(ts.GetTypedConfig(), ctx); err != nil {
		return nil, fmt.Errorf("transport socket %q: %w", ts.GetName(), err)
	}
	common, err := parseCommonTLS(ctx.GetCommonTlsContext())
	if err != nil {
		return nil, err
	}
	if !common.cert.set() {
		return nil, errors.New("downstream tls context without a certificate")
	}
	d := &downstreamTLS{tlsCommon: common, requireClientCert: ctx.GetRequireClientCertificate().GetValue(), requireSNI: ctx.GetRequireSni().GetValue()}
	return d, nil
}

// unpackTyped unmarshals an Any into m after checking its type.
func unpackTyped(a interface {
	GetTypeUrl() string
	GetValue() []byte
}, m proto.Message) error {
	if a == nil {
		return errors.New("typed_config is required")
	}
	want := string(m.ProtoReflect().Descriptor().FullName())
	if got := strings.TrimPrefix(a.GetTypeUrl(), "type.googleapis.com/"); got != want {
		return fmt.Errorf("typed_config is %s, want %s", got, want)
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return fmt.Errorf("typed_config %s: %w", want, err)
	}
	return nil
}
