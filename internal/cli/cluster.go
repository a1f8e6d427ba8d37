package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/register"
)

// clusterFlags are the flags register and deregister share.
type clusterFlags struct {
	cfg              register.Config
	mgmtKubeconfig   string
	mgmtContext      string
	remoteKubeconfig string
	remoteContext    string
	release          string
	timeout          time.Duration
	output           string
}

func (f *clusterFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.cfg.Cluster, "cluster", "", "name of the workload cluster (the KubernetesCluster's name; a DNS label) (required)")
	fs.StringVar(&f.mgmtKubeconfig, "mgmt-kubeconfig", "", "kubeconfig file of the management cluster (default: $KUBECONFIG, else ~/.kube/config)")
	fs.StringVar(&f.mgmtContext, "mgmt-context", "", "kubeconfig context of the management cluster (default: the current context)")
	fs.StringVar(&f.remoteKubeconfig, "remote-kubeconfig", "", "kubeconfig file of the workload cluster (default: $KUBECONFIG, else ~/.kube/config)")
	fs.StringVar(&f.remoteContext, "remote-context", "", "kubeconfig context of the workload cluster (default: the current context)")
	fs.StringVar(&f.cfg.Namespace, "namespace", register.DefaultNamespace, "namespace of the agent and its Secrets in the workload cluster")
	fs.StringVar(&f.cfg.MgmtNamespace, "mgmt-namespace", "", "namespace of the management server's Secrets ("+register.DefaultTokenSecret+", "+register.DefaultCASecret+") in the management cluster (default: --namespace)")
	fs.StringVar(&f.release, "release", register.DefaultRelease, "Helm release name of the agent")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "time allowed for the whole operation")
	fs.StringVarP(&f.output, "output", "o", "table", "table or json")
	_ = cmd.MarkFlagRequired("cluster")
}

func (f *clusterFlags) clients() (mgmt, remote client.Client, err error) {
	if mgmt, err = register.NewClient(f.mgmtKubeconfig, f.mgmtContext); err != nil {
		return nil, nil, fmt.Errorf("management cluster: %w", err)
	}
	if remote, err = register.NewClient(f.remoteKubeconfig, f.remoteContext); err != nil {
		return nil, nil, fmt.Errorf("workload cluster: %w", err)
	}
	return mgmt, remote, nil
}

// clusterResult is what register and deregister print.
type clusterResult struct {
	Changes      []register.Change `json:"changes"`
	HelmCommand  string            `json:"helmCommand,omitempty"`
	HelmRevision int               `json:"helmRevision,omitempty"`
	Uninstalled  *bool             `json:"uninstalled,omitempty"`
}

func printClusterResult(w io.Writer, res clusterResult, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CLUSTER\tOBJECT\tACTION")
		for _, c := range res.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Where, c.Object, c.Action)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if res.HelmRevision > 0 {
			fmt.Fprintf(w, "\nagent chart installed in the workload cluster (release revision %d)\n", res.HelmRevision)
		}
		if res.Uninstalled != nil {
			if *res.Uninstalled {
				fmt.Fprintln(w, "\nagent release uninstalled from the workload cluster")
			} else {
				fmt.Fprintln(w, "\nno agent release in the workload cluster")
			}
		}
		if res.HelmCommand != "" {
			fmt.Fprintf(w, "\n# install the agent in the workload cluster:\n%s\n", res.HelmCommand)
		}
		return nil
	}
	return fmt.Errorf("-o %q: want table or json", format)
}

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Register and deregister workload clusters (Kubernetes mode); revoke a cluster's certificates",
	}
	cmd.AddCommand(newClusterRegisterCmd(), newClusterDeregisterCmd(), newClusterRevokeCmd())
	return cmd
}

func newClusterRevokeCmd() *cobra.Command {
	var target adminTarget
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Refuse, at once, every relay certificate issued to a cluster's agent until now",
		Long: `Revoke the relay client certificates of cluster NAME issued until now, for instance when one
has leaked. The server records the revocation (in <data-dir>/revoked-clusters.json, or in Redis,
where every replica sees it within a second), closes the cluster's open relay streams at once and refuses those
certificates from then on, with the reason in its log, in
meshrelay_relay_rejected_total{reason="revoked"} and in the agent's status. The cluster stays
registered: its legitimate agent registers again with the relay identity token and gets a new
certificate; a copy of the old certificate stays refused. To also shut out whoever holds the
token, rotate the token file first.`,
		Example: `  meshrelay cluster revoke east --server mgmt:9901`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := pki.ValidateCluster(args[0]); err != nil {
				return fmt.Errorf("cluster revoke: %w", err)
			}
			c, err := target.client()
			if err != nil {
				return err
			}
			var res configapi.RevokeResult
			if err := c.RevokeCluster(cmd.Context(), args[0], &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster %s: relay certificates issued before %s are revoked; its open streams are closed; its agent registers again with the relay identity token\n",
				res.Cluster, res.RevokedBefore.Format(time.RFC3339))
			return nil
		},
	}
	adminFlags(cmd, &target)
	return cmd
}

