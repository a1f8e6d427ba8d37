package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// `meshrelay ca rotate relay` moves every agent to a new relay CA while they keep receiving
// configuration, then drops the old CA: its certificates are refused, and an agent restarted
// with only the old CA in --relay-ca-file still connects through the bundle it learned.
func TestRelayCARotation(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	oldCA := readFile(t, s.caFile())
	oldCAFile := filepath.Join(h.dir, "old-relay-ca.crt")
	writeFile(t, oldCAFile, string(oldCA))
	// The agents know only the old CA: what they trust afterwards they learned from the server.
	local := h.startAgent("local", s, "--relay-ca-file", oldCAFile)
	remote := h.startAgent("remote", s, "--relay-ca-file", oldCAFile)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })
	before, err := outputKeys(remote.output)
	if err != nil {
		t.Fatal(err)
	}
	oldCert := copyKeyPair(t, remote.state, filepath.Join(h.dir, "old-remote"))

	// The rotation runs as a child process; a change made meanwhile still reaches remote.
	cmd := exec.CommandContext(t.Context(), bin, "ca", "rotate", "relay", "--server", s.admin, "--admin-ca-file", s.caFile(),
		"--overlap", "60s", "--interval", "200ms")
	cmd.Env = append(os.Environ(), "MESHRELAY_ADMIN_TOKEN="+adminToken)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(local.discovery, "green.yaml"), serviceYAML("service-green", "10.1.0.3", 80))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ca rotate relay: %v\n%s", err, out.String())
	}
	t.Logf("ca rotate relay:\n%s", out.String())
	for _, want := range []string{"phase trust-both", "phase drop-old: done"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("ca rotate relay output lacks %q:\n%s", want, out.String())
		}
	}
	h.trustAdmin(s.admin, s.caFile()) // the admin API's certificate is now the new CA's

	newCA := readFile(t, s.caFile())
	if bytes.Equal(newCA, oldCA) {
		t.Fatal("<data-dir>/relay-ca.crt still holds the old CA")
	}
	newPool, oldPool := poolOf(t, newCA), poolOf(t, oldCA)
	for _, a := range []*agent{local, remote} {
		poll.Eventually(t, 15*time.Second, a.cluster+" holds a certificate of the new CA", func() error {
			leaf, err := leafOf(filepath.Join(a.state, "agent.crt"))
			if err != nil {
				return err
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: newPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				return fmt.Errorf("%s's certificate against the new CA: %w", a.cluster, err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: oldPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
				return fmt.Errorf("%s's certificate verifies against the old CA", a.cluster)
			}
			return nil
		})
	}
	var st struct {
		RelayCA struct {
			Phase   string   `json:"phase"`
			Pending []string `json:"pendingClusters"`
		} `json:"relayCA"`
	}
	if err := getJSON(s.admin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.RelayCA.Phase != "idle" || len(st.RelayCA.Pending) > 0 {
		t.Fatalf("relay CA after the rotation: %+v", st.RelayCA)
	}
	if n := metric(t, s.admin, "meshrelay_relay_streams_closed_total", `reason="ca-rotation"`); n < 2 {
		t.Fatalf("agents asked to register under the new CA: %v, want both", n)
	}

	// The old CA is dropped: a certificate it issued is refused.
	if _, err := pullWith(t, s.relay, newPool, oldCert, "remote"); err == nil {
		t.Fatal("a certificate of the dropped CA was accepted")
	}
	poll.Eventually(t, 5*time.Second, "server logs the refused certificate", func() error { return logContains(t, s.p, "client certificate rejected") })

	// Nothing was lost, and configuration keeps flowing after the rotation.
	poll.Eventually(t, 15*time.Second, "green reaches remote", func() error { return outputHas(t, remote, seKey("service-green")) })
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 80))
	poll.Eventually(t, 15*time.Second, "red reaches remote", func() error { return outputHas(t, remote, seKey("service-red")) })
	after, err := outputKeys(remote.output)
	if err != nil {
		t.Fatal(err)
	}
	if missing := missingKeys(before, after); len(missing) > 0 {
		t.Fatalf("remote lost %v in the rotation", missing)
	}

	// An agent restarted with only the old CA in --relay-ca-file trusts the new serving
	// certificate through the bundle it keeps in its state directory.
	if err := remote.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	h.restartAgent(remote)
	writeFile(t, filepath.Join(local.discovery, "svc-0.yaml"), serviceYAML("svc-0", "10.1.0.4", 80))
	poll.Eventually(t, 20*time.Second, "svc-0 reaches the restarted remote", func() error { return outputHas(t, remote, seKey("svc-0")) })
}

