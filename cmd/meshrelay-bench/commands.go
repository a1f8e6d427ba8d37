package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/failoverbench"
	"github.com/meshrelay/meshrelay/internal/bench/gatewaybench"
	"github.com/meshrelay/meshrelay/internal/bench/relaybench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/bench/translatebench"
)

func newTranslateCmd() *cobra.Command {
	var o bench.WorldOptions
	var out string
	cmd := &cobra.Command{
		Use:   "translate",
		Short: "Measure full and incremental translation of a generated world",
		Long: `Generate a world of clusters, each with services, an east-west gateway and a route table, with
virtual destinations and a failover policy spanning every cluster; then measure a full
translation, a translation with nothing changed, a change private to one cluster, and a change
to a service every cluster sees. Prints a table; -o writes the figures as JSON.`,
		Example: `  meshrelay-bench translate --clusters 100 --services 1000 -o bench/results/translate.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Clusters < 1 || o.Services < 1 {
				return errors.New("--clusters and --services must be at least 1")
			}
			rep := translatebench.Run(o)
			rep.Print(cmd.OutOrStdout())
			if out != "" {
				return bench.WriteJSON(out, rep)
			}
			return nil
		},
	}
	o.Flags(cmd.Flags())
	outputFlag(cmd, &out)
	return cmd
}

func newRelayCmd() *cobra.Command {
	var o relaybench.Options
	var out string
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Measure registration, propagation, one-cluster changes, churn and server cost with N agents",
		Long: `Start the management server as a child process (a config directory registering N clusters, a
VirtualDestination for each exported service) and N real relay agents in a second child process
(the hidden ` + "`sim-agents`" + `: in-memory discovery, a sink that counts what it applies). Then measure:
registration and initial sync; K changes that reach every cluster (a RouteTable with a unique
host), from the admin API's HTTP 200 to each agent applying it; K changes to one cluster's
RouteTable and the bytes every other agent received meanwhile (must be 0); the server's CPU,
memory and goroutines per connected agent; with --churn, an endpoint change per cluster per
second for a window, whether the server keeps up, and a marker change under churn. With
--baseline, go-control-plane's SnapshotCache serves the same clients the same payload sizes
for comparison. Prints a table; -o writes the figures as JSON.`,
		Example: `  meshrelay-bench relay --agents 1000 --changes 10 --churn --baseline -o bench/results/relay-1000.json
  meshrelay-bench relay --agents 300 --replicas 3 --redis-address 127.0.0.1:6379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			rep, err := relaybench.Run(cmd.Context(), o)
			return report(cmd, rep, out, err)
		},
	}
	o.Flags(cmd.Flags())
	outputFlag(cmd, &out)
	return cmd
}

func newPlotCmd() *cobra.Command {
	var in, out string
	cmd := &cobra.Command{
		Use:   "plot",
		Short: "Draw the latency distributions of a relay report (JSON) as an SVG image",
		Long: `Read a report that ` + "`meshrelay-bench relay -o`" + ` wrote and draw, as an SVG image, the
latency of a change that reaches every agent (from the admin API's answer, and less the
translation) beside go-control-plane serving the same clients (when the run had --baseline):
p50, p90, p99 and max on one linear scale.`,
		Example: `  meshrelay-bench plot -i bench/results/relay-1000.json -o bench/results/relay-1000.svg`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(in)
			if err != nil {
				return err
			}
			var rep relaybench.Report
			if err := json.Unmarshal(b, &rep); err != nil {
				return fmt.Errorf("%s: not a relay report: %w", in, err)
			}
			if rep.Propagation.Latency.N == 0 {
				return fmt.Errorf("%s: the report has no propagation figures to plot", in)
			}
			title, series := rep.Plot()
			return os.WriteFile(out, bench.LatencySVG(title, series), 0o644)
		},
	}
	cmd.Flags().StringVarP(&in, "input", "i", "", "the relay report (JSON) to plot")
	cmd.Flags().StringVarP(&out, "output", "o", "", "the SVG file to write")
	_ = cmd.MarkFlagRequired("input")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func newBaselineCmd() *cobra.Command {
	var o relaybench.BaselineOptions
	var out string
	cmd := &cobra.Command{
		Use:   "baseline",
		Short: "Measure go-control-plane's SnapshotCache over ADS with N clients (the relay benchmark's baseline)",
		Long: `Serve N xDS clients from go-control-plane's SnapshotCache over ADS (state of the world, mTLS), the
server and the clients in two child processes, and time the initial sync and K changes of each
client's route configuration, from the first SetSnapshot to each client receiving it. Use
--payload-bytes and --change-bytes to match what ` + "`relay`" + ` measured per agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			rep, err := relaybench.Baseline(cmd.Context(), o)
			return report(cmd, rep, out, err)
		},
	}
	o.Flags(cmd.Flags())
	outputFlag(cmd, &out)
	return cmd
}

func newFailoverCmd() *cobra.Command {
	var o failoverbench.Options
	var out string
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Time replica loss, regional failover, a Redis + server restart and a Redis failover with N agents",
		Long: `Start redis-server (from PATH) and run, several times each: (1) three replicas with
--cluster-load-balancing, one killed with kill -9, until all its agents are served again; (2) two
management servers in active/passive (--mgmt-cluster-name), agents resolving the relay name through
a DNS server of this process; the active one killed, the DNS answer switched and the lock moved,
until every agent is back and in sync, checking that no output content changed; (3) Redis and the
server killed and restarted together, until translation resumes after the last agent returns;
(4) redis-failover: the server on a Sentinel-managed Redis (a primary, a replica and three
redis-sentinel processes), the primary killed with kill -9, until the sentinels promote the
replica, the server acknowledges an apply again, and that change reaches every agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			rep, err := failoverbench.Run(cmd.Context(), o)
			return report(cmd, rep, out, err)
		},
	}
	o.Flags(cmd.Flags())
	outputFlag(cmd, &out)
	return cmd
}

