// Package kubeconfig loads the configuration of a Kubernetes API server the way kubectl and
// controller-runtime find it, for every meshrelay command that talks to one.
package kubeconfig

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Load returns the config of a kubeconfig file and context. When both are empty and
// $KUBECONFIG is unset it uses the pod's service account (in-cluster) if there is one;
// otherwise, or outside a cluster, kubectl's loading rules ($KUBECONFIG, ~/.kube/config,
// the current context). This is controller-runtime's order.
func Load(path, context string) (*rest.Config, error) {
	if path == "" && context == "" && os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		cfg, err := rest.InClusterConfig()
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster kubernetes config: %w", err)
		}
	}
	return LoadFile(path, context)
}

// LoadFile is Load without the in-cluster fallback: kubectl's loading rules only.
func LoadFile(path, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config (kubeconfig %q, context %q): %w", path, context, err)
	}
	return cfg, nil
}
