package cli

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
	"github.com/meshrelay/meshrelay/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure meshrelay (prints a table, writes JSON)"}
	cmd.AddCommand(newBenchTranslateCmd(), newBenchRelayCmd(), newBenchBaselineCmd(), newBenchFailoverCmd(),
		newBenchSimAgentsCmd(), newBenchServerCmd(), newBenchBaselineServerCmd(), newBenchBaselineClientsCmd())
	cmd.AddCommand(newBenchGatewayCmds()...)
	return cmd
}

func newBenchTranslateCmd() *cobra.Command {
	var o bench.WorldOptions
	var out string
	tr := &cobra.Command{
		Use:   "translate",
		Short: "Measure full and incremental translation of a generated world",
		Long: `Generate a world of clusters, each with services, an east-west gateway and a route table, with
virtual destinations and a failover policy spanning every cluster; then measure a full
translation, a translation with nothing changed, a change private to one cluster, and a change
to a service every cluster sees. Prints a table; -o writes the figures as JSON.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Clusters < 1 || o.Services < 1 {
				return fmt.Errorf("--clusters and --services must be at least 1")
			}
			rep := bench.Translate(o)
			rep.Print(cmd.OutOrStdout())
			if out != "" {
				return bench.WriteJSON(out, rep)
			}
			return nil
		},
	}
	tr.Flags().IntVar(&o.Clusters, "clusters", 100, "number of clusters")
	tr.Flags().IntVar(&o.Services, "services", 1000, "services per cluster")
	tr.Flags().IntVar(&o.VirtualDestinations, "virtual-destinations", 10, "virtual destinations spanning every cluster")
	tr.Flags().IntVar(&o.Routes, "routes", 10, "routes per cluster")
	tr.Flags().StringVarP(&out, "output", "o", "", "write the report as JSON to this file")
	return tr
}

func newBenchRelayCmd() *cobra.Command {
	var o bench.RelayOptions
	var out string
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Measure registration, propagation, one-cluster changes, churn and server cost with N agents",
		Long: `Start the management server as a child process (a config directory registering N clusters, a
VirtualDestination for each exported service) and N real relay agents in a second child process
(` + "`bench sim-agents`" + `: in-memory discovery, a sink that counts what it applies). Then measure:
registration and initial sync; K changes that reach every cluster (a RouteTable with a unique
host), from the admin API's HTTP 200 to each agent applying it; K changes to one cluster's
RouteTable and the bytes every other agent received meanwhile (must be 0); the server's CPU,
memory and goroutines per connected agent; with --churn, an endpoint change per cluster per
second for a window, whether the server keeps up, and a marker change under churn. With
--baseline, go-control-plane's SnapshotCache serves the same clients the same payload sizes
for comparison. Prints a table; -o writes the figures as JSON.`,
		Example: `  meshrelay bench relay --agents 1000 --changes 10 --churn --baseline -o bench/results/relay-1000.json
  meshrelay bench relay --agents 300 --replicas 3 --redis-address 127.0.0.1:6379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			rep, err := bench.Relay(cmd.Context(), o)
			return report(cmd, rep, out, err)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.World.Clusters, "agents", 100, "number of simulated agents (one cluster each)")
	f.IntVar(&o.World.Services, "services-per-cluster", 10, "services per cluster (Service + EndpointSlice with two endpoints)")
	f.IntVar(&o.World.ExportPercent, "exported-percent", 10, "percentage of each cluster's services selected by a VirtualDestination")
	f.IntVar(&o.Changes, "changes", 10, "changes of each kind to measure")
	f.StringVar(&o.RedisAddress, "redis-address", "", "Redis for the servers; empty gives each server its own bolt store in its --data-dir")
	f.IntVar(&o.Replicas, "replicas", 1, "server replicas (> 1 needs --redis-address; starts them with --cluster-load-balancing)")
	f.BoolVar(&o.Churn, "churn", false, "also measure endpoint churn in every cluster")
	f.DurationVar(&o.ChurnWindow, "churn-window", 20*time.Second, "measured churn window")
	f.DurationVar(&o.ChurnInterval, "churn-interval", time.Second, "each cluster changes one endpoint this often during churn")
	f.IntVar(&o.StartRate, "start-rate", 0, "agents started per second (0: all at once)")
	f.BoolVar(&o.Baseline, "baseline", false, "also run the go-control-plane baseline with the measured payload sizes and print ours/baseline")
	f.BoolVar(&o.Profile, "profile", false, "run the servers with pprof (`bench server`), force GC for exact heap figures, write CPU profiles per phase to --dir")
	f.DurationVar(&o.SyncTimeout, "sync-timeout", 0, "time allowed for the initial sync (default 3m + 300ms per agent)")
	f.StringVar(&o.WorkDir, "dir", "", "working directory for data, logs and profiles (default: a temporary directory removed at exit)")
	f.StringVar(&o.StateRoot, "state-root", "", "where the agents keep their state (default /dev/shm)")
	f.StringVarP(&out, "output", "o", "", "write the report as JSON to this file")
	return cmd
}

