// Package gatewaytest has helpers for gateway tests: an ADS server built from
// go-control-plane's SnapshotCache, builders of the Envoy resources meshrelay's translator
// renders (same names and shapes as internal/translate/render_envoy.go), certificates, and
// running gateways and demo apps under a test.
package gatewaytest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// XDS is an ADS server on loopback serving SnapshotCache snapshots (ADS mode, as the relay
// agent's). Each type's version is the hash of its resources, like the agent's.
type XDS struct {
	Addr  string
	cache cachev3.SnapshotCache

	mu    sync.Mutex // guards nacks, acks
	nacks []string
	acks  map[string]map[string]string // node → type → acked version

	stop func()
}

// StartXDS serves ADS on addr ("127.0.0.1:0" for any port) until Stop or the test's end.
func StartXDS(t testing.TB, addr string) *XDS {
	t.Helper()
	return StartXDSWithCache(t, addr, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil))
}

// StartXDSWithCache serves an existing cache (to restart a server with its state).
func StartXDSWithCache(t testing.TB, addr string, cache cachev3.SnapshotCache) *XDS {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("xds listen: %v", err)
	}
	x := &XDS{Addr: ln.Addr().String(), cache: cache, acks: map[string]map[string]string{}}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
		x.mu.Lock()
		defer x.mu.Unlock()
		if req.GetErrorDetail() != nil {
			x.nacks = append(x.nacks, req.GetErrorDetail().GetMessage())
			return nil
		}
		if req.GetResponseNonce() != "" {
			n := req.GetNode().GetId()
			if x.acks[n] == nil {
				x.acks[n] = map[string]string{}
			}
			x.acks[n][req.GetTypeUrl()] = req.GetVersionInfo()
		}
		return nil
	}}
	srv := serverv3.NewServer(ctx, cache, cb)
	g := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(ln)
	}()
	var once sync.Once
	x.stop = func() {
		once.Do(func() {
			g.Stop()
			cancel()
			<-done
		})
	}
	t.Cleanup(x.stop)
	return x
}

// Stop stops the server, closing every stream (the cache is kept: see Cache).
func (x *XDS) Stop() { x.stop() }

// Cache returns the snapshot cache, to serve it again from a new server.
func (x *XDS) Cache() cachev3.SnapshotCache { return x.cache }

// Set serves resources to node; every type of the five is set (empty when none given).
func (x *XDS) Set(t testing.TB, node string, resources ...types.Resource) {
	t.Helper()
	byType := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: nil, resourcev3.RouteType: nil, resourcev3.ClusterType: nil,
		resourcev3.EndpointType: nil, resourcev3.SecretType: nil,
	}
	for _, r := range resources {
		typ := resourcev3.APITypePrefix + string(proto.MessageName(r))
		byType[typ] = append(byType[typ], r)
	}
	snap, err := cachev3.NewSnapshot("", byType)
	if err != nil {
		t.Fatalf("xds snapshot: %v", err)
	}
	for typ, rs := range byType {
		snap.Resources[cachev3.GetResponseType(typ)].Version = Version(rs)
	}
	if err := x.cache.SetSnapshot(t.Context(), node, snap); err != nil {
		t.Fatalf("xds set snapshot: %v", err)
	}
}

// Version is the content version Set gives a type's resources.
func Version(rs []types.Resource) string {
	var sums []string
	for _, r := range rs {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		s := sha256.Sum256(b)
		sums = append(sums, string(s[:]))
	}
	sort.Strings(sums)
	h := sha256.New()
	for _, s := range sums {
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// Nacks returns the error messages of every NACK received.
func (x *XDS) Nacks() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.nacks...)
}

// Acked returns the version node last acknowledged for a type.
func (x *XDS) Acked(node, typeURL string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.acks[node][typeURL]
}

// WaitAcked waits until node acknowledged the version of resources of typeURL.
func (x *XDS) WaitAcked(t testing.TB, node, typeURL string, rs ...types.Resource) {
	t.Helper()
	want := Version(rs)
	// A generous deadline: a 200,000-endpoint update takes the gateway tens of seconds
	// under -race on two busy cores.
	Eventually(t, time.Minute, func() error {
		if got := x.Acked(node, typeURL); got != want {
			return errors.New("node " + node + " acked " + typeURL + " version " + got + ", want " + want)
		}
		return nil
	})
}

// SetAndWait serves resources to node and waits until the node acknowledged every type
// (route configurations and load assignments only when some are served: they are
// requested by name).
func (x *XDS) SetAndWait(t testing.TB, node string, resources ...types.Resource) {
	t.Helper()
	x.Set(t, node, resources...)
	byType := map[string][]types.Resource{}
	for _, r := range resources {
		typ := resourcev3.APITypePrefix + string(proto.MessageName(r))
		byType[typ] = append(byType[typ], r)
	}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType} {
		if len(byType[typ]) == 0 && (typ == resourcev3.RouteType || typ == resourcev3.EndpointType) {
			continue
		}
		x.WaitAcked(t, node, typ, byType[typ]...)
	}
}