func newHealthFailoverCmd() *cobra.Command {
	var o gatewaybench.HealthFailoverOptions
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
		Example: `  meshrelay-bench health-failover --runs 30 -o bench/results/gateway-health-failover.json
  meshrelay-bench health-failover --interval 1s --timeout 1s --unhealthy-threshold 3 --healthy-threshold 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			log, err := logger(cmd, "warn")
			if err != nil {
				return err
			}
			o.Log, o.Progress = log, cmd.ErrOrStderr()
			rep, err := gatewaybench.HealthFailover(cmd.Context(), o)
			if err = report(cmd, rep, out, err); rep == nil {
				return err
			}
			if err == nil && rep.Errors > 0 {
				err = fmt.Errorf("%w: %d of %d", gatewaybench.ErrRequestErrors, rep.Errors, rep.Requests)
			}
			return err
		},
	}
	o.Flags(cmd.Flags())
	outputFlag(cmd, &out)
	return cmd
}

func newGatewayCmd() *cobra.Command {
	var o gatewaybench.Options
	var out string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Measure throughput and latency directly, through a gateway, and through two gateways over mTLS",
		Long: `Run seed 003's data plane in this process on loopback (as health-failover) and load it
with --connections concurrent clients, one keep-alive HTTP/1.1 connection each, sending GET /
back to back for --duration per target (after a warm-up), on three paths:

  direct                 client → blue-pod
  gateway                client → local's gateway-proxy (HTTP listener) → blue-pod
  gateway-mtls-gateway   client → local's gateway-proxy → mTLS → remote's failover gateway
                         (TCP listener, forwards by SNI) → green-pod  (blue-pod failed over)

The load generator, the gateways and the apps share this process and its CPUs. Prints
requests/s, latency p50/p90/p99/max, the overhead against direct and the request errors
(should be 0; the exit code is 1 otherwise); -o writes the figures as JSON.`,
		Example: `  meshrelay-bench gateway --connections 32 --duration 10s -o bench/results/gateway.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			log, err := logger(cmd, "warn")
			if err != nil {
				return err
			}
			o.Log, o.Progress = log, cmd.ErrOrStderr()
			rep, err := gatewaybench.Run(cmd.Context(), o)
			if err = report(cmd, rep, out, err); rep == nil {
				return err
			}
			if err == nil {
				n := 0
				for _, t := range rep.Targets {
					n += t.Errors
				}
				if n > 0 {
					err = fmt.Errorf("%w: %d", gatewaybench.ErrRequestErrors, n)
				}
			}
			return err
		},
	}
	o.Flags(cmd.Flags())
	outputFlag(cmd, &out)
	return cmd
}

// The hidden commands are the child processes of relay, baseline and failover.

// hidden is a child process's command: flags registers its flags, run runs it with the
// logger the global flags ask for.
func hidden(use, short string, flags func(*pflag.FlagSet), run func(context.Context, *slog.Logger) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:    use,
		Short:  short,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger(cmd, "info")
			if err != nil {
				return err
			}
			return run(cmd.Context(), log)
		},
	}
	flags(cmd.Flags())
	return cmd
}

func newSimAgentsCmd() *cobra.Command {
	var c sim.Config
	return hidden("sim-agents", "Run many relay agents in one process with in-memory discovery (used by relay and failover)",
		c.Flags, func(ctx context.Context, log *slog.Logger) error { return sim.Run(ctx, c, log) })
}

func newServerCmd() *cobra.Command {
	var cfg serverapp.Config
	var debugAddr string
	return hidden("server", "Run the management server with pprof and a forced-GC endpoint (used by relay --profile)",
		func(fs *pflag.FlagSet) {
			cfg.RegisterFlags(fs)
			fs.StringVar(&debugAddr, "debug-address", "127.0.0.1:0", "address of the pprof and GC endpoint")
		},
		func(ctx context.Context, log *slog.Logger) error {
			return relaybench.RunProfiledServer(ctx, cfg, debugAddr, log)
		})
}

func newBaselineServerCmd() *cobra.Command {
	var c relaybench.BaselineServerConfig
	return hidden("baseline-server", "Serve ADS from go-control-plane's SnapshotCache (used by baseline)",
		c.Flags, func(ctx context.Context, log *slog.Logger) error { return relaybench.RunBaselineServer(ctx, c, log) })
}

func newBaselineClientsCmd() *cobra.Command {
	var c relaybench.BaselineClientsConfig
	return hidden("baseline-clients", "Run many ADS clients in one process (used by baseline)",
		c.Flags, func(ctx context.Context, log *slog.Logger) error { return relaybench.RunBaselineClients(ctx, c, log) })
}