func newBenchBaselineCmd() *cobra.Command {
	var o bench.BaselineOptions
	var out string
	cmd := &cobra.Command{
		Use:   "baseline",
		Short: "Measure go-control-plane's SnapshotCache over ADS with N clients (the relay benchmark's baseline)",
		Long: `Serve N xDS clients from go-control-plane's SnapshotCache over ADS (state of the world, mTLS), the
server and the clients in two child processes, and time the initial sync and K changes of each
client's route configuration, from the first SetSnapshot to each client receiving it. Use
--payload-bytes and --change-bytes to match what ` + "`bench relay`" + ` measured per agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			rep, err := bench.Baseline(cmd.Context(), o)
			return report(cmd, rep, out, err)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Clients, "clients", 100, "number of xDS clients")
	f.IntVar(&o.PayloadBytes, "payload-bytes", 32<<10, "bytes each client holds after the initial sync")
	f.IntVar(&o.ChangeBytes, "change-bytes", 2<<10, "bytes of the route configuration each change replaces")
	f.IntVar(&o.Changes, "changes", 10, "changes to measure")
	f.StringVar(&o.WorkDir, "dir", "", "working directory (default: a temporary directory removed at exit)")
	f.StringVarP(&out, "output", "o", "", "write the report as JSON to this file")
	return cmd
}

func newBenchFailoverCmd() *cobra.Command {
	var o bench.FailoverOptions
	var out string
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Time replica loss, regional failover and a Redis + server restart with N agents",
		Long: `Start redis-server (from PATH) and run, several times each: (1) three replicas with
--cluster-load-balancing, one killed with kill -9, until all its agents are served again; (2) two
management servers in active/passive (--mgmt-cluster-name), agents resolving the relay name through
a DNS server of this process; the active one killed, the DNS answer switched and the lock moved,
until every agent is back and in sync, checking that no output content changed; (3) Redis and the
server killed and restarted together, until translation resumes after the last agent returns.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = cmd.ErrOrStderr()
			rep, err := bench.Failover(cmd.Context(), o)
			return report(cmd, rep, out, err)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.World.Clusters, "agents", 100, "number of simulated agents")
	f.IntVar(&o.World.Services, "services-per-cluster", 10, "services per cluster")
	f.IntVar(&o.World.ExportPercent, "exported-percent", 10, "percentage of each cluster's services selected by a VirtualDestination")
	f.IntVar(&o.Runs, "runs", 3, "runs of each scenario")
	f.StringSliceVar(&o.Scenarios, "scenarios", []string{"replica", "region", "restart"}, "scenarios to run: replica, region, restart")
	f.StringVar(&o.WorkDir, "dir", "", "working directory (default: a temporary directory removed at exit)")
	f.StringVarP(&out, "output", "o", "", "write the report as JSON to this file")
	return cmd
}

// benchLogger builds the logger of a hidden bench process from the global flags.
func benchLogger(cmd *cobra.Command) (*slog.Logger, error) {
	g := &globals{logLevel: "info", logFormat: "text"}
	if f := cmd.Flag("log-level"); f != nil {
		g.logLevel = f.Value.String()
	}
	if f := cmd.Flag("log-format"); f != nil {
		g.logFormat = f.Value.String()
	}
	return g.logger(cmd.ErrOrStderr())
}

