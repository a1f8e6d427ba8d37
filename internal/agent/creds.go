package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/atomicfile"
	"github.com/meshrelay/meshrelay/internal/pki"
)

// credentials holds the relay CA and the agent's client certificate, obtains it by
// registration and renews it when two thirds of its lifetime have passed.
type credentials struct {
	cfg *Config
	log *slog.Logger
	m   *metrics

	mu      sync.Mutex // guards everything below
	pool    *x509.CertPool
	cert    *tls.Certificate
	issued  time.Time // when the certificate was obtained (its NotBefore is backdated for skew)
	invalid bool      // the server refused the certificate: register again
}

func newCredentials(cfg *Config, log *slog.Logger, m *metrics) *credentials {
	return &credentials{cfg: cfg, log: log, m: m}
}

func (c *credentials) certFile() string { return filepath.Join(c.cfg.StateDir, "agent.crt") }
func (c *credentials) keyFile() string  { return filepath.Join(c.cfg.StateDir, "agent.key") }

// bundleFile is the relay CA bundle the server handed at the last registration: during a
// relay CA rotation it holds the old and the new CA, so an agent restarted mid-rotation
// still trusts the server's new serving certificate (docs/adr/0008).
func (c *credentials) bundleFile() string { return filepath.Join(c.cfg.StateDir, "relay-ca.crt") }

// loadPool trusts the relay with --relay-ca-file and the bundle learned at registration.
func (c *credentials) loadPool() error {
	b, err := os.ReadFile(c.cfg.RelayCAFile)
	if err != nil {
		return fmt.Errorf("read relay CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("relay CA file %s holds no PEM certificate", c.cfg.RelayCAFile)
	}
	if learned, err := os.ReadFile(c.bundleFile()); err == nil {
		if !pool.AppendCertsFromPEM(learned) {
			c.log.Warn("relay ca bundle learned from the server holds no certificate; ignored", "file", c.bundleFile())
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read the relay CA bundle learned from the server: %w", err)
	}
	c.mu.Lock()
	c.pool = pool
	c.mu.Unlock()
	return nil
}

func (c *credentials) loadCA() error {
	if err := c.loadPool(); err != nil {
		return err
	}
	if c.cfg.TLSMode == "mtls" {
		if cert, err := pki.LoadKeyPair(c.certFile(), c.keyFile()); err == nil {
			// A certificate of another cluster (a copied state dir) is not ours: register anew.
			td := ""
			if len(cert.Leaf.URIs) > 0 {
				td = cert.Leaf.URIs[0].Host
			}
			if name, err := pki.ClusterFromCert(cert.Leaf, td); err == nil && name == c.cfg.Cluster {
				issued := time.Now()
				if fi, err := os.Stat(c.certFile()); err == nil {
					issued = fi.ModTime()
				}
				c.setCert(&cert, issued)
			} else {
				c.log.Warn("stored certificate is not this cluster's; registering again", "file", c.certFile(), "identity", name, "error", err)
			}
		}
	}
	return nil
}

func (c *credentials) setCert(cert *tls.Certificate, issued time.Time) {
	c.mu.Lock()
	c.cert, c.issued, c.invalid = cert, issued, false
	c.mu.Unlock()
	c.m.certExpiry.Set(float64(cert.Leaf.NotAfter.Unix()))
}

func (c *credentials) notAfter() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return time.Time{}
	}
	return c.cert.Leaf.NotAfter
}

// renewAt is when the certificate should be replaced: two thirds into its lifetime, counted
// from when it was obtained.
func (c *credentials) renewAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil || c.invalid {
		return time.Time{}
	}
	start := c.issued
	if start.Before(c.cert.Leaf.NotBefore) || start.After(c.cert.Leaf.NotAfter) {
		start = c.cert.Leaf.NotBefore
	}
	return start.Add(c.cert.Leaf.NotAfter.Sub(start) * 2 / 3)
}

func (c *credentials) markInvalid() {
	c.mu.Lock()
	c.invalid = true
	c.mu.Unlock()
}

// ensure registers when there is no usable certificate.
func (c *credentials) ensure(ctx context.Context) error {
	if c.cfg.TLSMode != "mtls" {
		return nil
	}
	if at := c.renewAt(); !at.IsZero() && time.Now().Before(at) {
		return nil
	}
	return c.register(ctx)
}

