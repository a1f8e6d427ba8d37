// Package agent is the composition root of `meshrelay agent`: discovery source, output sink,
// relay agent and admin endpoints.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/meshrelay/meshrelay/internal/admin"
	relayagent "github.com/meshrelay/meshrelay/internal/agent"
	"github.com/meshrelay/meshrelay/internal/discovery"
	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/kubeconfig"
	"github.com/meshrelay/meshrelay/internal/kubelease"
	"github.com/meshrelay/meshrelay/internal/runner"
	"github.com/meshrelay/meshrelay/internal/sink"
	"github.com/meshrelay/meshrelay/internal/telemetry"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
	"github.com/meshrelay/meshrelay/internal/xds"
)

// Config is the agent's configuration; RegisterFlags binds it to flags.
type Config struct {
	Agent        relayagent.Config
	DiscoveryDir string
	OutputDir    string
	AdminAddress string
	// XDSAddress is where the xDS server listens (DefaultXDSAddress: a socket in the state
	// directory); empty disables it. XDSTLS turns mutual TLS on.
	XDSAddress string
	XDSTLS     bool
	Kube       KubeConfig
	Leader     LeaderConfig
	// Telemetry exports the agent's metrics and its apply spans over OTLP (--otlp-endpoint).
	Telemetry telemetry.Config
}

// LeaderConfig configures leader election among the agent replicas of one cluster.
type LeaderConfig struct {
	// Enabled turns leader election on (--leader-election).
	Enabled bool
	// Lease is NAMESPACE/NAME of the coordination.k8s.io Lease; empty means
	// $POD_NAMESPACE (else meshrelay-system) / meshrelay-agent-<cluster>.
	Lease string
	// Identity is this replica's holder identity; empty means $POD_NAME, else host and pid.
	Identity string
	// Duration is the lease duration.
	Duration time.Duration
}

// KubeConfig configures Kubernetes mode: discovery through the API server's informers and the
// server-side apply sink for Istio resources.
type KubeConfig struct {
	// Enabled turns Kubernetes mode on (--kubernetes).
	Enabled bool
	// Kubeconfig and Context select the API server; when both are empty the config comes from
	// $KUBECONFIG, else the in-cluster service account, else ~/.kube/config.
	Kubeconfig string
	Context    string
	// Namespaces limits discovery; empty means every namespace.
	Namespaces []string
	// MaxDeleteFraction and MinGuardedDeletions configure the sink's deletion guard.
	MaxDeleteFraction   float64
	MinGuardedDeletions int
	// Resync is how often the sink re-applies the last output to repair drift; 0 disables it.
	Resync time.Duration
}

