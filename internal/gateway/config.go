package gateway

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"
)

// Config is the gateway's configuration.
type Config struct {
	// XDSAddress is host:port of the ADS server (the relay agent). The connection is
	// plaintext gRPC: keep it on loopback or a private network.
	XDSAddress string
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
	fs.StringVar(&c.XDSAddress, "xds-address", "", "host:port of the ADS server (the relay agent's --xds-address); plaintext gRPC, keep it on loopback (required)")
	fs.StringVar(&c.NodeID, "node-id", "", "Envoy node id sent to the xDS server (required)")
	fs.StringVar(&c.NodeCluster, "node-cluster", "", "Envoy node cluster sent to the xDS server")
	fs.StringVar(&c.AdminAddress, "admin-address", DefaultAdminAddress, "admin HTTP address: /healthz, /readyz, /metrics, /status; empty disables it")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "how long a removed listener, and every listener at shutdown, waits for in-flight requests and connections")
	fs.DurationVar(&c.MaxBackoff, "xds-max-backoff", DefaultMaxBackoff, "upper bound of the jittered exponential backoff between xDS reconnection attempts")
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

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.XDSAddress == "" {
		errs = append(errs, errors.New("--xds-address is required"))
	} else if _, _, err := net.SplitHostPort(c.XDSAddress); err != nil {
		errs = append(errs, fmt.Errorf("--xds-address %q: %w", c.XDSAddress, err))
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
