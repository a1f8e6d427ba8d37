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
code is non-zero if one does not happen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&opts.KeepRunning, "keep-running", false, "leave everything running (until Ctrl-C) and print what to try by hand")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "working directory for configs, state and logs (default: a temporary directory removed at exit)")
	cmd.Flags().DurationVar(&opts.StepTimeout, "step-timeout", 0, "time allowed for each step (default 20s)")
	return cmd
}
