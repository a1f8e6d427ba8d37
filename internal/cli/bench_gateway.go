package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/bench"
)

// newBenchGatewayCmds returns `bench health-failover` and `bench gateway`.
func newBenchGatewayCmds() []*cobra.Command {
	return []*cobra.Command{newBenchHealthFailoverCmd(), newBenchGatewayLoadCmd()}
}

func newBenchHealthFailoverCmd() *cobra.Command {
	var o bench.HealthFailoverOptions
	var out string
	cmd := &cobra.Command{
		Use:   "health-failover",
		Short: "Time seed 003's health-check failover and failback through the real gateways",
		Long: `Run seed 003's data plane in this process on loopback: an ADS server (go-control-plane's
SnapshotCache), gateways local and remote (the gateway package), demo apps blue-pod and
green-pod. Local's gateway-proxy routes to default-service-blue-10000: priority 0 blue-pod with
an active HTTP health check on /health, priority 1 remote's failover gateway over mTLS (SNI
default-service-green-10000), which forwards to green-pod.

Then --runs times: blue-pod's /health turns to 503 at T0 and a client polling the
gateway-proxy every --poll-interval measures T0 → the first green-pod response; /health passes
again and it measures T0 → the first blue-pod response. Each switch starts at a random phase
of the health checks. The failure is seen by the next check, within one interval of T0, and
threshold − 1 more checks follow, so the time is uniform between (threshold − 1) × interval
and threshold × interval (mean (threshold − ½) × interval), plus a check's round trip and the
polling delay. Prints p50/p90/p99/max against that bound and the request errors (should be
0; the exit code is 1 otherwise); -o writes the figures as JSON.`,
		Example: `  meshrelay bench health-failover --runs 30 -o bench/results/gateway-health-failover.json
  meshrelay bench health-failover --interval 1s --timeout 1s --unhealthy-threshold 3 --healthy-threshold 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Runs < 1 || o.Interval <= 0 || o.Timeout <= 0 || o.PollInterval <= 0 {
				return fmt.Errorf("--runs must be at least 1 and --interval, --timeout, --poll-interval positive")
			}
			log, err := gatewayBenchLogger(cmd)
			if err != nil {
				return err
			}
			o.Log, o.Progress = log, cmd.ErrOrStderr()
			rep, err := bench.HealthFailover(cmd.Context(), o)
			if err = report(cmd, rep, out, err); rep == nil {
				return err
			}
			if err == nil && rep.Errors > 0 {
				err = fmt.Errorf("%w: %d of %d", bench.ErrRequestErrors, rep.Errors, rep.Requests)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Runs, "runs", 30, "failovers to measure, each followed by a failback")
	f.DurationVar(&o.Interval, "interval", 200*time.Millisecond, "health check interval")
	f.DurationVar(&o.Timeout, "timeout", 100*time.Millisecond, "health check timeout")
	f.Uint32Var(&o.UnhealthyThreshold, "unhealthy-threshold", 1, "failed checks that make an endpoint unhealthy")
	f.Uint32Var(&o.HealthyThreshold, "healthy-threshold", 1, "passed checks that make an unhealthy endpoint healthy")
	f.DurationVar(&o.PollInterval, "poll-interval", 2*time.Millisecond, "pause between two requests of the polling client")
	f.StringVarP(&out, "output", "o", "", "write the report as JSON to this file")
	return cmd
}

func newBenchGatewayLoadCmd() *cobra.Command {
	var o bench.GatewayOptions
	var out string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Measure throughput and latency directly, through a gateway, and through two gateways over mTLS",
		Long: `Run seed 003's data plane in this process on loopback (as bench health-failover) and load it
with --connections concurrent clients, one keep-alive HTTP/1.1 connection each, sending GET /
back to back for --duration per target (after a warm-up), on three paths:

  direct                 client → blue-pod
  gateway                client → local's gateway-proxy (HTTP listener) → blue-pod
  gateway-mtls-gateway   client → local's gateway-proxy → mTLS → remote's failover gateway
                         (TCP listener, forwards by SNI) → green-pod  (blue-pod failed over)

The load generator, the gateways and the apps share this process and its CPUs. Prints
requests/s, latency p50/p90/p99/max, the overhead against direct and the request errors
(should be 0; the exit code is 1 otherwise); -o writes the figures as JSON.`,
		Example: `  meshrelay bench gateway --connections 32 --duration 10s -o bench/results/gateway.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Connections < 1 || o.Duration <= 0 {
				return fmt.Errorf("--connections must be at least 1 and --duration positive")
			}
			log, err := gatewayBenchLogger(cmd)
			if err != nil {
				return err
			}
			o.Log, o.Progress = log, cmd.ErrOrStderr()
			rep, err := bench.Gateway(cmd.Context(), o)
			if err = report(cmd, rep, out, err); rep == nil {
				return err
			}
			if err == nil {
				n := 0
				for _, t := range rep.Targets {
					n += t.Errors
				}
				if n > 0 {
					err = fmt.Errorf("%w: %d", bench.ErrRequestErrors, n)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Connections, "connections", 32, "concurrent keep-alive clients, one connection each")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per target")
	f.DurationVar(&o.Warmup, "warmup", 0, "unmeasured load before each target (default a fifth of --duration, at most 1s)")
	f.IntVar(&o.MaxRequests, "max-requests", 0, "bound of the measured requests per target (default 50 million)")
	f.StringVarP(&out, "output", "o", "", "write the report as JSON to this file")
	return cmd
}

// gatewayBenchLogger logs the in-process gateways and apps at warn unless --log-level is
// given: their info logs (every health change) would bury the progress lines.
func gatewayBenchLogger(cmd *cobra.Command) (*slog.Logger, error) {
	g := &globals{logLevel: "warn", logFormat: "text"}
	if f := cmd.Flag("log-level"); f != nil && f.Changed {
		g.logLevel = f.Value.String()
	}
	if f := cmd.Flag("log-format"); f != nil {
		g.logFormat = f.Value.String()
	}
	return g.logger(cmd.ErrOrStderr())
}