// RegisterFlags binds the configuration to flags with their defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	a := &c.Agent
	fs.StringVar(&a.Cluster, "cluster", "", "name of this workload cluster; a KubernetesCluster of this name must exist on the management server (required)")
	a.RegisterRelayFlags(fs)
	fs.StringVar(&a.StateDir, "state-dir", "", "directory for the agent's key, certificate and last applied output (required)")
	fs.StringVar(&c.DiscoveryDir, "discovery-dir", "", "universal mode: directory of Kubernetes-shaped YAML (v1 Service, discovery.k8s.io/v1 EndpointSlice, meshrelay resources) describing this cluster (required without --kubernetes)")
	fs.StringVar(&c.OutputDir, "output-dir", "", "directory that receives one YAML file per output resource, replaced atomically (required without --kubernetes; optional with it, e.g. for inspection)")
	k := &c.Kube
	fs.BoolVar(&k.Enabled, "kubernetes", false, "Kubernetes mode: discover v1 Services and discovery.k8s.io/v1 EndpointSlices through the API server (instead of --discovery-dir; an endpoint without a zone takes its node's topology.kubernetes.io/zone label) and apply the output's Istio resources (ServiceEntry, DestinationRule, VirtualService, Gateway) with server-side apply under field manager "+sink.FieldManager+", labelled "+sink.LabelManagedBy+"="+sink.ManagedBy+" and "+sink.LabelCluster+"=<cluster>; only objects the agent created are ever changed or pruned")
	fs.StringVar(&k.Kubeconfig, "kubeconfig", "", "Kubernetes mode: kubeconfig file of the workload cluster (default: $KUBECONFIG, else the in-cluster service account, else ~/.kube/config)")
	fs.StringVar(&k.Context, "kube-context", "", "Kubernetes mode: kubeconfig context to use (default: the kubeconfig's current context)")
	fs.StringSliceVar(&k.Namespaces, "kube-namespaces", nil, "Kubernetes mode: discover Services and EndpointSlices only in these namespaces (comma-separated; default: all namespaces)")
	fs.Float64Var(&k.MaxDeleteFraction, "max-delete-fraction", sink.DefaultMaxDeleteFraction, "Kubernetes mode: deletion guard: an output that would delete more than this share (0 to 1) of the Istio objects the agent owns in one step, and at least --delete-guard-min of them, is held back (nothing of it is written and the agent refuses it) unless its epoch is newer than that of the last applied output (only 'meshrelay switch-active' moves the epoch); shown in /status (kubeSink.deletionGuard), by the metrics meshrelay_sink_deletion_guard_active and meshrelay_sink_deletions_refused_total, and by 'meshrelay check' as the cluster's refusal; 1 turns the guard off")
	fs.IntVar(&k.MinGuardedDeletions, "delete-guard-min", sink.DefaultMinGuardedDeletions, "Kubernetes mode: a step deleting fewer objects than this is never held back by the deletion guard (so removing the only object of a small cluster goes through)")
	fs.DurationVar(&k.Resync, "kube-resync", sink.DefaultKubeResync, "Kubernetes mode: how often the last output is re-applied to repair drift (owned objects edited or deleted by hand); only objects that differ are written; 0 disables it")
	l := &c.Leader
	fs.BoolVar(&l.Enabled, "leader-election", false, "elect one leader among the agent replicas of this cluster with a coordination.k8s.io Lease in the cluster's API server (client-go leader election; the API server of --kubeconfig/--kube-context, also in universal mode). Only the leader discovers, connects to the management server, applies outputs and opens --xds-address; a standby is live and ready, keeps its xDS port closed (gateways reconnect to the leader) and shows the holder in /status (leaderElection). Stopping releases the Lease after the agent stopped writing; a leader that fails to renew the Lease stops and exits non-zero, to campaign again when restarted")
	fs.StringVar(&l.Lease, "leader-election-lease", "", "with --leader-election: NAMESPACE/NAME of the Lease (default: $POD_NAMESPACE, else meshrelay-system, / meshrelay-agent-<cluster>)")
	fs.StringVar(&l.Identity, "leader-election-id", "", "with --leader-election: this replica's identity in the Lease, unique among the replicas (default: $POD_NAME, else <hostname>-<pid>)")
	fs.DurationVar(&l.Duration, "lease-duration", 15*time.Second, "with --leader-election: lease duration; a leader that cannot renew for two thirds of it stops, and a standby takes over at most this long after a leader vanished without releasing it")
	fs.StringVar(&c.XDSAddress, "xds-address", DefaultXDSAddress, "where the ADS (xDS) server the cluster's gateways connect to listens; the stream carries the mesh private keys. "+
		"unix:///absolute/path or unix:relative/path: a Unix socket only this user can open (mode 0600; the default is xds.sock in --state-dir); "+
		"host:port: plaintext TCP, allowed on loopback only (127.0.0.0/8, ::1, localhost), any other address needs --xds-tls; empty disables xDS")
	fs.BoolVar(&c.XDSTLS, "xds-tls", false, "serve xDS over mutual TLS, for gateways on other hosts or pods: the agent serves with its cluster's mesh identity (spiffe://<trust-domain>/cluster/<cluster>, from the management server's output; "+
		"until it arrives every handshake is refused) and admits only clients whose certificate chains to the mesh CA and names spiffe://<trust-domain>/cluster/<cluster>/gateway/<node> for the xDS node id they send "+
		"('meshrelay gateway issue-cert' issues them); refusals are logged, counted in meshrelay_xds_refused_total{reason} and shown in /status (xds.refusedConnections)")
	fs.StringVar(&c.AdminAddress, "admin-address", ":9977", "address of the agent's admin HTTP endpoint: /healthz, /readyz, /metrics, /status")
	c.Telemetry.RegisterFlags(fs)
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Agent.TokenFile == "" {
		c.Agent.Token = os.Getenv("MESHRELAY_TOKEN")
	}
	if err := c.Agent.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Leader.Enabled {
		if _, err := c.leaseConfig(); err != nil {
			errs = append(errs, err)
		}
	} else if c.Leader.Lease != "" || c.Leader.Identity != "" {
		errs = append(errs, errors.New("--leader-election-lease and --leader-election-id need --leader-election"))
	}
	if _, err := c.xdsEndpoint(); err != nil {
		errs = append(errs, err)
	}
	if c.Kube.Enabled {
		if c.DiscoveryDir != "" {
			errs = append(errs, errors.New("--discovery-dir cannot be used with --kubernetes: discovery reads the API server"))
		}
		if err := (discovery.KubeConfig{Namespaces: c.Kube.Namespaces}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--kube-namespaces: %w", err))
		}
		if err := c.kubeSinkConfig().Validate(); err != nil {
			errs = append(errs, err)
		}
		if c.Kube.Resync < 0 {
			errs = append(errs, errors.New("--kube-resync must not be negative"))
		}
		return errors.Join(errs...)
	}
	if c.DiscoveryDir == "" {
		errs = append(errs, errors.New("--discovery-dir is required (or --kubernetes)"))
	}
	if c.OutputDir == "" {
		errs = append(errs, errors.New("--output-dir is required (or --kubernetes)"))
	}
	for _, f := range []struct {
		flag, value string
		forLease    bool // also names the API server of --leader-election's Lease
	}{
		{"--kubeconfig", c.Kube.Kubeconfig, true}, {"--kube-context", c.Kube.Context, true},
		{"--kube-namespaces", strings.Join(c.Kube.Namespaces, ","), false},
	} {
		if f.value != "" && !(f.forLease && c.Leader.Enabled) {
			errs = append(errs, fmt.Errorf("%s needs --kubernetes", f.flag))
		}
	}
	return errors.Join(errs...)
}

