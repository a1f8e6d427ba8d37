package relaybench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/pki"
)

// The baseline: the same number of clients receiving the same per-client payload from
// go-control-plane's SnapshotCache over ADS (state of the world, mTLS), in a server process
// and a clients process like the relay benchmark's, timed the same way.

// BaselineOptions configure `meshrelay-bench baseline`.
type BaselineOptions struct {
	Clients int `json:"clients"`
	// PayloadBytes is what each client holds after the initial sync (serialized protobuf).
	PayloadBytes int `json:"payloadBytesPerClient"`
	// ChangeBytes is the size of the route configuration each change replaces, per client.
	ChangeBytes int `json:"changeBytesPerClient"`
	Changes     int `json:"changes"`
	// SyncTimeout bounds the initial sync; 0 picks one from the number of clients.
	SyncTimeout time.Duration `json:"syncTimeout"`
	// Quick shortens the fixed pauses (for tests).
	Quick bool `json:"quick,omitempty"`
	// ServerCPUs and ClientCPUs pin the two processes (taskset lists; empty: unpinned).
	ServerCPUs string    `json:"serverCPUs,omitempty"`
	ClientCPUs string    `json:"clientCPUs,omitempty"`
	Binary     string    `json:"-"`
	WorkDir    string    `json:"-"`
	Progress   io.Writer `json:"-"`
}

// BaselineReport is the result of `meshrelay-bench baseline`.
type BaselineReport struct {
	Options BaselineOptions `json:"options"`
	Machine bench.Machine   `json:"machine"`
	// Synced is from the clients' process start to each client holding every type.
	Synced           bench.Dist `json:"synced"`
	AllSyncedSeconds float64    `json:"allSyncedSeconds"`
	// Latency is from the first SetSnapshot of a change to each client receiving it.
	Latency   bench.Dist `json:"latency"`
	LastAgent bench.Dist `json:"lastClient"`
	// SetSnapshotMs is how long setting the N snapshots took, per change.
	SetSnapshotMs       float64         `json:"setSnapshotMsPerChange"`
	PayloadBytes        float64         `json:"payloadBytesPerClient"`
	ChangeBytes         float64         `json:"receivedBytesPerClientPerChange"`
	CPUSecondsPerChange float64         `json:"serverCPUSecondsPerChange"`
	Server              bench.ProcStats `json:"server"`
	Missing             int             `json:"missing"`
}

// BaselineServerConfig configures the hidden `meshrelay-bench baseline-server`.
type BaselineServerConfig struct {
	Listen, Control           string
	Clients                   int
	PayloadBytes, ChangeBytes int
	CertFile, KeyFile, CAFile string
}

// baselineShared are the resources every client shares and that never change: a
// listener, a cluster, and its assignment padded so that a client's whole payload is
// about payloadBytes.
type baselineShared struct {
	listener, cluster, assignment types.Resource
	changeBytes                   int
}

func newBaselineShared(payloadBytes, changeBytes int) *baselineShared {
	hcm := &hcmv3.HttpConnectionManager{StatPrefix: "http", RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
		RouteConfigName: "routes", ConfigSource: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}}
	hcmAny, _ := anypb.New(hcm)
	l := &listenerv3.Listener{Name: "http", Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny}}}}}}
	c := &clusterv3.Cluster{Name: "backend", ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "backend", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
	ep := func(i int) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: bench.IPAt("10.0.0.0", uint32(i)), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15443}}}}}}}
	}
	fixed := proto.Size(l) + proto.Size(c) + proto.Size(cla) + changeBytes
	if per := proto.Size(ep(1 << 20)); payloadBytes > fixed {
		for i := range (payloadBytes - fixed) / (per + 3) {
			cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, ep(i))
		}
	}
	return &baselineShared{listener: l, cluster: c, assignment: cla, changeBytes: changeBytes}
}

// snapshot is a client's snapshot: the shared resources and a route configuration of
// about changeBytes holding the marker host. Only the route version moves between
// changes (the others keep version "1"), so a change resends routes only.
func (b *baselineShared) snapshot(node, marker string) (*cachev3.Snapshot, error) {
	vh := &routev3.VirtualHost{Name: "bench", Domains: []string{sim.MarkerHost(marker)}, Routes: []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}},
	}}}
	rc := &routev3.RouteConfiguration{Name: "routes", VirtualHosts: []*routev3.VirtualHost{vh}}
	if deficit := b.changeBytes - proto.Size(rc); deficit > 0 {
		pad := "pad-0000-" + node + ".example.com"
		for i := range deficit / (len(pad) + 2) {
			vh.Domains = append(vh.Domains, fmt.Sprintf("pad-%04d-%s.example.com", i%10000, node))
		}
	}
	s, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {b.listener}, resourcev3.RouteType: {rc}, resourcev3.ClusterType: {b.cluster}, resourcev3.EndpointType: {b.assignment},
	})
	if err != nil {
		return nil, err
	}
	s.Resources[types.Route].Version = marker
	return s, nil
}

