package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/gateway"
	"github.com/meshrelay/meshrelay/internal/pki"
)

func newGatewayCmd(g *globals) *cobra.Command {
	var cfg gateway.Config
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway: the xDS-driven data plane of a cluster",
		Long: `Run a gateway: meshrelay's data plane. It connects to the relay agent's ADS server
(--xds-address), receives Listeners, Routes, Clusters, ClusterLoadAssignments and Secrets,
and serves them with a documented subset of Envoy's
semantics (docs/gateway.md): HTTP listeners with routes, weighted clusters, retries and
timeouts; clusters with priority failover, active HTTP health checks and outlier detection;
upstream mTLS with SNI; TCP listeners that terminate mTLS and forward by SNI.

The xDS stream carries the mesh private keys. On the agent's host, connect to its Unix
socket (unix:///path; the agent's default is <state-dir>/xds.sock) or to loopback, in
plaintext. From another host or pod, use mutual TLS: the agent runs with --xds-tls, and the
gateway presents a certificate from 'meshrelay gateway issue-cert' (--xds-tls-cert-file,
--xds-tls-key-file) and verifies that the agent is its own cluster's (--xds-ca-file,
--cluster). A plaintext non-loopback address is refused at start.

When the xDS server goes away, or is refused, the gateway keeps serving its last
configuration and reconnects with backoff. Admin endpoints: /healthz, /readyz, /metrics,
/status.`,
		Example: `  meshrelay gateway --xds-address unix:///var/lib/meshrelay/agent/xds.sock --node-id local-gateway
  meshrelay gateway --xds-address 127.0.0.1:18001 --node-id remote-gateway --admin-address 127.0.0.1:19001
  meshrelay gateway --xds-address agent-xds.meshrelay-system:18000 --cluster east --node-id east-gw-0 \
    --xds-tls-cert-file gw/gateway.crt --xds-tls-key-file gw/gateway.key --xds-ca-file gw/ca.crt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Version = version()
			gw, err := gateway.New(cfg, log)
			if err != nil {
				return err
			}
			return gw.Start(cmd.Context())
		},
	}
	cfg.RegisterFlags(cmd.Flags())
	cmd.AddCommand(newGatewayIssueCertCmd())
	return cmd
}

func newGatewayIssueCertCmd() *cobra.Command {
	var target adminTarget
	var cluster, node, outDir string
	cmd := &cobra.Command{
		Use:   "issue-cert",
		Short: "Get a gateway's certificate for mutual TLS to its agent's xDS server",
		Long: `Generate a private key here (it never leaves this machine), have the management server
sign it with the mesh CA, and write gateway.crt, gateway.key (mode 0600) and ca.crt (the
mesh CA bundle) into --out-dir, for the gateway's --xds-tls-cert-file, --xds-tls-key-file
and --xds-ca-file. The certificate names spiffe://<trust-domain>/cluster/<cluster>/gateway/<node>
and lasts the server's --mesh-cert-ttl; the gateway must run with --cluster <cluster> and
--node-id <node>. The cluster must be registered (a KubernetesCluster of that name).`,
		Example: `  meshrelay gateway issue-cert --cluster east --node east-gw-0 --out-dir ./east-gw-0`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pki.ValidateGatewayNode(node); err != nil {
				return fmt.Errorf("--node: %w", err)
			}
			if cluster == "" {
				return fmt.Errorf("--cluster is required")
			}
			if err := flagcheck.MakeDir("--out-dir", outDir, 0o755); err != nil {
				return err
			}
			c, err := target.client()
			if err != nil {
				return err
			}
			key, err := pki.NewKey()
			if err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			csr, err := pki.NewGatewayCSR(key, node)
			if err != nil {
				return err
			}
			res, err := c.IssueGatewayCertificate(cmd.Context(), cluster, node, csr)
			if err != nil {
				return err
			}
			keyPEM, err := pki.KeyPEM(key)
			if err != nil {
				return err
			}
			certFile, keyFile, caFile := filepath.Join(outDir, "gateway.crt"), filepath.Join(outDir, "gateway.key"), filepath.Join(outDir, "ca.crt")
			if err := pki.WriteKeyPair(certFile, keyFile, []byte(res.Certificate), keyPEM); err != nil {
				return err
			}
			if err := os.WriteFile(caFile, []byte(res.CA), 0o644); err != nil {
				return fmt.Errorf("write mesh CA bundle: %w", err)
			}
			leaf, err := pki.ParseCertPEM([]byte(res.Certificate))
			if err != nil || len(leaf.URIs) != 1 {
				return fmt.Errorf("the server returned an unexpected certificate: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s, %s and %s: %s, expires %s\n", certFile, keyFile, caFile,
				leaf.URIs[0], res.NotAfter.Format(time.RFC3339))
			return nil
		},
	}
	adminFlags(cmd, &target)
	cmd.Flags().StringVar(&cluster, "cluster", "", "the gateway's cluster, a registered KubernetesCluster (required)")
	cmd.Flags().StringVar(&node, "node", "", "the gateway's xDS node id, its --node-id (required)")
	cmd.Flags().StringVar(&outDir, "out-dir", ".", "directory that receives gateway.crt, gateway.key and ca.crt")
	return cmd
}