// CheckPaths checks, before any network I/O, every path the flags name: the discovery
// directory, the relay CA file, the token file and the kubeconfig must exist; --state-dir
// and --output-dir are created when missing. Each error names the flag and the path.
func (c *Config) CheckPaths() error {
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if !c.Kube.Enabled {
		check(flagcheck.Dir("--discovery-dir", c.DiscoveryDir))
	}
	check(flagcheck.File("--relay-ca-file", c.Agent.RelayCAFile))
	if c.Agent.TokenFile != "" {
		if err := flagcheck.File("--token-file", c.Agent.TokenFile); err != nil {
			check(err)
		} else if _, err := tokenfile.Read(c.Agent.TokenFile); err != nil {
			check(fmt.Errorf("--token-file %s: %w", c.Agent.TokenFile, err))
		}
	}
	if c.Kube.Kubeconfig != "" {
		check(flagcheck.File("--kubeconfig", c.Kube.Kubeconfig))
	}
	check(flagcheck.MakeDir("--state-dir", c.Agent.StateDir, 0o700))
	if c.OutputDir != "" {
		check(flagcheck.MakeDir("--output-dir", c.OutputDir, 0o755))
	}
	return errors.Join(errs...)
}

// DefaultXDSAddress is the default of --xds-address: the Unix socket xds.sock in --state-dir.
const DefaultXDSAddress = "unix://<state-dir>/xds.sock"

