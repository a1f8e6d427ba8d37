// Package relay implements the relay protocol's server side: registration (token + CSR →
// cluster certificate), and the Push (inputs up) and Pull (outputs down) delta streams. The
// cluster of a stream comes from the verified client certificate, never from a message. What
// both ends of the protocol share (the delta codec, limits, metadata keys and refusals) is in
// internal/relaywire.
package relay

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/relaywire"
)

// Registry says which clusters are registered: what registration and every stream check.
type Registry interface {
	IsRegistered(cluster string) bool
}

// Backend is what the relay server needs from the server's core, by job: Register and the
// identity checks use its Registry, Push its Inputs, Pull its Outputs and Acks
// (*reconcile.Reconciler implements it).
type Backend interface {
	Registry
	Inputs
	Outputs
	Acks
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Token returns the relay identity token (re-read so a rotated token file takes effect).
	Token func() (string, error)
	// Mode is relaywire.ModeMTLS or relaywire.ModeTLS.
	Mode string
	// CertTTL is the lifetime of issued agent certificates.
	CertTTL time.Duration
	// Changes traces configuration changes to the agents' answers (nil: not traced).
	Changes *changetrace.Tracer
	// AckTimeout recycles a Pull stream whose agent has not acknowledged a snapshot in time.
	AckTimeout time.Duration
	// Balancer, when set, redirects agents owned by another replica (agent balancing).
	Balancer Balancer
	// MaxMessageBytes bounds one relay message (a whole delta); zero is relaywire.MaxMessageBytes.
	MaxMessageBytes int
	// Authority is the relay CA in service and its rotation (default: the CA given to
	// NewServer, in memory, serving the certificate given to TLSConfig).
	Authority *Authority
	// Revocations keeps the revoked clusters (nil: revocation unavailable).
	Revocations Revocations
}

// Balancer says which replica owns a cluster (ha.Coordinator implements it).
type Balancer interface {
	// OwnerAddress returns the owning replica's relay address and whether it is this one.
	OwnerAddress(cluster string) (string, bool)
	// Watch returns a channel closed at the next change of the replica set.
	Watch() <-chan struct{}
}

// redirect tells an agent on the wrong replica where to go; it reports whether it did.
func (s *Server) redirect(cluster string, send func(*relayv1.Redirect) error) (bool, error) {
	if s.cfg.Balancer == nil {
		return false, nil
	}
	addr, self := s.cfg.Balancer.OwnerAddress(cluster)
	if self || addr == "" {
		return false, nil
	}
	// The owner may have died since it last advertised itself (its entry lives a few
	// heartbeats): sending the agent there would only cost it a failed attempt and a longer
	// backoff. Serve the agent here instead; the balancer's next change moves it.
	c, err := net.DialTimeout("tcp", addr, redirectProbeTimeout)
	if err != nil {
		s.m.redirectsAvoided.WithLabelValues(cluster).Inc()
		s.log.Warn("owner replica unreachable; serving its agent here meanwhile", "cluster", cluster, "owner", addr, "error", err)
		return false, nil
	}
	c.Close()
	s.m.redirects.WithLabelValues(cluster).Inc()
	s.log.Info("redirecting agent to its replica", "cluster", cluster, "to", addr)
	return true, send(&relayv1.Redirect{Address: addr, Reason: "cluster " + cluster + " is served by the replica at " + addr})
}

// redirectProbeTimeout bounds the reachability check of a replica before redirecting to it.
const redirectProbeTimeout = 500 * time.Millisecond

// Server serves the relay protocol.
type Server struct {
	relayv1.UnimplementedRelayServiceServer
	cfg      ServerConfig
	registry Registry
	inputs   Inputs
	outputs  Outputs
	acks     Acks
	auth     *Authority
	log      *slog.Logger
	m        *metrics
	sessions *sessions
	reports  *reports
	limits   *limits
	kick     chan struct{}

	sweepMu sync.Mutex           // serializes sweeps; guards caGen
	caGen   uint64               // the Authority's generation open streams were last checked against
	revMu   sync.Mutex           // guards revoked
	revoked map[string]time.Time // cluster → certificates issued before are revoked

	rotMu        sync.Mutex      // guards awaiting and lastRotation
	awaiting     map[string]bool // clusters asked to register again under the new CA, not yet back
	lastRotation time.Time
}

// Connections returns, per cluster, the open streams of the agent holding it, what that
// agent last reported wrong with its own parts, and the last duplicate refused.
func (s *Server) Connections() map[string]Connection {
	out := s.sessions.connections()
	for k, c := range out {
		if r, ok := s.reports.get(k); ok {
			c.Report = &r
			out[k] = c
		}
	}
	return out
}

