package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meshrelay/meshrelay/internal/demoapp"
	"github.com/meshrelay/meshrelay/internal/gateway"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/proc"
)

// Texts the demo apps answer.
const (
	blueText  = "blue-pod"
	greenText = "green-pod"
)

// gatewayWorldDescription says what the gateway benchmarks run.
const gatewayWorldDescription = "in-process: ADS server (go-control-plane SnapshotCache), gateways local and remote " +
	"(internal/gateway), demo apps blue-pod and green-pod (internal/demoapp), loopback only"

// gatewayWorld is seed 003's data plane, all in this process on loopback: blue-pod in
// cluster local, green-pod in cluster remote, an ADS server serving both gateways, local's
// gateway-proxy HTTP listener routing to default-service-blue-10000 (priority 0 blue-pod
// with an active health check on /health; priority 1 remote's failover gateway over mTLS
// with SNI default-service-green-10000), and remote's failover gateway forwarding that SNI
// to green-pod.
type gatewayWorld struct {
	blue, green         *demoapp.Server
	blueAddr, greenAddr string
	remoteGWAddr        string
	local, remote       *gateway.Gateway
	proxyURL            string // local's gateway-proxy listener

	cancel context.CancelFunc
	group  *errgroup.Group
}

// startGatewayWorld starts everything and waits until local's gateway-proxy answers
// blue-pod and its failover endpoint is healthy. stop ends it.
func startGatewayWorld(ctx context.Context, hc gwHealthCheck, log *slog.Logger) (w *gatewayWorld, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(rctx)
	w = &gatewayWorld{cancel: cancel, group: g}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.stop())
			w = nil
		}
	}()

	ads, err := listenADS()
	if err != nil {
		return w, err
	}
	g.Go(func() error { return ads.Start(gctx) })

	startApp := func(text string) (*demoapp.Server, string, error) {
		app, err := demoapp.New(demoapp.Config{Text: text, BindAddress: "127.0.0.1"}, log.With("app", text))
		if err != nil {
			return nil, "", err
		}
		g.Go(func() error { return app.Start(gctx) })
		actx, acancel := context.WithTimeout(gctx, 5*time.Second)
		defer acancel()
		addr, _, err := app.Addresses(actx)
		if err != nil {
			return nil, "", fmt.Errorf("demo app %s: %w", text, err)
		}
		return app, addr, nil
	}
	if w.blue, w.blueAddr, err = startApp(blueText); err != nil {
		return w, err
	}
	if w.green, w.greenAddr, err = startApp(greenText); err != nil {
		return w, err
	}

	ca, err := pki.NewCA("bench.meshrelay", 24*time.Hour)
	if err != nil {
		return w, fmt.Errorf("mesh ca: %w", err)
	}
	localCert, localKey, _, err := ca.IssueMesh("local", 24*time.Hour)
	if err != nil {
		return w, fmt.Errorf("mesh identity of local: %w", err)
	}
	remoteCert, remoteKey, _, err := ca.IssueMesh("remote", 24*time.Hour)
	if err != nil {
		return w, fmt.Errorf("mesh identity of remote: %w", err)
	}
	proxyAddr, err := freeLoopback()
	if err != nil {
		return w, err
	}
	if w.remoteGWAddr, err = freeLoopback(); err != nil {
		return w, err
	}
	w.proxyURL = "http://" + proxyAddr + "/"

	var p packer
	listener, routes := p.httpGateway(seedProxy, proxyAddr, seedBlueCluster)
	local := []types.Resource{listener, routes,
		p.failoverCluster(seedBlueCluster, hc, seedGreenCluster),
		p.loadAssignment(seedBlueCluster, []gwEndpoint{{addr: w.blueAddr}}, []gwEndpoint{{addr: w.remoteGWAddr, sni: seedGreenCluster}}),
	}
	remote := []types.Resource{p.failoverGateway(w.remoteGWAddr, seedGreenCluster),
		edsCluster(seedGreenCluster), p.loadAssignment(seedGreenCluster, []gwEndpoint{{addr: w.greenAddr}}),
	}
	for _, s := range meshSecrets(localCert, localKey, ca.CertPEM) {
		local = append(local, s)
	}
	for _, s := range meshSecrets(remoteCert, remoteKey, ca.CertPEM) {
		remote = append(remote, s)
	}
	if p.err != nil {
		return w, p.err
	}
	if err := ads.set(gctx, "local-gateway", local); err != nil {
		return w, err
	}
	if err := ads.set(gctx, "remote-gateway", remote); err != nil {
		return w, err
	}

	startGateway := func(node, cluster string) (*gateway.Gateway, error) {
		gw, err := gateway.New(gateway.Config{XDSAddress: ads.addr(), NodeID: node, NodeCluster: cluster,
			DrainTimeout: 2 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}, log.With("gateway", node))
		if err != nil {
			return nil, err
		}
		g.Go(func() error { return gw.Start(gctx) })
		return gw, nil
	}
	if w.remote, err = startGateway("remote-gateway", "remote"); err != nil {
		return w, err
	}
	if w.local, err = startGateway("local-gateway", "local"); err != nil {
		return w, err
	}

	c := &http.Client{Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	err = waitFor(gctx, 20*time.Second, 20*time.Millisecond, func() (bool, error) {
		body, err := getBody(c, w.proxyURL)
		if err != nil {
			return false, err
		}
		if body != blueText {
			return false, fmt.Errorf("gateway-proxy answered %q, want %q", body, blueText)
		}
		if e, ok := w.endpoint(w.remoteGWAddr); !ok || e.Health != "healthy" {
			return false, fmt.Errorf("failover endpoint %s: %+v", w.remoteGWAddr, e)
		}
		return true, nil
	})
	if err != nil {
		return w, fmt.Errorf("gateways not serving: %w (%s)", err, w.diagnosis())
	}
	return w, nil
}

