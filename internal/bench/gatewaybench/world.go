// Package gatewaybench is `meshrelay-bench health-failover` and `gateway`: seed 003's data
// plane in this process on loopback (world.go), the health-check failover and failback
// (health.go), and throughput and latency through the gateways (load.go).
package gatewaybench

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

	"golang.org/x/sync/errgroup"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/demo"
	"github.com/meshrelay/meshrelay/internal/demoapp"
	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/gateway"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/xds"
)

// Texts the demo apps answer.
const (
	blueText  = "blue-pod"
	greenText = "green-pod"
)

// gatewayWorldDescription says what the gateway benchmarks run.
const gatewayWorldDescription = "in-process: seed 003 translated by internal/translate and served by the agent's xDS server " +
	"(internal/xds) per cluster, gateways local and remote (internal/gateway), demo apps blue-pod and green-pod (internal/demoapp), loopback only"

// gatewayWorld is seed 003's data plane, all in this process on loopback: blue-pod in
// cluster local, green-pod in cluster remote, the translator's output for each cluster
// served by the agent's xDS server, local's
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
	proxyAddr, err := freeLoopback()
	if err != nil {
		return w, err
	}
	if w.remoteGWAddr, err = freeLoopback(); err != nil {
		return w, err
	}
	w.proxyURL = "http://" + proxyAddr + "/"

	outs, err := translateSeed003(hc, w.blueAddr, w.greenAddr, proxyAddr, w.remoteGWAddr, ca)
	if err != nil {
		return w, err
	}
	// Each cluster's gateway gets its Envoy resources from an ADS server of its own, as
	// from its agent: the agent's xDS server, fed the translator's output.
	xdsAddr := map[string]string{}
	for _, c := range []string{"local", "remote"} {
		srv := xds.New(xds.Config{Address: flagcheck.Endpoint{Network: "tcp", Address: "127.0.0.1:0"}}, log.With("xds", c))
		ln, err := srv.Listen()
		if err != nil {
			return w, err
		}
		g.Go(func() error { return srv.Start(gctx, ln) })
		if err := srv.Apply(gctx, snapshot.New(1, 0, outs[c])); err != nil {
			return w, fmt.Errorf("xds of %s: %w", c, err)
		}
		xdsAddr[c] = ln.Addr().String()
	}

	startGateway := func(node, cluster string) (*gateway.Gateway, error) {
		gw, err := gateway.New(gateway.Config{XDSAddress: xdsAddr[cluster], NodeID: node, NodeCluster: cluster,
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
	err = bench.WaitFor(gctx, 20*time.Second, 20*time.Millisecond, func() (bool, error) {
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

// Names the translator gives seed 003's resources.
const (
	seedBlueCluster = "default-service-blue-10000"
)

// gwHealthCheck is the active HTTP health check of the primary's upstream.
type gwHealthCheck struct {
	Interval, Timeout  time.Duration
	Unhealthy, Healthy uint32
}

// translateSeed003 translates seed 003's resources (the demo's, with the benchmark's
// health check and loopback addresses) and returns the outputs of clusters local and
// remote, with mesh identities issued by ca.
func translateSeed003(hc gwHealthCheck, blueAddr, greenAddr, proxyAddr, failoverAddr string, ca *pki.CA) (map[string][]snapshot.Resource, error) {
	port := func(addr string) (int, error) {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(p)
	}
	var ports [4]int
	for i, a := range []string{blueAddr, greenAddr, proxyAddr, failoverAddr} {
		p, err := port(a)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", a, err)
		}
		ports[i] = p
	}
	parse := func(source string, docs ...string) ([]resource.Object, error) {
		objs, errs := resource.Parse(source, []byte(strings.Join(docs, "---\n")))
		if len(errs) > 0 {
			return nil, fmt.Errorf("seed 003 %s: %w", source, errors.Join(errs...))
		}
		return objs, nil
	}
	config, err := parse("config", demo.ClustersYAML, demo.FailoverSchemeYAML)
	if err != nil {
		return nil, err
	}
	discovered := map[string][]string{
		"local": {demo.AppYAML("blue", blueText, ports[0]), demo.HealthCheckYAML(hc.Timeout, hc.Interval, hc.Unhealthy, hc.Healthy),
			demo.RouteYAML(ports[2])},
		"remote": {demo.AppYAML("green", greenText, ports[1]), demo.FailoverGatewayYAML(ports[3])},
	}
	in := translate.Input{Config: config, Inputs: map[string]*snapshot.Snapshot{}, Certs: map[string]translate.ClusterCert{}}
	for c, docs := range discovered {
		objs, err := parse(c, docs...)
		if err != nil {
			return nil, err
		}
		rs := make([]snapshot.Resource, len(objs))
		for i, o := range objs {
			rs[i] = o.Resource()
		}
		in.Inputs[c] = snapshot.New(1, 0, rs)
		cert, key, _, err := ca.IssueMesh(c, 24*time.Hour)
		if err != nil {
			return nil, fmt.Errorf("mesh identity of %s: %w", c, err)
		}
		in.Certs[c] = translate.ClusterCert{CertPEM: cert, KeyPEM: key, CAPEM: ca.CertPEM}
	}
	res := translate.NewTranslator().Translate(in)
	if len(res.Errors) > 0 {
		return nil, fmt.Errorf("translate seed 003: %s", strings.Join(res.Errors, "; "))
	}
	return res.Outputs, nil
}
