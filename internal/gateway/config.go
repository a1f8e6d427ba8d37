package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/telemetry"
)

// Config is the gateway's configuration.
type Config struct {
	// XDSAddress is the ADS server (the relay agent): host:port, or its Unix socket
	// (unix:///path). Plaintext is allowed on a socket and on loopback only; elsewhere the
	// link needs mutual TLS (XDSCertFile, XDSKeyFile, XDSCAFile and Cluster).
	XDSAddress string
	// XDSCertFile and XDSKeyFile are the gateway's certificate for the xDS link, naming
	// spiffe://<td>/cluster/<Cluster>/gateway/<NodeID>; XDSCAFile is the mesh CA bundle that
	// verifies the agent, whose certificate must name spiffe://<td>/cluster/<Cluster>. The
	// files are read again when they change.
	XDSCertFile, XDSKeyFile, XDSCAFile string
	// Cluster is the gateway's cluster (required with TLS).
	Cluster string
	// NodeID is the Envoy node id sent to the xDS server.
	NodeID string
	// NodeCluster is the Envoy node cluster sent to the xDS server (optional).
	NodeCluster string
	// AdminAddress serves /healthz, /readyz, /metrics and /status; empty disables it.
	AdminAddress string
	// DrainTimeout bounds how long a removed listener (and every listener at shutdown)
	// waits for in-flight requests and connections before closing them.
	DrainTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff between xDS
	// reconnection attempts.
	MinBackoff, MaxBackoff time.Duration
	// Version is the binary's version for meshrelay_build_info (set by the CLI, no flag).
	Version string
	// Telemetry exports the gateway's metrics over OTLP (--otlp-endpoint); off by default.
	Telemetry telemetry.Config
}

// Defaults of Config.
const (
	DefaultAdminAddress = "127.0.0.1:19000"
	DefaultDrainTimeout = 10 * time.Second
	DefaultMinBackoff   = 250 * time.Millisecond
	DefaultMaxBackoff   = 15 * time.Second
)

// RegisterFlags adds the gateway's flags to fs, with their defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.XDSAddress, "xds-address", "", "the ADS server, the relay agent's --xds-address: unix:///absolute/path or unix:relative/path (its Unix socket, by default <agent state-dir>/xds.sock), "+
		"or host:port; plaintext TCP is allowed on loopback only (127.0.0.0/8, ::1, localhost), any other address needs --xds-tls-cert-file, --xds-tls-key-file, --xds-ca-file and --cluster (required)")
	fs.StringVar(&c.Cluster, "cluster", "", "the gateway's cluster; with TLS the agent's certificate must name spiffe://<trust-domain>/cluster/<cluster>, else the gateway refuses it and keeps its last configuration")
	fs.StringVar(&c.XDSCertFile, "xds-tls-cert-file", "", "mutual TLS to the agent (its --xds-tls): this gateway's certificate, naming spiffe://<trust-domain>/cluster/<cluster>/gateway/<node-id> ('meshrelay gateway issue-cert' writes it); read again when it changes")
	fs.StringVar(&c.XDSKeyFile, "xds-tls-key-file", "", "private key of --xds-tls-cert-file")
	fs.StringVar(&c.XDSCAFile, "xds-ca-file", "", "mesh CA bundle (PEM) that verifies the agent's certificate ('meshrelay gateway issue-cert' writes it as ca.crt); read again when it changes")
	fs.StringVar(&c.NodeID, "node-id", "", "Envoy node id sent to the xDS server (required)")
	fs.StringVar(&c.NodeCluster, "node-cluster", "", "Envoy node cluster sent to the xDS server")
	fs.StringVar(&c.AdminAddress, "admin-address", DefaultAdminAddress, "admin HTTP address: /healthz, /readyz, /metrics, /status; empty disables it")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "how long a removed listener, and every listener at shutdown, waits for in-flight requests and connections")
	fs.DurationVar(&c.MaxBackoff, "xds-max-backoff", DefaultMaxBackoff, "upper bound of the jittered exponential backoff between xDS reconnection attempts")
	c.Telemetry.RegisterFlags(fs)
}

// withDefaults fills zero durations.
func (c Config) withDefaults() Config {
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	return c
}

// tls says whether the xDS link uses mutual TLS.
func (c Config) tls() bool { return c.XDSCertFile != "" }

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if err := c.Telemetry.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.XDSAddress == "" {
		errs = append(errs, errors.New("--xds-address is required"))
	} else if e, err := flagcheck.ParseEndpoint("--xds-address", c.XDSAddress); err != nil {
		errs = append(errs, err)
	} else if !e.Local() && !c.tls() {
		errs = append(errs, fmt.Errorf("--xds-address %s: a non-loopback TCP address needs mutual TLS (--xds-tls-cert-file, --xds-tls-key-file, --xds-ca-file, --cluster): "+
			"the xDS stream carries the mesh private keys (or connect to the agent's Unix socket, unix:///path, or to loopback)", c.XDSAddress))
	}
	if c.tls() || c.XDSKeyFile != "" || c.XDSCAFile != "" {
		if c.XDSCertFile == "" || c.XDSKeyFile == "" || c.XDSCAFile == "" || c.Cluster == "" {
			errs = append(errs, errXDSNoTLS)
		}
	}
	if c.NodeID == "" {
		errs = append(errs, errors.New("--node-id is required"))
	}
	if c.AdminAddress != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddress); err != nil {
			errs = append(errs, fmt.Errorf("--admin-address %q: %w", c.AdminAddress, err))
		}
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("--drain-timeout %v must not be negative", c.DrainTimeout))
	}
	return errors.Join(errs...)
}
