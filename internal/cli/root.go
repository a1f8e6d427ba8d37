// Package cli builds meshrelay's command tree (cobra). Each command parses flags and hands
// off to a composition root or an API client; no logic of the product lives here.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

type globals struct {
	logLevel  string
	logFormat string
}

func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	return NewLogger(g.logLevel, g.logFormat, w)
}

// NewLogger returns the logger of --log-level and --log-format, writing to w (meshrelay-bench
// builds its processes' loggers with it too).
func NewLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// NewRoot returns the meshrelay command tree.
func NewRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "meshrelay",
		Short: "Management plane for a service mesh spanning many clusters",
		Long: `meshrelay is a management plane for a service mesh that spans many clusters and regions.

A management server (meshrelay server) holds the desired configuration. A relay agent in each
workload cluster (meshrelay agent) connects out to it over mutual TLS, reports what runs in its
cluster and applies the configuration translated for that cluster. Data planes keep serving when
the management plane is down.

Start with:  meshrelay demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json (logs go to stderr)")
	root.AddCommand(
		newServerCmd(g), newAgentCmd(g), newApplyCmd(), newDeleteCmd(), newGetCmd(), newDebugCmd(),
		newDemoCmd(g), newVersionCmd(), newSwitchActiveCmd(), newCheckCmd(),
		newGatewayCmd(g), newDemoAppCmd(g), newClusterCmd(), newCACmd(),
	)
	return root
}

// Main runs the command line and returns the process exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}
