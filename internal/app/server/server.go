// Package server is the composition root of `meshrelay server`: it wires the store, the
// reconciler, the relay gRPC server, the configuration source (the config directory watcher,
// or the custom resources in Kubernetes mode, with their status writer) and the admin API.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/crsource"
	"github.com/meshrelay/meshrelay/internal/discovery"
	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/ha"
	"github.com/meshrelay/meshrelay/internal/ha/kubeha"
	"github.com/meshrelay/meshrelay/internal/kubeconfig"
	"github.com/meshrelay/meshrelay/internal/kubelease"
	"github.com/meshrelay/meshrelay/internal/meshcerts"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/plane"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/runner"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/boltstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/memstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/telemetry"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/ui"
)

// Config is the server's configuration; RegisterFlags binds it to flags.
type Config struct {
	RelayAddress   string
	AdminAddress   string
	DataDir        string
	TokenFile      string
	AdminTokenFile string
	AdminTLSCert   string
	AdminTLSKey    string
	AdminPlaintext bool
	TLSMode        string
	TrustDomain    string
	CACert, CAKey  string
	ServerCert     string
	ServerKey      string
	ServerNames    []string
	AgentCertTTL   time.Duration
	MeshCACert     string
	MeshCAKey      string
	MeshCertTTL    time.Duration
	// IstioCACerts issues every cluster an Istio workload CA (Istio's `cacerts` Secret,
	// written by Kubernetes-mode agents), valid for IstioCATTL.
	IstioCACerts  bool
	IstioCATTL    time.Duration
	ConfigDir     string
	Store         string
	RedisAddress  string
	RedisPassword string
	// RedisSentinelAddresses and RedisMasterName select Redis Sentinel, RedisClusterAddresses
	// a Redis Cluster, instead of the one server of RedisAddress (redisstore.Options).
	RedisSentinelAddresses []string
	RedisMasterName        string
	RedisSentinelPassword  string
	RedisClusterAddresses  []string
	RedisTLS               bool
	RedisTLSCAFile         string
	RedisTLSName           string
	RedisPrefix            string
	SafeMode               bool
	SafeStartWindow        int
	MgmtClusterName        string
	LeaderElection         bool
	LoadBalancing          bool
	ReplicaID              string
	Advertise              string
	LeaseDuration          time.Duration
	Kube                   KubeConfig
	// Version is the binary's version for meshrelay_build_info (set by the CLI, no flag).
	Version string
	// Telemetry exports the server's metrics and configuration-change traces over OTLP.
	Telemetry telemetry.Config
	// TelemetryPrometheusURL is the telemetry gateway's merged Prometheus endpoint, which the
	// UI reads the gateways' live state, request rates and health checks from.
	TelemetryPrometheusURL string
}

// KubeConfig configures Kubernetes mode: the configuration comes from meshrelay's custom
// resources in the management cluster, and their status is written back.
type KubeConfig struct {
	// Enabled turns Kubernetes mode on (--kubernetes).
	Enabled bool
	// Kubeconfig and Context select the management cluster's API server; when both are
	// empty the config comes from $KUBECONFIG, else the in-cluster service account, else
	// ~/.kube/config (the agent's order).
	Kubeconfig string
	Context    string
	// LeaderElectionLease, NAMESPACE/NAME, makes the replicas elect their leader with this
	// coordination.k8s.io Lease instead of a lease in Redis (--leader-election-lease).
	LeaderElectionLease string
}

