// Package telemetry exports a meshrelay process's metrics and traces over OTLP/gRPC to an
// OpenTelemetry Collector (the workload cluster's collector agent, or a telemetry gateway).
//
// Metrics are not defined twice: the process's Prometheus registry, which /metrics serves,
// is bridged (go.opentelemetry.io/contrib/bridges/prometheus), so every metric it has also
// goes out over OTLP under the same name. Traces come from the TracerProvider this package
// builds (configuration changes, see internal/changetrace). Export is off unless an
// endpoint is configured, by --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT.
package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	promb "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/flagcheck"
)

// envEndpoint is the standard variable that turns export on without --otlp-endpoint; the
// exporters read it (and the other OTEL_EXPORTER_OTLP_* variables) themselves.
const envEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"

// DefaultInterval is how often metrics are exported by default.
const DefaultInterval = 10 * time.Second

// Config configures OTLP export; RegisterFlags binds it to flags.
type Config struct {
	// Endpoint is the collector's OTLP/gRPC address, host:port; empty turns export off
	// (unless OTEL_EXPORTER_OTLP_ENDPOINT is set).
	Endpoint string
	// CAFile verifies the collector's certificate (PEM); empty uses the system roots.
	CAFile string
	// ServerName overrides the name verified in the collector's certificate.
	ServerName string
	// Insecure sends in plain text; only to a loopback endpoint.
	Insecure bool
	// Interval is how often metrics are exported (0: DefaultInterval).
	Interval time.Duration
}

// RegisterFlags binds the configuration to flags with their defaults.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Endpoint, "otlp-endpoint", "", "host:port of an OpenTelemetry Collector's OTLP/gRPC receiver (the cluster's collector agent) to export metrics (every /metrics metric) and configuration-change traces to, over TLS; off when empty (OTEL_EXPORTER_OTLP_ENDPOINT turns it on too)")
	fs.StringVar(&c.CAFile, "otlp-ca-file", "", "CA bundle (PEM) that verifies the --otlp-endpoint collector's certificate (default: the system roots)")
	fs.StringVar(&c.ServerName, "otlp-server-name", "", "name to verify in the --otlp-endpoint collector's certificate (default: the endpoint's host)")
	fs.BoolVar(&c.Insecure, "otlp-insecure", false, "export OTLP in plain text; only with a loopback --otlp-endpoint (127.0.0.1, ::1, localhost)")
	fs.DurationVar(&c.Interval, "otlp-metrics-interval", DefaultInterval, "how often metrics are exported over OTLP")
}

// Enabled reports whether export is configured.
func (c *Config) Enabled() bool { return c.Endpoint != "" || os.Getenv(envEndpoint) != "" }