// xdsEndpoint is the parsed --xds-address (a zero Endpoint when xDS is off). Plaintext TCP
// is allowed on loopback only: the stream carries the mesh private keys.
func (c *Config) xdsEndpoint() (flagcheck.Endpoint, error) {
	addr := c.XDSAddress
	switch {
	case addr == "" && c.XDSTLS:
		return flagcheck.Endpoint{}, errors.New("--xds-tls needs an --xds-address")
	case addr == "":
		return flagcheck.Endpoint{}, nil
	case addr == DefaultXDSAddress:
		if c.Agent.StateDir == "" {
			return flagcheck.Endpoint{}, nil // --state-dir is required: reported by Agent.Validate
		}
		abs, err := filepath.Abs(c.Agent.StateDir)
		if err != nil {
			return flagcheck.Endpoint{}, fmt.Errorf("--state-dir %s: %w", c.Agent.StateDir, err)
		}
		addr = "unix://" + filepath.Join(abs, "xds.sock")
	}
	e, err := flagcheck.ParseEndpoint("--xds-address", addr)
	if err != nil {
		return e, err
	}
	if !e.Local() && !c.XDSTLS {
		return e, fmt.Errorf("--xds-address %s: a non-loopback TCP address needs --xds-tls: the xDS stream carries the mesh private keys "+
			"(or listen on a Unix socket, unix:///path, or on loopback)", addr)
	}
	return e, nil
}

// listenHint is what to do about a taken agent port.
const listenHint = "another agent on this machine? give each agent its own --xds-address and --admin-address"

func (c *Config) kubeSinkConfig() sink.KubeConfig {
	resync := c.Kube.Resync
	if resync == 0 {
		resync = -1 // the flag's 0 means off; the sink's zero value means its default
	}
	return sink.KubeConfig{
		Cluster:             c.Agent.Cluster,
		MaxDeleteFraction:   c.Kube.MaxDeleteFraction,
		MinGuardedDeletions: c.Kube.MinGuardedDeletions,
		Resync:              resync,
	}
}

// leaseConfig is the Lease of --leader-election, with its defaults.
func (c *Config) leaseConfig() (kubelease.Config, error) {
	l := c.Leader
	if l.Lease == "" {
		ns := os.Getenv("POD_NAMESPACE")
		if ns == "" {
			ns = "meshrelay-system"
		}
		l.Lease = ns + "/meshrelay-agent-" + c.Agent.Cluster
	}
	ns, name, err := kubelease.ParseName(l.Lease)
	if err != nil {
		return kubelease.Config{}, fmt.Errorf("--leader-election-lease: %w", err)
	}
	if l.Identity == "" {
		l.Identity = os.Getenv("POD_NAME")
	}
	if l.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return kubelease.Config{}, fmt.Errorf("--leader-election-id is empty and the hostname unknown: %w", err)
		}
		l.Identity = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if l.Duration < time.Second {
		return kubelease.Config{}, errors.New("--lease-duration must be at least 1s")
	}
	return kubelease.Config{Namespace: ns, Name: name, Identity: l.Identity, Duration: l.Duration}, nil
}

// restConfig loads the workload cluster's API server config (kubeconfig.Load's order).
func (c *Config) restConfig() (*rest.Config, error) {
	return kubeconfig.Load(c.Kube.Kubeconfig, c.Kube.Context)
}

