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
	"encoding/json"
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
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Backend is what the relay server needs from the server's core.
type Backend interface {
	IsRegistered(cluster string) bool
	Input(cluster string) *snapshot.Snapshot
	PutInput(ctx context.Context, cluster string, s *snapshot.Snapshot)
	Output(cluster string) *snapshot.Snapshot
	RefreshOutput(ctx context.Context, cluster string)
	Subscribe(cluster string) (<-chan struct{}, func())
	AdoptVersion(cluster string, version uint64, hash string)
	Acked(cluster string, version uint64, hash, agent string)
	Nacked(cluster string, version uint64, hash, reason string)
	// AgentEpoch is told the epoch of the output an agent holds (its Hello): the server's
	// lock must be above it for the agent to accept anything new.
	AgentEpoch(cluster string, held uint64)
	// EpochRefused records that the agent holds epoch held and so refuses the output of
	// epoch refused (it NACKed it, or it would and the server held it back).
	EpochRefused(cluster string, refused, held uint64)
	// Refused records, with every ACK, the objects of that output the agent's cluster
	// refused while the rest was applied (output key → reason; empty when none).
	Refused(cluster string, version uint64, hash string, refusals map[string]string)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Token returns the relay identity token (re-read so a rotated token file takes effect).
	Token func() (string, error)
	// Mode is relaywire.ModeMTLS or relaywire.ModeTLS.
	Mode string
	// CertTTL is the lifetime of issued agent certificates.
	CertTTL time.Duration
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
	backend  Backend
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
	limits := newLimits(log, func(reason string) { m.rejected.WithLabelValues(reason).Inc() })
	return &Server{cfg: cfg, backend: backend, auth: auth, log: log, m: m, sessions: newSessions(), reports: newReports(reg), limits: limits,
		kick: make(chan struct{}, 1), revoked: map[string]time.Time{}, awaiting: map[string]bool{}}
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
	if !s.backend.IsRegistered(req.GetCluster()) {
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
	if !s.backend.IsRegistered(cluster) {
		s.m.rejected.WithLabelValues("unknown-cluster").Inc()
		return "", nil, status.Errorf(codes.PermissionDenied, "cluster %q is not registered", cluster)
	}
	return cluster, leaf, nil
}

// Push receives a cluster's input snapshots.
func (s *Server) Push(stream relayv1.RelayService_PushServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first push message must be hello")
	}
	cluster, leaf, err := s.identify(ctx, hello.GetCluster())
	if err != nil {
		return err
	}
	if moved, err := s.redirect(cluster, func(r *relayv1.Redirect) error {
		return stream.Send(&relayv1.PushResponse{Message: &relayv1.PushResponse_Redirect{Redirect: r}})
	}); moved || err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	agent := agentOf(ctx, hello.GetAgentVersion())
	st, holder, ok := s.sessions.claim(cluster, agent, true, leaf, cancel)
	if !ok {
		return s.refuse(cluster, "push", agent, holder)
	}
	log := s.log.With("cluster", cluster, "stream", "push", "peer", agent.Peer)
	defer func() {
		s.sessions.release(cluster, st)
		s.pushEnded(cluster, log)
	}()
	g := s.m.pushConnected.WithLabelValues(cluster)
	g.Inc()
	defer g.Dec()
	log.Info("push stream opened", "instance", agent.Instance, "agentVersion", agent.Version)
	defer log.Info("push stream closed")

	sendHeld := func() error {
		in := s.backend.Input(cluster)
		h := &relayv1.Held{ResourceHashes: in.ResourceHashes()}
		if in != nil {
			h.Version, h.Hash = in.Version, in.Hash
		}
		return stream.Send(&relayv1.PushResponse{Message: &relayv1.PushResponse_Held{Held: h}})
	}
	if err := sendHeld(); err != nil {
		return err
	}
	if in := s.backend.Input(cluster); in != nil && in.Hash == hello.GetHeld().GetHash() {
		s.m.pushWarmed.WithLabelValues(cluster).Set(1)
	}
	// Receive in the background, so that a stream replaced by its agent's new connection
	// ends at once.
	msgs, recvErr := relaywire.Receive(ctx, stream.Recv)
	for {
		var msg *relayv1.PushRequest
		select {
		case <-ctx.Done():
			return endCause(ctx)
		case err := <-recvErr:
			if status.Code(err) == codes.ResourceExhausted {
				s.m.rejected.WithLabelValues("too-large").Inc()
				log.Warn("push message over the relay's size limit", "limitBytes", s.cfg.MaxMessageBytes, "error", err)
			}
			return err
		case msg = <-msgs:
		}
		if r := msg.GetReport(); r != nil {
			s.sessions.whileHolding(cluster, st, func() { s.reports.set(cluster, r, log) })
			continue
		}
		d := msg.GetSnapshot()
		if d == nil {
			return status.Error(codes.InvalidArgument, "push messages after hello must be snapshots or reports")
		}
		if len(d.GetUpserts()) > relaywire.MaxResources {
			s.m.rejected.WithLabelValues("too-large").Inc()
			log.Warn("push delta refused: too many resources", "version", d.GetVersion(), "resources", len(d.GetUpserts()), "limit", relaywire.MaxResources)
			return status.Errorf(codes.InvalidArgument, "push delta version %d holds %d resources, over the relay's limit of %d", d.GetVersion(), len(d.GetUpserts()), relaywire.MaxResources)
		}
		if err := checkBodies(d); err != nil {
			s.m.rejected.WithLabelValues("bad-input").Inc()
			log.Warn("push delta refused", "version", d.GetVersion(), "error", err)
			return status.Errorf(codes.InvalidArgument, "push delta version %d: %v", d.GetVersion(), err)
		}
		base := s.backend.Input(cluster)
		if !d.GetFull() && d.GetBaseHash() != hashOf(base) {
			log.Info("push delta base differs; asking for a resend", "base", d.GetBaseHash(), "held", hashOf(base))
			if err := sendHeld(); err != nil {
				return err
			}
			continue
		}
		next, err := snapshot.Apply(base, relaywire.FromProto(d))
		if err != nil {
			log.Warn("push delta rejected; asking for a resend", "version", d.GetVersion(), "error", err)
			if err := sendHeld(); err != nil {
				return err
			}
			continue
		}
		// Only the stream of the agent holding the cluster writes its input, checked under
		// the same lock that hands the cluster over.
		if !s.sessions.whileHolding(cluster, st, func() { s.backend.PutInput(ctx, cluster, next) }) {
			return endCause(ctx)
		}
		s.m.pushes.WithLabelValues(cluster).Inc()
		s.m.pushWarmed.WithLabelValues(cluster).Set(1)
		log.Debug("input received", "version", next.Version, "resources", next.Len(), "upserts", len(d.GetUpserts()), "removals", len(d.GetRemovals()))
		if err := stream.Send(&relayv1.PushResponse{Message: &relayv1.PushResponse_Ack{Ack: &relayv1.Ack{Version: next.Version, Hash: next.Hash}}}); err != nil {
			return err
		}
	}
}

