// Package xds serves a cluster's Envoy resources to its gateways over ADS with
// go-control-plane: the agent hands it each applied output snapshot, and every gateway
// (any node id) receives the same resources. A type's version is the hash of its
// resources, so versions change only when content changes. refusals.go follows the
// gateways' NACKs so that the agent can report them.
//
// The resources include the mesh private keys, so the server listens on a Unix socket only
// its user can open, on loopback, or with mutual TLS (tls.go, docs/adr/0007): it serves the
// cluster's mesh identity and admits only gateways of its cluster whose certificate names
// the node id they send.
package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// group is the node hash: every gateway of the cluster gets the same snapshot.
const group = "cluster"

type constHash struct{}

func (constHash) ID(*corev3.Node) string { return group }

// Config configures the server.
type Config struct {
	// Address is where it listens: host:port, or a Unix socket (unix:///path).
	Address flagcheck.Endpoint
	// TLS turns mutual TLS on: the server serves the mesh identity of Cluster from the
	// applied output and admits only gateways of Cluster (see tls.go).
	TLS     bool
	Cluster string
	// Registerer receives the server's metrics (optional).
	Registerer prometheus.Registerer
}

// Server is the agent's ADS server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	cache cachev3.SnapshotCache
	// refused follows the gateways' NACKs.
	refused *refusals
	// guard is the mutual TLS; nil without Config.TLS.
	guard *guard

	mu      sync.Mutex // guards everything below
	last    string     // content hash of the last snapshot set
	version uint64
	// decoded holds the messages of the last snapshot by resource hash: a change decodes
	// only the resources it brings (protojson decoding of a large output is not cheap).
	decoded map[string]decodedResource
}

type decodedResource struct {
	kind string
	msg  types.Resource
}

// New returns a server; it does no I/O.
func New(cfg Config, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, cache: cachev3.NewSnapshotCache(true, constHash{}, nil), refused: newRefusals(log)}
	if cfg.TLS {
		s.guard = newGuard(cfg.Cluster, cfg.Registerer, log)
	}
	return s
}

// Apply implements the agent's sink: it serves the Envoy resources of s.
func (s *Server) Apply(ctx context.Context, snap *snapshot.Snapshot) error {
	byType := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: nil, resourcev3.RouteType: nil, resourcev3.ClusterType: nil,
		resourcev3.EndpointType: nil, resourcev3.SecretType: nil,
	}
	hashes := map[resourcev3.Type][]string{}
	s.mu.Lock()
	prev := s.decoded
	s.mu.Unlock()
	decoded := make(map[string]decodedResource, len(prev))
	for _, r := range snap.Sorted() {
		d, ok := prev[r.Hash]
		if !ok {
			kind, msg, err := envoyres.Decode(r)
			if errors.Is(err, envoyres.ErrNotEnvoy) {
				continue
			}
			if err != nil {
				return fmt.Errorf("xds resource %s: %w", r.Key, err)
			}
			d = decodedResource{kind, msg}
		}
		decoded[r.Hash] = d
		t := resourcev3.Type(envoyres.TypeURL(d.kind))
		byType[t] = append(byType[t], d.msg)
		hashes[t] = append(hashes[t], r.Hash)
	}
	cs, err := cachev3.NewSnapshot("", byType)
	if err != nil {
		return fmt.Errorf("xds snapshot: %w", err)
	}
	all := sha256.New()
	for t := range byType {
		h := sha256.New()
		sort.Strings(hashes[t])
		for _, x := range hashes[t] {
			h.Write([]byte(x))
		}
		v := hex.EncodeToString(h.Sum(nil))[:16]
		cs.Resources[cachev3.GetResponseType(t)].Version = v
		all.Write([]byte(t + v))
	}
	if err := cs.Consistent(); err != nil {
		return fmt.Errorf("xds snapshot of output version %d is not consistent: %w", snap.Version, err)
	}
	sum := hex.EncodeToString(all.Sum(nil))
	s.mu.Lock()
	defer s.mu.Unlock()
	if sum == s.last {
		return nil
	}
	if err := s.cache.SetSnapshot(ctx, group, cs); err != nil {
		return fmt.Errorf("xds set snapshot: %w", err)
	}
	s.last = sum
	s.version = snap.Version
	s.decoded = decoded
	if s.guard != nil {
		s.guard.setIdentity(secret(byType, envoyres.MeshIdentitySecret), secret(byType, envoyres.MeshCASecret))
	}
	s.log.Info("xds resources updated", "version", snap.Version, "listeners", len(byType[resourcev3.ListenerType]), "clusters", len(byType[resourcev3.ClusterType]))
	return nil
}

