// Package admin serves the HTTP admin endpoints every meshrelay process has: /healthz,
// /readyz, /metrics (Prometheus) and /status (JSON), plus routes a role adds (the server's
// configuration API), over plain HTTP or, with Config.TLS, HTTPS.
package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is an admin HTTP server.
type Server struct {
	addr    string
	mux     *http.ServeMux
	log     *slog.Logger
	tls     *tls.Config
	listen  net.Listener
	refused *prometheus.CounterVec // meshrelay_admin_requests_refused_total
}

// Config says what the standard endpoints report.
type Config struct {
	// Ready returns nil when the process is ready to serve.
	Ready func() error
	// Status returns the JSON document of /status.
	Status func() any
	// Gatherer provides /metrics; meshrelay_build_info is added to what it gathers.
	Gatherer prometheus.Gatherer
	// Version is the binary's version, meshrelay_build_info's version label.
	Version string
	// TLS, when set, serves every endpoint over HTTPS with it (it must provide the serving
	// certificate); nil serves plain HTTP.
	TLS *tls.Config
}

// New builds an admin server for addr with the standard endpoints; it does no I/O.
func New(addr string, cfg Config, log *slog.Logger) *Server {
	s := &Server{addr: addr, mux: http.NewServeMux(), log: log, tls: cfg.TLS,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_admin_requests_refused_total",
			Help: "Admin API requests refused for their bearer token, by reason (no_token, wrong_token)."}, []string{"reason"})}
	for _, reason := range []string{RefusedNoToken, RefusedWrongToken} {
		s.refused.WithLabelValues(reason) // 0 from the start, so that rate() sees the first one
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	if cfg.Gatherer != nil {
		own := prometheus.NewRegistry()
		own.MustRegister(buildInfo(cfg.Version), s.refused)
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{cfg.Gatherer, own}, promhttp.HandlerOpts{}))
	}
	if cfg.Status != nil {
		s.mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
			WriteJSON(w, http.StatusOK, cfg.Status())
		})
	}
	return s
}

// Handle adds a route.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Reasons of meshrelay_admin_requests_refused_total.
const (
	RefusedNoToken    = "no_token"
	RefusedWrongToken = "wrong_token"
)

// Refused records a request refused for its token (reason: RefusedNoToken or
// RefusedWrongToken): a log line and meshrelay_admin_requests_refused_total.
func (s *Server) Refused(r *http.Request, reason string) {
	s.refused.WithLabelValues(reason).Inc()
	s.log.Warn("admin request refused", "reason", reason, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
}

// Listen binds the address; Start serves on it. Splitting the two lets callers learn the
// bound address (":0") before serving.
func (s *Server) Listen() (string, error) {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return "", fmt.Errorf("admin listen on %s: %w", s.addr, err)
	}
	s.listen = ln
	return ln.Addr().String(), nil
}

// Start serves until ctx ends, then shuts down gracefully.
func (s *Server) Start(ctx context.Context) error {
	if s.listen == nil {
		if _, err := s.Listen(); err != nil {
			return err
		}
	}
	// Failed handshakes (a client that does not trust the certificate, a port scan) are
	// the client's to report; keep them at debug level.
	// The timeouts bound a slow client (a large apply has a minute to arrive); headers are
	// small.
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, MaxHeaderBytes: 64 << 10, TLSConfig: s.tls,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// Requests live within ctx: long-lived ones (the UI's event stream) end when it does
		// instead of holding up Shutdown.
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			errc <- srv.ServeTLS(s.listen, "", "")
			return
		}
		errc <- srv.Serve(s.listen)
	}()
	s.log.Info("admin listening", "address", s.listen.Addr().String(), "tls", s.tls != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

// WriteJSON writes v as indented JSON with a status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
