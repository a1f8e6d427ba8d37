package cli

import (
	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/gateway"
)

func newGatewayCmd(g *globals) *cobra.Command {
	var cfg gateway.Config
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway: the xDS-driven data plane of a cluster",
		Long: `Run a gateway: meshrelay's data plane. It connects to the relay agent's ADS server
(--xds-address, plaintext gRPC: keep it on loopback), receives Listeners, Routes, Clusters,
ClusterLoadAssignments and Secrets, and serves them with a documented subset of Envoy's
semantics (docs/gateway.md): HTTP listeners with routes, weighted clusters, retries and
timeouts; clusters with priority failover, active HTTP health checks and outlier detection;
upstream mTLS with SNI; TCP listeners that terminate mTLS and forward by SNI.

When the xDS server goes away the gateway keeps serving its last configuration and
reconnects with backoff. Admin endpoints: /healthz, /readyz, /metrics, /status.`,
		Example: `  meshrelay gateway --xds-address 127.0.0.1:18000 --node-id local-gateway
  meshrelay gateway --xds-address 127.0.0.1:18001 --node-id remote-gateway --admin-address 127.0.0.1:19001`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			gw, err := gateway.New(cfg, log)
			if err != nil {
				return err
			}
			return gw.Start(cmd.Context())
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	return cmd
}