func newBenchSimAgentsCmd() *cobra.Command {
	var c bench.SimConfig
	cmd := &cobra.Command{
		Use:    "sim-agents",
		Short:  "Run many relay agents in one process with in-memory discovery (used by bench relay)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := benchLogger(cmd)
			if err != nil {
				return err
			}
			return bench.RunSim(cmd.Context(), c, log)
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.Agents, "agents", 100, "number of agents")
	f.IntVar(&c.First, "first", 0, "index of the first simulated cluster")
	f.IntVar(&c.World.Services, "services-per-cluster", 10, "services per cluster")
	f.IntVar(&c.World.ExportPercent, "exported-percent", 10, "percentage of services carrying the exported label")
	f.StringVar(&c.RelayAddress, "relay-address", "", "relay address of the server")
	f.StringVar(&c.ServerName, "relay-server-name", "", "TLS server name (default: the host of --relay-address)")
	f.StringVar(&c.DNSServer, "dns-server", "", "DNS server for the relay address")
	f.StringVar(&c.TokenFile, "token-file", "", "relay identity token file")
	f.StringVar(&c.CAFile, "relay-ca-file", "", "relay CA bundle")
	f.StringVar(&c.StateRoot, "state-root", "", "directory for the agents' state directories")
	f.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address of the report API")
	f.IntVar(&c.StartRate, "start-rate", 0, "agents started per second (0: all at once)")
	f.DurationVar(&c.ResolveInterval, "resolve-interval", 0, "agents' --resolve-interval (default theirs)")
	f.DurationVar(&c.MaxBackoff, "max-backoff", 0, "agents' --max-backoff (default theirs)")
	f.StringVar(&c.RegisterAddress, "register-address", "", "register every agent at this address before starting it")
	return cmd
}

func newBenchServerCmd() *cobra.Command {
	var cfg serverapp.Config
	var debugAddr string
	cmd := &cobra.Command{
		Use:    "server",
		Short:  "Run the management server with pprof and a forced-GC endpoint (used by bench relay --profile)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := benchLogger(cmd)
			if err != nil {
				return err
			}
			return bench.RunProfiledServer(cmd.Context(), cfg, debugAddr, log)
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	cmd.Flags().StringVar(&debugAddr, "debug-address", "127.0.0.1:0", "address of the pprof and GC endpoint")
	return cmd
}

func newBenchBaselineServerCmd() *cobra.Command {
	var c bench.BaselineServerConfig
	cmd := &cobra.Command{
		Use:    "baseline-server",
		Short:  "Serve ADS from go-control-plane's SnapshotCache (used by bench baseline)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := benchLogger(cmd)
			if err != nil {
				return err
			}
			return bench.RunBaselineServer(cmd.Context(), c, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Listen, "listen", "127.0.0.1:0", "ADS address")
	f.StringVar(&c.Control, "control", "127.0.0.1:0", "control HTTP address")
	f.IntVar(&c.Clients, "clients", 100, "number of clients (node ids c000…)")
	f.IntVar(&c.PayloadBytes, "payload-bytes", 32<<10, "bytes per client")
	f.IntVar(&c.ChangeBytes, "change-bytes", 2<<10, "bytes of the changing route configuration")
	f.StringVar(&c.CertFile, "cert-file", "", "server certificate")
	f.StringVar(&c.KeyFile, "key-file", "", "server key")
	f.StringVar(&c.CAFile, "ca-file", "", "CA of the client certificates")
	return cmd
}

func newBenchBaselineClientsCmd() *cobra.Command {
	var c bench.BaselineClientsConfig
	cmd := &cobra.Command{
		Use:    "baseline-clients",
		Short:  "Run many ADS clients in one process (used by bench baseline)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := benchLogger(cmd)
			if err != nil {
				return err
			}
			return bench.RunBaselineClients(cmd.Context(), c, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Server, "server", "", "ADS server address")
	f.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address of the report API")
	f.IntVar(&c.Clients, "clients", 100, "number of clients")
	f.StringVar(&c.CertFile, "cert-file", "", "client certificate")
	f.StringVar(&c.KeyFile, "key-file", "", "client key")
	f.StringVar(&c.CAFile, "ca-file", "", "CA of the server certificate")
	return cmd
}

// report prints a benchmark's report, when there is one, and writes it as JSON to out when
// set; the run's own error comes first.
func report[T any, R interface {
	*T
	Print(io.Writer)
}](cmd *cobra.Command, rep R, out string, err error) error {
	if rep == nil {
		return err
	}
	rep.Print(cmd.OutOrStdout())
	if out != "" {
		if werr := bench.WriteJSON(out, rep); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}
