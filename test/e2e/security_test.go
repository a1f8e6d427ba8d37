package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// Every way of asking for configuration without the right identity is refused, on both
// sides with a clear error, and nothing of another cluster's configuration is sent.
func TestIdentityNegatives(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })
	caPEM, err := os.ReadFile(filepath.Join(s.dataDir, "relay-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)

	t.Run("wrong token", func(t *testing.T) {
		bad := filepath.Join(h.dir, "bad-token")
		writeFile(t, bad, "not-the-token")
		a := h.startAgent("intruder", s, "--token-file", bad)
		_ = a
		// The agent flag list ends with the later --token-file, which wins.
		poll.Eventually(t, 10*time.Second, "agent reports the refusal", func() error {
			if st := a.status(t); !strings.Contains(st.LastError, "token does not match") {
				return fmt.Errorf("last error %q", st.LastError)
			}
			return nil
		})
		poll.Eventually(t, 5*time.Second, "server logs the refusal", func() error { return logContains(t, s.p, "registration refused") })
		if st := a.status(t); st.Connected || st.OutputHash != "" {
			t.Fatalf("agent with a wrong token got in: %+v", st)
		}
	})

	t.Run("unknown cluster", func(t *testing.T) {
		a := h.startAgent("ghost", s)
		poll.Eventually(t, 10*time.Second, "agent reports the refusal", func() error {
			if st := a.status(t); !strings.Contains(st.LastError, `cluster "ghost" is not registered`) {
				return fmt.Errorf("last error %q", st.LastError)
			}
			return nil
		})
		if st := a.status(t); st.Connected || st.OutputHash != "" {
			t.Fatalf("unregistered cluster got in: %+v", st)
		}
	})

	localCert, err := tls.LoadX509KeyPair(filepath.Join(local.state, "agent.crt"), filepath.Join(local.state, "agent.key"))
	if err != nil {
		t.Fatalf("local agent's certificate: %v", err)
	}
	dial := func(t *testing.T, creds credentials.TransportCredentials) relayv1.RelayServiceClient {
		conn, err := grpc.NewClient("passthrough:///"+s.relay, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return relayv1.NewRelayServiceClient(conn)
	}
	pullAs := func(t *testing.T, client relayv1.RelayServiceClient, claim string) (*relayv1.PullResponse, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		stream, err := client.Pull(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: &relayv1.Hello{Cluster: claim, Held: &relayv1.Held{}}}}); err != nil {
			return nil, err
		}
		return stream.Recv()
	}

	t.Run("certificate of local asking as remote", func(t *testing.T) {
		c := dial(t, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{localCert}}))
		msg, err := pullAs(t, c, "remote")
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `identifies cluster "local" but the agent claims "remote"`) {
			t.Fatalf("want PermissionDenied naming both clusters, got %v", err)
		}
		if msg != nil {
			t.Fatalf("received a message of remote's configuration: %v", msg)
		}
		// The same certificate asking as itself passes the identity check: while local's agent
		// holds the cluster it is refused only as a second agent (docs/adr/0002).
		_, err = pullAs(t, c, "local")
		if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), `cluster "local" is held by another agent`) {
			t.Fatalf("local's own pull beside local's agent: want AlreadyExists naming the holder, got %v", err)
		}
		// Once local's agent is gone it works — the refusal above is about identity.
		if err := local.p.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 10*time.Second, "local's own pull", func() error {
			msg, err = pullAs(t, c, "local")
			if err != nil || msg.GetSnapshot() == nil {
				return fmt.Errorf("local's own pull: %v %v", msg, err)
			}
			return nil
		})
		// What it got is local's output, not remote's.
		var localHash, remoteHash string
		for _, c := range s.status(t).Clusters {
			switch c.Name {
			case "local":
				localHash = c.OutputHash
			case "remote":
				remoteHash = c.OutputHash
			}
		}
		if got := msg.GetSnapshot().GetHash(); got != localHash || got == remoteHash {
			t.Fatalf("pull as local got snapshot %s; local's is %s, remote's %s", got, localHash, remoteHash)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		c := dial(t, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}))
		_, err := pullAs(t, c, "remote")
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no client certificate") {
			t.Fatalf("want Unauthenticated, got %v", err)
		}
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		forged := pkitest.Cluster(t, pkitest.CA(t, "meshrelay.local"), "remote").TLS
		c := dial(t, credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{forged}}))
		msg, err := pullAs(t, c, "remote")
		if err == nil || msg != nil {
			t.Fatalf("forged certificate accepted: %v %v", msg, err)
		}
		poll.Eventually(t, 5*time.Second, "server logs the rejected certificate", func() error { return logContains(t, s.p, "client certificate rejected") })
	})

	t.Run("plaintext", func(t *testing.T) {
		c := dial(t, insecure.NewCredentials())
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err := c.Register(ctx, &relayv1.RegisterRequest{Token: "x", Cluster: "remote"})
		if err == nil {
			t.Fatal("plaintext registration accepted")
		}
		if msg, err := pullAs(t, c, "remote"); err == nil || msg != nil {
			t.Fatalf("plaintext pull accepted: %v %v", msg, err)
		}
	})

	// The legitimate agents were never disturbed.
	if st := remote.status(t); !st.Connected {
		t.Fatalf("remote disconnected during the attacks: %+v", st)
	}
}

