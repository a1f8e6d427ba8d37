package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure meshrelay (prints a table, writes JSON)"}
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
	cmd.AddCommand(tr)
	return cmd
}