type nodeHash struct{}

func (nodeHash) ID(n *corev3.Node) string { return n.GetId() }

// RunBaselineServer serves ADS from a SnapshotCache until ctx ends; POST /set?marker=ID on
// the control address gives every client a new route configuration and answers the
// times the first and last SetSnapshot started and ended.
func RunBaselineServer(ctx context.Context, cfg BaselineServerConfig, log *slog.Logger) error {
	cache := cachev3.NewSnapshotCache(true, nodeHash{}, nil)
	shared := newBaselineShared(cfg.PayloadBytes, cfg.ChangeBytes)
	set := func(marker string) error {
		for i := range cfg.Clients {
			node := bench.ClusterName(i)
			s, err := shared.snapshot(node, marker)
			if err != nil {
				return err
			}
			if err := cache.SetSnapshot(ctx, node, s); err != nil {
				return err
			}
		}
		return nil
	}
	if err := set("initial"); err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return err
	}
	pool, err := certPool(cfg.CAFile)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, cache, nil))
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	ctl, err := net.Listen("tcp", cfg.Control)
	if err != nil {
		lis.Close()
		return err
	}
	var mu sync.Mutex // serializes changes
	mux := http.NewServeMux()
	mux.HandleFunc("POST /set", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		start := time.Now().UnixNano()
		if err := set(r.URL.Query().Get("marker")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		bench.ServeJSON(w, map[string]int64{"start": start, "end": time.Now().UnixNano()})
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil {
			return fmt.Errorf("baseline ads: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := hs.Serve(ctl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		gs.Stop()
		return hs.Close()
	})
	log.Info("baseline server listening", "ads", lis.Addr().String(), "control", ctl.Addr().String())
	return g.Wait()
}

func certPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no certificate", file)
	}
	return p, nil
}

// BaselineClientsConfig configures the hidden `meshrelay-bench baseline-clients`.
type BaselineClientsConfig struct {
	Server, Listen            string
	Clients                   int
	CertFile, KeyFile, CAFile string
}

// adsClient is one simulated xDS client; it records what it receives.
type adsClient struct {
	name string

	mu      sync.Mutex // guards everything below
	types   map[string]bool
	synced  int64
	bytes   int
	markers map[string]int64
}

var baselineTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

func (c *adsClient) run(ctx context.Context, conn *grpc.ClientConn) error {
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: c.name}
	for _, t := range baselineTypes {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
			return err
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		c.record(resp)
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(),
			ResponseNonce: resp.GetNonce()}); err != nil {
			return err
		}
	}
}

func (c *adsClient) record(resp *discoveryv3.DiscoveryResponse) {
	now := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.types[resp.GetTypeUrl()] = true
	if c.synced == 0 && len(c.types) == len(baselineTypes) {
		c.synced = now
	}
	prefix := []byte(sim.MarkerPrefix)
	for _, r := range resp.GetResources() {
		c.bytes += len(r.GetValue())
		body := r.GetValue()
		if i := bytes.Index(body, prefix); i >= 0 {
			rest := body[i+len(prefix):]
			if j := bytes.IndexByte(rest, '.'); j >= 0 {
				if id := string(rest[:j]); c.markers[id] == 0 {
					c.markers[id] = now
				}
			}
		}
	}
}

