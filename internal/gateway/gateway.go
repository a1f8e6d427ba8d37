package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/telemetry"
)

// ErrNotReady is returned by Ready until listeners and clusters have been received.
var ErrNotReady = errors.New("no configuration received yet")

// Gateway is the data plane: an xDS client serving the configuration it receives.
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	metrics   *metrics
	secrets   *secretStore
	xdsTLS    *xdsTLS // nil without --xds-tls-cert-file; set before the admin API serves
	tasks     *tasks
	clusters  *clusterManager
	listeners *listenerManager
	store     *configStore
	xds       *xdsClient
	otlp      *telemetry.Exporter

	adminReady chan struct{} // closed once the admin server is bound or Start failed before
	adminOnce  sync.Once
	adminMu    sync.Mutex // guards adminAddr
	adminAddr  string
}

// New validates cfg and builds a gateway; it does no I/O.
func New(cfg Config, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	cfg = cfg.withDefaults()
	g := &Gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry(), secrets: &secretStore{}, tasks: newTasks(), adminReady: make(chan struct{})}
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.metrics = newMetrics(g.reg, func() []*upstream { return g.clusters.list() })
	g.clusters = newClusterManager(log.With("component", "clusters"), g.metrics, g.secrets, g.tasks)
	g.listeners = &listenerManager{log: log.With("component", "listeners"), metrics: g.metrics, clusters: g.clusters, secrets: g.secrets,
		tasks: g.tasks, drainTimeout: cfg.DrainTimeout, active: map[string]*activeListener{}, bindErrors: map[string]string{}}
	g.store = newConfigStore(g.clusters, g.listeners, g.secrets)
	g.listeners.proxy = newHTTPProxy(g.clusters, g.store.route, g.metrics, log.With("component", "http"))
	node := &corev3.Node{Id: cfg.NodeID, Cluster: cfg.NodeCluster, UserAgentName: "meshrelay-gateway"}
	g.xds = newXDSClient(cfg.XDSAddress, node, g.store, g.metrics, log.With("component", "xds"), cfg.MinBackoff, cfg.MaxBackoff)
	var err error
	attrs := []attribute.KeyValue{attribute.String("meshrelay.cluster", cfg.Cluster), attribute.String("service.instance.id", cfg.NodeID)}
	if g.otlp, err = telemetry.New(cfg.Telemetry, "meshrelay-gateway", attrs, g.reg, log.With("component", "otlp")); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	return g, nil
}

// Start runs the gateway until ctx ends: the admin server, the xDS stream and everything
// the configuration asks for. At the end, listeners drain (up to the drain timeout) and
// every goroutine is waited for.
func (g *Gateway) Start(ctx context.Context) error {
	g.log.Info("gateway starting", "xdsAddress", g.cfg.XDSAddress, "nodeId", g.cfg.NodeID, "cluster", g.cfg.Cluster, "xdsTLS", g.cfg.tls(),
		"adminAddress", g.cfg.AdminAddress, "drainTimeout", g.cfg.DrainTimeout)
	defer g.adminOnce.Do(func() { close(g.adminReady) })
	var adm *admin.Server
	if g.cfg.AdminAddress != "" {
		adm = admin.New(g.cfg.AdminAddress, admin.Config{Ready: g.Ready, Status: func() any { return g.Status() }, Gatherer: g.reg, Version: g.cfg.Version},
			g.log.With("component", "admin"))
		addr, err := adm.Listen()
		if err != nil {
			return err
		}
		g.adminMu.Lock()
		g.adminAddr = addr
		g.adminMu.Unlock()
	}
	g.adminOnce.Do(func() { close(g.adminReady) })
	if g.cfg.tls() {
		x, err := loadXDSTLS(g.cfg, g.meshTrust, g.metrics.xdsServerRefused, g.log.With("component", "xds"))
		if err != nil {
			return err
		}
		g.xds.creds = credentials.NewTLS(x.config())
		g.xdsTLS = x
		g.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metricPrefix + "xds_certificate_expiry_timestamp_seconds",
			Help: "When the gateway's xDS client certificate (--xds-tls-cert-file) expires, Unix seconds: run `meshrelay gateway issue-cert` again before."},
			func() float64 { return float64(x.pair.NotAfter().Unix()) }))
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.tasks.bind(rctx)
	eg, ectx := errgroup.WithContext(rctx)
	if adm != nil {
		eg.Go(func() error { return adm.Start(ectx) })
	}
	eg.Go(func() error { return g.xds.Start(ectx) })
	eg.Go(func() error { return g.otlp.Start(ectx) })
	err := eg.Wait()
	cancel()
	// The xDS stream has ended: nothing changes the configuration any more.
	g.listeners.shutdown()
	g.tasks.wait()
	g.clusters.shutdown()
	g.log.Info("gateway stopped")
	return err
}

// Ready returns nil once listeners and clusters have been received.
func (g *Gateway) Ready() error {
	if !g.store.ready() {
		return ErrNotReady
	}
	return nil
}

// AdminAddress waits until the admin server is bound (or Start failed before) and returns
// its address ("" when disabled).
func (g *Gateway) AdminAddress(ctx context.Context) (string, error) {
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-g.adminReady:
	}
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	return g.adminAddr, nil
}

// Status returns the gateway's current state.
func (g *Gateway) Status() Status {
	st := Status{NodeID: g.cfg.NodeID, Ready: g.Ready() == nil, XDS: g.xds.snapshot(), Listeners: g.listeners.status(),
		Secrets: g.store.secretStatus()}
	if g.xdsTLS != nil {
		st.XDS.CertificateNotAfter = g.xdsTLS.pair.NotAfter()
	}
	for _, u := range g.clusters.list() {
		st.Clusters = append(st.Clusters, u.status())
	}
	if st.Listeners == nil {
		st.Listeners = []ListenerStatus{}
	}
	if st.Clusters == nil {
		st.Clusters = []ClusterStatus{}
	}
	return st
}

// meshCASecret is the Secret in which the agent serves the mesh CA bundle (translation's
// name for it).
const meshCASecret = "meshrelay-mesh-ca"

// meshTrust is the mesh CA bundle of the configuration in service, nil before there is one.
func (g *Gateway) meshTrust() *x509.CertPool {
	if sec := g.secrets.get(meshCASecret); sec != nil {
		return sec.ca
	}
	return nil
}
