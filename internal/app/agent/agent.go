// Package agent is the composition root of `meshrelay agent`: discovery source, output sink,
// relay agent and admin endpoints.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/meshrelay/meshrelay/internal/admin"
	relayagent "github.com/meshrelay/meshrelay/internal/agent"
	"github.com/meshrelay/meshrelay/internal/discovery"
	"github.com/meshrelay/meshrelay/internal/sink"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/xds"
)

// Config is the agent's configuration; RegisterFlags binds it to flags.
type Config struct {
	Agent        relayagent.Config
	DiscoveryDir string
	OutputDir    string
	AdminAddress string
	XDSAddress   string
}

// RegisterFlags binds the configuration to flags with their defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	a := &c.Agent
	fs.StringVar(&a.Cluster, "cluster", "", "name of this workload cluster; a KubernetesCluster of this name must exist on the management server (required)")
	fs.StringVar(&a.RelayAddress, "relay-address", "", "host:port of the management server's relay endpoint; the host is re-resolved on every connection attempt and every --resolve-interval (required)")
	fs.StringVar(&a.TokenFile, "token-file", "", "file holding the relay identity token (or set MESHRELAY_TOKEN)")
	fs.StringVar(&a.RelayCAFile, "relay-ca-file", "", "PEM bundle of the relay CA that signed the server's certificate (the server writes it to <data-dir>/relay-ca.crt) (required)")
	fs.StringVar(&a.ServerName, "relay-server-name", "", "TLS server name to verify (default: the host of --relay-address)")
	fs.StringVar(&a.TLSMode, "relay-tls-mode", "mtls", "mtls or tls; must match the server")
	fs.StringVar(&a.StateDir, "state-dir", "", "directory for the agent's key, certificate and last applied output (required)")
	fs.DurationVar(&a.ResolveInterval, "resolve-interval", 10*time.Second, "how often the relay address is re-resolved while connected; the agent moves when its server is no longer in the answer")
	fs.StringVar(&a.DNSServer, "dns-server", "", "host:port of a DNS server to resolve the relay address with instead of the system resolver")
	fs.DurationVar(&a.MaxBackoff, "max-backoff", 15*time.Second, "upper bound of the reconnect backoff (exponential with full jitter)")
	fs.StringVar(&c.DiscoveryDir, "discovery-dir", "", "universal mode: directory of Kubernetes-shaped YAML (v1 Service, discovery.k8s.io/v1 EndpointSlice, meshrelay resources) describing this cluster (required)")
	fs.StringVar(&c.OutputDir, "output-dir", "", "directory that receives one YAML file per output resource, replaced atomically (required)")
	fs.StringVar(&c.XDSAddress, "xds-address", "127.0.0.1:18000", "address of the ADS (xDS) server the cluster's gateways connect to (plaintext gRPC; keep it on loopback or a private network); empty disables it")
	fs.StringVar(&c.AdminAddress, "admin-address", ":9977", "address of the agent's admin HTTP endpoint: /healthz, /readyz, /metrics, /status")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Agent.TokenFile == "" {
		c.Agent.Token = os.Getenv("MESHRELAY_TOKEN")
	}
	if err := c.Agent.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DiscoveryDir == "" {
		errs = append(errs, errors.New("--discovery-dir is required"))
	}
	if c.OutputDir == "" {
		errs = append(errs, errors.New("--output-dir is required"))
	}
	return errors.Join(errs...)
}

// Run starts the agent and blocks until ctx ends or a component fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	src := discovery.NewDir(cfg.DiscoveryDir, log.With("component", "discovery"))
	sinks := splitSink{files: sink.NewDir(cfg.OutputDir, log.With("component", "sink"))}
	var xdsServer *xds.Server
	var xdsLn net.Listener
	if cfg.XDSAddress != "" {
		xdsServer = xds.New(cfg.XDSAddress, log.With("component", "xds"))
		sinks.xds = xdsServer
		var err error
		if xdsLn, err = xdsServer.Listen(); err != nil {
			return err
		}
	}
	ag, err := relayagent.New(cfg.Agent, src, sinks, log.With("component", "agent"), reg)
	if err != nil {
		return err
	}
	adm := admin.New(cfg.AdminAddress, admin.Config{Ready: ag.Ready, Status: func() any {
		return struct {
			relayagent.Status
			DiscoveryErrors []string `json:"discoveryErrors,omitempty"`
		}{ag.Status(), src.Errors()}
	}, Gatherer: reg}, log.With("component", "admin"))
	if _, err := adm.Listen(); err != nil {
		return err
	}
	log.Info("agent starting", "cluster", cfg.Agent.Cluster, "relay", cfg.Agent.RelayAddress, "tlsMode", cfg.Agent.TLSMode,
		"discoveryDir", cfg.DiscoveryDir, "outputDir", cfg.OutputDir, "stateDir", cfg.Agent.StateDir)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Start(gctx) })
	if xdsServer != nil {
		g.Go(func() error { return xdsServer.Start(gctx, xdsLn) })
	}
	g.Go(func() error {
		if err := ag.Start(gctx); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// splitSink sends Envoy resources to the xDS server only and everything else
// (Kubernetes-shaped Istio resources) to the output directory: Envoy secrets hold private
// keys and are not Kubernetes objects.
type splitSink struct {
	files *sink.Dir
	xds   *xds.Server
}

func (s splitSink) Apply(ctx context.Context, snap *snapshot.Snapshot) error {
	kube := make(map[string]snapshot.Resource, len(snap.Resources))
	for k, r := range snap.Resources {
		if !strings.HasPrefix(k, "Envoy") {
			kube[k] = r
		}
	}
	if err := s.files.Apply(ctx, snapshot.FromMap(snap.Version, snap.Epoch, kube)); err != nil {
		return err
	}
	if s.xds != nil {
		return s.xds.Apply(ctx, snap)
	}
	return nil
}