// stop ends every component and waits for them.
func (w *gatewayWorld) stop() error {
	w.cancel()
	if err := w.group.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// cluster returns the status of local's default-service-blue-10000.
func (w *gatewayWorld) cluster() (gateway.ClusterStatus, bool) {
	for _, c := range w.local.Status().Clusters {
		if c.Name == seedBlueCluster {
			return c, true
		}
	}
	return gateway.ClusterStatus{}, false
}

// endpoint returns the status of an endpoint of local's default-service-blue-10000.
func (w *gatewayWorld) endpoint(addr string) (gateway.EndpointStatus, bool) {
	c, _ := w.cluster()
	for _, e := range c.Endpoints {
		if e.Address == addr {
			return e, true
		}
	}
	return gateway.EndpointStatus{}, false
}

// diagnosis summarizes what both gateways report, for errors.
func (w *gatewayWorld) diagnosis() string {
	var parts []string
	for _, gw := range []*gateway.Gateway{w.local, w.remote} {
		if gw == nil {
			continue
		}
		st := gw.Status()
		parts = append(parts, fmt.Sprintf("%s: ready=%v xds connected=%v lastError=%q lastNack=%q", st.NodeID, st.Ready, st.XDS.Connected, st.XDS.LastError, st.XDS.LastNack))
		for _, l := range st.Listeners {
			if l.Error != "" {
				parts = append(parts, fmt.Sprintf("%s: listener %s: %s", st.NodeID, l.Name, l.Error))
			}
		}
	}
	return strings.Join(parts, "; ")
}

// getBody GETs url and returns the trimmed body of a 200 answer.
func getBody(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

// loadAverage is the 1-minute load average (0 when unknown): a benchmark on a busy
// machine measures the machine.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func freeLoopback() (string, error) {
	p, err := proc.FreePort()
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// adsServer serves go-control-plane's SnapshotCache over ADS on loopback (plaintext, as
// the relay agent's xDS server).
type adsServer struct {
	ln    net.Listener
	cache cachev3.SnapshotCache
}

func listenADS() (*adsServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ads listen: %w", err)
	}
	return &adsServer{ln: ln, cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}, nil
}

func (a *adsServer) addr() string { return a.ln.Addr().String() }

// Start serves until ctx ends.
func (a *adsServer) Start(ctx context.Context) error {
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, a.cache, nil))
	done := make(chan error, 1)
	go func() { done <- gs.Serve(a.ln) }()
	select {
	case <-ctx.Done():
		gs.Stop()
		<-done
		return nil
	case err := <-done:
		return fmt.Errorf("ads serve: %w", err)
	}
}

// set serves resources to node as one consistent snapshot.
func (a *adsServer) set(ctx context.Context, node string, resources []types.Resource) error {
	byType := map[resourcev3.Type][]types.Resource{}
	for _, r := range resources {
		typ := resourcev3.APITypePrefix + string(proto.MessageName(r))
		byType[typ] = append(byType[typ], r)
	}
	snap, err := cachev3.NewSnapshot("1", byType)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", node, err)
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("snapshot of %s: %w", node, err)
	}
	if err := a.cache.SetSnapshot(ctx, node, snap); err != nil {
		return fmt.Errorf("snapshot of %s: %w", node, err)
	}
	return nil
}
