package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// The xDS link between an agent and its gateways (issue 14, docs/adr/0007): a Unix socket
// by default, mutual TLS with mesh certificates across hosts.

// gatewayCert runs 'meshrelay gateway issue-cert' and returns the directory it wrote.
func (h *harness) gatewayCert(s *server, cluster, node string) string {
	h.t.Helper()
	dir := filepath.Join(h.dir, "gwcert-"+cluster+"-"+node)
	out, errOut, err := cli(h.t, "gateway", "issue-cert", "--server", s.admin, "--cluster", cluster, "--node", node, "--out-dir", dir)
	if err != nil {
		h.t.Fatalf("gateway issue-cert %s/%s: %v\n%s%s", cluster, node, err, out, errOut)
	}
	fi, err := os.Stat(filepath.Join(dir, "gateway.key"))
	if err != nil {
		h.t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		h.t.Errorf("gateway.key has mode %v, want 0600", fi.Mode().Perm())
	}
	return dir
}

// gatewayTLSArgs are the flags of a gateway of cluster presenting the certificate in dir.
func gatewayTLSArgs(cluster, dir string) []string {
	return []string{"--cluster", cluster, "--xds-tls-cert-file", filepath.Join(dir, "gateway.crt"),
		"--xds-tls-key-file", filepath.Join(dir, "gateway.key"), "--xds-ca-file", filepath.Join(dir, "ca.crt")}
}

// gatewayConfigured waits until the gateway at admin is connected to its agent and holds
// its Secrets.
func gatewayConfigured(t *testing.T, admin, what string) {
	t.Helper()
	poll.Eventually(t, 30*time.Second, what, func() error {
		var st gatewayXDSStatus
		if err := getJSON(admin, "/status", &st); err != nil {
			return err
		}
		if !st.XDS.Connected || st.XDS.Versions["Secret"] == "" {
			return fmt.Errorf("xds status %+v", st.XDS)
		}
		return nil
	})
}

type gatewayXDSStatus struct {
	XDS struct {
		Connected bool              `json:"connected"`
		Versions  map[string]string `json:"versions"`
		LastError string            `json:"lastError"`
	} `json:"xds"`
}

// tlsAgents starts a server with clusters east and west and their agents serving xDS over
// mutual TLS on loopback, and waits until each serves with its mesh identity.
func tlsAgents(t *testing.T) (h *harness, s *server, agents map[string]*agent, xdsAddr map[string]string) {
	h = newHarness(t)
	s = h.startServer("server", []string{"east", "west"})
	agents, xdsAddr = map[string]*agent{}, map[string]string{}
	for _, c := range []string{"east", "west"} {
		xdsAddr[c] = h.addr()
		agents[c] = h.startAgent(c, s, "--xds-tls", "--xds-address", xdsAddr[c])
	}
	for _, c := range []string{"east", "west"} {
		a := agents[c]
		poll.Eventually(t, 30*time.Second, c+"'s xDS serving with its mesh identity", func() error {
			var st struct {
				XDS struct {
					TLS              bool       `json:"tls"`
					IdentityNotAfter *time.Time `json:"identityNotAfter"`
					IdentityError    string     `json:"identityError"`
				} `json:"xds"`
			}
			if err := getJSON(a.admin, "/status", &st); err != nil {
				return err
			}
			if !st.XDS.TLS || st.XDS.IdentityNotAfter == nil {
				return fmt.Errorf("xds status %+v", st.XDS)
			}
			return nil
		})
	}
	return h, s, agents, xdsAddr
}

