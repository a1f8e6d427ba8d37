package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/pki"
)

// Reasons the gateway refuses an xDS server (label reason of
// meshrelay_gateway_xds_server_refused_total).
const (
	// serverUntrusted: the server's certificate does not chain to --xds-ca-file.
	serverUntrusted = "untrusted"
	// serverNotAgent: the certificate is not a cluster's mesh identity of the trust domain.
	serverNotAgent = "not_agent"
	// serverForeignCluster: the certificate is the mesh identity of another cluster.
	serverForeignCluster = "foreign_cluster"
)

// xdsTLS is the gateway's side of the mutual TLS of the xDS link: it presents its gateway
// certificate and accepts only a server whose certificate chains to the CA file and names
// the agent of its own cluster, spiffe://<td>/cluster/<cluster>. The files are read again
// when they change.
type xdsTLS struct {
	cluster string
	pair    *pki.KeyPairFiles
	ca      *pki.CAFile
	refused *prometheus.CounterVec
	log     *slog.Logger
	// meshTrust is the mesh CA bundle received from the agent (nil before the first), trusted
	// beside --xds-ca-file: during a mesh CA rotation it brings the new CA before the
	// agent's identity is issued from it, so the gateway keeps its link without new files.
	meshTrust func() *x509.CertPool

	mu      sync.Mutex // guards lastErr
	lastErr string     // of the last refusal, so that a repeated one is not logged again
}

// loadXDSTLS reads the files and checks that the certificate is a gateway identity of
// cluster for node.
func loadXDSTLS(cfg Config, meshTrust func() *x509.CertPool, refused *prometheus.CounterVec, log *slog.Logger) (*xdsTLS, error) {
	pair, err := pki.LoadKeyPairFiles(cfg.XDSCertFile, cfg.XDSKeyFile, func(err error) {
		log.Warn("xds client certificate reload failed", "certFile", cfg.XDSCertFile, "error", err)
	})
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-cert-file/--xds-tls-key-file: %w", err)
	}
	ca, err := pki.LoadCAFile(cfg.XDSCAFile)
	if err != nil {
		return nil, fmt.Errorf("--xds-ca-file: %w", err)
	}
	cert, _ := pair.GetCertificate(nil)
	p, err := pki.ParseMeshPeer(cert.Leaf)
	if err == nil && (p.Cluster != cfg.Cluster || p.Node != cfg.NodeID) {
		err = fmt.Errorf("it names %s, not this gateway's identity %s (--cluster, --node-id)", cert.Leaf.URIs[0], pki.GatewayID(p.TrustDomain, cfg.Cluster, cfg.NodeID))
	}
	if err != nil {
		return nil, fmt.Errorf("--xds-tls-cert-file %s: %w", cfg.XDSCertFile, err)
	}
	return &xdsTLS{cluster: cfg.Cluster, pair: pair, ca: ca, refused: refused, log: log, meshTrust: meshTrust}, nil
}

// config is the client TLS configuration. The server's name is not checked against the
// address (gateways reach their agent through a Service, a socket or an IP): its identity is.
func (x *xdsTLS) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return x.pair.GetCertificate(nil)
		},
		InsecureSkipVerify: true, // verified by VerifyConnection, against the identity
		VerifyConnection:   x.verify,
	}
}

// verify accepts the agent of this gateway's cluster only.
func (x *xdsTLS) verify(cs tls.ConnectionState) error {
	own, _ := x.pair.GetCertificate(nil)
	td := ""
	if p, err := pki.ParseMeshPeer(own.Leaf); err == nil {
		td = p.TrustDomain
	}
	want := pki.SpiffeID(td, x.cluster)
	if err := pki.VerifyChain(cs.PeerCertificates, x.ca.Pool(), x509.ExtKeyUsageServerAuth); err != nil {
		var mesh *x509.CertPool
		if x.meshTrust != nil {
			mesh = x.meshTrust()
		}
		if mesh == nil || pki.VerifyChain(cs.PeerCertificates, mesh, x509.ExtKeyUsageServerAuth) != nil {
			return x.refuse(serverUntrusted, fmt.Errorf("xds server certificate not trusted by --xds-ca-file nor by the mesh CA bundle received from the agent: %w", err))
		}
	}
	leaf := cs.PeerCertificates[0]
	p, err := pki.ParseMeshPeer(leaf)
	switch {
	case err != nil:
		return x.refuse(serverNotAgent, fmt.Errorf("xds server certificate is not the agent of cluster %s (%s): %w", x.cluster, want, err))
	case p.Node != "" || p.TrustDomain != td:
		return x.refuse(serverNotAgent, fmt.Errorf("xds server certificate names %s, not the agent of cluster %s (%s)", leaf.URIs[0], x.cluster, want))
	case p.Cluster != x.cluster:
		return x.refuse(serverForeignCluster, fmt.Errorf("xds server is the agent of cluster %s, not of this gateway's cluster %s (%s)", p.Cluster, x.cluster, want))
	}
	x.mu.Lock()
	x.lastErr = ""
	x.mu.Unlock()
	return nil
}

func (x *xdsTLS) refuse(reason string, err error) error {
	x.refused.WithLabelValues(reason).Inc()
	x.mu.Lock()
	repeated := x.lastErr == err.Error()
	x.lastErr = err.Error()
	x.mu.Unlock()
	if !repeated {
		x.log.Warn("xds server refused", "reason", reason, "error", err)
	}
	return err
}

// errXDSNoTLS explains a missing TLS configuration.
var errXDSNoTLS = errors.New("--xds-tls-cert-file, --xds-tls-key-file, --xds-ca-file and --cluster go together")