// refuse reports a stream refused because another agent holds its cluster.
func (s *Server) refuse(cluster, kind string, agent relaywire.Agent, holder relaywire.Holder) error {
	s.m.refused.WithLabelValues(cluster, kind, "duplicate").Inc()
	s.log.Warn("stream refused: another agent holds the cluster", "cluster", cluster, "stream", kind,
		"peer", agent.Peer, "instance", agent.Instance, "agentVersion", agent.Version,
		"holder", holder.Peer, "holderInstance", holder.Instance, "holderVersion", holder.Version, "holderSince", holder.Since)
	return relaywire.DuplicateError(cluster, holder)
}

// endCause is the error a stream returns when its context ends.
func endCause(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), errSuperseded) {
		return status.Error(codes.Aborted, errSuperseded.Error())
	}
	var cut *cutError
	if errors.As(context.Cause(ctx), &cut) {
		return cut.status()
	}
	return ctx.Err()
}

// NewServer builds a relay server; it does no I/O.
func NewServer(cfg ServerConfig, backend Backend, ca *pki.CA, log *slog.Logger, reg prometheus.Registerer) *Server {
	if cfg.Mode == "" {
		cfg.Mode = relaywire.ModeMTLS
	}
	if cfg.CertTTL <= 0 {
		cfg.CertTTL = time.Hour
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = relaywire.MaxMessageBytes
	}
	auth := cfg.Authority
	if auth == nil {
		auth = &Authority{current: ca}
		if ca != nil { // nil: tls mode, no certificates
			auth.changed()
		}
	}
	m := newMetrics(reg)
	if reg != nil && auth.Current() != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_relay_ca_expiry_timestamp_seconds",
			Help: "When the relay CA that signs agent certificates expires (Unix seconds); rotate it (meshrelay ca rotate relay) before."},
			func() float64 { return float64(auth.Current().Cert.NotAfter.Unix()) }))
	}
	limits := newLimits(log, func(reason string) { m.rejected.WithLabelValues(reason).Inc() })
	sessions := newSessions()
	if reg != nil {
		reg.MustRegister(agentCerts{sessions})
	}
	return &Server{cfg: cfg, registry: backend, inputs: backend, outputs: backend, acks: backend, auth: auth, log: log, m: m, sessions: sessions, reports: newReports(reg), limits: limits,
		kick: make(chan struct{}, 1), revoked: map[string]time.Time{}, awaiting: map[string]bool{}}
}

var descAgentCert = prometheus.NewDesc("meshrelay_relay_agent_certificate_expiry_timestamp_seconds",
	"When the client certificate of the agent holding a cluster's streams on this server expires (Unix seconds), as seen at the mutual TLS handshake; absent in tls mode and for clusters with no agent connected here.",
	[]string{"cluster"}, nil)

// agentCerts exports the expiry of the connected agents' client certificates at scrape time.
type agentCerts struct{ s *sessions }

func (a agentCerts) Describe(ch chan<- *prometheus.Desc) { ch <- descAgentCert }

func (a agentCerts) Collect(ch chan<- prometheus.Metric) {
	for cluster, c := range a.s.connections() {
		if !c.CertificateNotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(descAgentCert, prometheus.GaugeValue, float64(c.CertificateNotAfter.Unix()), cluster)
		}
	}
}

// TLSConfig returns the server's TLS configuration: client certificates are requested and,
// when presented, verified against the trusted relay CAs with a clear log line when they
// fail. The serving certificate is the Authority's (cert when it has none).
func (s *Server) TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.auth.Serving(); c != nil {
				return c, nil
			}
			return &cert, nil
		},
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // registration, or tls mode: checked per RPC
			}
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: s.auth.Trusted(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				s.log.Warn("client certificate rejected", "subject", leaf.Subject.CommonName, "notAfter", leaf.NotAfter, "error", err)
				s.m.rejected.WithLabelValues("certificate").Inc()
				return fmt.Errorf("client certificate %q rejected: %w", leaf.Subject.CommonName, err)
			}
			return nil
		},
	}
}

// Attach registers the relay service on a gRPC server.
func (s *Server) Attach(g *grpc.Server) { relayv1.RegisterRelayServiceServer(g, s) }

func (s *Server) checkToken(got string) error {
	want, err := s.cfg.Token()
	if err != nil {
		s.log.Error("relay identity token unavailable", "error", err)
		return status.Error(codes.Unavailable, "relay identity token unavailable on the server")
	}
	if got == "" {
		return status.Error(codes.Unauthenticated, "no relay identity token presented")
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return status.Error(codes.Unauthenticated, "relay identity token does not match the server's")
	}
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return p.Addr.String()
	}
	return ""
}

