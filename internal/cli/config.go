package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/meshcerts"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
	"github.com/meshrelay/meshrelay/internal/translate"
)

const defaultServer = "127.0.0.1:9901"

// adminTarget is the management server a command talks to: its admin address, the CA that
// verifies its certificate and the admin token its config API needs.
type adminTarget struct{ server, caFile, tokenFile string }

// serverFlags registers --server and --admin-ca-file: what every command reaching the admin
// API needs.
func serverFlags(cmd *cobra.Command, t *adminTarget) {
	env := os.Getenv("MESHRELAY_SERVER")
	if env == "" {
		env = defaultServer
	}
	cmd.Flags().StringVar(&t.server, "server", env, "admin address of the management server, host:port (HTTPS), or http://host:port for a loopback server started with --admin-plaintext (env MESHRELAY_SERVER)")
	cmd.Flags().StringVar(&t.caFile, "admin-ca-file", "", "PEM CA that verifies the server's admin certificate: its <data-dir>/relay-ca.crt, or the CA of its --admin-tls-cert-file (default: "+
		defaultAdminCAFile()+" when it exists, where a server started in this directory generates it, else the system's root CAs)")
}

func adminFlags(cmd *cobra.Command, t *adminTarget) {
	serverFlags(cmd, t)
	cmd.Flags().StringVar(&t.tokenFile, "admin-token-file", "", "file holding the server's admin token (its --admin-token-file; default: $MESHRELAY_ADMIN_TOKEN, else "+
		defaultAdminTokenFile()+" when it exists, where a server started in this directory generates it)")
}

func defaultAdminTokenFile() string {
	return filepath.Join(configapi.DefaultDataDir, configapi.TokenFileName)
}

func defaultAdminCAFile() string {
	return filepath.Join(configapi.DefaultDataDir, pki.CACertName)
}

// client returns a config API client presenting the admin token.
func (t adminTarget) client() (*configapi.Client, error) {
	token, err := t.token()
	if err != nil {
		return nil, err
	}
	return t.clientWith(token)
}