func newClusterRegisterCmd() *cobra.Command {
	var f clusterFlags
	var install bool
	var h register.Helm
	cmd := &cobra.Command{
		Use:   "register --cluster NAME --mgmt-context CTX --remote-context CTX",
		Short: "Register a workload cluster with a Kubernetes-mode management server",
		Long: `Register a workload cluster, like meshctl cluster register:

 1. read the relay identity token and the relay CA bundle: from --token-file and --relay-ca-file,
    else from the management server chart's Secrets in the management cluster
    (` + register.DefaultTokenSecret + ` key ` + register.DefaultTokenKey + `, ` + register.DefaultCASecret + ` key ` + register.DefaultCAKey + `, in --mgmt-namespace);
    only certificates are accepted for the bundle, never a private key;
 2. create the namespace (--namespace) in the workload cluster when missing, and the Secrets
    ` + register.DefaultTokenSecret + ` (key ` + register.DefaultTokenKey + `) and ` + register.DefaultCASecret + ` (key ` + register.DefaultCAKey + `) there, the names the
    meshrelay-agent chart mounts by default;
 3. create the KubernetesCluster in the management cluster;
 4. print the helm command that installs the agent chart, or, with --install, install it: the
    chart is built into this binary, and the helm binary (v4, from PATH) runs helm upgrade
    --install on a copy of it in a temporary directory, without waiting for the agent's pod.
    Without helm on PATH, --install changes nothing and prints the helm command to run.

Objects it creates are labelled app.kubernetes.io/managed-by=` + register.ManagedBy + ` and
meshrelay.io/cluster=<cluster>. Running it again changes nothing, or repairs what differs. An
object of the same name that it did not create is used as it is (and never deleted by
deregister) when it holds the same data, and is an error otherwise.`,
		Example: `  meshrelay cluster register --cluster east --mgmt-context mgmt --remote-context east \
    --relay-address mgmt.example.com:9900

  meshrelay cluster register --cluster east --mgmt-context mgmt --remote-context east \
    --relay-address mgmt.example.com:9900 --install --set image.tag=0.1.0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.cfg.Validate(); err != nil {
				return err
			}
			if install && h.RelayAddress == "" {
				return fmt.Errorf("--install needs --relay-address (the chart's relay.address)")
			}
			h.Kubeconfig, h.Context, h.Release = f.remoteKubeconfig, f.remoteContext, f.release
			if install {
				// Before changing anything: without helm, say what to run instead.
				if _, err := h.Check(f.cfg); err != nil {
					return err
				}
			}
			mgmt, remote, err := f.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			var res clusterResult
			res.Changes, err = register.Register(ctx, mgmt, remote, f.cfg)
			if err != nil {
				_ = printClusterResult(cmd.OutOrStdout(), res, f.output)
				return err
			}
			if install {
				if res.HelmRevision, err = register.Install(ctx, f.cfg, h); err != nil {
					_ = printClusterResult(cmd.OutOrStdout(), res, f.output)
					return err
				}
			} else {
				res.HelmCommand = register.HelmCommand(f.cfg, h.RelayAddress, f.release, register.AgentChartSource, f.remoteKubeconfig, f.remoteContext, h.Set)
				if h.RelayAddress == "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "note: no --relay-address: replace <RELAY_HOST:PORT> with the address agents reach the management server at (its LoadBalancer Service on 9900)")
				}
			}
			return printClusterResult(cmd.OutOrStdout(), res, f.output)
		},
	}
	f.register(cmd)
	fs := cmd.Flags()
	fs.StringVar(&f.cfg.TokenFile, "token-file", "", "file holding the relay identity token (default: read from the management cluster's Secret "+register.DefaultTokenSecret+")")
	fs.StringVar(&f.cfg.RelayCAFile, "relay-ca-file", "", "PEM bundle of the relay CA (default: read from the management cluster's Secret "+register.DefaultCASecret+", key "+register.DefaultCAKey+")")
	fs.StringVar(&f.cfg.ClusterDomain, "cluster-domain", "", "spec.clusterDomain of the KubernetesCluster (default: cluster.local)")
	fs.StringVar(&h.RelayAddress, "relay-address", "", "host:port agents reach the management server's relay at (the agent chart's relay.address); required with --install")
	fs.BoolVar(&install, "install", false, "install (or upgrade) the agent chart built into this binary in the workload cluster by running helm (v4, from PATH) instead of printing the helm command")
	fs.StringArrayVar(&h.Set, "set", nil, "extra agent chart value, helm --set syntax (repeatable), e.g. image.tag=0.1.0")
	return cmd
}

func newClusterDeregisterCmd() *cobra.Command {
	var f clusterFlags
	var uninstall bool
	cmd := &cobra.Command{
		Use:   "deregister --cluster NAME --mgmt-context CTX --remote-context CTX",
		Short: "Undo cluster register: delete the KubernetesCluster and the copied Secrets",
		Long: `Undo meshrelay cluster register: delete the KubernetesCluster from the management cluster and
the relay token and CA Secrets from the workload cluster, but only those register created (they
carry app.kubernetes.io/managed-by=` + register.ManagedBy + ` and meshrelay.io/cluster=<cluster>);
nothing else. The management cluster goes first, so a workload cluster that is gone can still be
deregistered. The namespace is kept (it may hold other things); with --uninstall the agent's Helm
release is uninstalled first.`,
		Example: `  meshrelay cluster deregister --cluster east --mgmt-context mgmt --remote-context east --uninstall`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.cfg.Validate(); err != nil {
				return err
			}
			mgmt, remote, err := f.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			var res clusterResult
			if uninstall {
				done, err := register.Uninstall(ctx, f.cfg, register.Helm{Kubeconfig: f.remoteKubeconfig, Context: f.remoteContext, Release: f.release})
				if err != nil {
					return err
				}
				res.Uninstalled = &done
			}
			res.Changes, err = register.Deregister(ctx, mgmt, remote, f.cfg)
			if perr := printClusterResult(cmd.OutOrStdout(), res, f.output); err == nil {
				err = perr
			}
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "also uninstall the agent's Helm release (--release) from the workload cluster (runs helm from PATH)")
	return cmd
}
