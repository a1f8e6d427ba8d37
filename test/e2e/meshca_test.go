package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// meshProbe calls the remote failover gateway the way the local gateway does (mTLS, SNI of
// the green upstream) with a client identity issued by ca, and checks that the gateway's
// own certificate chains to trusted.
func meshProbe(t *testing.T, addr string, ca *pki.CA, trusted *x509.CertPool) (string, error) {
	t.Helper()
	certPEM, keyPEM, _, err := ca.IssueMesh("local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{ServerName: "default-service-green-10000", Certificates: []tls.Certificate{client}, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error { // the mesh identity names a cluster, not this SNI: verify the chain
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: trusted, Intermediates: inter})
			return err
		}}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), nil
}

// localDial opens a new east-west connection as cluster local's gateway would at this
// moment: with the identity and trust bundle of local's current output (which its agent
// applies within milliseconds) to the remote gateway (whose state is what it is).
func localDial(t *testing.T, c *configapi.Client, addr string) error {
	t.Helper()
	out, err := c.Snapshot(t.Context(), "local", snapshot.Output)
	if err != nil {
		return err
	}
	var id, ca *tlsv3.Secret
	for _, r := range out.Sorted() {
		if !strings.HasPrefix(r.Key, envoyres.KindSecret+"//meshrelay-mesh-") {
			continue
		}
		_, msg, err := envoyres.Decode(r)
		if err != nil {
			return err
		}
		if s := msg.(*tlsv3.Secret); s.GetName() == envoyres.MeshCASecret {
			ca = s
		} else {
			id = s
		}
	}
	if id == nil || ca == nil {
		return fmt.Errorf("local's output lacks the mesh secrets")
	}
	client, err := tls.X509KeyPair(id.GetTlsCertificate().GetCertificateChain().GetInlineBytes(), id.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.GetValidationContext().GetTrustedCa().GetInlineBytes())
	cfg := &tls.Config{ServerName: "default-service-green-10000", Certificates: []tls.Certificate{client}, InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots})
			return err
		}}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := hc.Get("https://" + addr + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// `meshrelay ca rotate mesh`, run while requests flow continuously through the east-west
// (mTLS failover) path, fails none of them; at the end the gateway serves a certificate of
// the new CA only and refuses a client of the old CA.
func TestMeshCARotationKeepsTraffic(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil)
	w.blue(t, "fail") // all traffic goes through the mTLS failover path
	w.expect(t, "green-pod", 15*time.Second)
	oldCA, err := pki.LoadCA(filepath.Join(w.server.dataDir, "mesh-ca.crt"), filepath.Join(w.server.dataDir, "mesh-ca.key"), "meshrelay.local")
	if err != nil {
		t.Fatal(err)
	}
	// The probe works: before the rotation, the old CA is what the gateway trusts and serves.
	if got, err := meshProbe(t, w.failover, oldCA, oldCA.Pool()); err != nil || got != "green-pod" {
		t.Fatalf("before the rotation, a client of the mesh CA got %q, %v", got, err)
	}

	api, err := configapi.NewClient(w.server.admin, adminToken, w.server.caFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := localDial(t, api, w.failover); err != nil {
		t.Fatalf("before the rotation, a new connection with local's certificates: %v", err)
	}
	// Requests through the gateways (pooled connections), and new connections with local's
	// certificates of the moment (what a new pool, a restarted gateway or a new replica
	// opens), both counted.
	var ok, failed, dialOK, dialFailed atomic.Int64
	var lastErr, lastDialErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got, err := answer(w.url); err != nil || got != "green-pod" {
				failed.Add(1)
				lastErr.Store(fmt.Sprintf("%q %v", got, err))
			} else {
				ok.Add(1)
			}
			if err := localDial(t, api, w.failover); err != nil {
				dialFailed.Add(1)
				lastDialErr.Store(err.Error())
			} else {
				dialOK.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	// One cluster lags: its agent is frozen for a few seconds as the rotation starts, so its
	// gateway keeps the previous phase's certificates while the other's moves on. The
	// rotation must wait for it rather than leave the two gateways without a common CA.
	if err := w.remote.p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.remote.p.Signal(syscall.SIGCONT) })
	go func() {
		time.Sleep(4 * time.Second)
		_ = w.remote.p.Signal(syscall.SIGCONT)
	}()
	start := time.Now()
	out, errOut, err := cli(t, "ca", "rotate", "mesh", "--server", w.server.admin, "--overlap", "2m", "--hold", "2s")
	time.Sleep(2 * time.Second) // keep sending after the old CA was dropped everywhere
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("ca rotate mesh: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("ca rotate mesh took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	for _, want := range []string{"phase trust", "holding phase trust", "phase sign", "holding phase sign", "phase drop", "mesh CA rotated to"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the mesh CA rotation; last: %v", failed.Load(), failed.Load()+ok.Load(), lastErr.Load())
	}
	if dialFailed.Load() > 0 {
		t.Fatalf("%d of %d new east-west connections failed during the mesh CA rotation; last: %v", dialFailed.Load(), dialFailed.Load()+dialOK.Load(), lastDialErr.Load())
	}
	if ok.Load() < 50 || dialOK.Load() < 50 {
		t.Fatalf("only %d requests and %d new connections went through during the rotation", ok.Load(), dialOK.Load())
	}
	t.Logf("%d requests through the east-west path and %d new east-west connections during the rotation, none failed", ok.Load(), dialOK.Load())

	newCA, err := pki.LoadCA(filepath.Join(w.server.dataDir, "mesh-ca.crt"), filepath.Join(w.server.dataDir, "mesh-ca.key"), "meshrelay.local")
	if err != nil {
		t.Fatal(err)
	}
	if pki.Fingerprint(newCA) == pki.Fingerprint(oldCA) {
		t.Fatal("the data directory still holds the old mesh CA")
	}
	retired, _ := filepath.Glob(filepath.Join(w.server.dataDir, "mesh-ca.crt.retired-*"))
	if len(retired) != 1 {
		t.Fatalf("retired mesh CA files: %v, want one", retired)
	}
	// The gateway serves a certificate of the new CA, which the old one does not verify...
	if got, err := meshProbe(t, w.failover, newCA, newCA.Pool()); err != nil || got != "green-pod" {
		t.Fatalf("after the rotation, a client of the new CA got %q, %v", got, err)
	}
	if _, err := meshProbe(t, w.failover, newCA, oldCA.Pool()); err == nil {
		t.Fatal("after the rotation the gateway still serves a certificate of the old CA")
	}
	// ...and no longer trusts the old CA's clients.
	if got, err := meshProbe(t, w.failover, oldCA, newCA.Pool()); err == nil {
		t.Fatalf("after the rotation a client of the old CA still got %q", got)
	}
	if v := metric(t, w.server.admin, "meshrelay_mesh_ca_rotation_phase"); v != 0 {
		t.Fatalf("meshrelay_mesh_ca_rotation_phase = %v after the rotation, want 0", v)
	}
}

// A rotation that cannot go on stays where it is, safe and visible, and resumes: bad input
// is refused naming the flag; a cluster that does not acknowledge keeps the rotation in its
// first phase past --overlap (non-zero exit naming the cluster, check and metric show it);
// running the command again once the agent is back finishes it.
func TestMeshCARotationStallsAndResumes(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local"})
	a := h.startAgent("local", s)
	poll.Eventually(t, 30*time.Second, "local in sync", func() error {
		for _, c := range s.status(t).Clusters {
			if c.Name == "local" && c.InSync {
				return nil
			}
		}
		return fmt.Errorf("local not in sync")
	})

	notCA := filepath.Join(t.TempDir(), "not-a-ca.pem")
	writeFile(t, notCA, "junk")
	if _, errOut, code := cliExit(t, "ca", "rotate", "mesh", "--server", s.admin, "--cert", notCA); code == 0 || !strings.Contains(errOut, "--cert and --key go together") {
		t.Fatalf("--cert without --key: exit %d, %s", code, errOut)
	}
	if _, errOut, code := cliExit(t, "ca", "rotate", "mesh", "--server", s.admin, "--cert", notCA, "--key", notCA); code == 0 ||
		!strings.Contains(errOut, "new mesh CA (--cert, --key)") || !strings.Contains(errOut, "no CERTIFICATE PEM block") {
		t.Fatalf("--cert that is not a CA: exit %d, %s", code, errOut)
	}
	if v := metric(t, s.admin, "meshrelay_mesh_ca_rotation_phase"); v != 0 {
		t.Fatalf("a refused rotation started anyway: phase %v", v)
	}

	if err := a.p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.p.Signal(syscall.SIGCONT) })
	_, errOut, code := cliExit(t, "ca", "rotate", "mesh", "--server", s.admin, "--overlap", "3s")
	if code == 0 || !strings.Contains(errOut, `--overlap elapsed with the mesh CA rotation in phase "trust"`) || !strings.Contains(errOut, "local:") {
		t.Fatalf("rotation with a frozen agent: exit %d, %s", code, errOut)
	}
	if v := metric(t, s.admin, "meshrelay_mesh_ca_rotation_phase"); v != 1 {
		t.Fatalf("meshrelay_mesh_ca_rotation_phase = %v, want 1 (trust)", v)
	}
	if v := metric(t, s.admin, "meshrelay_mesh_ca_rotation_pending_clusters"); v != 1 {
		t.Fatalf("meshrelay_mesh_ca_rotation_pending_clusters = %v, want 1", v)
	}
	out, _, _ := cli(t, "check", "--server", s.admin)
	if !strings.Contains(out, "✗ mesh CA") || !strings.Contains(out, "rotation in phase trust") {
		t.Fatalf("check during a stalled rotation:\n%s", out)
	}

	if err := a.p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := cli(t, "ca", "rotate", "mesh", "--server", s.admin, "--overlap", "1m")
	if err != nil || !strings.Contains(out, "mesh CA rotated to") {
		t.Fatalf("resumed rotation: %v\n%s\n%s", err, out, errOut)
	}
	if v := metric(t, s.admin, "meshrelay_mesh_ca_rotation_phase"); v != 0 {
		t.Fatalf("meshrelay_mesh_ca_rotation_phase = %v after the resumed rotation, want 0", v)
	}
	if retired, _ := filepath.Glob(filepath.Join(s.dataDir, "mesh-ca.crt.retired-*")); len(retired) != 1 {
		t.Fatalf("retired mesh CA files %v, want one (resuming did not start a second rotation)", retired)
	}
}