// clientWith returns a client for the server, verifying it with --admin-ca-file, else the CA
// a server generated in the default data directory, else the system's roots.
func (t adminTarget) clientWith(token string) (*configapi.Client, error) {
	ca := t.caFile
	if ca != "" {
		if err := flagcheck.File("--admin-ca-file", ca); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(defaultAdminCAFile()); err == nil {
		ca = defaultAdminCAFile()
	}
	c, err := configapi.NewClient(t.server, token, ca)
	switch {
	case errors.Is(err, configapi.ErrCAFile):
		return nil, fmt.Errorf("--admin-ca-file: %w", err)
	case err != nil:
		return nil, fmt.Errorf("--server: %w", err)
	}
	return c, nil
}

func (t adminTarget) token() (string, error) {
	if t.tokenFile != "" {
		return tokenfile.Read(t.tokenFile)
	}
	if v := strings.TrimSpace(os.Getenv("MESHRELAY_ADMIN_TOKEN")); v != "" {
		return v, nil
	}
	if _, err := os.Stat(defaultAdminTokenFile()); err == nil {
		return tokenfile.Read(defaultAdminTokenFile())
	}
	return "", nil // the server's refusal says what is missing
}

func newApplyCmd() *cobra.Command {
	var target adminTarget
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Apply resources to the management server",
		Long: `Apply resources (YAML or JSON, several documents per file) to the management server through its
admin API. The server stores them (in Redis when it uses Redis, so every replica sees them).
Every document is validated; invalid ones are refused with the file, document, resource, field
and reason, and never replace the last good version. Valid documents in the same files are
applied. Exits non-zero if anything was refused.`,
		Example: `  meshrelay apply -f cluster.yaml
  meshrelay apply -f ./config/
  cat x.yaml | meshrelay apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f is required")
			}
			c, err := target.client()
			if err != nil {
				return err
			}
			failed := false
			for _, f := range files {
				sources, err := manifestFiles(f)
				if err != nil {
					return err
				}
				for _, src := range sources {
					var data []byte
					if src == "-" {
						data, err = io.ReadAll(cmd.InOrStdin())
						src = "stdin"
					} else {
						data, err = os.ReadFile(src)
					}
					if err != nil {
						return fmt.Errorf("read %s: %w", src, err)
					}
					res, err := c.Apply(cmd.Context(), src, data)
					if err != nil {
						return err
					}
					for _, a := range res.Applied {
						fmt.Fprintf(cmd.OutOrStdout(), "%s applied\n", a)
					}
					for _, e := range res.Errors {
						failed = true
						fmt.Fprintf(cmd.ErrOrStderr(), "refused: %s\n", e)
					}
				}
			}
			if failed {
				return fmt.Errorf("some resources were refused; the previous versions stay in effect")
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory (all *.yaml, *.yml, *.json inside, recursively) or - for stdin; repeatable")
	adminFlags(cmd, &target)
	return cmd
}

func manifestFiles(path string) ([]string, error) {
	if path == "-" {
		return []string{"-"}, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var out []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && resource.IsManifest(p) {
			out = append(out, p)
		}
		return err
	})
	sort.Strings(out)
	return out, err
}

func newDeleteCmd() *cobra.Command {
	var target adminTarget
	var namespace string
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete a resource applied through the API",
		Long: `Delete a resource that was applied through the admin API. A resource read from the server's
--config-dir cannot be deleted this way: delete says so and names its file; remove it from that file.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ok := resource.CanonicalKind(args[0])
			if !ok {
				return fmt.Errorf("unknown kind %q (known: %s)", args[0], strings.Join(resource.Kinds(), ", "))
			}
			c, err := target.client()
			if err != nil {
				return err
			}
			if err := c.Delete(cmd.Context(), kind, namespace, args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %q deleted\n", kind, args[1])
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of the resource (empty for cluster-scoped kinds such as KubernetesCluster)")
	adminFlags(cmd, &target)
	return cmd
}

func newGetCmd() *cobra.Command {
	var target adminTarget
	var output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List resources of the management server's configuration and what its agents discovered",
		Long: "List the resources of a kind, or one resource: the effective configuration (config directory and API-applied\n" +
			"resources, SOURCE says which) and what each cluster's agent discovered (Services, EndpointSlices, Gateways…,\n" +
			"with their CLUSTER).\n" +
			"Kinds: " + strings.Join(resource.Kinds(), ", ") + " (case-insensitive, plural accepted), or \"all\".",
		Example: "  meshrelay get kubernetesclusters\n  meshrelay get services\n  meshrelay get upstream default-service-blue-10000 -o yaml",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := ""
			if args[0] != "all" {
				k, ok := resource.CanonicalKind(args[0])
				if !ok {
					return fmt.Errorf("unknown kind %q (known: %s)", args[0], strings.Join(resource.Kinds(), ", "))
				}
				kind = k
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			c, err := target.client()
			if err != nil {
				return err
			}
			items, err := c.List(cmd.Context(), kind, name)
			if err != nil {
				return err
			}
			if name != "" && len(items) == 0 {
				return fmt.Errorf("%s %q not found", kind, name)
			}
			return printItems(cmd.OutOrStdout(), items, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	adminFlags(cmd, &target)
	return cmd
}

func printItems(w io.Writer, items []configapi.Item, format string) error {
	switch format {
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tCLUSTER\tSOURCE\tSTATUS")
		for _, it := range items {
			_, ns, name, _ := resource.ParseKey(it.Key)
			st := "OK"
			if len(it.Status) > 0 {
				st = strings.Join(it.Status, "; ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.Kind, orDash(ns), name, orDash(it.Cluster), orDash(it.Source), st)
		}
		return tw.Flush()
	case "json":
		objs := make([]json.RawMessage, len(items))
		for i, it := range items {
			objs[i] = it.Object
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(objs)
	case "yaml":
		for i, it := range items {
			y, err := yaml.JSONToYAML(it.Object)
			if err != nil {
				return err
			}
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			if it.Cluster != "" {
				fmt.Fprintf(w, "# discovered in cluster %s\n", it.Cluster)
			} else if it.Source != "" {
				fmt.Fprintf(w, "# source: %s\n", it.Source)
			}
			w.Write(y)
			for _, s := range it.Status {
				fmt.Fprintf(w, "# status: %s\n", s)
			}
		}
		return nil
	}
	return fmt.Errorf("-o %q: want table, yaml or json", format)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newDebugCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "debug", Short: "Inspect the management server's live state"}
	var target adminTarget
	var cluster, output string
	var input, outputSnap bool
	snap := &cobra.Command{
		Use:   "snapshot --cluster NAME [--input|--output]",
		Short: "Print a cluster's live input or output snapshot",
		Long: `Print the input snapshot (what the cluster's agent discovered) or the output snapshot (what the
server translated for it, the default) of a cluster, with its version and content hash. Every
resource's hash is checked against its body. -o yaml prints each resource under a "# KEY"
comment (Envoy resources as their JSON envelope); -o table lists the keys; -o json is the
snapshot exactly as the server holds it (compact, so that the hashes still match the bodies
when it is read back; Envoy resources are protobuf, base64 in "body64"). Output
snapshots include the cluster's mesh identity (Secrets with private keys).`,
		Example: "  meshrelay debug snapshot --cluster local --input\n  meshrelay debug snapshot --cluster remote -o table",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster == "" {
				return fmt.Errorf("--cluster is required")
			}
			if input && outputSnap {
				return fmt.Errorf("--input and --output exclude each other")
			}
			kind := snapshot.Output
			if input {
				kind = snapshot.Input
			}
			c, err := target.client()
			if err != nil {
				return err
			}
			s, err := c.Snapshot(cmd.Context(), cluster, kind)
			if err != nil {
				return err
			}
			return printSnapshot(cmd.OutOrStdout(), s, output)
		},
	}
	snap.Flags().StringVar(&cluster, "cluster", "", "cluster name (required)")
	snap.Flags().BoolVar(&input, "input", false, "show the input snapshot")
	snap.Flags().BoolVar(&outputSnap, "output", false, "show the output snapshot (default)")
	snap.Flags().StringVarP(&output, "format", "o", "yaml", "yaml, json or table")
	adminFlags(snap, &target)
	cmd.AddCommand(snap, newDebugTranslateCmd())
	return cmd
}

func newDebugTranslateCmd() *cobra.Command {
	var configDir, inputsDir, cluster, output string
	cmd := &cobra.Command{
		Use:   "translate --config-dir DIR --inputs-dir DIR [--cluster NAME]",
		Short: "Run the translator offline and print each cluster's outputs (a plan before you apply)",
		Long: `Run the translator offline, exactly as the server would, and print each cluster's output
resources, then the status of every resource with a problem (for example a reference to an
upstream that does not exist).

--config-dir holds the management configuration (what the server's --config-dir or apply would
hold). --inputs-dir holds one subdirectory per cluster, named after it and laid out like an
agent's discovery directory (Services, EndpointSlices, resources created in that cluster).

The server gives every registered cluster a mesh identity (a certificate from its mesh CA);
what depends on it (the failover gateways' mTLS, their endpoints in other clusters, the
mesh-identity and mesh-ca Secrets) is only produced with one. Offline there is no server, so
each run issues EPHEMERAL identities from a throwaway CA: the plan has the same resources as
the server's, and only the certificate and key material of those Secrets differs.`,
		Example: "  meshrelay debug translate --config-dir ./config --inputs-dir ./clusters --cluster local -o yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configDir == "" || inputsDir == "" {
				return fmt.Errorf("--config-dir and --inputs-dir are required")
			}
			config, errs := resource.LoadPath(configDir)
			inputs, errs2 := resource.LoadInputsDir(inputsDir)
			errs = append(errs, errs2...)
			for _, e := range errs {
				fmt.Fprintln(cmd.ErrOrStderr(), "invalid:", e)
			}
			clusters := translate.Clusters(config)
			if cluster != "" {
				if _, ok := clusters[cluster]; !ok {
					return fmt.Errorf("cluster %q is not registered in %s (no KubernetesCluster of that name)", cluster, configDir)
				}
			}
			for name := range inputs {
				if _, ok := clusters[name]; !ok {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s/%s is not a registered cluster; its inputs are ignored\n", inputsDir, name)
				}
			}
			certs, err := ephemeralMeshIdentities(clusters)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "note: "+ephemeralNote)
			res := translate.Translate(translate.Input{Config: config, Inputs: inputs, Certs: certs})
			if err := printTranslation(cmd.OutOrStdout(), res, cluster, output); err != nil {
				return err
			}
			for k, msgs := range res.Status {
				for _, m := range msgs {
					fmt.Fprintf(cmd.ErrOrStderr(), "status: %s: %s\n", k, m)
				}
			}
			for _, e := range res.Errors {
				fmt.Fprintln(cmd.ErrOrStderr(), "error:", e)
			}
			if len(errs) > 0 || len(res.Errors) > 0 {
				return fmt.Errorf("%d invalid inputs, %d translation errors", len(errs), len(res.Errors))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configDir, "config-dir", "", "directory of the management configuration (required)")
	cmd.Flags().StringVar(&inputsDir, "inputs-dir", "", "directory with one subdirectory of discovered objects per cluster (required)")
	cmd.Flags().StringVar(&cluster, "cluster", "", "print only this cluster's outputs")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "yaml, json (cluster → [{key, hash, body}], Envoy bodies as JSON) or table (keys only)")
	return cmd
}

const ephemeralNote = "mesh identities are EPHEMERAL: issued by a throwaway CA for this run, so the certificates and keys " +
	"of the mesh-identity and mesh-ca Secrets and of Istio's cacerts differ from the server's; everything else is what the server would publish"

// ephemeralMeshIdentities issues every cluster a mesh identity from a CA that lives only for
// this run, as the server issues them from its mesh CA, so that an offline translation
// produces what depends on them.
func ephemeralMeshIdentities(clusters map[string]v1alpha1.KubernetesCluster) (map[string]translate.ClusterCert, error) {
	ca, err := pki.NewMeshCA(ephemeralTrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ephemeral mesh CA: %w", err)
	}
	names := slices.Sorted(maps.Keys(clusters))
	out := make(map[string]translate.ClusterCert, len(names))
	issuer := pki.NewMeshIssuer(ca, time.Hour)
	issuer.IssueIstioCAs(time.Hour) // as the server does by default (--istio-cacerts)
	for c, b := range issuer.Bundles(names) {
		out[c] = meshcerts.ClusterCert(b)
	}
	if len(out) != len(names) {
		return nil, fmt.Errorf("ephemeral mesh identities: issued %d of %d clusters", len(out), len(names))
	}
	return out, nil
}

// ephemeralTrustDomain names the throwaway CA's trust domain so that its certificates say
// what they are.
const ephemeralTrustDomain = "ephemeral.meshrelay.invalid"

func printTranslation(w io.Writer, res translate.Result, only, format string) error {
	var clusters []string
	for c := range res.Outputs {
		if only == "" || c == only {
			clusters = append(clusters, c)
		}
	}
	sort.Strings(clusters)
	switch format {
	case "json":
		// Cluster → its resources as a snapshot lists them (key, hash, body), each body in
		// its human form (envoyres.JSON: an Envoy resource as its JSON envelope, not the
		// protobuf the server distributes) under the hash of the distributed body.
		out := map[string][]snapshot.Resource{}
		for _, c := range clusters {
			out[c] = []snapshot.Resource{}
			for _, r := range res.Outputs[c] {
				js, err := envoyres.JSON(r)
				if err != nil {
					return err
				}
				out[c] = append(out[c], snapshot.Resource{Key: r.Key, Hash: r.Hash, Body: js})
			}
		}
		return json.NewEncoder(w).Encode(out)
	case "yaml", "table":
		if len(clusters) > 0 {
			fmt.Fprintf(w, "# %s\n", ephemeralNote)
		}
		for _, c := range clusters {
			fmt.Fprintf(w, "# cluster %s: %d resources\n", c, len(res.Outputs[c]))
			for _, r := range res.Outputs[c] {
				if format == "table" {
					fmt.Fprintln(w, " ", r.Key)
					continue
				}
				js, err := envoyres.JSON(r)
				if err != nil {
					return err
				}
				y, err := yaml.JSONToYAML(js)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "---\n%s", y)
			}
		}
		return nil
	}
	return fmt.Errorf("-o %q: want yaml, json or table", format)
}

func printSnapshot(w io.Writer, s *snapshot.Snapshot, format string) error {
	switch format {
	case "json":
		// Byte for byte what the snapshot encodes (not re-indented), so that its resource
		// hashes still match their bodies when it is read back.
		b, err := s.MarshalJSON()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "table":
		fmt.Fprintf(w, "version %d  epoch %d  hash %s  resources %d\n", s.Version, s.Epoch, s.Hash, s.Len())
		for _, k := range s.Keys() {
			fmt.Fprintln(w, " ", k)
		}
		return nil
	case "yaml":
		fmt.Fprintf(w, "# version %d, epoch %d, hash %s, %d resources\n", s.Version, s.Epoch, s.Hash, s.Len())
		for i, r := range s.Sorted() {
			js, err := envoyres.JSON(r)
			if err != nil {
				return err
			}
			y, err := yaml.JSONToYAML(js)
			if err != nil {
				return fmt.Errorf("resource %s: %w", r.Key, err)
			}
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			fmt.Fprintf(w, "# %s\n", r.Key)
			w.Write(y)
		}
		return nil
	}
	return fmt.Errorf("-o %q: want yaml, json or table", format)
}
