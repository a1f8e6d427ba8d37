package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/pki"
)

// Reasons a connection to the xDS server is refused: the label reason of
// meshrelay_xds_refused_total and ConnRefusal.Reason.
const (
	// ReasonNoIdentity: the agent's output has not brought its mesh identity yet, so it has
	// no certificate to serve with.
	ReasonNoIdentity = "no_identity"
	// ReasonNoCertificate: the client presented no certificate.
	ReasonNoCertificate = "no_certificate"
	// ReasonUntrusted: the client's certificate does not chain to the mesh CA bundle the
	// agent holds, or is expired or not for client authentication.
	ReasonUntrusted = "untrusted"
	// ReasonNotGateway: the certificate is not a gateway identity of the agent's trust domain.
	ReasonNotGateway = "not_gateway"
	// ReasonForeignCluster: the certificate is a gateway identity of another cluster.
	ReasonForeignCluster = "foreign_cluster"
	// ReasonNodeMismatch: the xDS node id the client sends is not the node its certificate
	// names.
	ReasonNodeMismatch = "node_mismatch"
)

// refusalMemory is how long a refused client stays in ConnRefusals (and so in the agent's
// report to the server, which `meshrelay check` judges) after its last refused attempt; a
// refusal is not cleared when the same name is admitted later, since the name of a refused
// client is a claim only.
const refusalMemory = 5 * time.Minute

// ConnRefusal is a client whose connections to the xDS server were refused recently.
type ConnRefusal struct {
	// Peer is the identity in the client's certificate, else its address without port.
	Peer   string    `json:"peer"`
	Reason string    `json:"reason"`
	Error  string    `json:"error"`
	Last   time.Time `json:"last"`
	Count  int       `json:"count"`
}

// servingIdentity is the agent's certificate and the CA bundle its clients must chain to,
// both from the mesh Secrets of its output.
type servingIdentity struct {
	cert        tls.Certificate
	roots       *x509.CertPool
	trustDomain string
}

// guard is the mutual TLS of the xDS server: it serves the cluster's mesh identity and
// admits only gateways of the cluster whose certificate names the node id they send.
type guard struct {
	cluster string
	log     *slog.Logger
	refused *prometheus.CounterVec
	now     func() time.Time

	mu      sync.Mutex // guards the fields below
	id      *servingIdentity
	idErr   error                    // why the output's identity is not (or no longer) in use
	recent  map[string]ConnRefusal   // by reason and peer
	streams map[streamKey]streamPeer // open stream → its client's certificate
}

// streamPeer is the verified certificate of a stream's client: its identity and node.
type streamPeer struct {
	id, node string
	named    bool // a request named the node
}

// streamKey names a stream: go-control-plane numbers state-of-the-world and delta streams
// separately.
type streamKey struct {
	delta bool
	id    int64
}

func newGuard(cluster string, reg prometheus.Registerer, log *slog.Logger) *guard {
	g := &guard{cluster: cluster, log: log, now: time.Now, recent: map[string]ConnRefusal{}, streams: map[streamKey]streamPeer{},
		idErr: errors.New("no mesh identity received from the management server yet"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_xds_refused_total",
			Help: "Connections and streams the agent's xDS server refused, by reason (no_identity, no_certificate, untrusted, not_gateway, foreign_cluster, node_mismatch)."},
			[]string{"reason"})}
	for _, r := range []string{ReasonNoIdentity, ReasonNoCertificate, ReasonUntrusted, ReasonNotGateway, ReasonForeignCluster, ReasonNodeMismatch} {
		g.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(g.refused)
	}
	return g
}

// setIdentity takes the serving identity from the output's mesh Secrets (nil when the
// output has none). An unusable identity keeps the previous one in service.
func (g *guard) setIdentity(identity, ca *tlsv3.Secret) {
	id, err := g.parseIdentity(identity, ca)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		if g.idErr == nil || g.idErr.Error() != err.Error() {
			g.log.Warn("xds tls identity unusable", "error", err, "inService", g.id != nil)
		}
		g.idErr = err
		return
	}
	if g.id == nil {
		g.log.Info("xds tls identity in service", "notAfter", id.cert.Leaf.NotAfter)
	}
	g.id, g.idErr = id, nil
	for k, r := range g.recent {
		if r.Reason == ReasonNoIdentity {
			delete(g.recent, k)
		}
	}
}

func (g *guard) parseIdentity(identity, ca *tlsv3.Secret) (*servingIdentity, error) {
	if identity == nil || ca == nil {
		return nil, fmt.Errorf("the output has no %s and %s secrets", envoyres.MeshIdentitySecret, envoyres.MeshCASecret)
	}
	tc := identity.GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", envoyres.MeshIdentitySecret, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("secret %s: %w", envoyres.MeshIdentitySecret, err)
		}
	}
	p, err := pki.ParseMeshPeer(cert.Leaf)
	switch {
	case err != nil:
		return nil, fmt.Errorf("secret %s: %w", envoyres.MeshIdentitySecret, err)
	case p.Node != "" || p.Cluster != g.cluster:
		return nil, fmt.Errorf("secret %s names %s, not this cluster's identity %s", envoyres.MeshIdentitySecret,
			cert.Leaf.URIs[0], pki.SpiffeID(p.TrustDomain, g.cluster))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		return nil, fmt.Errorf("secret %s holds no PEM certificate", envoyres.MeshCASecret)
	}
	return &servingIdentity{cert: cert, roots: roots, trustDomain: p.TrustDomain}, nil
}