// A gateway on the xDS link's mutual TLS regains its link in the middle of a mesh CA
// rotation without new files: in the sign phase its agent serves an identity of the new CA,
// which the gateway trusts from the mesh CA bundle the agent sent it in the trust phase.
func TestXDSGatewayTrustsRotatedMeshCA(t *testing.T) {
	h, s, agents, xdsAddr := tlsAgents(t)
	certs := h.gatewayCert(s, "east", "east-gw")
	gwAdmin := h.addr()
	h.start("gateway-east", append([]string{"gateway", "--xds-address", xdsAddr["east"], "--node-id", "east-gw",
		"--admin-address", gwAdmin, "--xds-max-backoff", "1s"}, gatewayTLSArgs("east", certs)...)...)
	gatewayConfigured(t, gwAdmin, "east's gateway configured before the rotation")

	c, err := configapi.NewClient(s.admin, adminToken, s.caFile())
	if err != nil {
		t.Fatal(err)
	}
	var st configapi.MeshCAStatus
	if err := c.DoJSON(t.Context(), http.MethodPost, configapi.MeshCARotatePath, configapi.MeshCARotateRequest{}, &st); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 60*time.Second, "the rotation in phase sign", func() error {
		return c.DoJSON(t.Context(), http.MethodPost, configapi.MeshCAAdvancePath, configapi.MeshCAAdvanceRequest{From: pki.PhaseTrust}, &st)
	})
	poll.Eventually(t, 60*time.Second, "phase sign acknowledged", func() error {
		if err := c.DoJSON(t.Context(), http.MethodGet, configapi.MeshCAPath, nil, &st); err != nil {
			return err
		}
		if st.Phase != pki.PhaseSign || !st.Ready {
			return fmt.Errorf("phase %q, ready %v", st.Phase, st.Ready)
		}
		return nil
	})
	// The agent restarts: the gateway reconnects to an identity its --xds-ca-file (written
	// before the rotation) does not trust.
	east := agents["east"]
	if err := east.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	refusedBefore := metric(t, gwAdmin, "meshrelay_gateway_xds_server_refused_total", `reason="untrusted"`)
	h.restartAgent(east)
	gatewayConfigured(t, gwAdmin, "east's gateway reconnected to its agent serving a new-CA identity")
	if n := metric(t, gwAdmin, "meshrelay_gateway_xds_server_refused_total", `reason="untrusted"`); n != refusedBefore {
		t.Fatalf("the gateway refused its agent as untrusted %v times", n-refusedBefore)
	}
}
