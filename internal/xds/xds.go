// Package xds serves a cluster's Envoy resources to its gateways over ADS with
// go-control-plane: the agent hands it each applied output snapshot, and every gateway
// (any node id) receives the same resources. A type's version is the hash of its
// resources, so versions change only when content changes. refusals.go follows the
// gateways' NACKs so that the agent can report them.
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
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// group is the node hash: every gateway of the cluster gets the same snapshot.
const group = "cluster"

type constHash struct{}

func (constHash) ID(*corev3.Node) string { return group }

// Server is the agent's ADS server.
type Server struct {
	addr  string
	log   *slog.Logger
	cache cachev3.SnapshotCache
	// refused follows the gateways' NACKs.
	refused *refusals

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

// New returns a server for addr; it does no I/O.
func New(addr string, log *slog.Logger) *Server {
	return &Server{addr: addr, log: log, cache: cachev3.NewSnapshotCache(true, constHash{}, nil), refused: newRefusals(log)}
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
			kind, msg, err := translate.DecodeEnvoy(r)
			if errors.Is(err, translate.ErrNotEnvoyResource) {
				continue
			}
			if err != nil {
				return fmt.Errorf("xds resource %s: %w", r.Key, err)
			}
			d = decodedResource{kind, msg}
		}
		decoded[r.Hash] = d
		t := resourcev3.Type(translate.EnvoyTypeURL(d.kind))
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
	s.log.Info("xds resources updated", "version", snap.Version, "listeners", len(byType[resourcev3.ListenerType]), "clusters", len(byType[resourcev3.ClusterType]))
	return nil
}

// Refusals returns, per gateway (xDS node id), its latest refused response of a type it
// has not accepted since; a gateway's refusals end when it disconnects.
func (s *Server) Refusals() []Refusal { return s.refused.list() }

// Listen binds the address (":0" allowed) and returns the bound address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("xds listen on %s: %w", s.addr, err)
	}
	return ln, nil
}

// Start serves ADS on ln until ctx ends.
func (s *Server) Start(ctx context.Context, ln net.Listener) error {
	srv := serverv3.NewServer(ctx, s.cache, s.refused.callbacks())
	g := grpc.NewServer(grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	s.log.Info("xds listening", "address", ln.Addr().String())
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