// tlsConfig is the server's TLS configuration: every handshake uses the identity in service
// at that moment.
func (g *guard) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		g.mu.Lock()
		id, idErr := g.id, g.idErr
		g.mu.Unlock()
		if id == nil {
			err := fmt.Errorf("the agent cannot serve xds over tls yet: %w", idErr)
			g.refuse(ReasonNoIdentity, "any client", hostOf(hello.Conn), err)
			return nil, err
		}
		remote := hostOf(hello.Conn)
		return &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{id.cert},
			NextProtos:   []string{"h2"}, // gRPC clients require ALPN h2
			// Requested, not required, so that a client without one is counted and logged.
			ClientAuth:       tls.RequestClientCert,
			VerifyConnection: func(cs tls.ConnectionState) error { return g.verify(id, cs, remote) },
		}, nil
	}}
}

// verify admits a client whose certificate chains to the mesh CA bundle and names a
// gateway of this cluster.
func (g *guard) verify(id *servingIdentity, cs tls.ConnectionState, remote string) error {
	if len(cs.PeerCertificates) == 0 {
		err := errors.New("the client presented no certificate; gateways need one from 'meshrelay gateway issue-cert'")
		g.refuse(ReasonNoCertificate, remote, remote, err)
		return err
	}
	leaf := cs.PeerCertificates[0]
	if err := pki.VerifyChain(cs.PeerCertificates, id.roots, x509.ExtKeyUsageClientAuth); err != nil {
		claim := remote
		if len(leaf.URIs) > 0 {
			claim += " (unverified " + leaf.URIs[0].String() + ")" // anyone can write any name
		}
		err = fmt.Errorf("client certificate not trusted by the mesh CA: %w", err)
		g.refuse(ReasonUntrusted, claim, remote, err)
		return err
	}
	peerName := remote
	if len(leaf.URIs) > 0 {
		peerName = leaf.URIs[0].String()
	}
	p, err := pki.ParseMeshPeer(leaf)
	if err == nil && (p.Node == "" || p.TrustDomain != id.trustDomain) {
		err = fmt.Errorf("%s is not a gateway identity %s", peerName, pki.GatewayID(id.trustDomain, g.cluster, "<node>"))
	}
	if err != nil {
		g.refuse(ReasonNotGateway, peerName, remote, err)
		return err
	}
	if p.Cluster != g.cluster {
		err := fmt.Errorf("%s is a gateway of cluster %s; this agent serves only cluster %s", peerName, p.Cluster, g.cluster)
		g.refuse(ReasonForeignCluster, peerName, remote, err)
		return err
	}
	return nil
}

// open records the node named by the certificate of the stream's client.
func (g *guard) open(ctx context.Context, key streamKey) error {
	var sp streamPeer
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			leaf := info.State.PeerCertificates[0]
			if mp, err := pki.ParseMeshPeer(leaf); err == nil {
				sp = streamPeer{id: leaf.URIs[0].String(), node: mp.Node}
			}
		}
	}
	if sp.node == "" {
		return errors.New("xds stream without a verified gateway certificate") // the handshake admits none such
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.streams[key] = sp
	return nil
}

// request refuses a request whose node id is not the node of the client's certificate (the
// first request of a stream must name its node; the next ones may omit it, as Envoy does);
// the error ends the stream before anything is sent on it.
func (g *guard) request(key streamKey, node *corev3.Node) error {
	g.mu.Lock()
	sp, tracked := g.streams[key]
	refuse := false
	switch {
	case !tracked: // not over TLS
	case node == nil:
		refuse = !sp.named
	case node.GetId() == sp.node:
		sp.named = true
		g.streams[key] = sp
	default:
		refuse = true
	}
	g.mu.Unlock()
	if !refuse {
		return nil
	}
	err := fmt.Errorf("xds node id %q is not the node %q named by the client's certificate", node.GetId(), sp.node)
	g.refuse(ReasonNodeMismatch, sp.id, "", err)
	return err
}

func (g *guard) closed(key streamKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.streams, key)
}

// refuse logs, counts and remembers a refusal.
func (g *guard) refuse(reason, peerName, remote string, err error) {
	g.refused.WithLabelValues(reason).Inc()
	now := g.now()
	g.mu.Lock()
	k := reason + "|" + peerName
	r := g.recent[k]
	first := r.Count == 0
	r = ConnRefusal{Peer: peerName, Reason: reason, Error: err.Error(), Last: now, Count: r.Count + 1}
	g.recent[k] = r
	g.mu.Unlock()
	if first {
		g.log.Warn("xds connection refused", "reason", reason, "peer", peerName, "remote", remote, "error", err)
	} else {
		g.log.Debug("xds connection refused again", "reason", reason, "peer", peerName, "remote", remote, "times", r.Count)
	}
}

// list returns the refusals of the last refusalMemory, sorted by peer and reason.
func (g *guard) list() []ConnRefusal {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var out []ConnRefusal
	for k, r := range g.recent {
		if now.Sub(r.Last) > refusalMemory {
			delete(g.recent, k)
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Peer != out[j].Peer {
			return out[i].Peer < out[j].Peer
		}
		return out[i].Reason < out[j].Reason
	})
	return out
}

// identityStatus is the serving identity's expiry, or why there is none in service.
func (g *guard) identityStatus() (notAfter time.Time, problem string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.id != nil {
		notAfter = g.id.cert.Leaf.NotAfter
	}
	if g.idErr != nil {
		problem = g.idErr.Error()
	}
	return notAfter, problem
}

func hostOf(c net.Conn) string {
	if c == nil {
		return ""
	}
	a := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}