// TestXDSGatewayRefusesForeignAgent: a gateway of cluster east pointed at west's agent
// refuses it (log line and metric) and applies nothing; pointed at east's agent it works.
func TestXDSGatewayRefusesForeignAgent(t *testing.T) {
	h, s, _, xdsAddr := tlsAgents(t)
	certs := h.gatewayCert(s, "east", "east-gw")

	// A cluster that is not registered gets no certificate.
	_, errOut, err := cli(t, "gateway", "issue-cert", "--server", s.admin, "--cluster", "north", "--node", "gw", "--out-dir", filepath.Join(h.dir, "north"))
	if err == nil || !strings.Contains(errOut, `no KubernetesCluster named "north"`) {
		t.Errorf("issue-cert for an unregistered cluster: err %v, stderr:\n%s", err, errOut)
	}

	wrongAdmin := h.addr()
	wrong := h.start("gateway-east-at-west", append([]string{"gateway", "--xds-address", xdsAddr["west"], "--node-id", "east-gw",
		"--admin-address", wrongAdmin, "--xds-max-backoff", "1s"}, gatewayTLSArgs("east", certs)...)...)
	if err := waitUp(t, wrong, 0, func() string { return wrongAdmin }, "/healthz", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 30*time.Second, "east's gateway refusing west's agent", func() error {
		if n := metric(t, wrongAdmin, "meshrelay_gateway_xds_server_refused_total", `reason="foreign_cluster"`); n < 1 {
			return fmt.Errorf("meshrelay_gateway_xds_server_refused_total{reason=foreign_cluster} = %v", n)
		}
		return logContains(t, wrong, `xds server refused`)
	})
	if err := logContains(t, wrong, "the agent of cluster west, not of this gateway's cluster east"); err != nil {
		t.Error(err)
	}
	var st gatewayXDSStatus
	if err := getJSON(wrongAdmin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.XDS.Connected || len(st.XDS.Versions) != 0 || !strings.Contains(st.XDS.LastError, "cluster west") {
		t.Errorf("gateway pointed at a foreign agent: connected %v, versions %v, last error %q", st.XDS.Connected, st.XDS.Versions, st.XDS.LastError)
	}

	rightAdmin := h.addr()
	h.start("gateway-east", append([]string{"gateway", "--xds-address", xdsAddr["east"], "--node-id", "east-gw",
		"--admin-address", rightAdmin, "--xds-max-backoff", "1s"}, gatewayTLSArgs("east", certs)...)...)
	gatewayConfigured(t, rightAdmin, "east's gateway configured by east's agent")
	// The certificate's expiry is there to alert on (issue-cert again before it).
	leaf, err := leafOf(filepath.Join(certs, "gateway.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if got := metric(t, rightAdmin, "meshrelay_gateway_xds_certificate_expiry_timestamp_seconds"); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("meshrelay_gateway_xds_certificate_expiry_timestamp_seconds = %v, want %d", got, leaf.NotAfter.Unix())
	}
	if n := metric(t, rightAdmin, "meshrelay_gateway_xds_server_refused_total", `reason="foreign_cluster"`); n != 0 {
		t.Errorf("the gateway at its own agent refused it %v times", n)
	}
}

// TestXDSRequiresGatewayCertificate: a client without a certificate, with one from another
// CA, with one of another cluster's gateway, or with one for another node than the node id
// it sends gets nothing from the agent's xDS; each refusal is counted and reported. The
// same client with the right certificate and node gets the resources.
func TestXDSRequiresGatewayCertificate(t *testing.T) {
	h, s, agents, xdsAddr := tlsAgents(t)
	east := agents["east"]
	eastGW := h.gatewayCert(s, "east", "gw-a")
	westGW := h.gatewayCert(s, "west", "gw-a")
	otherCA := otherCAGatewayCert(t, h.dir, "east", "gw-a")

	for _, c := range []struct {
		name, certDir, node, reason string
	}{
		{"no certificate", "", "gw-a", "no_certificate"},
		{"certificate of another CA", otherCA, "gw-a", "untrusted"},
		{"certificate of another cluster", westGW, "gw-a", "foreign_cluster"},
		{"certificate of another node", eastGW, "gw-b", "node_mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := metric(t, east.admin, "meshrelay_xds_refused_total", `reason="`+c.reason+`"`)
			res, err := fetchSecrets(t.Context(), xdsAddr["east"], c.certDir, c.node)
			if err == nil {
				t.Fatalf("the agent answered with %d resources of type %s", len(res.GetResources()), res.GetTypeUrl())
			}
			t.Logf("refused: %v", err)
			poll.Eventually(t, 10*time.Second, "refusal counted", func() error {
				if n := metric(t, east.admin, "meshrelay_xds_refused_total", `reason="`+c.reason+`"`); n <= before {
					return fmt.Errorf("meshrelay_xds_refused_total{reason=%q} = %v, was %v", c.reason, n, before)
				}
				return nil
			})
		})
	}
	if err := logContains(t, east.p, "xds connection refused"); err != nil {
		t.Error(err)
	}
	var st struct {
		XDS struct {
			RefusedConnections []struct{ Peer, Reason string } `json:"refusedConnections"`
		} `json:"xds"`
	}
	if err := getJSON(east.admin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, r := range st.XDS.RefusedConnections {
		reasons[r.Reason] = true
	}
	for _, r := range []string{"no_certificate", "untrusted", "foreign_cluster", "node_mismatch"} {
		if !reasons[r] {
			t.Errorf("/status xds.refusedConnections lacks reason %s: %+v", r, st.XDS.RefusedConnections)
		}
	}
	poll.Eventually(t, 20*time.Second, "check names the refused clients", func() error {
		return checkFailsOn(t, s.admin, "cluster east", "refused by the agent's xds server (foreign_cluster)", "spiffe://")
	})

	// The control: the same client with east's gateway certificate and its node.
	res, err := fetchSecrets(t.Context(), xdsAddr["east"], eastGW, "gw-a")
	if err != nil {
		t.Fatalf("east's gateway certificate: %v", err)
	}
	if len(res.GetResources()) == 0 {
		t.Fatalf("east's gateway got no secrets")
	}
}

// fetchSecrets opens an ADS stream over TLS (with the certificate in certDir, if any),
// subscribes to Secrets as node, and returns the first response.
func fetchSecrets(ctx context.Context, addr, certDir, node string) (*discoveryv3.DiscoveryResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // the test checks the agent, not the reverse
	if certDir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "gateway.crt"), filepath.Join(certDir, "gateway.key"))
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.SecretType}); err != nil {
		return nil, err
	}
	res, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if res.GetTypeUrl() != resourcev3.SecretType {
		return res, errors.New("unexpected type " + res.GetTypeUrl())
	}
	return res, nil
}

