// Command meshrelay-bench measures meshrelay: translation, the relay with N agents, failover,
// the gateways' health-check failover and throughput (see `meshrelay-bench --help` and the
// README's Performance section). It is not part of the product binary: the benchmarks and
// their go-control-plane baseline, DNS server and simulated agents live here.
//
// The benchmarks that start processes run this executable again: hidden commands for the
// simulated agents, the profiled server and the baseline, and the hidden `meshrelay` command,
// which is meshrelay's own command tree (the measured `meshrelay server`, `switch-active`).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		stop()
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshrelay-bench",
		Short:         "Measure meshrelay (prints a table, writes JSON)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json (logs go to stderr)")
	product := cli.NewRoot()
	product.Use, product.Hidden = bench.ProductCommand, true
	root.AddCommand(newTranslateCmd(), newRelayCmd(), newPlotCmd(), newBaselineCmd(), newFailoverCmd(), newHealthFailoverCmd(), newGatewayCmd(),
		newSimAgentsCmd(), newServerCmd(), newBaselineServerCmd(), newBaselineClientsCmd(), product)
	return root
}

// logger builds a process's logger from --log-level (level when not given) and --log-format.
func logger(cmd *cobra.Command, level string) (*slog.Logger, error) {
	format := "text"
	if f := cmd.Flag("log-level"); f != nil && f.Changed {
		level = f.Value.String()
	}
	if f := cmd.Flag("log-format"); f != nil {
		format = f.Value.String()
	}
	return cli.NewLogger(level, format, cmd.ErrOrStderr())
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

func outputFlag(cmd *cobra.Command, out *string) {
	cmd.Flags().StringVarP(out, "output", "o", "", "write the report as JSON to this file")
}