// In tls mode agents verify the server and present the token on every stream.
func TestTLSModeWithToken(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"}, "--relay-tls-mode", "tls")
	local := h.startAgent("local", s, "--relay-tls-mode", "tls")
	remote := h.startAgent("remote", s, "--relay-tls-mode", "tls")
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })
	if _, err := os.Stat(filepath.Join(remote.state, "agent.crt")); err == nil {
		t.Fatal("tls mode must not issue client certificates")
	}
	bad := filepath.Join(h.dir, "bad-token")
	writeFile(t, bad, "nope")
	a := h.startAgent("intruder", s, "--relay-tls-mode", "tls", "--token-file", bad, "--cluster", "remote")
	poll.Eventually(t, 10*time.Second, "wrong token refused", func() error {
		if st := a.status(t); !strings.Contains(st.LastError, "token does not match") {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	})
	if st := a.status(t); st.OutputHash != "" {
		t.Fatal("an agent with a wrong token received configuration")
	}
}

// Agents renew their certificate before it expires and stay connected; an expired
// certificate is refused at the handshake.
func TestCertificateRenewalAndExpiry(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"}, "--agent-cert-ttl", "6s")
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })
	old, err := tls.LoadX509KeyPair(filepath.Join(remote.state, "agent.crt"), filepath.Join(remote.state, "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 15*time.Second, "renewed twice", func() error {
		if n := metric(t, remote.admin, "meshrelay_agent_registrations_total"); n < 3 {
			return fmt.Errorf("%v registrations", n)
		}
		return nil
	})
	// Renewal did not disturb the session, and changes still flow over it.
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 80))
	poll.Eventually(t, 10*time.Second, "red reaches remote", func() error {
		return outputHas(t, remote, seKey("service-red"))
	})
	if n := metric(t, remote.admin, "meshrelay_agent_reconnects_total"); n != 0 {
		t.Fatalf("renewal caused %v reconnects", n)
	}
	// The first certificate has expired by now: a new connection with it is refused.
	leaf, _ := x509.ParseCertificate(old.Certificate[0])
	if time.Now().Before(leaf.NotAfter) {
		time.Sleep(time.Until(leaf.NotAfter) + 100*time.Millisecond) // wait for real expiry, not an assertion
	}
	caPEM, _ := os.ReadFile(filepath.Join(s.dataDir, "relay-ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient("passthrough:///"+s.relay, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{old}})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	stream, err := relayv1.NewRelayServiceClient(conn).Pull(ctx)
	if err == nil {
		_ = stream.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: &relayv1.Hello{Cluster: "remote", Held: &relayv1.Held{}}}})
		_, err = stream.Recv()
	}
	if err == nil {
		t.Fatal("an expired certificate was accepted")
	}
	poll.Eventually(t, 5*time.Second, "server logs the expiry", func() error { return logContains(t, s.p, "certificate has expired") })
}

// The admin config API (apply, delete, get, snapshots with their private keys) needs the
// server's admin token; probes, metrics and /status do not. A server started with the
// default --data-dir generates the token and its CA there, and the CLI run in the same
// directory finds both without any flag. Everything is HTTPS: plain HTTP gets nothing.
func TestAdminAPINeedsToken(t *testing.T) {
	h := newHarness(t)
	admin := h.addr()
	config := filepath.Join(h.dir, "config")
	writeFile(t, filepath.Join(config, "clusters.yaml"), "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: local\n")
	h.trustAdmin(admin, filepath.Join(h.dir, "meshrelay-data", "relay-ca.crt"))
	p := h.start("server", "server", "--relay-address", h.addr(), "--admin-address", admin, "--config-dir", config,
		"--data-dir", filepath.Join(h.dir, "meshrelay-data")) // the default --data-dir, relative to h.dir
	waitProcReady(t, p, admin)

	if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + admin + "/status"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP GET /status on the admin port: %s, want 400 (the port speaks TLS)", resp.Status)
	}

	for _, path := range []string{"/api/v1/resources", "/api/v1/snapshots/local/output"} {
		if code := httpStatus(t, admin, path); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the admin token: %d, want 401", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status"} {
		if code := httpStatus(t, admin, path); code != http.StatusOK {
			t.Errorf("GET %s: %d, want 200 without a token", path, code)
		}
	}

	run := func(env []string, args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), bin, append(args, "--server", admin)...)
		cmd.Dir, cmd.Env = h.dir, append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	wrong := filepath.Join(h.dir, "wrong-token")
	writeFile(t, wrong, "not-the-token\n")
	good := filepath.Join(h.dir, "east.yaml")
	writeFile(t, good, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\n")
	if out, err := run(nil, "apply", "-f", good, "--admin-token-file", wrong); err == nil || !strings.Contains(out, "wrong admin token") {
		t.Errorf("apply with a wrong token: %v\n%s", err, out)
	}
	if out, err := run([]string{"MESHRELAY_ADMIN_TOKEN=nope"}, "get", "kubernetesclusters"); err == nil || !strings.Contains(out, "wrong admin token") {
		t.Errorf("get with a wrong token in the environment: %v\n%s", err, out)
	}
	// Each refusal is logged and counted: two requests without a token, two with a wrong one.
	for reason, want := range map[string]float64{"no_token": 2, "wrong_token": 2} {
		if got := metric(t, admin, "meshrelay_admin_requests_refused_total", `reason="`+reason+`"`); got != want {
			t.Errorf("meshrelay_admin_requests_refused_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if err := logContains(t, p, "admin request refused"); err != nil {
		t.Error(err)
	}
	if out, err := run(nil, "get", "kubernetesclusters"); err != nil || strings.Contains(out, "east") || !strings.Contains(out, "local") {
		t.Fatalf("get with the generated token found in ./meshrelay-data: %v\n%s", err, out)
	}
	if out, err := run(nil, "apply", "-f", good); err != nil || !strings.Contains(out, `KubernetesCluster "east" applied`) {
		t.Errorf("apply with the generated token: %v\n%s", err, out)
	}
}
