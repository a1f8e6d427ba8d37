package cli

import (
	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/demoapp"
)

func newDemoAppCmd(g *globals) *cobra.Command {
	var cfg demoapp.Config
	cmd := &cobra.Command{
		Use:   "demo-app",
		Short: "Run the demo workload: answers a fixed text, with a switchable /health",
		Long: `Run the demo workload of the failover story (seed 003): every path on --port answers --text
followed by a newline, except /health, which answers 200 "ok" (503 "fail" once failed). On
--admin-port, POST /healthcheck/fail and POST /healthcheck/ok flip /health, like the seed's
Envoy admin switches.`,
		Example: `  meshrelay demo-app --text blue-pod --port 10000 --admin-port 19100
  curl -X POST http://127.0.0.1:19100/healthcheck/fail`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := demoapp.New(cfg, log.With("component", "demo-app"))
			if err != nil {
				return err
			}
			return s.Start(cmd.Context())
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	return cmd
}
