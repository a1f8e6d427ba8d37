package register

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/charts"
)

// AgentChartSource is the agent chart's directory in meshrelay's source tree, which the helm
// command printed for the user names.
const AgentChartSource = "./charts/" + charts.Agent

// ErrNoHelm reports that the helm binary, which --install runs, is not on PATH.
var ErrNoHelm = errors.New("--install runs the helm binary, which is not on PATH")

// Helm says where and how to install the agent chart.
type Helm struct {
	// Kubeconfig and Context select the workload cluster (empty: helm's defaults, $KUBECONFIG
	// and the current context).
	Kubeconfig string
	Context    string
	// Release is the release name (default DefaultRelease).
	Release string
	// RelayAddress is the chart's relay.address (required by the chart).
	RelayAddress string
	// Set are extra values in `helm --set` syntax.
	Set []string
	// Timeout bounds the install (default 2m).
	Timeout time.Duration
}

func (h Helm) withDefaults() Helm {
	if h.Release == "" {
		h.Release = DefaultRelease
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Minute
	}
	return h
}

// Check validates an install before anything is changed: cfg, the relay address the chart
// requires, and the helm binary on PATH, whose absence is ErrNoHelm with the helm command
// to run instead. It returns the helm binary's path.
func (h Helm) Check(cfg Config) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	if h.RelayAddress == "" {
		return "", errors.New("--relay-address is required to install the agent (the chart's relay.address)")
	}
	h = h.withDefaults()
	bin, err := exec.LookPath("helm")
	if err != nil {
		return "", fmt.Errorf("%w (%w): install helm v4 (https://helm.sh/docs/intro/install/) and run again; "+
			"or run without --install, then install the agent chart from meshrelay's source (charts/%s of this version) with:\n  %s",
			ErrNoHelm, err, charts.Agent, HelmCommand(cfg, h.RelayAddress, h.Release, AgentChartSource, h.Kubeconfig, h.Context, h.Set))
	}
	return bin, nil
}

// Install installs the agent chart embedded in this binary (charts/meshrelay-agent) in the
// workload cluster, or upgrades the release when it exists: it writes the chart to a
// temporary directory (removed afterwards) and runs `helm upgrade --install` on it. The
// values are Set, then cluster and relay.address (with --set-literal, which helm applies
// last, so they win over Set). It does not wait for the agent to become ready (helm's
// --wait=hookOnly); it returns the release's revision.
func Install(ctx context.Context, cfg Config, h Helm) (int, error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	bin, err := h.Check(cfg)
	if err != nil {
		return 0, err
	}
	h = h.withDefaults()
	dir, err := os.MkdirTemp("", "meshrelay-agent-chart-")
	if err != nil {
		return 0, fmt.Errorf("agent chart: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := charts.WriteDir(charts.Agent, dir); err != nil {
		return 0, err
	}
	args := []string{"upgrade", "--install", h.Release, dir, "--create-namespace"}
	args = append(args, h.target(cfg)...)
	for _, s := range h.Set {
		args = append(args, "--set", s)
	}
	args = append(args, "--set-literal", "cluster="+cfg.Cluster, "--set-literal", "relay.address="+h.RelayAddress,
		"--wait=hookOnly", "--timeout", h.Timeout.String(), "--output", "json")
	out, err := runHelm(ctx, bin, args...)
	if err != nil {
		return 0, fmt.Errorf("helm upgrade --install %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
	}
	var rel struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(out, &rel); err != nil {
		return 0, fmt.Errorf("helm upgrade --install %s: read its output: %w: %.200s", h.Release, err, out)
	}
	if rel.Version < 1 {
		return 0, fmt.Errorf("helm upgrade --install %s: no release revision in its output: %.200s", h.Release, out)
	}
	return rel.Version, nil
}

// Uninstall removes the agent's release from the workload cluster with `helm uninstall`; a
// release that does not exist is not an error (it reports false).
func Uninstall(ctx context.Context, cfg Config, h Helm) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	h = h.withDefaults()
	bin, err := exec.LookPath("helm")
	if err != nil {
		return false, fmt.Errorf("--uninstall runs the helm binary, which is not on PATH (%w): install helm v4 (https://helm.sh/docs/intro/install/), "+
			"or run: %s", err, shellJoin(append([]string{"helm", "uninstall", h.Release}, h.target(cfg)...)))
	}
	// helm list, in every state, tells a missing release apart without matching helm's error
	// text.
	args := append([]string{"list", "--deployed", "--failed", "--pending", "--superseded", "--uninstalling", "--uninstalled", "--filter", "^" + regexp.QuoteMeta(h.Release) + "$", "--output", "json"}, h.target(cfg)...)
	out, err := runHelm(ctx, bin, args...)
	if err != nil {
		return false, fmt.Errorf("helm list %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
	}
	var rels []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &rels); err != nil {
		return false, fmt.Errorf("helm list %s: %w: %.200s", h.Release, err, out)
	}
	if len(rels) == 0 {
		return false, nil
	}
	args = append([]string{"uninstall", h.Release, "--wait=hookOnly"}, h.target(cfg)...)
	if _, err := runHelm(ctx, bin, args...); err != nil {
		return false, fmt.Errorf("helm uninstall %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
	}
	return true, nil
}

// HelmCommand is the agent chart's install command for a registered cluster, for a shell.
// An empty relayAddress is written as a placeholder.
func HelmCommand(cfg Config, relayAddress, release, chart, kubeconfig, kubeContext string, set []string) string {
	if relayAddress == "" {
		relayAddress = "<RELAY_HOST:PORT>"
	}
	args := []string{"helm", "upgrade", "--install", release, chart, "--namespace", cfg.Namespace, "--create-namespace"}
	if kubeconfig != "" {
		args = append(args, "--kubeconfig", kubeconfig)
	}
	if kubeContext != "" {
		args = append(args, "--kube-context", kubeContext)
	}
	args = append(args, "--set", "cluster="+cfg.Cluster, "--set", "relay.address="+relayAddress)
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return shellJoin(args)
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellJoin quotes args for a POSIX shell and joins them.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// target is the workload cluster and namespace in helm's flags.
func (h Helm) target(cfg Config) []string {
	args := []string{"--namespace", cfg.Namespace}
	if h.Kubeconfig != "" {
		args = append(args, "--kubeconfig", h.Kubeconfig)
	}
	if h.Context != "" {
		args = append(args, "--kube-context", h.Context)
	}
	return args
}

// runHelm runs helm and returns its standard output; a failure carries its standard error.
func runHelm(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%w: %s", err, msg)
		}
		return nil, err
	}
	return stdout.Bytes(), nil
}