// RegisterFlags binds the configuration to flags with their defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.RelayAddress, "relay-address", ":9900", "address the relay gRPC endpoint listens on; agents connect here")
	fs.StringVar(&c.AdminAddress, "admin-address", "127.0.0.1:9901", "address of the admin API (HTTPS): /healthz, /readyz, /metrics, /status and the config API used by apply/get")
	fs.StringVar(&c.AdminTLSCert, "admin-tls-cert-file", "", "bring your own serving certificate of the admin API (PEM chain); read again whenever it or the key file changes (default: issued from the relay CA at start, for the relay serving certificate's names and the --admin-address host; the CLI verifies it with <data-dir>/relay-ca.crt)")
	fs.StringVar(&c.AdminTLSKey, "admin-tls-key-file", "", "private key of --admin-tls-cert-file (PEM)")
	fs.BoolVar(&c.AdminPlaintext, "admin-plaintext", false, "serve the admin API as plain HTTP instead of HTTPS; only with a loopback --admin-address (127.0.0.1, ::1, localhost), as the admin token would cross the network in clear text")
	fs.StringVar(&c.DataDir, "data-dir", configapi.DefaultDataDir, "directory for the generated relay CA, serving certificate and tokens, and (with --store bolt) the store, "+boltstore.FileName+"; one server per data directory")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the relay identity token agents must present (default: generated into <data-dir>/relay-identity-token)")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding the bearer token the admin config API (/api/v1: apply, delete, get, snapshots with their private keys) requires; re-read on every request, so it can be rotated; /healthz, /readyz, /metrics and /status need none (default: generated into <data-dir>/"+configapi.TokenFileName+", which the CLI finds there)")
	fs.StringVar(&c.TLSMode, "relay-tls-mode", relaywire.ModeMTLS, "mtls: agents register once with the token and then use a cluster certificate; tls: agents verify the server only and send the token on every connection")
	fs.StringVar(&c.TrustDomain, "trust-domain", "meshrelay.local", "SPIFFE trust domain of agent identities (spiffe://<trust-domain>/cluster/<name>)")
	fs.StringVar(&c.CACert, "relay-ca-cert", "", "bring your own relay CA certificate (PEM); default: generated into --data-dir")
	fs.StringVar(&c.CAKey, "relay-ca-key", "", "private key of --relay-ca-cert (PEM)")
	fs.StringVar(&c.ServerCert, "relay-server-cert", "", "bring your own relay serving certificate (PEM); default: issued from the relay CA at start")
	fs.StringVar(&c.ServerKey, "relay-server-key", "", "private key of --relay-server-cert (PEM)")
	fs.StringSliceVar(&c.ServerNames, "relay-server-names", nil, "extra DNS names or IPs for the generated serving certificates, the relay's and the admin API's (localhost, 127.0.0.1, ::1 and the hostname are always included)")
	fs.DurationVar(&c.AgentCertTTL, "agent-cert-ttl", time.Hour, "lifetime of the client certificates issued to agents; agents renew at two thirds")
	fs.StringVar(&c.MeshCACert, "mesh-ca-cert", "", "bring your own mesh CA (PEM) for the gateways' east-west mTLS; default: generated into <data-dir>/mesh-ca.crt")
	fs.StringVar(&c.MeshCAKey, "mesh-ca-key", "", "private key of --mesh-ca-cert (PEM)")
	fs.DurationVar(&c.MeshCertTTL, "mesh-cert-ttl", 24*time.Hour, "lifetime of the mesh certificates issued to each cluster's gateways; rotated at two thirds")
	fs.BoolVar(&c.IstioCACerts, "istio-cacerts", true, "issue every cluster an Istio workload CA (an intermediate of the mesh CA), which Kubernetes-mode agents write as Istio's cacerts Secret in istio-system; false when cert-manager or external-secrets provides cacerts")
	fs.DurationVar(&c.IstioCATTL, "istio-ca-ttl", 720*time.Hour, "lifetime of each cluster's Istio workload CA; renewed at two thirds, and when the mesh CA rotates")
	fs.StringVar(&c.ConfigDir, "config-dir", "", "directory of resource YAML to load and watch (GitOps); resources applied through the API are merged on top; not with --kubernetes")
	k := &c.Kube
	fs.BoolVar(&k.Enabled, "kubernetes", false, "Kubernetes mode: read the configuration from meshrelay's custom resources (meshrelay.io/v1alpha1, all namespaces) in the management cluster instead of --config-dir, and write each one's status (Accepted condition naming the invalid field, observedGeneration, selected clusters); the CRDs must be installed (charts/meshrelay-server/crds)")
	fs.StringVar(&k.Kubeconfig, "kubeconfig", "", "Kubernetes mode: kubeconfig file of the management cluster (default: $KUBECONFIG, else the in-cluster service account, else ~/.kube/config)")
	fs.StringVar(&k.Context, "kube-context", "", "Kubernetes mode: kubeconfig context to use (default: the kubeconfig's current context)")
	fs.StringVar(&k.LeaderElectionLease, "leader-election-lease", "", "Kubernetes mode, with --leader-election: NAMESPACE/NAME of a coordination.k8s.io Lease in the management cluster that elects the leader of its replicas (client-go leader election, lease --lease-duration) instead of a lease in Redis; the active/passive lock between management clusters stays in Redis")
	fs.StringVar(&c.Store, "store", "", "where applied configuration and snapshots are kept: "+StoreBolt+" (<data-dir>/"+boltstore.FileName+", survives restarts; one server), "+StoreRedis+" (--redis-address, --redis-sentinel-addresses or --redis-cluster-addresses; for replicas and management clusters), "+StoreMemory+" (tests only: nothing survives a restart) (default: "+StoreRedis+" with any of those, else "+StoreBolt+")")
	c.RegisterRedisFlags(fs, "host:port of Redis, the store shared by replicas and management clusters (implies --store redis, as do --redis-sentinel-addresses and --redis-cluster-addresses)")
	fs.StringVar(&c.RedisPrefix, "redis-prefix", "meshrelay", "prefix and hash tag of every Redis key")
	fs.StringVar(&c.MgmtClusterName, "mgmt-cluster-name", "", "name of this management cluster; with --redis-address, a global lock in Redis names the one management cluster allowed to write (active/passive); move it with `meshrelay switch-active`")
	fs.BoolVar(&c.LeaderElection, "leader-election", false, "elect one leader among the replicas of this management cluster (a lease in Redis, or a Kubernetes Lease with --leader-election-lease); the leader issues mesh certificates, deletes outputs of removed clusters and, in Kubernetes mode, writes status")
	fs.BoolVar(&c.LoadBalancing, "cluster-load-balancing", false, "spread agents over the live replicas (rendezvous hashing of cluster names); a replica redirects agents it does not own")
	fs.StringVar(&c.ReplicaID, "replica-id", "", "identity of this replica (default: hostname-pid)")
	fs.StringVar(&c.Advertise, "advertise-address", "", "relay address agents can reach this replica at, for redirects (default: the --relay-address, with the hostname when its host is empty)")
	fs.DurationVar(&c.LeaseDuration, "lease-duration", 5*time.Second, "leader lease; a leader that cannot renew steps down at two thirds of it")
	fs.BoolVar(&c.SafeMode, "safe-mode", true, "after a start, hold translation until every registered cluster (except skipWarming ones) has sent its input snapshot")
	fs.IntVar(&c.SafeStartWindow, "safe-start-window", 0, "with --safe-mode=false: seconds to wait at most for missing inputs before translating with what is present; 0 does not wait")
	c.Telemetry.RegisterFlags(fs)
	fs.StringVar(&c.TelemetryPrometheusURL, "telemetry-prometheus-url", "", "the telemetry gateway's merged Prometheus endpoint (e.g. http://telemetry-gateway:9091/metrics): the UI shows every gateway's serving priority (since when and why), request rates and health checks from it; unset, the UI says where that data would come from")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := ui.ValidateTelemetryURL(c.TelemetryPrometheusURL); err != nil {
		errs = append(errs, err)
	}
	if c.TLSMode != relaywire.ModeMTLS && c.TLSMode != relaywire.ModeTLS {
		errs = append(errs, fmt.Errorf("--relay-tls-mode %q: want mtls or tls", c.TLSMode))
	}
	if (c.CACert == "") != (c.CAKey == "") {
		errs = append(errs, errors.New("--relay-ca-cert and --relay-ca-key go together"))
	}
	if (c.ServerCert == "") != (c.ServerKey == "") {
		errs = append(errs, errors.New("--relay-server-cert and --relay-server-key go together"))
	}
	if (c.AdminTLSCert == "") != (c.AdminTLSKey == "") {
		errs = append(errs, errors.New("--admin-tls-cert-file and --admin-tls-key-file go together"))
	}
	if c.AdminPlaintext {
		if c.AdminTLSCert != "" {
			errs = append(errs, errors.New("--admin-plaintext and --admin-tls-cert-file exclude each other"))
		}
		if host, _, err := net.SplitHostPort(c.AdminAddress); err != nil || !flagcheck.Loopback(host) {
			errs = append(errs, fmt.Errorf("--admin-plaintext needs a loopback --admin-address (127.0.0.1, ::1 or localhost), got %q: "+
				"the admin token would cross the network in clear text; drop --admin-plaintext to serve HTTPS", c.AdminAddress))
		}
	}
	if c.SafeStartWindow < 0 {
		errs = append(errs, errors.New("--safe-start-window must be >= 0"))
	}
	if c.SafeMode && c.SafeStartWindow > 0 {
		errs = append(errs, errors.New("--safe-start-window takes effect only with --safe-mode=false"))
	}
	if c.AgentCertTTL < 5*time.Second {
		errs = append(errs, errors.New("--agent-cert-ttl must be at least 5s"))
	}
	if (c.MeshCACert == "") != (c.MeshCAKey == "") {
		errs = append(errs, errors.New("--mesh-ca-cert and --mesh-ca-key go together"))
	}
	if c.MeshCertTTL < 10*time.Second {
		errs = append(errs, errors.New("--mesh-cert-ttl must be at least 10s"))
	}
	if c.IstioCACerts && c.IstioCATTL < 10*time.Second {
		errs = append(errs, fmt.Errorf("--istio-ca-ttl %v: must be at least 10s (workload certificates it signs are clamped to its lifetime)", c.IstioCATTL))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	switch c.Store {
	case "", StoreBolt, StoreMemory, StoreRedis:
	default:
		errs = append(errs, fmt.Errorf("--store %q: want %s, %s or %s", c.Store, StoreBolt, StoreRedis, StoreMemory))
	}
	redisOpts := c.redisOptions()
	if c.Store == StoreRedis && !redisOpts.Given() {
		errs = append(errs, errors.New("--store redis needs --redis-address, --redis-sentinel-addresses or --redis-cluster-addresses"))
	}
	if (c.Store == StoreBolt || c.Store == StoreMemory) && redisOpts.Given() {
		errs = append(errs, fmt.Errorf("--store %s contradicts %s (which makes Redis the store): drop one of them", c.Store, redisFlagsGiven(redisOpts)))
	}
	if (c.LeaderElection || c.LoadBalancing || c.MgmtClusterName != "") && !redisOpts.Given() {
		errs = append(errs, errors.New("--leader-election, --cluster-load-balancing and --mgmt-cluster-name need a shared store: set --redis-address (or --redis-sentinel-addresses or --redis-cluster-addresses)"))
	}
	if err := c.ValidateRedis(); err != nil {
		errs = append(errs, err)
	}
	if c.LeaseDuration < time.Second {
		errs = append(errs, errors.New("--lease-duration must be at least 1s"))
	}
	if c.Kube.Enabled && c.ConfigDir != "" {
		errs = append(errs, errors.New("--config-dir cannot be used with --kubernetes: the configuration comes from the custom resources (kubectl apply the files instead)"))
	}
	if c.Kube.LeaderElectionLease != "" {
		if _, _, err := kubelease.ParseName(c.Kube.LeaderElectionLease); err != nil {
			errs = append(errs, fmt.Errorf("--leader-election-lease: %w", err))
		}
		if !c.LeaderElection {
			errs = append(errs, errors.New("--leader-election-lease needs --leader-election"))
		}
	}
	if !c.Kube.Enabled {
		for _, f := range []struct{ flag, value string }{{"--kubeconfig", c.Kube.Kubeconfig}, {"--kube-context", c.Kube.Context},
			{"--leader-election-lease", c.Kube.LeaderElectionLease}} {
			if f.value != "" {
				errs = append(errs, fmt.Errorf("%s needs --kubernetes", f.flag))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckPaths checks, before any network I/O, every path the flags name: the config
// directory, token files, certificate and key files and the kubeconfig must exist;
// --data-dir is created when missing. Each error names the flag and the path.
func (c *Config) CheckPaths() error {
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.ConfigDir != "" {
		check(flagcheck.Dir("--config-dir", c.ConfigDir))
	}
	for _, f := range []struct{ flag, path string }{{"--token-file", c.TokenFile}, {"--admin-token-file", c.AdminTokenFile}} {
		if f.path == "" {
			continue
		}
		if err := flagcheck.File(f.flag, f.path); err != nil {
			check(err)
		} else if _, err := tokenfile.Read(f.path); err != nil {
			check(fmt.Errorf("%s %s: %w", f.flag, f.path, err))
		}
	}
	for _, f := range []struct{ flag, path string }{
		{"--relay-ca-cert", c.CACert}, {"--relay-ca-key", c.CAKey}, {"--relay-server-cert", c.ServerCert}, {"--relay-server-key", c.ServerKey},
		{"--mesh-ca-cert", c.MeshCACert}, {"--mesh-ca-key", c.MeshCAKey}, {"--redis-tls-ca-file", c.RedisTLSCAFile}, {"--kubeconfig", c.Kube.Kubeconfig},
		{"--admin-tls-cert-file", c.AdminTLSCert}, {"--admin-tls-key-file", c.AdminTLSKey},
	} {
		if f.path != "" {
			check(flagcheck.File(f.flag, f.path))
		}
	}
	check(flagcheck.MakeDir("--data-dir", c.DataDir, 0o700))
	return errors.Join(errs...)
}

// listenHint is what to do about a taken server port.
const listenHint = "another server on this machine? give each server its own --relay-address and --admin-address"

// The stores --store selects.
const (
	StoreBolt   = "bolt"
	StoreMemory = "memory"
	StoreRedis  = "redis"
)

// StoreKind is the store the configuration selects (--store, defaulted).
func (c *Config) StoreKind() string {
	switch {
	case c.Store != "":
		return c.Store
	case c.redisOptions().Given():
		return StoreRedis
	}
	return StoreBolt
}

// restConfig loads the management cluster's API server config (kubeconfig.Load's order).
func (c *Config) restConfig() (*rest.Config, error) {
	return kubeconfig.Load(c.Kube.Kubeconfig, c.Kube.Context)
}

// kubeSource builds the custom resource source and status writer of Kubernetes mode.
func kubeSource(rc *rest.Config, log *slog.Logger, leader func() bool) (*crsource.Source, *crsource.Status, error) {
	src, err := crsource.New(rc, log.With("component", "crsource"))
	if err != nil {
		return nil, nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: src.Scheme()})
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client of %s: %w", rc.Host, err)
	}
	return src, crsource.NewStatus(src, c, leader, log.With("component", "crstatus")), nil
}

// Run starts the server and blocks until ctx ends or a component fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(relayAddr, adminAddr string)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := cfg.CheckPaths(); err != nil {
		return err
	}
	var kubeRC *rest.Config
	if cfg.Kube.Enabled {
		var err error
		if kubeRC, err = cfg.restConfig(); err != nil {
			return err
		}
		// client-go and controller-runtime log through process-wide loggers: route them to slog.
		klog.SetSlogLogger(log.With("component", "client-go"))
		ctrllog.SetLogger(logr.FromSlogHandler(log.With("component", "controller-runtime").Handler()))
	}
	var bs *boltstore.Store
	if cfg.StoreKind() == StoreBolt {
		// First, so that a second server on this data directory stops before touching it.
		var err error
		if bs, err = openBolt(cfg.DataDir); err != nil {
			return err
		}
		if from, to, ok := bs.Migrated(); ok {
			log.Info("store migrated", "path", bs.Path(), "fromSchema", from, "toSchema", to)
		}
		defer func() {
			if err := bs.Close(); err != nil {
				log.Error("store not closed cleanly", "path", bs.Path(), "error", err)
			}
		}()
	}
	ca, err := loadCA(cfg, log)
	if err != nil {
		return err
	}
	adminCert, err := loadAdminCert(cfg, ca, log.With("component", "admin"))
	if err != nil {
		return err
	}
	auth, err := loadAuthority(cfg, ca, adminCert, log.With("component", "relay-ca"))
	if err != nil {
		return err
	}
	meshCA, err := loadMeshCA(cfg)
	if err != nil {
		return err
	}
	meshAuth, err := pki.OpenMeshAuthority(cfg.DataDir, meshCA)
	if err != nil {
		return err
	}
	issuer := pki.NewMeshIssuer(meshAuth.Signer(), cfg.MeshCertTTL)
	issuer.SetCA(meshAuth.Signer(), meshAuth.Trust())
	if cfg.IstioCACerts {
		issuer.IssueIstioCAs(cfg.IstioCATTL)
	}
	token, err := tokenSource(cfg.TokenFile, filepath.Join(cfg.DataDir, "relay-identity-token"), "relay identity token; give it to agents with --token-file", log)
	if err != nil {
		return err
	}
	adminToken, err := tokenSource(cfg.AdminTokenFile, filepath.Join(cfg.DataDir, configapi.TokenFileName), "admin token; the CLI reads it with --admin-token-file or MESHRELAY_ADMIN_TOKEN", log)
	if err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if adminCert != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshrelay_admin_certificate_expiry_timestamp_seconds",
			Help: "When the admin API's serving certificate in service expires (Unix seconds)."},
			func() float64 { return float64(adminCert.notAfter().Unix()) }))
	}
	otlp, err := telemetry.New(cfg.Telemetry, "meshrelay-server", []attribute.KeyValue{attribute.String("meshrelay.mgmt_cluster", orDefault(cfg.MgmtClusterName, "default"))},
		reg, log.With("component", "otlp"))
	if err != nil {
		return err
	}
	changes := changetrace.New(otlp.TracerProvider())

	var store snapshot.Store
	var redisStore *redisstore.Store
	var redisCerts *redisstore.Certs
	var replication *redisstore.Replication
	var stores ha.Stores
	var revocations relay.Revocations = relay.NewFileRevocations(cfg.DataDir)
	var planeStore plane.Store
	switch cfg.StoreKind() {
	case StoreBolt:
		store = bs
	case StoreMemory:
		store = memstore.New()
		log.Warn("store is in memory: applied configuration and snapshots are lost when this server stops; use it for tests only", "store", StoreMemory)
	case StoreRedis:
		rc, err := newRedisClient(cfg)
		if err != nil {
			return err
		}
		defer rc.Close()
		// The writes that must not be lost wait for a Redis replica (docs/adr/0015).
		replication = redisstore.NewReplication(0, log.With("component", "redis"))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshrelay_redis_wait_shortfalls_total",
			Help: "Writes that must not be lost (lock, applied configuration, revocations) which no Redis replica acknowledged within the WAIT timeout."},
			func() float64 { return float64(replication.Shortfalls()) }))
		redisStore = redisstore.New(rc, cfg.RedisPrefix).WithReplication(replication)
		redisCerts = redisstore.NewCerts(rc, cfg.RedisPrefix)
		haStore := redisstore.NewHA(rc, cfg.RedisPrefix).WithReplication(replication)
		stores = ha.Stores{Lock: haStore, Lease: haStore, Replicas: haStore}
		revocations = redisstore.NewRevocations(rc, cfg.RedisPrefix).WithReplication(replication) // shared by every replica and management server
		planeStore = redisstore.NewPlane(rc, cfg.RedisPrefix)
	}
	replicaID := cfg.ReplicaID
	if replicaID == "" {
		h, _ := os.Hostname()
		replicaID = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	var lease *kubeha.Election
	if cfg.Kube.LeaderElectionLease != "" {
		// Validate made sure of a shared store: the lock and the replica set stay there.
		ns, name, _ := kubelease.ParseName(cfg.Kube.LeaderElectionLease) // checked by Validate
		if lease, err = kubeha.NewElection(kubeRC, kubelease.Config{Namespace: ns, Name: name, Identity: replicaID, Duration: cfg.LeaseDuration},
			log.With("component", "lease")); err != nil {
			return err
		}
		stores.Lease = lease
	}
	lis, err := flagcheck.Listen("--relay-address", cfg.RelayAddress, listenHint)
	if err != nil {
		return err
	}
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = lis.Addr().String()
		if host, port, _ := net.SplitHostPort(advertise); host == "::" || host == "0.0.0.0" || host == "" {
			h, _ := os.Hostname()
			advertise = net.JoinHostPort(h, port)
		}
	}
	mgmtName := orDefault(cfg.MgmtClusterName, "default")
	coord := ha.New(ha.Config{MgmtCluster: mgmtName, ActivePassive: cfg.MgmtClusterName != "",
		LeaderElection: cfg.LeaderElection, LoadBalancing: cfg.LoadBalancing, ReplicaID: replicaID, Advertise: advertise,
		LeaseTTL: cfg.LeaseDuration}, stores, log.With("component", "ha"))
	var certStore meshcerts.Store
	if redisStore != nil {
		if cfg.MgmtClusterName != "" {
			fence := redisstore.Fence{Name: cfg.MgmtClusterName, Epoch: coord.Epoch}
			redisStore, redisCerts = redisStore.WithFence(fence), redisCerts.WithFence(fence)
		}
		store, certStore = redisStore, redisCerts
	}
	certs := meshcerts.New(issuer, certStore, coord, log.With("component", "mesh-certs"))
	var role reconcile.Role
	var witness func(uint64)
	if redisStore != nil {
		role, witness = coord, coord.WitnessEpoch
	}
	var crs *crsource.Source
	var crStatus *crsource.Status
	var onTranslate func([]resource.Object, map[string][]string)
	if cfg.Kube.Enabled {
		// Only the leader of the active management server writes status.
		leader := func() bool {
			if role == nil {
				return true
			}
			active, _ := role.Active()
			return active && role.Leader()
		}
		if crs, crStatus, err = kubeSource(kubeRC, log, leader); err != nil {
			lis.Close()
			return err
		}
		onTranslate = crStatus.Translated
	}
	rec := reconcile.New(reconcile.Config{
		SafeMode:         cfg.SafeMode,
		SafeStartWindow:  time.Duration(cfg.SafeStartWindow) * time.Second,
		WaitForConfigDir: cfg.ConfigDir != "" || cfg.Kube.Enabled,
		Role:             role,
		OnTranslate:      onTranslate,
		WitnessEpoch:     witness,
		Changes:          changes,
	}, store, translate.NewTranslator(), certs.Source, log.With("component", "reconcile"), reg)
	certs.SetReconciler(rec)
	rotation := &meshRotation{auth: meshAuth, issuer: issuer, rec: rec, log: log.With("component", "mesh-ca"),
		leader: func() bool {
			if role == nil {
				return true
			}
			active, _ := role.Active()
			return active && role.Leader()
		}}
	rotation.metrics(reg)

	rcfg := relay.ServerConfig{Token: token, Mode: cfg.TLSMode, CertTTL: cfg.AgentCertTTL, Authority: auth, Revocations: revocations, Changes: changes}
	if cfg.LoadBalancing {
		rcfg.Balancer = coord
	}
	rs := relay.NewServer(rcfg, rec, ca, log.With("component", "relay"), reg)
	rotation.conns = rs.Connections
	gs := grpc.NewServer(append(rs.GRPCOptions(),
		grpc.Creds(credentials.NewTLS(rs.TLSConfig(tls.Certificate{}))),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Agents are idle most of the time: return each connection's write buffer to a
		// shared pool after every flush instead of keeping 32 KiB per agent.
		grpc.SharedWriteBuffer(true),
	)...)
	rs.Attach(gs)

	var dir *discovery.Dir
	if cfg.ConfigDir != "" {
		dir = discovery.NewDir(cfg.ConfigDir, log.With("component", "config-dir"))
	}
	publisher := plane.NewPublisher(replicaID, planeStore, func() plane.Server {
		return plane.Local(replicaID, mgmtName, advertise, rec.Status(), rs.Connections(), time.Now())
	}, cfg.LeaseDuration/5, log.With("component", "plane"))
	var tel *ui.Telemetry
	if cfg.TelemetryPrometheusURL != "" {
		tel = ui.NewTelemetry(cfg.TelemetryPrometheusURL, 0, reg, log.With("component", "ui-telemetry"))
	}
	serverStatus := func() configapi.ServerStatus {
		st := rec.Status()
		if dir != nil {
			st.ConfigErrors = dir.Errors()
		}
		if crs != nil {
			st.ConfigErrors = crs.Errors()
		}
		ss := configapi.ServerStatus{Status: st, HA: coord.Status(), Relay: advertise, Store: storeName(cfg),
			Connections: rs.Connections(), RateLimited: rs.RateLimited(), RelayCertNotAfter: auth.Serving().Leaf.NotAfter, RelayCANotAfter: auth.Current().Cert.NotAfter,
			RelayCA: rs.Rotation(), Plane: publisher.Status(), MeshCA: rotation.status()}
		if adminCert != nil {
			ss.AdminCertNotAfter, ss.AdminCertError = adminCert.notAfter(), adminCert.errText()
		}
		if sf := replication.Status(); sf != nil {
			ss.StoreReplication = sf.String()
		}
		ss.OTLPExport = otlp.Status()
		if tel != nil {
			ts := &configapi.TelemetryStatus{}
			ts.URL, ts.LastRead, ts.Error, ts.ErrorSince = tel.Status()
			ss.Telemetry = ts
		}
		return ss
	}
	status := func() any { return serverStatus() }
	adm := admin.New(cfg.AdminAddress, admin.Config{Ready: rec.Ready, Status: status, Gatherer: reg, Version: cfg.Version, TLS: adminCert.tlsConfig()}, log.With("component", "admin"))
	timeline := changelog.New(0)
	configapi.Register(adm, recordedConfig{rec, timeline}, adminToken, changes)
	registerUI(adm, uiSources{status: serverStatus, rec: rec, certs: certs, changes: timeline, agentCertTTL: cfg.AgentCertTTL, telemetry: tel},
		adminToken, adminCert != nil, reg, log.With("component", "ui"))
	rotation.register(configapi.Protected(adm, adminToken))
	configapi.RegisterGatewayCertificates(adm, gatewayIssuer(rec.Config, meshAuth, cfg.MeshCertTTL), adminToken)
	registerRelayCA(adm, rs, cfg.TrustDomain, adminToken)
	adminAddr, err := adm.Listen()
	if err != nil {
		lis.Close()
		return flagcheck.ListenError("--admin-address", cfg.AdminAddress, listenHint, err)
	}
	log.Info("server starting", "relay", lis.Addr().String(), "admin", adminAddr, "store", storeName(cfg), "tlsMode", cfg.TLSMode,
		"safeMode", cfg.SafeMode, "safeStartWindow", cfg.SafeStartWindow, "configDir", cfg.ConfigDir, "kubernetes", cfg.Kube.Enabled,
		"kubeconfig", cfg.Kube.Kubeconfig, "kubeContext", cfg.Kube.Context, "leaderElectionLease", cfg.Kube.LeaderElectionLease, "dataDir", cfg.DataDir,
		"caBundle", filepath.Join(cfg.DataDir, pki.CACertName), "adminTLS", adminCert != nil)

	run := runner.New(log.With("component", "runner"))
	run.Add("reconcile", rec)
	run.Add("mesh-certs", certs)
	run.Add("ha", coord)
	run.Add("plane", publisher)
	if lease != nil {
		run.Add("lease", lease)
	}
	run.Add("role-watch", runner.Func(func(ctx context.Context) error {
		// A new role (active, leader, replica set) may change what this server translates.
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-coord.Watch():
				rec.Kick()
				if crStatus != nil {
					crStatus.Kick() // a new leader writes what the old one left
				}
			}
		}
	}))
	run.Add("admin", adm)
	run.Add("change-acks", runner.Func(func(ctx context.Context) error { return observeChanges(ctx, rec, timeline) }))
	run.Add("otlp", otlp)
	if tel != nil {
		run.Add("ui-telemetry", tel)
	}
	run.Add("relay sessions", runner.Func(rs.Run))
	run.Add("relay server", runner.Func(func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- gs.Serve(lis) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		stopGRPC(gs)
		<-errc
		return nil
	}))
	if dir != nil {
		run.Add("config-dir", runner.Func(func(ctx context.Context) error {
			return dir.Start(ctx, recordDir(ctx, rec, timeline, changes, changelog.PathConfigDir))
		}))
	}
	if crs != nil {
		run.Add("cr-source", runner.Func(func(ctx context.Context) error {
			return crs.Start(ctx, recordDir(ctx, rec, timeline, changes, changelog.PathCR))
		}))
		// Leader-only (it says so), yet started on every replica as before: it reads leader
		// before each round, and role-watch kicks it when the role changes.
		run.Add("cr-status", crStatus)
	}
	if ready != nil {
		run.OnStarted(func() { ready(lis.Addr().String(), adminAddr) })
	}
	return run.Run(ctx)
}