// Register implements the registration RPC.
func (s *Server) Register(ctx context.Context, req *relayv1.RegisterRequest) (*relayv1.RegisterResponse, error) {
	log := s.log.With("cluster", req.GetCluster(), "peer", peerAddr(ctx))
	if err := s.checkToken(req.GetToken()); err != nil {
		log.Warn("registration refused", "error", err)
		s.m.rejected.WithLabelValues("token").Inc()
		return nil, err
	}
	if s.cfg.Mode != relaywire.ModeMTLS {
		return nil, status.Error(codes.FailedPrecondition, "server runs in tls mode: no client certificates are issued; send the token on every stream")
	}
	if !s.registry.IsRegistered(req.GetCluster()) {
		log.Warn("registration refused: cluster not registered")
		s.m.rejected.WithLabelValues("unknown-cluster").Inc()
		return nil, status.Errorf(codes.PermissionDenied, "cluster %q is not registered: create a KubernetesCluster named %q on the management server first", req.GetCluster(), req.GetCluster())
	}
	if err := s.limits.admitRegistration(req.GetCluster()); err != nil {
		return nil, err
	}
	signer := s.auth.Signer()
	certPEM, notAfter, err := signer.SignClusterCSR(req.GetCsrPem(), req.GetCluster(), s.cfg.CertTTL)
	if err != nil {
		log.Warn("registration refused: bad csr", "error", err)
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request: %v", err)
	}
	log.Info("agent registered", "notAfter", notAfter)
	s.m.registrations.Inc()
	return &relayv1.RegisterResponse{
		CertificatePem: certPEM,
		CaPem:          s.auth.Bundle(),
		NotAfterUnix:   notAfter.Unix(),
		Identity:       pki.SpiffeID(signer.TrustDomain, req.GetCluster()),
	}, nil
}

// identify returns the cluster a stream is allowed to act for, and its client certificate
// (nil in tls mode).
func (s *Server) identify(ctx context.Context, claimed string) (string, *x509.Certificate, error) {
	cluster, leaf, err := s.identity(ctx, claimed)
	if err != nil {
		return "", nil, err
	}
	if c := s.cause(cluster, leaf, true); c != nil {
		s.m.rejected.WithLabelValues(c.reason).Inc()
		if c.reason == ReasonRenew {
			s.rotMu.Lock()
			s.awaiting[cluster] = true
			s.rotMu.Unlock()
			s.log.Info("stream refused: agent asked to register under the new relay CA", "cluster", cluster, "peer", peerAddr(ctx))
		} else {
			s.log.Warn("stream refused", "cluster", cluster, "reason", c.reason, "peer", peerAddr(ctx), "error", c.msg)
		}
		return "", nil, c.status()
	}
	if leaf != nil {
		s.rotMu.Lock()
		delete(s.awaiting, cluster)
		s.rotMu.Unlock()
	}
	return cluster, leaf, nil
}

func (s *Server) identity(ctx context.Context, claimed string) (string, *x509.Certificate, error) {
	var cluster string
	var leaf *x509.Certificate
	if s.cfg.Mode == relaywire.ModeTLS {
		md, _ := metadata.FromIncomingContext(ctx)
		tok := ""
		if v := md.Get(relaywire.MetadataToken); len(v) > 0 {
			tok = v[0]
		}
		if err := s.checkToken(tok); err != nil {
			s.m.rejected.WithLabelValues("token").Inc()
			return "", nil, err
		}
		if v := md.Get(relaywire.MetadataCluster); len(v) > 0 {
			cluster = v[0]
		}
	} else {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return "", nil, status.Error(codes.Unauthenticated, "no peer information")
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.PeerCertificates) == 0 {
			s.m.rejected.WithLabelValues("no-certificate").Inc()
			return "", nil, status.Error(codes.Unauthenticated, "no client certificate: call Register with the relay identity token first")
		}
		leaf = ti.State.PeerCertificates[0]
		c, err := pki.ClusterFromCert(leaf, s.auth.TrustDomain())
		if err != nil {
			s.m.rejected.WithLabelValues("identity").Inc()
			return "", nil, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
		}
		cluster = c
	}
	if claimed != cluster {
		s.m.rejected.WithLabelValues("identity-mismatch").Inc()
		s.log.Warn("stream refused: identity mismatch", "identity", cluster, "claimed", claimed, "peer", peerAddr(ctx))
		return "", nil, status.Errorf(codes.PermissionDenied, "connection identifies cluster %q but the agent claims %q", cluster, claimed)
	}
	if !s.registry.IsRegistered(cluster) {
		s.m.rejected.WithLabelValues("unknown-cluster").Inc()
		return "", nil, status.Errorf(codes.PermissionDenied, "cluster %q is not registered", cluster)
	}
	return cluster, leaf, nil
}

// ErrNotServing is returned by helpers when no server is attached.
var ErrNotServing = errors.New("relay server not serving")
