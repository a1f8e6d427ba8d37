// Package demoapp is the demo workload of seed 003: an HTTP server that answers every path
// with a fixed text (like hashicorp/http-echo, without the quotes) and serves /health, with
// an admin port whose POST /healthcheck/fail and POST /healthcheck/ok flip /health (the
// switches the seed uses on Envoy's admin port).
package demoapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
)

// Config is the demo app's configuration.
type Config struct {
	// Text is answered, followed by a newline, on every path but /health.
	Text string
	// BindAddress is the IP both ports listen on.
	BindAddress string
	// Port serves the text and /health; AdminPort the health switches (0: any free port).
	Port, AdminPort int
}

// RegisterFlags adds the demo app's flags to fs.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Text, "text", "", "text answered on every path, followed by a newline (required)")
	fs.StringVar(&c.BindAddress, "bind-address", "127.0.0.1", "IP address both ports listen on")
	fs.IntVar(&c.Port, "port", 10000, "port answering the text and /health")
	fs.IntVar(&c.AdminPort, "admin-port", 19100, "admin port: POST /healthcheck/fail and POST /healthcheck/ok flip /health")
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Text == "" {
		errs = append(errs, errors.New("--text is required"))
	}
	if net.ParseIP(c.BindAddress) == nil {
		errs = append(errs, fmt.Errorf("--bind-address %q is not an IP address", c.BindAddress))
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"--port", c.Port}, {"--admin-port", c.AdminPort}} {
		if p.v < 0 || p.v > 65535 {
			errs = append(errs, fmt.Errorf("%s %d is not in 0-65535", p.name, p.v))
		}
	}
	return errors.Join(errs...)
}

// Probe is one request to /health as the app answered it.
type Probe struct {
	Time    time.Time
	Healthy bool
}

// maxProbes bounds the probe history.
const maxProbes = 4096

// Server is the demo app.
type Server struct {
	cfg     Config
	log     *slog.Logger
	healthy atomic.Bool

	mu     sync.Mutex // guards probes
	probes []Probe

	ready           chan struct{}
	addr, adminAddr string // set before ready is closed
}

// New validates cfg and returns a healthy server; it does no I/O.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("demo app config: %w", err)
	}
	s := &Server{cfg: cfg, log: log, ready: make(chan struct{})}
	s.healthy.Store(true)
	return s, nil
}

// SetHealthy flips /health, as the admin switches do.
func (s *Server) SetHealthy(ok bool) {
	if s.healthy.Swap(ok) != ok {
		s.log.Info("health switched", "text", s.cfg.Text, "healthy", ok)
	}
}

// Probes returns the /health requests answered so far (the latest maxProbes).
func (s *Server) Probes() []Probe {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Probe(nil), s.probes...)
}

// Addresses waits until both ports are bound and returns them.
func (s *Server) Addresses(ctx context.Context) (addr, admin string, err error) {
	select {
	case <-ctx.Done():
		return "", "", ctx.Err()
	case <-s.ready:
		return s.addr, s.adminAddr, nil
	}
}

func (s *Server) appHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		ok := s.healthy.Load()
		s.mu.Lock()
		if len(s.probes) == maxProbes {
			s.probes = append(s.probes[:0], s.probes[1:]...)
		}
		s.probes = append(s.probes, Probe{Time: time.Now(), Healthy: ok})
		s.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "fail\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-App-Name", "meshrelay-demo-app")
		_, _ = io.WriteString(w, s.cfg.Text+"\n")
	})
	return mux
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	set := func(ok bool) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			s.SetHealthy(ok)
			_, _ = io.WriteString(w, "OK\n")
		}
	}
	mux.HandleFunc("POST /healthcheck/fail", set(false))
	mux.HandleFunc("POST /healthcheck/ok", set(true))
	mux.HandleFunc("GET /healthcheck", func(w http.ResponseWriter, _ *http.Request) {
		if s.healthy.Load() {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		_, _ = io.WriteString(w, "fail\n")
	})
	return mux
}

// Start binds both ports and serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	listen := func(port int) (net.Listener, error) {
		ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.BindAddress, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("demo app listen: %w", err)
		}
		return ln, nil
	}
	app, err := listen(s.cfg.Port)
	if err != nil {
		return err
	}
	adm, err := listen(s.cfg.AdminPort)
	if err != nil {
		_ = app.Close()
		return err
	}
	s.addr, s.adminAddr = app.Addr().String(), adm.Addr().String()
	close(s.ready)
	s.log.Info("demo app listening", "text", s.cfg.Text, "address", s.addr, "adminAddress", s.adminAddr)
	g, gctx := errgroup.WithContext(ctx)
	for _, srv := range []struct {
		ln net.Listener
		h  http.Handler
	}{{app, s.appHandler()}, {adm, s.adminHandler()}} {
		hs := &http.Server{Handler: srv.h, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := hs.Serve(srv.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("demo app serve: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			// A short grace: connections a client dialed but never used (StateNew) would
			// otherwise hold Shutdown for 5s.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			if err := hs.Shutdown(sctx); err != nil {
				_ = hs.Close()
			}
			return nil
		})
	}
	return g.Wait()
}
