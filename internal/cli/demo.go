package cli

import (
	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/demo"
)

func newDemoCmd(_ *globals) *cobra.Command {
	var opts demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole story on this machine in one command",
		Long: `Run meshrelay's story on this machine: a management server and two universal clusters (local
and remote) with their agents, as real processes talking mTLS on loopback. A service discovered
in one cluster reaches the other's output, and is removed again. Each step is checked; the exit
code is non-zero if one does not happen.

The telemetry pipeline runs too (--telemetry, on by default): a telemetry gateway and a collector
agent per cluster, all meshrelay-collector (an OpenTelemetry Collector build), with TLS
certificates from a telemetry CA the demo generates apart from the relay CA. The agents and
gateways export OTLP to their cluster's collector agent, the management server to the telemetry
gateway; a last step checks that the gateway's request metrics and a configuration change's
trace arrive there. meshrelay-collector is --collector-binary, else the one beside meshrelay or
on PATH, else built with go build from the source tree the working directory is in (into the
user cache directory; the first build takes about 3 minutes). Without it the demo fails and says
how to get it; --telemetry=false runs the demo without the pipeline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&opts.KeepRunning, "keep-running", false, "leave everything running (until Ctrl-C) and print what to try by hand")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "working directory for configs, state and logs (default: a temporary directory removed at exit)")
	cmd.Flags().BoolVar(&opts.Telemetry, "telemetry", true, "run the telemetry pipeline too (a telemetry gateway and a collector agent per cluster) and check that metrics and a trace reach it; false skips it")
	cmd.Flags().StringVar(&opts.CollectorBinary, "collector-binary", "", "meshrelay-collector to run the telemetry pipeline with (default: beside meshrelay, else on PATH, else built from the source tree the working directory is in)")
	cmd.Flags().DurationVar(&opts.StepTimeout, "step-timeout", 0, "time allowed for each step (default 20s)")
	return cmd
}
