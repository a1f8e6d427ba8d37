package charts_test

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"

	agentapp "github.com/meshrelay/meshrelay/internal/app/agent"
	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
	"github.com/meshrelay/meshrelay/internal/cli"
)

var flagForm = regexp.MustCompile(`^--([a-z0-9][a-z0-9-]*)(=.*)?$`)

// parseArgs parses a container's arguments ("server" or "agent", then flags) with the real
// meshrelay command tree, as the binary would at start. Every flag must be one argument
// (--flag or --flag=value) and appear once; an unknown flag, bad value or missing required
// flag is an error.
func parseArgs(args []string) error {
	if len(args) == 0 {
		return errors.New("no arguments: want a meshrelay command")
	}
	root := cli.NewRoot()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return fmt.Errorf("find command of %q: %w", args, err)
	}
	if cmd == root || cmd.Name() != args[0] {
		return fmt.Errorf("first argument %q is not a meshrelay command", args[0])
	}
	seen := map[string]bool{}
	for _, a := range rest {
		m := flagForm.FindStringSubmatch(a)
		if m == nil {
			return fmt.Errorf("argument %q is not --flag or --flag=value", a)
		}
		name := m[1]
		if seen[name] {
			return fmt.Errorf("--%s is passed twice", name)
		}
		seen[name] = true
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("meshrelay %s refuses the chart's arguments: %w", cmd.Name(), err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return fmt.Errorf("meshrelay %s: %w", cmd.Name(), err)
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return fmt.Errorf("meshrelay %s: %w", cmd.Name(), err)
	}
	if err := cmd.ValidateFlagGroups(); err != nil {
		return fmt.Errorf("meshrelay %s: %w", cmd.Name(), err)
	}
	return nil
}

// validateConfig runs the role's own Config.Validate on the arguments, what the binary
// checks right after parsing.
func validateConfig(args []string) error {
	fs := pflag.NewFlagSet(args[0], pflag.ContinueOnError)
	var validate func() error
	switch args[0] {
	case "server":
		var cfg serverapp.Config
		cfg.RegisterFlags(fs)
		validate = cfg.Validate
	case "agent":
		var cfg agentapp.Config
		cfg.RegisterFlags(fs)
		validate = cfg.Validate
	default:
		return fmt.Errorf("no configuration for command %q", args[0])
	}
	var own []string // leave out the global flags (--log-level, ...)
	for _, a := range args[1:] {
		if m := flagForm.FindStringSubmatch(a); m != nil && fs.Lookup(m[1]) != nil {
			own = append(own, a)
		}
	}
	if err := fs.Parse(own); err != nil {
		return err
	}
	return validate()
}

// checkArgs checks the Deployment's arguments with parseArgs and with the binary's own
// validation.
func checkArgs(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	args := d.Spec.Template.Spec.Containers[0].Args
	if err := parseArgs(args); err != nil {
		t.Fatalf("%v\nargs: %q", err, args)
	}
	if err := validateConfig(args); err != nil {
		t.Errorf("the binary would refuse this configuration: %v\nargs: %q", err, args)
	}
}

// wantArgs fails unless every one of want is among args.
func wantArgs(t *testing.T, args []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("missing argument %q in %q", w, args)
		}
	}
}

// noFlags fails if any of the flags is set.
func noFlags(t *testing.T, args []string, flags ...string) {
	t.Helper()
	for _, f := range flags {
		if a := flagArg(args, f); a != "" {
			t.Errorf("unexpected %q in %q", a, args)
		}
	}
}

// TestArgsCheckCatchesMistakes shows that the argument check is not vacuous: a flag the
// binary does not have, a value of the wrong type, a flag passed twice and a configuration
// the binary refuses are all caught.
func TestArgsCheckCatchesMistakes(t *testing.T) {
	argsOf := func(chart string, values map[string]any) []string {
		return deployment(t, render(t, chart, values)).Spec.Template.Spec.Containers[0].Args
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", argsOf("meshrelay-server", vals("extraArgs", []any{"--no-such-flag=1"})), "unknown flag: --no-such-flag"},
		{"bad duration", argsOf("meshrelay-server", vals("relay.agentCertTTL", "one hour")), "agent-cert-ttl"},
		{"twice", argsOf("meshrelay-agent", agentValues("extraArgs", []any{"--cluster=west"})), "--cluster is passed twice"},
		{"not a flag", []string{"server", "-v"}, `"-v" is not --flag`},
		{"not a command", []string{"serve"}, `unknown command "serve"`},
		{"the root", []string{"--log-level=info"}, "not a meshrelay command"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := parseArgs(c.args)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("parseArgs(%q) = %v, want an error with %q", c.args, err, c.want)
			}
		})
	}
	err := validateConfig([]string{"server", "--data-dir=/d", "--leader-election"})
	if err == nil || !strings.Contains(err.Error(), "redis-address") {
		t.Errorf("validateConfig of leader election without Redis = %v, want the binary's refusal", err)
	}
}