// The CR status writer is the server's leader-only component.
var _ runner.LeaderOnly = (*crsource.Status)(nil)

// stopGRPC stops gracefully, cutting streams that do not end within a few seconds.
func stopGRPC(gs *grpc.Server) {
	var once sync.Once
	done := make(chan struct{})
	go func() { gs.GracefulStop(); once.Do(func() { close(done) }) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		gs.Stop()
		<-done
	}
}

func loadMeshCA(cfg Config) (*pki.CA, error) {
	if cfg.MeshCACert != "" {
		return pki.LoadCA(cfg.MeshCACert, cfg.MeshCAKey, cfg.TrustDomain)
	}
	return pki.LoadOrCreateMeshCA(cfg.DataDir, cfg.TrustDomain)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func storeName(cfg Config) string {
	switch k := cfg.StoreKind(); k {
	case StoreRedis:
		return cfg.redisOptions().String()
	case StoreBolt:
		return "bolt " + filepath.Join(cfg.DataDir, boltstore.FileName)
	default:
		return k
	}
}

// openBolt opens the store in the data directory; a data directory another server holds is
// refused at once.
func openBolt(dataDir string) (*boltstore.Store, error) {
	bs, err := boltstore.Open(filepath.Join(dataDir, boltstore.FileName))
	if errors.Is(err, boltstore.ErrLocked) {
		return nil, fmt.Errorf("--data-dir %s: another meshrelay server holds it (its store is locked); stop that server or give this one another --data-dir: %w", dataDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: open the store: %w", dataDir, err)
	}
	return bs, nil
}

func loadCA(cfg Config, log *slog.Logger) (*pki.CA, error) {
	if cfg.CACert != "" {
		return pki.LoadCA(cfg.CACert, cfg.CAKey, cfg.TrustDomain)
	}
	ca, created, err := pki.LoadOrCreateCA(cfg.DataDir, cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("generated a new relay CA; copy its bundle to every agent (--relay-ca-file), and give every management server sharing agents the same CA (--relay-ca-cert/--relay-ca-key)",
			"bundle", filepath.Join(cfg.DataDir, "relay-ca.crt"))
	}
	return ca, nil
}

// serverHosts are the names and IPs of the serving certificates issued from the relay CA.
func serverHosts(cfg Config) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	return append(hosts, cfg.ServerNames...)
}

// loadAuthority serves the relay CA: the relay serving certificate is issued from it (or
// is --relay-server-cert), and a rotation under way in the data directory resumes. When a
// rotation completes, the admin API's certificate is issued again from the new CA.
func loadAuthority(cfg Config, ca *pki.CA, admin *adminCert, log *slog.Logger) (*relay.Authority, error) {
	acfg := relay.AuthorityConfig{Dir: cfg.DataDir, BYO: cfg.CACert != "", Hosts: serverHosts(cfg)}
	if cfg.ServerCert != "" {
		cert, err := pki.LoadKeyPair(cfg.ServerCert, cfg.ServerKey)
		if err != nil {
			return nil, err
		}
		acfg.Serving = &cert
	}
	acfg.OnChange = func(current *pki.CA) {
		if err := admin.reissue(cfg, current); err != nil {
			log.Error("admin certificate not issued from the new relay CA; the CLI may not verify it", "error", err)
		}
	}
	return relay.NewAuthority(ca, acfg, log)
}

// tokenSource returns a function that reads the token file each time (so rotating it needs
// no restart); without a file (path empty) a token is generated once into generated.
func tokenSource(path, generated, what string, log *slog.Logger) (func() (string, error), error) {
	if path == "" {
		path = generated
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return nil, err
			}
			if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("write generated token: %w", err)
			}
			log.Warn("generated a "+what, "file", path)
		}
	}
	read := func() (string, error) { return tokenfile.Read(path) }
	if _, err := read(); err != nil {
		return nil, err
	}
	return read, nil
}