// checkBodies refuses a pushed delta with a resource whose body is not one JSON value: what
// agents discover is JSON, and the stores persist nothing else (an empty body would be
// written as null and no longer match its hash when read back).
func checkBodies(d *relayv1.SnapshotDelta) error {
	for _, r := range d.GetUpserts() {
		if !json.Valid(r.GetBody()) {
			return fmt.Errorf("resource %q: body is not a JSON value", r.GetKey())
		}
	}
	return nil
}

// pushEnded forgets a cluster's agent report when its last push stream here ended.
func (s *Server) pushEnded(cluster string, log *slog.Logger) {
	if s.sessions.connections()[cluster].Push == 0 {
		s.reports.set(cluster, nil, log)
	}
}

func hashOf(s *snapshot.Snapshot) string {
	if s == nil {
		return ""
	}
	return s.Hash
}

// Pull sends a cluster's output snapshots and collects ACKs and NACKs.
func (s *Server) Pull(stream relayv1.RelayService_PullServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first pull message must be hello")
	}
	cluster, leaf, err := s.identify(ctx, hello.GetCluster())
	if err != nil {
		return err
	}
	sendRedirect := func(r *relayv1.Redirect) error {
		return stream.Send(&relayv1.PullResponse{Message: &relayv1.PullResponse_Redirect{Redirect: r}})
	}
	if moved, err := s.redirect(cluster, sendRedirect); moved || err != nil {
		return err
	}
	var rebalance <-chan struct{}
	if s.cfg.Balancer != nil {
		rebalance = s.cfg.Balancer.Watch()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	who := agentOf(ctx, hello.GetAgentVersion())
	st, holder, ok := s.sessions.claim(cluster, who, false, leaf, cancel)
	if !ok {
		return s.refuse(cluster, "pull", who, holder)
	}
	defer s.sessions.release(cluster, st)
	agent := who.Peer
	log := s.log.With("cluster", cluster, "stream", "pull", "peer", agent)
	g := s.m.pullConnected.WithLabelValues(cluster)
	g.Inc()
	defer g.Dec()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	log.Info("pull stream opened", "heldVersion", hello.GetHeld().GetVersion())
	defer log.Info("pull stream closed")

	// What the agent holds; nil map means "send everything".
	var held map[string]string
	heldHash := ""
	heldEpoch, heldVersion := hello.GetHeld().GetEpoch(), hello.GetHeld().GetVersion()
	inSyncAt := "" // the output hash last recorded as held without sending
	s.backend.RefreshOutput(ctx, cluster)
	if h := hello.GetHeld(); h.GetHash() != "" {
		held, heldHash = h.GetResourceHashes(), h.GetHash()
		if held == nil {
			held = map[string]string{}
		}
		s.backend.AdoptVersion(cluster, h.GetVersion(), h.GetHash())
		s.backend.AgentEpoch(cluster, h.GetEpoch())
		if out := s.backend.Output(cluster); out != nil && out.Hash == heldHash {
			s.backend.Acked(cluster, out.Version, out.Hash, agent)
			inSyncAt = out.Hash
		}
	}

	sub, unsubscribe := s.backend.Subscribe(cluster)
	defer unsubscribe()
	replies, recvErr := relaywire.Receive(ctx, stream.Recv)

	var inflight *snapshot.Snapshot
	var sentAt time.Time
	nackedHash := ""
	var refusal [2]uint64 // the last epoch refusal logged: output epoch, agent's epoch
	refused := func(out, held uint64) {
		s.backend.EpochRefused(cluster, out, held)
		if refusal != [2]uint64{out, held} {
			refusal = [2]uint64{out, held}
			s.m.epochRefusals.WithLabelValues(cluster).Inc()
			log.Warn("agent holds a newer epoch than this server's output", "outputEpoch", out, "heldEpoch", held)
		}
	}
	ackTimer := time.NewTimer(time.Hour)
	defer ackTimer.Stop()
	// handle takes the agent's answer to the snapshot in flight.
	handle := func(m *relayv1.PullRequest) error {
		switch {
		case m.GetAck() != nil:
			a := m.GetAck()
			if inflight == nil || a.GetHash() != inflight.Hash {
				log.Warn("unexpected ack ignored", "version", a.GetVersion())
				return nil
			}
			held, heldHash, heldEpoch, heldVersion, nackedHash = inflight.ResourceHashes(), inflight.Hash, inflight.Epoch, inflight.Version, ""
			inSyncAt = inflight.Hash
			s.backend.Acked(cluster, a.GetVersion(), a.GetHash(), agent)
			refusals := make(map[string]string, len(a.GetRefusals()))
			for _, r := range a.GetRefusals() {
				refusals[r.GetKey()] = r.GetReason()
			}
			s.backend.Refused(cluster, a.GetVersion(), a.GetHash(), refusals)
			s.m.ackSeconds.Observe(time.Since(sentAt).Seconds())
			inflight = nil
		case m.GetNack() != nil:
			n := m.GetNack()
			if inflight == nil || n.GetHash() != inflight.Hash {
				return nil
			}
			s.backend.Nacked(cluster, n.GetVersion(), n.GetHash(), n.GetError())
			log.Warn("agent refused output", "version", n.GetVersion(), "error", n.GetError(), "needFull", n.GetNeedFull())
			if out, held, ok := relaywire.ParseStaleEpoch(n.GetError()); ok {
				heldEpoch = max(heldEpoch, held)
				refused(out, held)
			}
			if n.GetNeedFull() {
				held, heldHash = nil, ""
			} else {
				nackedHash = inflight.Hash
			}
			inflight = nil
		default:
			return status.Error(codes.InvalidArgument, "pull messages after hello must be ack or nack")
		}
		return nil
	}
	for {
		out := s.backend.Output(cluster)
		// Send when the content differs, or when only the epoch moved (a new active server):
		// the agent must learn the epoch to refuse a deposed server's outputs.
		if inflight == nil && out != nil && out.Hash == heldHash && out.Epoch <= heldEpoch && inSyncAt != out.Hash {
			// The agent already holds this content (after a restart of either side): it is
			// in sync without anything being sent.
			s.backend.Acked(cluster, max(out.Version, heldVersion), out.Hash, agent)
			inSyncAt = out.Hash
		}
		// Never send an output older than what the agent holds (a passive server or a
		// replica lagging the store): it would take resources away.
		stale := out != nil && (out.Epoch < heldEpoch || (out.Epoch == heldEpoch && out.Version <= heldVersion && out.Hash != heldHash))
		if inflight == nil && out != nil && out.Epoch < heldEpoch && out.Hash != heldHash && out.Hash != nackedHash {
			// The agent would refuse it: say so (the lock is raised above the agent's
			// epoch, and the output made anew under it, see ha.Behind).
			refused(out.Epoch, heldEpoch)
		}
		if inflight == nil && out != nil && !stale && (out.Hash != heldHash || out.Epoch > heldEpoch) && out.Hash != nackedHash {
			d := snapshot.Diff(held, out)
			msg := relaywire.ToProto(d, heldHash)
			if err := relaywire.CheckSize("output of cluster "+cluster, msg, s.cfg.MaxMessageBytes-messageSlack); err != nil {
				s.m.rejected.WithLabelValues("too-large").Inc()
				log.Error("output cannot be sent: over the relay's limits", "version", out.Version, "error", err)
				return status.Error(codes.ResourceExhausted, err.Error())
			}
			if err := stream.Send(&relayv1.PullResponse{Message: &relayv1.PullResponse_Snapshot{Snapshot: msg}}); err != nil {
				return err
			}
			inflight, sentAt = out, time.Now()
			s.m.pullSent.WithLabelValues(cluster).Inc()
			s.m.pullResources.WithLabelValues(cluster).Add(float64(len(d.Upserts) + len(d.Removals)))
			s.m.pullBytes.WithLabelValues(cluster).Add(float64(sizeOf(d)))
			log.Debug("output sent", "version", out.Version, "full", d.Full, "upserts", len(d.Upserts), "removals", len(d.Removals))
			ackTimer.Reset(s.cfg.AckTimeout)
		}
		select {
		case <-ctx.Done():
			return endCause(ctx)
		case err := <-recvErr:
			return err
		case <-sub:
		case <-rebalance:
			rebalance = s.cfg.Balancer.Watch()
			if moved, err := s.redirect(cluster, sendRedirect); moved || err != nil {
				return err
			}
		case <-ackTimer.C:
			if inflight != nil {
				// An answer that arrived together with the deadline wins over it.
				select {
				case m := <-replies:
					if err := handle(m); err != nil {
						return err
					}
				default:
				}
			}
			if inflight != nil {
				log.Warn("agent did not acknowledge in time; recycling stream", "version", inflight.Version, "after", time.Since(sentAt))
				s.m.recycled.WithLabelValues(cluster).Inc()
				return status.Errorf(codes.DeadlineExceeded, "no acknowledgement of version %d within %s", inflight.Version, s.cfg.AckTimeout)
			}
		case m := <-replies:
			if err := handle(m); err != nil {
				return err
			}
		}
	}
}

// ErrNotServing is returned by helpers when no server is attached.
var ErrNotServing = errors.New("relay server not serving")

func sizeOf(d snapshot.Delta) int {
	n := 0
	for _, r := range d.Upserts {
		n += len(r.Body) + len(r.Key) + len(r.Hash)
	}
	for _, k := range d.Removals {
		n += len(k)
	}
	return n
}
