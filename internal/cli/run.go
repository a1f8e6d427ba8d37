package cli

import (
	"github.com/spf13/cobra"

	agentapp "github.com/meshrelay/meshrelay/internal/app/agent"
	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
)

func newServerCmd(g *globals) *cobra.Command {
	var cfg serverapp.Config
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the management server",
		Long: `Run the management server: the relay endpoint agents connect to (gRPC over TLS, default :9900),
registration and certificate issuance, the configuration (--config-dir and the admin API), the
translation of every cluster's output, the snapshot store (memory, or Redis with --redis-address),
safe mode, and the admin HTTP API (/healthz, /readyz, /metrics, /status).

On first start it generates a relay CA, a serving certificate and (without --token-file) a relay
identity token into --data-dir. Copy <data-dir>/relay-ca.crt and the token to every agent.`,
		Example: `  meshrelay server --data-dir /var/lib/meshrelay --config-dir ./config
  meshrelay server --redis-address 127.0.0.1:6379 --token-file /etc/meshrelay/token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return serverapp.Run(cmd.Context(), cfg, log, nil)
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	return cmd
}

func newAgentCmd(g *globals) *cobra.Command {
	var cfg agentapp.Config
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the relay agent of one workload cluster",
		Long: `Run the relay agent of one workload cluster. It connects out to the management server, registers
with the relay identity token (receiving a short-lived client certificate for its cluster), pushes
what discovery finds as input snapshots and applies the output snapshots it receives.

Universal mode: discovery watches --discovery-dir (Kubernetes-shaped YAML) and outputs are written
to --output-dir as one YAML file per resource. The last applied output is kept in --state-dir and
served again after a restart until the server sends a newer one.`,
		Example: `  meshrelay agent --cluster local --relay-address mgmt.example.com:9900 \
    --token-file token --relay-ca-file relay-ca.crt --state-dir state \
    --discovery-dir discovery --output-dir output`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return agentapp.Run(cmd.Context(), cfg, log)
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	return cmd
}