// renewLoop renews the certificate before it expires, retrying with backoff.
func (c *credentials) renewLoop(ctx context.Context) {
	if c.cfg.TLSMode != "mtls" {
		return
	}
	attempt := 0
	for {
		wait := time.Until(c.renewAt())
		if c.renewAt().IsZero() {
			wait = time.Second // no certificate yet: the connect loop registers; check again soon
		}
		if attempt > 0 {
			wait = backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		if at := c.renewAt(); at.IsZero() || time.Now().Before(at) {
			attempt = 0
			continue
		}
		if err := c.register(ctx); err != nil {
			attempt++
			c.log.Warn("certificate renewal failed; retrying", "error", err, "notAfter", c.notAfter())
			continue
		}
		attempt = 0
	}
}

func (c *credentials) serverName() string {
	if c.cfg.ServerName != "" {
		return c.cfg.ServerName
	}
	host, _, _ := net.SplitHostPort(c.cfg.RelayAddress)
	return host
}

// register obtains a certificate with the token and a CSR over server-verified TLS.
func (c *credentials) register(ctx context.Context) error {
	token, err := c.cfg.token()
	if err != nil {
		return err
	}
	key, err := loadOrCreateKey(c.keyFile())
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, c.cfg.Cluster)
	if err != nil {
		return fmt.Errorf("create csr: %w", err)
	}
	c.mu.Lock()
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.pool, ServerName: c.serverName()}
	c.mu.Unlock()
	target, err := c.resolveTarget(ctx)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(grpccreds.NewTLS(tcfg)))
	if err != nil {
		return fmt.Errorf("dial relay %s: %w", c.cfg.RelayAddress, err)
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := relayv1.NewRelayServiceClient(conn).Register(rctx, &relayv1.RegisterRequest{Token: token, Cluster: c.cfg.Cluster, CsrPem: csr})
	if err != nil {
		return fmt.Errorf("register cluster %s with %s: %w", c.cfg.Cluster, c.cfg.RelayAddress, err)
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return err
	}
	if err := pki.WriteKeyPair(c.certFile(), c.keyFile(), resp.GetCertificatePem(), keyPEM); err != nil {
		return err
	}
	if ca := resp.GetCaPem(); len(ca) > 0 {
		if err := atomicfile.Write(c.bundleFile(), ca, 0o644); err != nil {
			return fmt.Errorf("persist the relay CA bundle: %w", err)
		}
		if err := c.loadPool(); err != nil {
			return err
		}
	}
	cert, err := pki.LoadKeyPair(c.certFile(), c.keyFile())
	if err != nil {
		return err
	}
	c.setCert(&cert, time.Now())
	c.m.registrations.Inc()
	c.log.Info("registered; certificate issued", "identity", resp.GetIdentity(), "notAfter", cert.Leaf.NotAfter)
	return nil
}

func loadOrCreateKey(path string) (*ecdsaKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		if k, err := parseECKey(b); err == nil {
			return k, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read agent key: %w", err)
	}
	return pki.NewKey()
}

// transport returns the TLS transport credentials for the relay streams; handshake errors
// are recorded so that a refused certificate leads to a new registration.
func (c *credentials) transport() grpccreds.TransportCredentials {
	c.mu.Lock()
	defer c.mu.Unlock()
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.pool, ServerName: c.serverName()}
	if c.cfg.TLSMode == "mtls" {
		tcfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.cert == nil {
				return &tls.Certificate{}, nil
			}
			return c.cert, nil
		}
	}
	return &watchedCreds{TransportCredentials: grpccreds.NewTLS(tcfg), onErr: func(err error) {
		var alert tls.AlertError
		if errors.As(err, &alert) && c.cfg.TLSMode == "mtls" {
			c.log.Warn("server refused the client certificate; registering again", "error", err)
			c.markInvalid()
		}
	}}
}

type watchedCreds struct {
	grpccreds.TransportCredentials
	onErr func(error)
}

func (w *watchedCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, grpccreds.AuthInfo, error) {
	conn, info, err := w.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		w.onErr(err)
	}
	return conn, info, err
}

// resolveTarget resolves the relay host with the configured resolver (--dns-server) now;
// the TLS server name stays the configured host.
func (c *credentials) resolveTarget(ctx context.Context) (string, error) {
	host, port, err := net.SplitHostPort(c.cfg.RelayAddress)
	if err != nil {
		return "", fmt.Errorf("relay address %q: %w", c.cfg.RelayAddress, err)
	}
	if net.ParseIP(host) != nil {
		return c.cfg.RelayAddress, nil
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := c.cfg.resolver().LookupHost(lctx, host)
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("resolve relay host %s: %w", host, err)
	}
	return net.JoinHostPort(addrs[0], port), nil
}