// RunBaselineClients runs the xDS clients until ctx ends, reporting over HTTP like the
// simulated agents (GET /agents, GET /markers?id=).
func RunBaselineClients(ctx context.Context, cfg BaselineClientsConfig, log *slog.Logger) error {
	bench.RaiseFileLimit()
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return err
	}
	pool, err := certPool(cfg.CAFile)
	if err != nil {
		return err
	}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost"}
	started := time.Now().UnixNano()
	clients := make([]*adsClient, cfg.Clients)
	for i := range clients {
		clients[i] = &adsClient{name: bench.ClusterName(i), types: map[string]bool{}, markers: map[string]int64{}}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /agents", func(w http.ResponseWriter, _ *http.Request) {
		out := make([]sim.AgentState, 0, len(clients))
		for _, c := range clients {
			c.mu.Lock()
			out = append(out, sim.AgentState{Name: c.name, Started: started, FirstApplied: c.synced, BytesReceived: c.bytes, Connected: c.synced > 0})
			c.mu.Unlock()
		}
		bench.ServeJSON(w, out)
	})
	mux.HandleFunc("GET /markers", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		out := map[string]int64{}
		for _, c := range clients {
			c.mu.Lock()
			if at := c.markers[id]; at > 0 {
				out[c.name] = at
			}
			c.mu.Unlock()
		}
		bench.ServeJSON(w, out)
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { <-gctx.Done(); return hs.Close() })
	for _, c := range clients {
		g.Go(func() error {
			conn, err := grpc.NewClient("passthrough:///"+cfg.Server, grpc.WithTransportCredentials(credentials.NewTLS(tcfg)),
				grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
			if err != nil {
				return err
			}
			defer conn.Close()
			for gctx.Err() == nil {
				if err := c.run(gctx, conn); err != nil && gctx.Err() == nil {
					log.Warn("ads stream ended; retrying", "client", c.name, "error", err)
					select {
					case <-gctx.Done():
					case <-time.After(500 * time.Millisecond):
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// baselineCerts writes a CA, a server certificate for localhost and one client
// certificate into dir.
func baselineCerts(dir string) (ca, cert, key, ccert, ckey string, err error) {
	c, err := pki.NewCA("bench.meshrelay.local", 24*time.Hour)
	if err != nil {
		return
	}
	_, certPEM, keyPEM, err := c.IssueServer([]string{"localhost", "127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return
	}
	k, err := pki.NewKey()
	if err != nil {
		return
	}
	csr, err := pki.NewCSR(k, "baseline")
	if err != nil {
		return
	}
	ccPEM, _, err := c.SignClusterCSR(csr, "baseline", 24*time.Hour)
	if err != nil {
		return
	}
	ckPEM, err := pki.KeyPEM(k)
	if err != nil {
		return
	}
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	ccert, ckey = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	for f, b := range map[string][]byte{ca: c.CertPEM, cert: certPEM, key: keyPEM, ccert: ccPEM, ckey: ckPEM} {
		if err = os.WriteFile(f, b, 0o600); err != nil {
			return
		}
	}
	return
}

// Baseline runs the go-control-plane baseline.
func Baseline(ctx context.Context, o BaselineOptions) (*BaselineReport, error) {
	if o.Clients < 1 {
		return nil, errors.New("--clients must be at least 1")
	}
	if o.Changes < 1 {
		o.Changes = 1
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = 2*time.Minute + time.Duration(o.Clients)*100*time.Millisecond
	}
	dir, cleanup, err := bench.PrepareRun(&o.Binary, o.WorkDir, "baseline")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	bench.RaiseFileLimit()
	rep := &BaselineReport{Options: o, Machine: bench.ThisMachine()}
	logf := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s  baseline: "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		}
	}
	p := bench.NewProcs(o.Binary, dir)
	defer p.StopAll()
	ca, cert, key, ccert, ckey, err := baselineCerts(dir)
	if err != nil {
		return nil, fmt.Errorf("baseline certificates: %w", err)
	}
	ads, err := bench.Loopback()
	if err != nil {
		return nil, err
	}
	ctl, err := bench.Loopback()
	if err != nil {
		return nil, err
	}
	api, err := bench.Loopback()
	if err != nil {
		return nil, err
	}
	srv, err := p.StartOn(o.ServerCPUs, "baseline-server", "baseline-server", "--listen", ads, "--control", ctl, "--clients", strconv.Itoa(o.Clients),
		"--payload-bytes", strconv.Itoa(o.PayloadBytes), "--change-bytes", strconv.Itoa(o.ChangeBytes),
		"--cert-file", cert, "--key-file", key, "--ca-file", ca, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := bench.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		if srv.Exited() {
			return false, fmt.Errorf("baseline server exited: %s", bench.LogTail(srv, 2000))
		}
		c, err := net.DialTimeout("tcp", ads, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, err
	}); err != nil {
		return nil, err
	}
	cl, err := p.StartOn(o.ClientCPUs, "baseline-clients", "baseline-clients", "--server", ads, "--listen", api, "--clients", strconv.Itoa(o.Clients),
		"--cert-file", ccert, "--key-file", ckey, "--ca-file", ca, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	alive := func() error {
		if srv.Exited() {
			return fmt.Errorf("baseline server exited: %s", bench.LogTail(srv, 2000))
		}
		if cl.Exited() {
			return fmt.Errorf("baseline clients exited: %s", bench.LogTail(cl, 2000))
		}
		return nil
	}
	var last []sim.AgentState
	err = bench.WaitFor(ctx, o.SyncTimeout, 200*time.Millisecond, func() (bool, error) {
		if err := alive(); err != nil {
			return false, err
		}
		last = nil
		if err := bench.GetJSON(ctx, "http://"+api+"/agents", &last); err != nil {
			return false, err
		}
		n := 0
		for _, a := range last {
			if a.FirstApplied > 0 {
				n++
			}
		}
		return n == o.Clients, nil
	})
	if err != nil {
		return rep, fmt.Errorf("baseline initial sync: %w", err)
	}
	var synced []float64
	var maxAt int64
	bytes := 0
	for _, a := range last {
		synced = append(synced, float64(a.FirstApplied-a.Started)/1e6)
		maxAt = max(maxAt, a.FirstApplied)
		bytes += a.BytesReceived
	}
	rep.Synced = bench.NewDist(synced)
	rep.AllSyncedSeconds = float64(maxAt-last[0].Started) / 1e9
	rep.PayloadBytes = float64(bytes) / float64(o.Clients)
	logf("%d clients synced in %.2f s (%s each)", o.Clients, rep.AllSyncedSeconds, bench.MiB(rep.PayloadBytes))
	if !o.Quick {
		time.Sleep(2 * time.Second)
	}
	var lat, lastLat []float64
	var setMs, cpu float64
	for k := 1; k <= o.Changes; k++ {
		id := fmt.Sprintf("b%d", k)
		ps0, _ := bench.ReadProcStats(srv.Pid())
		var times struct{ Start, End int64 }
		if err := bench.PostJSON(ctx, "http://"+ctl+"/set?marker="+id, nil, &times); err != nil {
			return rep, err
		}
		var got map[string]int64
		err := bench.WaitFor(ctx, 2*time.Minute, 20*time.Millisecond, func() (bool, error) {
			if err := alive(); err != nil {
				return false, err
			}
			got = nil
			if err := bench.GetJSON(ctx, "http://"+api+"/markers?id="+id, &got); err != nil {
				return false, err
			}
			return len(got) == o.Clients, nil
		})
		if err != nil {
			rep.Missing += o.Clients - len(got)
		}
		ps1, _ := bench.ReadProcStats(srv.Pid())
		cpu += ps1.CPUSeconds - ps0.CPUSeconds
		setMs += float64(times.End-times.Start) / 1e6
		worst := 0.0
		for _, at := range got {
			l := float64(at-times.Start) / 1e6
			lat = append(lat, l)
			worst = max(worst, l)
		}
		lastLat = append(lastLat, worst)
		logf("change %d/%d: last client %s", k, o.Changes, bench.Ms(worst))
		time.Sleep(300 * time.Millisecond)
	}
	var after []sim.AgentState
	if err := bench.GetJSON(ctx, "http://"+api+"/agents", &after); err == nil {
		b := 0
		for _, a := range after {
			b += a.BytesReceived
		}
		rep.ChangeBytes = (float64(b) - float64(bytes)) / float64(o.Clients) / float64(o.Changes)
	}
	rep.Latency, rep.LastAgent = bench.NewDist(lat), bench.NewDist(lastLat)
	rep.SetSnapshotMs, rep.CPUSecondsPerChange = setMs/float64(o.Changes), cpu/float64(o.Changes)
	rep.Server, _ = bench.ReadProcStats(srv.Pid())
	return rep, nil
}

// Flags registers the baseline benchmark's flags with their defaults.
func (o *BaselineOptions) Flags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Clients, "clients", 100, "number of xDS clients")
	fs.IntVar(&o.PayloadBytes, "payload-bytes", 32<<10, "bytes each client holds after the initial sync")
	fs.IntVar(&o.ChangeBytes, "change-bytes", 2<<10, "bytes of the route configuration each change replaces")
	fs.IntVar(&o.Changes, "changes", 10, "changes to measure")
	fs.StringVar(&o.WorkDir, "dir", "", "working directory (default: a temporary directory removed at exit)")
}

// Flags registers the baseline server's flags with their defaults.
func (c *BaselineServerConfig) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "ADS address")
	fs.StringVar(&c.Control, "control", "127.0.0.1:0", "control HTTP address")
	fs.IntVar(&c.Clients, "clients", 100, "number of clients (node ids c000…)")
	fs.IntVar(&c.PayloadBytes, "payload-bytes", 32<<10, "bytes per client")
	fs.IntVar(&c.ChangeBytes, "change-bytes", 2<<10, "bytes of the changing route configuration")
	fs.StringVar(&c.CertFile, "cert-file", "", "server certificate")
	fs.StringVar(&c.KeyFile, "key-file", "", "server key")
	fs.StringVar(&c.CAFile, "ca-file", "", "CA of the client certificates")
}

// Flags registers the baseline clients' flags with their defaults.
func (c *BaselineClientsConfig) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Server, "server", "", "ADS server address")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address of the report API")
	fs.IntVar(&c.Clients, "clients", 100, "number of clients")
	fs.StringVar(&c.CertFile, "cert-file", "", "client certificate")
	fs.StringVar(&c.KeyFile, "key-file", "", "client key")
	fs.StringVar(&c.CAFile, "ca-file", "", "CA of the server certificate")
}