// Validate checks the configuration; every error names its flag.
func (c *Config) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		host, _, err := net.SplitHostPort(c.Endpoint)
		if err != nil {
			errs = append(errs, fmt.Errorf("--otlp-endpoint %q: want host:port: %w", c.Endpoint, err))
		} else if c.Insecure && !flagcheck.Loopback(host) {
			errs = append(errs, fmt.Errorf("--otlp-insecure needs a loopback --otlp-endpoint (127.0.0.1, ::1 or localhost), got %q: telemetry would cross the network in clear text; give --otlp-ca-file instead", c.Endpoint))
		}
	}
	if c.Insecure && (c.CAFile != "" || c.ServerName != "") {
		errs = append(errs, errors.New("--otlp-insecure excludes --otlp-ca-file and --otlp-server-name"))
	}
	if !c.Enabled() && (c.CAFile != "" || c.Insecure || c.ServerName != "") {
		errs = append(errs, errors.New("--otlp-ca-file, --otlp-server-name and --otlp-insecure need --otlp-endpoint"))
	}
	if c.Interval != 0 && c.Interval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--otlp-metrics-interval %v: must be at least 100ms", c.Interval))
	}
	if c.CAFile != "" {
		if err := flagcheck.File("--otlp-ca-file", c.CAFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Exporter exports a process's metrics and traces; it is a runner component. Its zero
// TracerProvider (export off) is a no-op one.
type Exporter struct {
	log   *slog.Logger
	tp    *sdktrace.TracerProvider
	mp    *sdkmetric.MeterProvider
	state *exportState // nil with export off
}

// New builds the exporters for the process named service (meshrelay-server, meshrelay-agent,
// meshrelay-gateway) with the resource attributes attrs (the cluster, for example). The
// metrics are gathered from reg. Connections are made lazily: New does no network I/O.
// With export off, New returns an Exporter whose Start only waits and whose tracer
// provider records nothing.
func New(cfg Config, service string, attrs []attribute.KeyValue, reg *prometheus.Registry, log *slog.Logger) (*Exporter, error) {
	e := &Exporter{log: log}
	if !cfg.Enabled() {
		return e, nil
	}
	failures := prometheus.NewCounter(prometheus.CounterOpts{Name: "meshrelay_otlp_export_errors_total",
		Help: "OTLP exports (metrics or traces) that failed, for example with the collector down; the exporters retry."})
	reg.MustRegister(failures)
	// The exporters report failures only through otel's process-wide error handler.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		failures.Inc()
		log.Warn("otlp export failed", "endpoint", orEnv(cfg.Endpoint), "error", err)
	}))
	var topts []otlptracegrpc.Option
	var mopts []otlpmetricgrpc.Option
	if cfg.Endpoint != "" {
		topts = append(topts, otlptracegrpc.WithEndpoint(cfg.Endpoint))
		mopts = append(mopts, otlpmetricgrpc.WithEndpoint(cfg.Endpoint))
	}
	switch {
	case cfg.Insecure:
		topts = append(topts, otlptracegrpc.WithInsecure())
		mopts = append(mopts, otlpmetricgrpc.WithInsecure())
	case cfg.CAFile != "" || cfg.ServerName != "" || cfg.Endpoint != "":
		tc, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		creds := credentials.NewTLS(tc)
		topts = append(topts, otlptracegrpc.WithTLSCredentials(creds))
		mopts = append(mopts, otlpmetricgrpc.WithTLSCredentials(creds))
	}
	e.state = &exportState{st: Status{Endpoint: orEnv(cfg.Endpoint)}}
	ctx := context.Background() // the exporters' constructors dial lazily; ctx bounds nothing here
	texp, err := otlptracegrpc.New(ctx, topts...)
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	mexp, err := otlpmetricgrpc.New(ctx, mopts...)
	if err != nil {
		return nil, fmt.Errorf("otlp metric exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(append([]attribute.KeyValue{
		attribute.String("service.name", service)}, attrs...)...))
	if err != nil {
		return nil, fmt.Errorf("otlp resource: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	e.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(spanExporter{texp, e.state}, sdktrace.WithBatchTimeout(time.Second)), sdktrace.WithResource(res))
	reader := sdkmetric.NewPeriodicReader(metricExporter{mexp, e.state}, sdkmetric.WithInterval(cfg.Interval),
		sdkmetric.WithProducer(promb.NewMetricProducer(promb.WithGatherer(reg))))
	e.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res))
	log.Info("otlp export on", "endpoint", orEnv(cfg.Endpoint), "caFile", cfg.CAFile, "insecure", cfg.Insecure, "interval", cfg.Interval)
	return e, nil
}

func orEnv(endpoint string) string {
	if endpoint != "" {
		return endpoint
	}
	return os.Getenv(envEndpoint)
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--otlp-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--otlp-ca-file %s: no PEM certificate in it", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// Status returns the state of the export (Status{} with export off).
func (e *Exporter) Status() Status {
	if e == nil || e.state == nil {
		return Status{}
	}
	return e.state.get()
}

// TracerProvider returns the provider of the process's tracers (a no-op one when export is
// off).
func (e *Exporter) TracerProvider() trace.TracerProvider {
	if e == nil || e.tp == nil {
		return noop.NewTracerProvider()
	}
	return e.tp
}

// Start blocks until ctx ends, then flushes and stops the exporters. Export failures (the
// collector down) are retried by the exporters and logged through otel's error handler;
// the process's work never waits for them.
func (e *Exporter) Start(ctx context.Context) error {
	<-ctx.Done()
	if e.tp == nil {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := errors.Join(e.tp.Shutdown(sctx), e.mp.Shutdown(sctx)); err != nil {
		e.log.Warn("otlp export not flushed at stop", "error", err)
	}
	return nil
}