// An agent that never comes back under the new CA keeps the rotation in trust-both: the
// command fails after --overlap naming it, status and check show it, and --drop-old-now
// ends the rotation, closing that agent's stream.
func TestRelayCARotationWaitsForStragglers(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	poll.Eventually(t, 15*time.Second, "remote in sync", func() error {
		if st := remote.status(t); !st.Connected || st.OutputHash == "" {
			return fmt.Errorf("remote: %+v", st)
		}
		return nil
	})
	cert := copyKeyPair(t, remote.state, filepath.Join(h.dir, "straggler"))
	if err := remote.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A client that holds remote's stream and never registers again.
	oldPool := poolOf(t, readFile(t, s.caFile()))
	var recv func() (*relayv1.PullResponse, error)
	poll.Eventually(t, 15*time.Second, "the straggler opens a stream", func() error {
		r, err := pullWith(t, s.relay, oldPool, cert, "remote")
		recv = r
		return err
	})

	out, errOut, code := cliExit(t, "ca", "rotate", "relay", "--server", s.admin, "--overlap", "3s", "--interval", "200ms")
	if code == 0 || !strings.Contains(errOut, "agents of remote did not move to the new CA") || !strings.Contains(out, "waiting for 1 agents still on the old CA: remote") {
		t.Fatalf("rotation with a straggler: exit %d, want a failure naming remote:\n%s%s", code, out, errOut)
	}
	if _, err := recv(); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "relay CA rotation") {
		t.Fatalf("the straggler's stream ended with %v, want a request to register again", err)
	}
	var st struct {
		RelayCA struct {
			Phase   string   `json:"phase"`
			Pending []string `json:"pendingClusters"`
		} `json:"relayCA"`
	}
	if err := getJSON(s.admin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.RelayCA.Phase != "trust-both" || strings.Join(st.RelayCA.Pending, ",") != "remote" {
		t.Fatalf("relay CA after the failed wait: %+v, want trust-both pending remote", st.RelayCA)
	}
	if out, _, code := cliExit(t, "check", "--server", s.admin); code == 0 || !strings.Contains(out, "agents still on the old CA: remote") {
		t.Fatalf("check during the rotation: exit %d:\n%s", code, out)
	}
	if n := metric(t, s.admin, "meshrelay_relay_ca_rotation_pending_agents"); n != 1 {
		t.Fatalf("meshrelay_relay_ca_rotation_pending_agents = %v, want 1", n)
	}
	// The local agent moved and keeps receiving meanwhile.
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "local's input reaches the server", func() error {
		for _, c := range s.status(t).Clusters {
			if c.Name == "local" && c.InSync {
				return nil
			}
		}
		return fmt.Errorf("local not in sync")
	})

	out, errOut, code = cliExit(t, "ca", "rotate", "relay", "--server", s.admin, "--drop-old-now")
	if code != 0 || !strings.Contains(out, "old relay CA dropped") {
		t.Fatalf("--drop-old-now: exit %d:\n%s%s", code, out, errOut)
	}
	h.trustAdmin(s.admin, s.caFile())
	if err := getJSON(s.admin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.RelayCA.Phase != "idle" {
		t.Fatalf("relay CA after --drop-old-now: %+v", st.RelayCA)
	}
	if _, err := pullWith(t, s.relay, poolOf(t, readFile(t, s.caFile())), cert, "remote"); err == nil {
		t.Fatal("the straggler's certificate of the dropped CA was accepted")
	}
}

// `meshrelay cluster revoke` refuses the cluster's current certificate within seconds: an
// open stream holding a copy of it is closed, a new one is refused, also after a server
// restart; the real agent registers again with the token and recovers. Removing the
// KubernetesCluster closes its open streams as well.
func TestClusterRevokeRefusesAtOnce(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })
	pool := poolOf(t, readFile(t, s.caFile()))
	stolen := copyKeyPair(t, remote.state, filepath.Join(h.dir, "stolen"))

	// The thief holds an open stream with the copy while the real agent is away.
	if err := remote.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var recv func() (*relayv1.PullResponse, error)
	poll.Eventually(t, 15*time.Second, "the stolen certificate opens a stream", func() error {
		r, err := pullWith(t, s.relay, pool, stolen, "remote")
		if err != nil {
			return err
		}
		recv = r
		return nil
	})

	out, errOut, code := cliExit(t, "cluster", "revoke", "remote", "--server", s.admin)
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("cluster revoke: exit %d: %s%s", code, out, errOut)
	}
	closed := make(chan error, 1)
	go func() {
		for {
			if _, err := recv(); err != nil {
				closed <- err
				return
			}
		}
	}()
	select {
	case err := <-closed:
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("the open stream ended with %v, want Unauthenticated naming the revocation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of the revoked certificate is still open 5s after the revocation")
	}
	if _, err := pullWith(t, s.relay, pool, stolen, "remote"); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a new stream with the revoked certificate: %v, want Unauthenticated naming the revocation", err)
	}
	if n := metric(t, s.admin, "meshrelay_relay_rejected_total", `reason="revoked"`); n < 1 {
		t.Fatalf("meshrelay_relay_rejected_total{reason=revoked} = %v", n)
	}
	poll.Eventually(t, 5*time.Second, "server logs the refusal", func() error { return logContains(t, s.p, `reason=revoked`) })

	// The revocation survives a restart of the server.
	if err := s.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.p = h.start("server-again", s.args...) // not ready until remote's agent is back (safe mode)
	poll.Eventually(t, 20*time.Second, "after a server restart, the revoked certificate is refused", func() error {
		if _, err := pullWith(t, s.relay, pool, stolen, "remote"); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			return fmt.Errorf("got %v, want Unauthenticated naming the revocation", err)
		}
		return nil
	})

	// The real agent, with the revoked certificate in its state dir, is refused once, says
	// why, registers again with the token and recovers.
	h.restartAgent(remote)
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 80))
	poll.Eventually(t, 20*time.Second, "red reaches the re-registered remote", func() error { return outputHas(t, remote, seKey("service-red")) })
	if st := remote.status(t); !st.Connected || !strings.Contains(st.LastError, "revoked") {
		t.Fatalf("remote after the revocation: %+v, want connected with the revocation as its last error", st)
	}
	if _, err := pullWith(t, s.relay, pool, stolen, "remote"); err == nil {
		t.Fatal("the revoked copy was accepted beside the re-registered agent")
	}

	// Deregistration closes the cluster's open streams at once, not only new ones.
	writeFile(t, filepath.Join(s.config, "clusters.yaml"), clustersYAML([]string{"local"}, nil))
	poll.Eventually(t, 10*time.Second, "remote's streams are closed", func() error {
		if st := remote.status(t); st.Connected || !strings.Contains(st.LastError, "not registered") {
			return fmt.Errorf("remote: %+v", st)
		}
		return nil
	})
	if n := metric(t, s.admin, "meshrelay_relay_streams_closed_total", `reason="deregistered"`); n < 1 {
		t.Fatalf("meshrelay_relay_streams_closed_total{reason=deregistered} = %v", n)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func poolOf(t *testing.T, pem []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		t.Fatal("no PEM certificate")
	}
	return p
}