// Run starts the agent and blocks until ctx ends or a component fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.CheckPaths(); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	otlp, err := telemetry.New(cfg.Telemetry, "meshrelay-agent", []attribute.KeyValue{attribute.String("meshrelay.cluster", cfg.Agent.Cluster)},
		reg, log.With("component", "otlp"))
	if err != nil {
		return err
	}
	var src interface {
		relayagent.Source
		Errors() []string
		ErrorsAppeared() uint64
	}
	sinks := &sink.Split{Log: log.With("component", "sink")}
	if cfg.OutputDir != "" {
		sinks.Files = sink.NewDir(cfg.OutputDir, log.With("component", "sink"))
	}
	var kubeSink *sink.Kube
	if cfg.Kube.Enabled {
		klog.SetSlogLogger(log.With("component", "client-go"))
		rc, err := cfg.restConfig()
		if err != nil {
			return err
		}
		rc.UserAgent = "meshrelay-agent/" + cfg.Agent.Cluster
		if rc.QPS == 0 {
			rc.QPS, rc.Burst = 20, 40 // client-go's 5/10 would throttle applying a large output
		}
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return fmt.Errorf("kubernetes client for %s: %w", rc.Host, err)
		}
		dyn, err := dynamic.NewForConfig(rc)
		if err != nil {
			return fmt.Errorf("kubernetes dynamic client for %s: %w", rc.Host, err)
		}
		ks, err := discovery.NewKube(cs, discovery.KubeConfig{Namespaces: cfg.Kube.Namespaces}, log.With("component", "discovery"))
		if err != nil {
			return err
		}
		src = ks
		if kubeSink, err = sink.NewKube(dyn, cfg.kubeSinkConfig(), log.With("component", "sink"), reg); err != nil {
			return err
		}
		sinks.Kube = kubeSink
		if _, err := os.Stat(filepath.Join(cfg.Agent.StateDir, agentStateFile)); err == nil {
			sinks.Restoring() // the agent's first Apply re-applies its saved output
		}
		log.Info("kubernetes mode", "apiServer", rc.Host, "kubeconfig", cfg.Kube.Kubeconfig, "context", cfg.Kube.Context,
			"namespaces", strings.Join(cfg.Kube.Namespaces, ","), "maxDeleteFraction", cfg.Kube.MaxDeleteFraction,
			"deleteGuardMin", cfg.Kube.MinGuardedDeletions, "resync", cfg.Kube.Resync)
	} else {
		src = discovery.NewDir(cfg.DiscoveryDir, log.With("component", "discovery"))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_agent_discovery_errors",
		Help: "Current discovery errors (unreadable discovery directory, invalid manifests); /status lists them in discoveryErrors."},
		func() float64 { return float64(len(src.Errors())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshrelay_agent_discovery_errors_total",
			Help: "Discovery errors that appeared or changed (a manifest that became invalid, an unreadable discovery directory, a Kubernetes object that cannot be converted); each is also logged."},
			func() float64 { return float64(src.ErrorsAppeared()) }))
	var xdsServer *xds.Server
	if xdsAt, _ := cfg.xdsEndpoint(); xdsAt.Network != "" { // checked by Validate
		xdsServer = xds.New(xds.Config{Address: xdsAt, TLS: cfg.XDSTLS, Cluster: cfg.Agent.Cluster, Registerer: reg}, log.With("component", "xds"))
		sinks.XDS = xdsServer
	}
	ag, err := relayagent.New(cfg.Agent, src, sinks, log.With("component", "agent"), reg, relayagent.WithReporter(reporter{src: src, xds: xdsServer, otlp: otlp}),
		relayagent.WithTracerProvider(otlp.TracerProvider()))
	if err != nil {
		return err
	}
	// leading runs what only the leader runs: discovery, the relay session, the sinks, xDS.
	leading := func(ctx context.Context) error {
		run := runner.New(log.With("component", "runner"))
		mark := func(r runner.Runnable) runner.Runnable { return r }
		if cfg.Leader.Enabled {
			mark = runner.MarkLeaderOnly // the election starts them while it holds the Lease
		}
		if kubeSink != nil {
			run.Add("kube-sink", mark(kubeSink))
		}
		if xdsServer != nil {
			ln, err := xdsServer.Listen()
			if err != nil {
				return flagcheck.ListenError("--xds-address", xdsServer.Status().Address, listenHint, err)
			}
			run.Add("xds", mark(runner.Func(func(ctx context.Context) error { return xdsServer.Start(ctx, ln) })))
		}
		run.Add("agent", mark(ag))
		return run.Run(ctx)
	}
	var leader *kubelease.Leader
	if cfg.Leader.Enabled {
		lc, _ := cfg.leaseConfig() // checked by Validate
		rc, err := cfg.restConfig()
		if err != nil {
			return fmt.Errorf("--leader-election: %w", err)
		}
		klog.SetSlogLogger(log.With("component", "client-go"))
		if leader, err = kubelease.NewLeader(rc, lc, leading, log.With("component", "leader-election")); err != nil {
			return fmt.Errorf("--leader-election: %w", err)
		}
	}
	ready := ag.Ready
	if leader != nil {
		ready = func() error {
			if !leader.Leading() {
				return nil // a standby is ready to take over
			}
			return ag.Ready()
		}
	}
	adm := admin.New(cfg.AdminAddress, admin.Config{Ready: ready, Status: func() any {
		st := struct {
			relayagent.Status
			DiscoveryErrors []string `json:"discoveryErrors,omitempty"`
			// KubeSink is the Kubernetes sink's state, with its deletion guard (Kubernetes mode).
			KubeSink *sink.KubeStatus `json:"kubeSink,omitempty"`
			// LeaderElection is the election's state (--leader-election).
			LeaderElection *kubelease.Status `json:"leaderElection,omitempty"`
			// GatewayRefusals are the gateways whose latest xDS response was a NACK.
			GatewayRefusals []xds.Refusal `json:"gatewayRefusals,omitempty"`
			// XDS is the xDS server's link to the gateways: address, TLS identity, refused clients.
			XDS *xds.Status `json:"xds,omitempty"`
		}{Status: ag.Status(), DiscoveryErrors: src.Errors()}
		if xdsServer != nil {
			st.GatewayRefusals = xdsServer.Refusals()
			xs := xdsServer.Status()
			st.XDS = &xs
		}
		if kubeSink != nil {
			ks := kubeSink.Status()
			st.KubeSink = &ks
		}
		if leader != nil {
			ls := leader.Status()
			st.LeaderElection = &ls
		}
		return st
	}, Gatherer: reg, Version: cfg.Agent.Version}, log.With("component", "admin"))
	if _, err := adm.Listen(); err != nil {
		return flagcheck.ListenError("--admin-address", cfg.AdminAddress, listenHint, err)
	}
	log.Info("agent starting", "cluster", cfg.Agent.Cluster, "relay", cfg.Agent.RelayAddress, "tlsMode", cfg.Agent.TLSMode,
		"kubernetes", cfg.Kube.Enabled, "discoveryDir", cfg.DiscoveryDir, "outputDir", cfg.OutputDir, "stateDir", cfg.Agent.StateDir,
		"leaderElection", cfg.Leader.Enabled, "xdsAddress", cfg.XDSAddress, "xdsTLS", cfg.XDSTLS)
	run := runner.New(log.With("component", "runner"))
	run.Add("admin", adm)
	run.Add("otlp", otlp)
	if leader != nil {
		run.Add("leader-election", runner.Func(leader.Run)) // runs leading while it holds the Lease
	} else {
		run.Add("leading", runner.Func(leading))
	}
	return run.Run(ctx)
}