// newRedisClient connects to --redis-address, the primary --redis-sentinel-addresses name
// or the --redis-cluster-addresses cluster, over TLS with --redis-tls.
func newRedisClient(cfg Config) (redis.UniversalClient, error) {
	return NewRedisClient(cfg, 2*time.Second)
}

// NewRedisClient connects to the Redis of cfg's --redis-* flags (RedisOptions).
func NewRedisClient(cfg Config, timeout time.Duration) (redis.UniversalClient, error) {
	opts, err := cfg.RedisOptions(timeout)
	if err != nil {
		return nil, err
	}
	return redisstore.Dial(opts)
}

// RedisOptions are the connection options of the --redis-* flags, which the ops commands
// share: one server, Sentinel or Cluster, over TLS with --redis-tls; timeout bounds each
// dial, read and write, and a command is retried once.
func (c *Config) RedisOptions(timeout time.Duration) (redisstore.Options, error) {
	opts := c.redisOptions()
	opts.Timeout, opts.MaxRetries, opts.DialerRetries = timeout, 1, 1
	if c.RedisTLS {
		t, err := redisTLSConfig(*c)
		if err != nil {
			return redisstore.Options{}, err
		}
		opts.TLS = t
	}
	return opts, nil
}

// RedisGiven reports whether any Redis connection flag is given.
func (c *Config) RedisGiven() bool { return c.redisOptions().Given() }

