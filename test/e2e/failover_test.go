package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/demo"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
)

// seedWorld is seed 003's setup: clusters local and remote with agents and gateways, blue
// in local, green in remote, the FailoverScheme, the health-check patch, the failover
// gateway and the route to blue.
type seedWorld struct {
	h              *harness
	server         *server
	local, remote  *agent
	gwLocal        *proc.Process
	gwRemote       *proc.Process
	url            string
	blueAdmin      string
	gwLocalAdmin   string
	localDiscovery string
	// failover is remote's failover gateway (host:port).
	failover string
}

func newSeedWorld(t *testing.T, serverExtra []string, localExtra, remoteExtra map[string]string) *seedWorld {
	t.Helper()
	return newSeedWorldIn(newHarness(t), serverExtra, localExtra, remoteExtra, nil)
}

// newSeedWorldIn builds the seed world in h; processExtra, when set, gives the extra flags of
// the agent and the gateway of each cluster (role "agent" or "gateway").
func newSeedWorldIn(h *harness, serverExtra []string, localExtra, remoteExtra map[string]string, processExtra func(role, cluster string) []string) *seedWorld {
	t := h.t
	t.Helper()
	if processExtra == nil {
		processExtra = func(string, string) []string { return nil }
	}
	w := &seedWorld{h: h}
	ports := map[string]int{}
	for _, n := range []string{"blue", "blue-admin", "green", "green-admin", "http", "failover", "gw-local", "gw-remote"} {
		p, err := proc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[n] = p
	}
	addr := func(n string) string { return "127.0.0.1:" + strconv.Itoa(ports[n]) }
	h.start("app-blue", "demo-app", "--text", "blue-pod", "--port", strconv.Itoa(ports["blue"]), "--admin-port", strconv.Itoa(ports["blue-admin"]))
	h.start("app-green", "demo-app", "--text", "green-pod", "--port", strconv.Itoa(ports["green"]), "--admin-port", strconv.Itoa(ports["green-admin"]))
	w.server = h.startServer("server", nil, serverExtra...)
	writeFile(t, filepath.Join(w.server.config, "clusters.yaml"), demo.ClustersYAML)
	writeFile(t, filepath.Join(w.server.config, "failover-scheme.yaml"), demo.FailoverSchemeYAML)
	local, remote := h.agentDirs("local"), h.agentDirs("remote")
	w.localDiscovery = local.discovery
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), demo.AppYAML("blue", "blue-pod", ports["blue"]))
	writeFile(t, filepath.Join(local.discovery, "patch.yaml"), demo.HealthCheckPatchYAML)
	writeFile(t, filepath.Join(local.discovery, "route.yaml"), demo.RouteYAML(ports["http"]))
	writeFile(t, filepath.Join(remote.discovery, "green.yaml"), demo.AppYAML("green", "green-pod", ports["green"]))
	writeFile(t, filepath.Join(remote.discovery, "gateway.yaml"), demo.FailoverGatewayYAML(ports["failover"]))
	for f, c := range localExtra {
		writeFile(t, filepath.Join(local.discovery, f), c)
	}
	for f, c := range remoteExtra {
		writeFile(t, filepath.Join(remote.discovery, f), c)
	}
	// The agents serve xDS on their default Unix socket in --state-dir.
	w.local = h.startAgent("local", w.server, processExtra("agent", "local")...)
	w.remote = h.startAgent("remote", w.server, processExtra("agent", "remote")...)
	w.gwLocal = h.start("gateway-local", append([]string{"gateway", "--xds-address", w.local.xdsSocket(), "--node-id", "local",
		"--admin-address", addr("gw-local"), "--drain-timeout", "1s"}, processExtra("gateway", "local")...)...)
	w.gwRemote = h.start("gateway-remote", append([]string{"gateway", "--xds-address", w.remote.xdsSocket(), "--node-id", "remote",
		"--admin-address", addr("gw-remote"), "--drain-timeout", "1s"}, processExtra("gateway", "remote")...)...)
	w.url = "http://" + addr("http") + "/"
	w.blueAdmin = "http://" + addr("blue-admin")
	w.gwLocalAdmin = addr("gw-local")
	w.failover = addr("failover")
	w.expect(t, "blue-pod", 30*time.Second)
	return w
}

func answer(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

func (w *seedWorld) expect(t *testing.T, want string, within time.Duration) {
	t.Helper()
	poll.Eventually(t, within, "gateway answers "+want, func() error {
		got, err := answer(w.url)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("answered %q", got)
		}
		return nil
	})
}