// reporter is the agent's Reporter: what discovery cannot read, what the gateways
// refuse, and why its OTLP export fails.
type reporter struct {
	src  interface{ Errors() []string }
	xds  *xds.Server // nil without --xds-address
	otlp *telemetry.Exporter
}

func (r reporter) Report() relayagent.Report {
	rep := relayagent.Report{DiscoveryError: strings.Join(r.src.Errors(), "; "), TelemetryError: r.otlp.Status().Problem()}
	if r.xds != nil {
		for _, x := range r.xds.Refusals() {
			rep.DataPlane = append(rep.DataPlane, relayagent.DataPlaneProblem{Node: x.Node, TypeURL: x.TypeURL, Error: x.Error})
		}
		st := r.xds.Status()
		if st.IdentityError != "" && st.IdentityNotAfter == nil {
			rep.DataPlane = append(rep.DataPlane, relayagent.DataPlaneProblem{Node: "xds server", Error: "cannot serve over tls: " + st.IdentityError})
		}
		for _, x := range st.RefusedConnections {
			rep.DataPlane = append(rep.DataPlane, relayagent.DataPlaneProblem{Node: "xds client " + x.Peer,
				Error: fmt.Sprintf("refused by the agent's xds server (%s): %s", x.Reason, x.Error)})
		}
	}
	return rep
}

// agentStateFile is where internal/agent keeps its last applied output in --state-dir.
const agentStateFile = "output.json"