// otherCAGatewayCert writes a gateway certificate of cluster and node issued by a CA the
// management server never heard of, in the layout of 'meshrelay gateway issue-cert'.
func otherCAGatewayCert(t *testing.T, dir, cluster, node string) string {
	t.Helper()
	out := filepath.Join(dir, "other-ca-gw")
	pkitest.Gateway(t, pkitest.CA(t, "meshrelay.local"), cluster, node).Write(t, out, "gateway.crt", "gateway.key")
	return out
}

// TestXDSUnixSocketDefault: by default the agent serves xDS on xds.sock in its state
// directory, mode 0600; a gateway is configured through it; a second agent given the same
// socket exits naming the flag; an agent killed leaves a stale socket that its restart
// replaces.
func TestXDSUnixSocketDefault(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local"})
	local := h.startAgent("local", s)
	sock := filepath.Join(local.state, "xds.sock")
	poll.Eventually(t, 30*time.Second, "the agent's socket", func() error {
		fi, err := os.Stat(sock)
		if err != nil {
			return err
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			return fmt.Errorf("%s: mode %v, want a socket with 0600", sock, fi.Mode())
		}
		return nil
	})
	gwAdmin := h.addr()
	h.start("gateway-local", "gateway", "--xds-address", local.xdsSocket(), "--node-id", "local-gw", "--admin-address", gwAdmin, "--xds-max-backoff", "1s")
	poll.Eventually(t, 30*time.Second, "gateway configured over the socket", func() error {
		var st gatewayXDSStatus
		if err := getJSON(gwAdmin, "/status", &st); err != nil {
			return err
		}
		if !st.XDS.Connected || len(st.XDS.Versions) == 0 {
			return fmt.Errorf("xds status %+v", st.XDS)
		}
		return nil
	})

	r := h.agentDirs("remote")
	wantExitNaming(t, []string{"agent", "--cluster", "remote", "--relay-address", s.relay, "--token-file", h.token,
		"--relay-ca-file", s.caFile(), "--state-dir", r.state, "--discovery-dir", r.discovery, "--output-dir", r.output,
		"--admin-address", h.addr(), "--xds-address", local.xdsSocket()}, "--xds-address "+local.xdsSocket(), "address already in use")

	// A plaintext non-loopback address is refused at flag validation.
	wantExitNaming(t, []string{"agent", "--cluster", "remote", "--relay-address", s.relay, "--token-file", h.token,
		"--relay-ca-file", s.caFile(), "--state-dir", r.state, "--discovery-dir", r.discovery, "--output-dir", r.output,
		"--admin-address", h.addr(), "--xds-address", "0.0.0.0:18000"}, "--xds-address 0.0.0.0:18000", "needs --xds-tls")
	wantExitNaming(t, []string{"gateway", "--xds-address", "10.0.0.1:18000", "--node-id", "gw"}, "--xds-address 10.0.0.1:18000", "needs mutual TLS")

	local.p.Kill()
	<-local.p.Done()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("a killed agent leaves its socket file: %v", err)
	}
	h.restartAgent(local)
	poll.Eventually(t, 30*time.Second, "the restarted agent serving on the socket again", func() error {
		return logContains(t, local.p, "xds listening")
	})
}