func (w *seedWorld) blue(t *testing.T, state string) {
	t.Helper()
	resp, err := http.Post(w.blueAdmin+"/healthcheck/"+state, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// The management server and both agents killed: the gateways keep serving their last
// configuration and keep failing over by health checks.
func TestDataPlaneSurvivesServerAndAgents(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil)
	// The failover path works while everything runs...
	w.blue(t, "fail")
	w.expect(t, "green-pod", 15*time.Second)
	w.blue(t, "ok")
	w.expect(t, "blue-pod", 15*time.Second)
	// ...and keeps working with the management plane gone.
	w.server.p.Kill()
	w.local.p.Kill()
	w.remote.p.Kill()
	w.expect(t, "blue-pod", 5*time.Second)
	w.blue(t, "fail")
	w.expect(t, "green-pod", 10*time.Second)
	w.blue(t, "ok")
	w.expect(t, "blue-pod", 10*time.Second)
}

// Mesh certificates rotate before they expire without failing a single request, also on
// the failover path (mTLS between the gateways).
func TestMeshCertificateRotationKeepsTraffic(t *testing.T) {
	w := newSeedWorld(t, []string{"--mesh-cert-ttl", "12s"}, nil, nil)
	w.blue(t, "fail") // all traffic goes through the mTLS failover path
	w.expect(t, "green-pod", 15*time.Second)
	before := metric(t, w.server.admin, "meshrelay_output_snapshot_version", `cluster="remote"`)
	var ok, failed atomic.Int64
	var lastErr atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(20 * time.Second) // spans at least two rotations (every 8 s)
		for time.Now().Before(deadline) {
			if got, err := answer(w.url); err != nil || got != "green-pod" {
				failed.Add(1)
				lastErr.Store(fmt.Sprintf("%q %v", got, err))
			} else {
				ok.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	<-done
	after := metric(t, w.server.admin, "meshrelay_output_snapshot_version", `cluster="remote"`)
	if after < before+2 {
		t.Fatalf("remote's output (with its certificates) changed %v times in 20s; want at least 2 rotations", after-before)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during rotation; last: %v", failed.Load(), failed.Load()+ok.Load(), lastErr.Load())
	}
	t.Logf("%d requests through the failover path across %v output changes, none failed", ok.Load(), after-before)
}

// selfSigned is what the seed's `openssl req -x509 -newkey … -subj "/CN=solo.io"` makes.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "solo.io"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func tlsSecretYAML(name string, cert, key, ca []byte) string {
	b64 := base64.StdEncoding.EncodeToString
	s := fmt.Sprintf("apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: %s\n  namespace: gloo-system\ndata:\n  tls.crt: %s\n  tls.key: %s\n", name, b64(cert), b64(key))
	if ca != nil {
		s += fmt.Sprintf("  ca.crt: %s\n", b64(ca))
	}
	return s
}

// The seed's own openssl secrets keep working: failover-downstream (serving cert with the
// upstream side's certificate as root CA) in remote, failover-upstream in local.
func TestBringYourOwnSecrets(t *testing.T) {
	tlsCrt, tlsKey := selfSigned(t)   // downstream: the failover gateway's serving certificate
	mtlsCrt, mtlsKey := selfSigned(t) // upstream: the primary's client certificate (and the root CA)
	w := newSeedWorld(t, nil,
		map[string]string{"failover-upstream.yaml": tlsSecretYAML("failover-upstream", mtlsCrt, mtlsKey, nil)},
		map[string]string{"failover-downstream.yaml": tlsSecretYAML("failover-downstream", tlsCrt, tlsKey, mtlsCrt)})
	w.blue(t, "fail")
	w.expect(t, "green-pod", 15*time.Second)
	w.blue(t, "ok")
	w.expect(t, "blue-pod", 15*time.Second)
	out, _, err := cli(t, "get", "failoverschemes", "--server", w.server.admin)
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("failover scheme status: %v\n%s", err, out)
	}
	var status struct {
		ResourceStatus map[string][]string `json:"resourceStatus"`
	}
	if err := getJSON(w.server.admin, "/status", &status); err != nil {
		t.Fatal(err)
	}
	for k, v := range status.ResourceStatus {
		if strings.Contains(strings.Join(v, " "), "failover-downstream") {
			t.Fatalf("the bring-your-own secret was not used: %s: %v", k, v)
		}
	}
}

// An Istio sidecar of another cluster reaches the meshrelay failover gateway as its
// east-west gateway: Istio mutual TLS with SNI outbound_.<port>_._.<host> of the host it
// called — here the FailoverScheme primary's host — and the gateway forwards to the
// upstream standing in for it (green). The trust is the bring-your-own secret's CA, which
// is where Istio's root goes when both modes share a mesh. Another host's SNI is refused.
func TestIstioSNIThroughMeshrelayGateway(t *testing.T) {
	tlsCrt, tlsKey := selfSigned(t)   // the gateway's serving certificate
	mtlsCrt, mtlsKey := selfSigned(t) // the sidecar's client certificate, and the gateway's client CA
	w := newSeedWorld(t, nil, nil, map[string]string{"failover-downstream.yaml": tlsSecretYAML("failover-downstream", tlsCrt, tlsKey, mtlsCrt)})
	client, err := tls.X509KeyPair(mtlsCrt, mtlsKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(tlsCrt)
	get := func(sni string) (string, error) {
		cfg := &tls.Config{ServerName: sni, Certificates: []tls.Certificate{client}, InsecureSkipVerify: true,
			// The seed's serving certificate names no host; verify its chain only.
			VerifyConnection: func(cs tls.ConnectionState) error {
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots})
				return err
			}}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get("https://" + w.failover + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), nil
	}
	poll.Eventually(t, 30*time.Second, "green through Istio's SNI form", func() error {
		got, err := get("outbound_.10000_._.service-blue.default.svc.cluster.local")
		if err != nil {
			return err
		}
		if got != "green-pod" {
			return fmt.Errorf("answered %q", got)
		}
		return nil
	})
	if got, err := get("outbound_.10000_._.service-red.default.svc.cluster.local"); err == nil {
		t.Fatalf("an SNI the gateway does not serve answered %q", got)
	}
}