func (c *Config) redisOptions() redisstore.Options {
	return redisstore.Options{Addr: c.RedisAddress, Password: c.RedisPassword,
		SentinelAddrs: c.RedisSentinelAddresses, MasterName: c.RedisMasterName, SentinelPassword: c.RedisSentinelPassword,
		ClusterAddrs: c.RedisClusterAddresses}
}

// redisFlagsGiven names the flags of the connection modes o has.
func redisFlagsGiven(o redisstore.Options) string {
	var given []string
	if o.Addr != "" {
		given = append(given, "--redis-address")
	}
	if len(o.SentinelAddrs) > 0 || o.MasterName != "" {
		given = append(given, "--redis-sentinel-addresses")
	}
	if len(o.ClusterAddrs) > 0 {
		given = append(given, "--redis-cluster-addresses")
	}
	return strings.Join(given, " and ")
}

// ValidateRedis checks the flags of RegisterRedisFlags: none, or one connection mode,
// with TLS flags only with --redis-tls.
func (c *Config) ValidateRedis() error {
	var errs []error
	o := c.redisOptions()
	if o.Given() {
		if err := o.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if (c.RedisTLS || c.RedisTLSCAFile != "" || c.RedisTLSName != "") && !o.Given() {
		errs = append(errs, errors.New("--redis-tls, --redis-tls-ca-file and --redis-tls-server-name need --redis-address (or --redis-sentinel-addresses or --redis-cluster-addresses)"))
	}
	if (c.RedisTLSCAFile != "" || c.RedisTLSName != "") && !c.RedisTLS {
		errs = append(errs, errors.New("--redis-tls-ca-file and --redis-tls-server-name only apply with --redis-tls"))
	}
	return errors.Join(errs...)
}

// RegisterRedisFlags binds the fields of the connection to Redis to flags, which
// `meshrelay server` and the ops commands share (not --redis-prefix); addressUsage is
// --redis-address's text.
func (c *Config) RegisterRedisFlags(fs *pflag.FlagSet, addressUsage string) {
	fs.StringVar(&c.RedisAddress, "redis-address", "", addressUsage)
	fs.StringVar(&c.RedisPassword, "redis-password", os.Getenv("MESHRELAY_REDIS_PASSWORD"), "Redis password, of the data nodes in every mode (env MESHRELAY_REDIS_PASSWORD)")
	fs.StringSliceVar(&c.RedisSentinelAddresses, "redis-sentinel-addresses", nil, "Redis Sentinel, instead of --redis-address: comma-separated host:port of the sentinels that monitor the primary --redis-master-name; the client asks them for the current primary and follows a failover")
	fs.StringVar(&c.RedisMasterName, "redis-master-name", "", "with --redis-sentinel-addresses: the name the sentinels monitor the primary under (sentinel monitor NAME ...)")
	fs.StringVar(&c.RedisSentinelPassword, "redis-sentinel-password", os.Getenv("MESHRELAY_REDIS_SENTINEL_PASSWORD"), "with --redis-sentinel-addresses: the sentinels' own password (their requirepass), if any; --redis-password is the data nodes' (env MESHRELAY_REDIS_SENTINEL_PASSWORD)")
	fs.StringSliceVar(&c.RedisClusterAddresses, "redis-cluster-addresses", nil, "Redis Cluster, instead of --redis-address: comma-separated host:port of some nodes of the cluster (the client discovers the others); all keys of one --redis-prefix share one hash slot")
	fs.BoolVar(&c.RedisTLS, "redis-tls", false, "connect to Redis over TLS, in every mode (sentinels and data nodes alike); verified against --redis-tls-ca-file, else the system roots")
	fs.StringVar(&c.RedisTLSCAFile, "redis-tls-ca-file", "", "with --redis-tls: PEM bundle of the CA that signed Redis' certificates")
	fs.StringVar(&c.RedisTLSName, "redis-tls-server-name", "", "with --redis-tls: name to verify in every Redis certificate (default: the host each connection dials: that of --redis-address; with Sentinel or Cluster, the sentinels' addresses given and the nodes' addresses the sentinels and the cluster announce, so their certificates must carry those names or IPs, or set one name that all of them carry)")
}

func redisTLSConfig(cfg Config) (*tls.Config, error) {
	name := cfg.RedisTLSName
	if name == "" && cfg.RedisAddress != "" { // else crypto/tls verifies the host each connection dials
		host, _, err := net.SplitHostPort(cfg.RedisAddress)
		if err != nil {
			return nil, fmt.Errorf("--redis-address %q: %w", cfg.RedisAddress, err)
		}
		name = host
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
	if cfg.RedisTLSCAFile != "" {
		pem, err := os.ReadFile(cfg.RedisTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("--redis-tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--redis-tls-ca-file %s: no PEM certificate in it", cfg.RedisTLSCAFile)
		}
		t.RootCAs = pool
	}
	return t, nil
}
