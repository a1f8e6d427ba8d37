package gatewaytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/demoapp"
	"github.com/meshrelay/meshrelay/internal/gateway"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
)

// Logger logs to the test's output; MESHRELAY_TEST_LOG=debug shows debug logs, =off none.
func Logger(t testing.TB, name string) *slog.Logger {
	lvl := slog.LevelInfo
	switch os.Getenv("MESHRELAY_TEST_LOG") {
	case "debug":
		lvl = slog.LevelDebug
	case "off":
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: lvl})).With("test", name)
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	p, err := proc.FreePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

// StartGateway runs a gateway until the end of the test, then checks that it stopped
// cleanly. The admin server is disabled unless cfg sets one.
func StartGateway(t testing.TB, cfg gateway.Config) *gateway.Gateway {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 300 * time.Millisecond
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	gw, err := gateway.New(cfg, Logger(t, cfg.NodeID))
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- gw.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway %s: %v", cfg.NodeID, err)
			}
		case <-time.After(time.Minute): // it may be applying a huge update (see WaitAcked)
			t.Errorf("gateway %s did not stop", cfg.NodeID)
		}
	})
	return gw
}

// StartDemoApp runs a demo app on free loopback ports until the end of the test.
func StartDemoApp(t testing.TB, text string) (app *demoapp.Server, addr, admin string) {
	t.Helper()
	s, err := demoapp.New(demoapp.Config{Text: text, BindAddress: "127.0.0.1"}, Logger(t, text))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo app %s: %v", text, err)
		}
	})
	actx, acancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer acancel()
	addr, admin, err = s.Addresses(actx)
	if err != nil {
		t.Fatalf("demo app %s: %v", text, err)
	}
	return s, addr, admin
}

// Eventually polls f until it returns nil, failing the test with its last error after
// timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	poll.Every(t, timeout, 20*time.Millisecond, "condition", f)
}

// Client is an HTTP client that opens a new connection per request (so that listener
// changes are observed) with a generous timeout.
func Client(t testing.TB) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// Get returns the status code and trimmed body of GET url.
func Get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// WantBody polls url until it answers 200 with body.
func WantBody(t testing.TB, c *http.Client, url, body string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, func() error {
		code, got, err := Get(c, url)
		if err != nil {
			return err
		}
		if code != 200 || got != body {
			return fmt.Errorf("GET %s: %d %q, want 200 %q", url, code, got, body)
		}
		return nil
	})
}

// ClusterStatus returns a cluster's status from the gateway.
func ClusterStatus(t testing.TB, gw *gateway.Gateway, name string) gateway.ClusterStatus {
	t.Helper()
	for _, c := range gw.Status().Clusters {
		if c.Name == name {
			return c
		}
	}
	return gateway.ClusterStatus{Name: name, ActivePriority: -2}
}

// Post sends an empty POST and checks for 200.
func Post(t testing.TB, c *http.Client, url string) {
	t.Helper()
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d", url, resp.StatusCode)
	}
}

// PKI is a mesh CA issuing the certificates of the translator's mesh identities.
type PKI struct {
	CA *pki.CA
}

// NewPKI creates a CA.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := pki.NewCA("test.meshrelay", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca}
}

// Mesh issues a mesh identity (usable as client and server) for a cluster.
func (p *PKI) Mesh(t testing.TB, cluster string) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, _, err := p.CA.IssueMesh(cluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// ClientTLS is a client configuration presenting the cluster's mesh identity with sni,
// verifying the server against the CA (no hostname check, like the gateway).
func (p *PKI) ClientTLS(t testing.TB, cluster, sni string) *tls.Config {
	t.Helper()
	c, k := p.Mesh(t, cluster)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	roots := p.CA.Pool()
	return &tls.Config{
		ServerName: sni, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots})
			return err
		},
	}
}
