package register

import (
	"context"
	"errors"
	"fmt"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/storage/driver"
	"helm.sh/helm/v4/pkg/strvals"

	"github.com/meshrelay/meshrelay/charts"
)

// Helm says where and how to install the agent chart.
type Helm struct {
	// Kubeconfig and Context select the workload cluster (empty: Helm's defaults, $KUBECONFIG
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

// Values returns the chart values of an install: Set, then cluster and relay.address.
func (h Helm) Values(cfg Config) (map[string]any, error) {
	vals := map[string]any{}
	for _, s := range h.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %q: %w", s, err)
		}
	}
	vals["cluster"] = cfg.Cluster
	relay, _ := vals["relay"].(map[string]any)
	if relay == nil {
		relay = map[string]any{}
	}
	relay["address"] = h.RelayAddress
	vals["relay"] = relay
	return vals, nil
}

// Install installs the agent chart embedded in this binary (charts/meshrelay-agent) in the
// workload cluster with Helm's Go SDK, or upgrades the release when it exists, like `helm
// upgrade --install`. It does not wait for the agent to become ready; it returns the
// release's revision.
func Install(ctx context.Context, cfg Config, h Helm) (int, error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	if h.RelayAddress == "" {
		return 0, errors.New("--relay-address is required to install the agent (the chart's relay.address)")
	}
	if h.Release == "" {
		h.Release = DefaultRelease
	}
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Minute
	}
	ch, err := charts.Load(charts.Agent)
	if err != nil {
		return 0, err
	}
	vals, err := h.Values(cfg)
	if err != nil {
		return 0, err
	}
	ac, err := helmConfig(cfg, h)
	if err != nil {
		return 0, err
	}
	hist := action.NewHistory(ac)
	hist.Max = 1
	_, err = hist.Run(h.Release)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		in := action.NewInstall(ac)
		in.ReleaseName, in.Namespace, in.CreateNamespace = h.Release, cfg.Namespace, true
		in.WaitStrategy, in.Timeout = kube.HookOnlyStrategy, h.Timeout
		rel, err := in.RunWithContext(ctx, ch, vals)
		if err != nil {
			return 0, fmt.Errorf("helm install %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
		}
		return revision(rel)
	case err != nil:
		return 0, fmt.Errorf("helm history of %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
	}
	up := action.NewUpgrade(ac)
	up.Namespace, up.WaitStrategy, up.Timeout = cfg.Namespace, kube.HookOnlyStrategy, h.Timeout
	rel, err := up.RunWithContext(ctx, h.Release, ch, vals)
	if err != nil {
		return 0, fmt.Errorf("helm upgrade %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
	}
	return revision(rel)
}

// Uninstall removes the agent's release from the workload cluster; a release that does not
// exist is not an error (it reports false).
func Uninstall(cfg Config, h Helm) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	if h.Release == "" {
		h.Release = DefaultRelease
	}
	ac, err := helmConfig(cfg, h)
	if err != nil {
		return false, err
	}
	un := action.NewUninstall(ac)
	un.WaitStrategy = kube.HookOnlyStrategy
	if _, err := un.Run(h.Release); err != nil {
		if errors.Is(err, driver.ErrReleaseNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("helm uninstall %s in namespace %s of the workload cluster: %w", h.Release, cfg.Namespace, err)
	}
	return true, nil
}

func helmConfig(cfg Config, h Helm) (*action.Configuration, error) {
	settings := cli.New()
	settings.KubeConfig, settings.KubeContext = h.Kubeconfig, h.Context
	settings.SetNamespace(cfg.Namespace)
	ac := action.NewConfiguration()
	if err := ac.Init(settings.RESTClientGetter(), cfg.Namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm client of the workload cluster: %w", err)
	}
	return ac, nil
}

func revision(rel any) (int, error) {
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return 0, fmt.Errorf("helm release: %w", err)
	}
	return acc.Version(), nil
}