func leafOf(certFile string) (*x509.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, strings.TrimSuffix(certFile, ".crt")+".key")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// copyKeyPair copies an agent's certificate and key out of its state dir and loads them.
func copyKeyPair(t *testing.T, stateDir, to string) tls.Certificate {
	t.Helper()
	for _, f := range []string{"agent.crt", "agent.key"} {
		writeFile(t, filepath.Join(to, f), string(readFile(t, filepath.Join(stateDir, f))))
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(to, "agent.crt"), filepath.Join(to, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pullWith opens a pull stream as cluster with cert and returns its receive function once
// the first message arrived (the stream then stays open until the test ends).
func pullWith(t *testing.T, relayAddr string, roots *x509.CertPool, cert tls.Certificate, cluster string) (func() (*relayv1.PullResponse, error), error) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+relayAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stream, err := relayv1.NewRelayServiceClient(conn).Pull(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: &relayv1.Hello{Cluster: cluster, Held: &relayv1.Held{}}}}); err != nil {
		return nil, err
	}
	first := time.AfterFunc(10*time.Second, cancel)
	defer first.Stop()
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return stream.Recv, nil
}

// `meshrelay ca rotate relay`, run while requests flow through both gateways and the
// east-west mTLS path, fails none of them: the agents re-register under the new CA and their
// gateways keep serving (and keep their xDS link) meanwhile.
func TestRelayCARotationKeepsTraffic(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil)
	w.blue(t, "fail") // through local's gateway to remote's failover gateway over mTLS
	w.expect(t, "green-pod", 15*time.Second)
	oldCA := readFile(t, w.server.caFile())

	var ok, failed atomic.Int64
	var lastErr atomic.Value
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if got, err := answer(w.url); err != nil || got != "green-pod" {
				failed.Add(1)
				lastErr.Store(fmt.Sprintf("%q %v", got, err))
			} else {
				ok.Add(1)
			}
		}
	}()
	out, errOut, err := cli(t, "ca", "rotate", "relay", "--server", w.server.admin, "--overlap", "60s", "--interval", "200ms")
	time.Sleep(time.Second) // keep sending after the old CA was dropped
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("ca rotate relay: %v\n%s%s", err, out, errOut)
	}
	w.h.trustAdmin(w.server.admin, w.server.caFile()) // the admin API's certificate is now the new CA's
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the relay CA rotation; last: %v", failed.Load(), failed.Load()+ok.Load(), lastErr.Load())
	}
	if ok.Load() < 20 {
		t.Fatalf("only %d requests went through during the rotation", ok.Load())
	}
	newPool := poolOf(t, readFile(t, w.server.caFile()))
	if bytes.Equal(readFile(t, w.server.caFile()), oldCA) {
		t.Fatal("the relay CA did not change")
	}
	for _, a := range []*agent{w.local, w.remote} {
		poll.Eventually(t, 15*time.Second, a.cluster+" holds a certificate of the new CA", func() error {
			leaf, err := leafOf(filepath.Join(a.state, "agent.crt"))
			if err != nil {
				return err
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: newPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			return err
		})
	}
	t.Logf("%d requests through the gateways during the relay CA rotation, none failed", ok.Load())
}
