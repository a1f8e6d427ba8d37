package cli

import (
	"github.com/spf13/cobra"

	agentapp "github.com/meshrelay/meshrelay/internal/app/agent"
	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
)

func newServerCmd(g *globals) *cobra.Command {
	var cfg serverapp.Config
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the management server",
		Long: `Run the management server: the relay endpoint agents connect to (gRPC over TLS, default :9900),
registration and certificate issuance, the configuration (--config-dir and the admin API), the
translation of every cluster's output, the snapshot store (--store: a bbolt file in --data-dir by
default; Redis with --redis-address, or highly available with --redis-sentinel-addresses and
--redis-master-name (Redis Sentinel) or --redis-cluster-addresses (Redis Cluster); memory for
tests), safe mode, and the admin HTTP API (/healthz, /readyz, /metrics, /status).

On first start it generates a relay CA, a serving certificate and (without --token-file) a relay
identity token into --data-dir. Copy <data-dir>/relay-ca.crt and the token to every agent. The
default store, <data-dir>/store.db, keeps what apply accepted across restarts (every write is
on disk before apply returns); keep the data directory, and run one server per data directory.

Kubernetes mode (--kubernetes): the configuration comes from meshrelay's custom resources
(meshrelay.io/v1alpha1: KubernetesCluster, Upstream, FailoverScheme, Gateway, RouteTable,
VirtualDestination, FailoverPolicy, OutlierDetectionPolicy) in every namespace of the management
cluster, read through controller-runtime's cache, instead of --config-dir; nothing is translated
before the first full read. After each translation the server writes every resource's status:
the Accepted condition (False with reason Invalid and the field and why for a resource that
fails validation, which is left out while the rest keeps flowing; False with reason
TranslationProblems for problems such as a missing destination), observedGeneration and the
clusters it selects. Only the leader of the active management server writes status, and only
when it changed. The API server comes from --kubeconfig/--kube-context, else $KUBECONFIG, else
the in-cluster service account (the meshrelay-server chart), else ~/.kube/config; it must serve
the CRDs of charts/meshrelay-server/crds.`,
		Example: `  meshrelay server --data-dir /var/lib/meshrelay --config-dir ./config
  meshrelay server --redis-address 127.0.0.1:6379 --token-file /etc/meshrelay/token
  meshrelay server --redis-sentinel-addresses s1:26379,s2:26379,s3:26379 --redis-master-name mymaster --token-file /etc/meshrelay/token
  meshrelay server --redis-cluster-addresses redis-0:6379,redis-1:6379,redis-2:6379 --token-file /etc/meshrelay/token

  # Kubernetes mode, from a workstation against the management cluster
  meshrelay server --kubernetes --kubeconfig ~/.kube/config --kube-context mgmt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Version = version()
			return serverapp.Run(cmd.Context(), cfg, log, nil)
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	return cmd
}

func newAgentCmd(g *globals) *cobra.Command {
	var cfg agentapp.Config
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the relay agent of one workload cluster",
		Long: `Run the relay agent of one workload cluster. It connects out to the management server, registers
with the relay identity token (receiving a short-lived client certificate for its cluster), pushes
what discovery finds as input snapshots and applies the output snapshots it receives.

Universal mode: discovery watches --discovery-dir (Kubernetes-shaped YAML) and outputs are written
to --output-dir as one YAML file per resource. The last applied output is kept in --state-dir and
served again after a restart until the server sends a newer one.

Kubernetes mode (--kubernetes): discovery reads Services and EndpointSlices (and the zones of
Nodes) through the API server's informers, producing the same input snapshot as universal mode,
and the output's Istio resources are applied with server-side apply (field manager
meshrelay-agent). Every object the agent writes is labelled app.kubernetes.io/managed-by=meshrelay
and meshrelay.io/cluster=<cluster>; only objects it created are updated or pruned, an unchanged
output writes nothing, and the deletion guard (--max-delete-fraction) holds back an output that
would prune most of them at once. The API server comes from --kubeconfig/--kube-context, else
$KUBECONFIG, else the in-cluster service account. Envoy resources go to the xDS server in both
modes.

Replicas (--leader-election): several agents of one cluster elect a leader with a
coordination.k8s.io Lease; only the leader connects and writes, a standby takes over when the
leader stops (at once: it releases the Lease) or vanishes (within --lease-duration).`,
		Example: `  meshrelay agent --cluster local --relay-address mgmt.example.com:9900 \
    --token-file token --relay-ca-file relay-ca.crt --state-dir state \
    --discovery-dir discovery --output-dir output

  # Kubernetes mode, in a pod of the workload cluster
  meshrelay agent --kubernetes --cluster local --relay-address mgmt.example.com:9900 \
    --token-file /etc/meshrelay/token --relay-ca-file /etc/meshrelay/ca.crt --state-dir /var/lib/meshrelay

  # one of several replicas (POD_NAME and POD_NAMESPACE set by the chart)
  meshrelay agent --kubernetes --leader-election --cluster local --relay-address mgmt.example.com:9900 \
    --token-file /etc/meshrelay/token --relay-ca-file /etc/meshrelay/ca.crt --state-dir /var/lib/meshrelay`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Agent.Version = version()
			return agentapp.Run(cmd.Context(), cfg, log)
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	return cmd
}