// Refusals returns, per gateway (xDS node id), its latest refused response of a type it
// has not accepted since; a gateway's refusals end when it disconnects.
func (s *Server) Refusals() []Refusal { return s.refused.list() }

// secret returns the Secret named name among the resources (nil when absent).
func secret(byType map[resourcev3.Type][]types.Resource, name string) *tlsv3.Secret {
	for _, r := range byType[resourcev3.SecretType] {
		if sec, ok := r.(*tlsv3.Secret); ok && sec.GetName() == name {
			return sec
		}
	}
	return nil
}

// Status is the state of the server's link to the gateways.
type Status struct {
	// Address is where the server listens.
	Address string `json:"address"`
	// TLS says whether mutual TLS is on.
	TLS bool `json:"tls"`
	// IdentityNotAfter is the expiry of the mesh identity it serves with (TLS).
	IdentityNotAfter *time.Time `json:"identityNotAfter,omitempty"`
	// IdentityError is why the output's mesh identity is not in service (TLS): until one is,
	// every TLS handshake is refused.
	IdentityError string `json:"identityError,omitempty"`
	// RefusedConnections are the clients refused in the last minutes (TLS).
	RefusedConnections []ConnRefusal `json:"refusedConnections,omitempty"`
}

// Status returns the state of the link.
func (s *Server) Status() Status {
	st := Status{Address: s.cfg.Address.String(), TLS: s.guard != nil}
	if s.guard != nil {
		notAfter, problem := s.guard.identityStatus()
		if !notAfter.IsZero() {
			st.IdentityNotAfter = &notAfter
		}
		st.IdentityError = problem
		st.RefusedConnections = s.guard.list()
	}
	return st
}

// Listen binds the address (":0" allowed) and returns the listener. A Unix socket is
// created with mode 0600; a stale one is replaced, one a process answers on is refused.
func (s *Server) Listen() (net.Listener, error) {
	a := s.cfg.Address
	if a.Network == "unix" {
		return flagcheck.ListenUnixPrivate(a.Address)
	}
	return net.Listen(a.Network, a.Address)
}

// Start serves ADS on ln until ctx ends.
func (s *Server) Start(ctx context.Context, ln net.Listener) error {
	srv := serverv3.NewServer(ctx, s.cache, s.callbacks())
	opts := []grpc.ServerOption{grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true})}
	if s.guard != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.guard.tlsConfig())))
	}
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	s.log.Info("xds listening", "address", s.cfg.Address.String(), "bound", ln.Addr().String(), "tls", s.guard != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("xds server: %w", err)
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		g.Stop()
		<-done
	}
	<-errc
	return nil
}

// callbacks follow the gateways' NACKs and, with TLS, check every stream's node id against
// its client's certificate (state-of-the-world and delta streams alike).
func (s *Server) callbacks() serverv3.Callbacks {
	cb := s.refused.callbacks()
	g := s.guard
	if g == nil {
		return cb
	}
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error { return g.open(ctx, streamKey{id: id}) },
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if err := g.request(streamKey{id: id}, req.GetNode()); err != nil {
				return err
			}
			return cb.OnStreamRequest(id, req)
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			g.closed(streamKey{id: id})
			cb.OnStreamClosed(id, node)
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			return g.open(ctx, streamKey{delta: true, id: id})
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			return g.request(streamKey{delta: true, id: id}, req.GetNode())
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { g.closed(streamKey{delta: true, id: id}) },
	}
}
