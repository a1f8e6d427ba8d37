package e2e

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// The admin API is HTTPS with a certificate from the server's relay CA, and the CLI verifies
// it: with the right CA it works; with another server's CA it refuses, naming the server and
// the CA file, and sends nothing (an apply does not happen); plain HTTP to the TLS port or to
// a host other than loopback goes nowhere.
func TestAdminTLSCLIVerifiesServer(t *testing.T) {
	a := newHarness(t).startServer("server-a", []string{"local"})
	b := newHarness(t).startServer("server-b", []string{"other"})

	if out, errOut, err := cli(t, "get", "kubernetesclusters", "--server", a.admin); err != nil || !strings.Contains(out, "local") {
		t.Fatalf("get with server a's CA: %v\n%s%s", err, out, errOut)
	}

	wrongCA := b.caFile() // a CA, but not the one that issued a's certificate
	east := filepath.Join(t.TempDir(), "east.yaml")
	writeFile(t, east, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\n")
	for _, args := range [][]string{
		{"get", "kubernetesclusters"},
		{"apply", "-f", east},
		{"debug", "snapshot", "--cluster", "local", "--input"},
	} {
		_, errOut, code := cliExit(t, append(args, "--server", a.admin, "--admin-ca-file", wrongCA)...)
		if code == 0 {
			t.Fatalf("%v with another server's CA succeeded", args)
		}
		for _, want := range []string{"management server at https://" + a.admin, "the CA file " + wrongCA, "does not verify", "--admin-ca-file"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%v with another server's CA: stderr does not say %q:\n%s", args, want, errOut)
			}
		}
	}
	if out, _, err := cli(t, "get", "kubernetesclusters", "--server", a.admin); err != nil || strings.Contains(out, "east") {
		t.Errorf("the refused apply reached server a: %v\n%s", err, out)
	}
	out, _, code := cliExit(t, "check", "--server", a.admin, "--admin-ca-file", wrongCA)
	if code == 0 || !strings.Contains(out, "✗ server reachable") || !strings.Contains(out, wrongCA) {
		t.Errorf("check with another server's CA: exit %d\n%s", code, out)
	}
	// b's own CA still works for b: the refusal is about the pairing, not the file.
	if out, errOut, err := cli(t, "get", "kubernetesclusters", "--server", b.admin, "--admin-ca-file", wrongCA); err != nil || !strings.Contains(out, "other") {
		t.Errorf("get from b with b's CA: %v\n%s%s", err, out, errOut)
	}

	if _, errOut, code := cliExit(t, "get", "kubernetesclusters", "--server", "http://"+a.admin); code == 0 || !strings.Contains(errOut, "HTTPS server") {
		t.Errorf("plain HTTP to the TLS admin port: exit %d, stderr:\n%s", code, errOut)
	}
	if _, errOut, code := cliExit(t, "get", "kubernetesclusters", "--server", "http://192.0.2.10:9901"); code == 0 ||
		!strings.Contains(errOut, "--server: http://192.0.2.10:9901: plain HTTP is allowed to a loopback address only") {
		t.Errorf("plain HTTP to a non-loopback address: exit %d, stderr:\n%s", code, errOut)
	}
}

// The server refuses to serve its admin API as plain HTTP anywhere but on loopback, naming
// the flags; on loopback it does so when asked, with a warning, and the CLI reaches it with
// http://.
func TestAdminPlaintextOnlyOnLoopback(t *testing.T) {
	h := newHarness(t)
	config := filepath.Join(h.dir, "config")
	writeFile(t, filepath.Join(config, "clusters.yaml"), "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: local\n")
	args := func(admin string, extra ...string) []string {
		return append([]string{"server", "--relay-address", h.addr(), "--admin-address", admin, "--data-dir", filepath.Join(h.dir, "data"),
			"--config-dir", config, "--token-file", h.token, "--admin-token-file", h.adminToken}, extra...)
	}
	wantExitNaming(t, args("192.0.2.10:9901", "--admin-plaintext"),
		`--admin-plaintext needs a loopback --admin-address (127.0.0.1, ::1 or localhost), got "192.0.2.10:9901"`, "drop --admin-plaintext to serve HTTPS")
	wantExitNaming(t, args(":9901", "--admin-plaintext"), `--admin-plaintext needs a loopback --admin-address`, `got ":9901"`)

	admin := h.addr()
	p := h.start("server", args(admin, "--admin-plaintext")...) // not trustAdmin: the helpers speak HTTP to it
	waitProcReady(t, p, admin)
	if err := logContains(t, p, "admin api is plain http"); err != nil {
		t.Error(err)
	}
	if out, errOut, err := cli(t, "get", "kubernetesclusters", "--server", "http://"+admin); err != nil || !strings.Contains(out, "local") {
		t.Errorf("get over plain HTTP on loopback: %v\n%s%s", err, out, errOut)
	}
	if _, errOut, code := cliExit(t, "get", "kubernetesclusters", "--server", admin); code == 0 || !strings.Contains(errOut, "does not speak TLS") {
		t.Errorf("HTTPS to a plain HTTP server: exit %d, stderr:\n%s", code, errOut)
	}
	var st map[string]any
	if err := getJSON(admin, "/status", &st); err != nil {
		t.Fatal(err)
	}
	if v, ok := st["adminCertificateNotAfter"]; ok {
		t.Errorf("plain HTTP server reports an admin certificate expiring %v", v)
	}
}

// A bring-your-own admin certificate (--admin-tls-cert-file) is served instead of one from
// the relay CA, and a renewed pair is served without a restart; check reports its expiry.
func TestAdminTLSBringYourOwnCertReloaded(t *testing.T) {
	h := newHarness(t)
	dir := filepath.Join(h.dir, "admin-tls")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	issue := func(name string) (caFile string, notAfter time.Time) {
		t.Helper()
		ca, err := pki.NewCA("corp.example", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, certPEM, keyPEM, err := ca.IssueServer([]string{name, "127.0.0.1"}, 30*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		caFile = filepath.Join(dir, name+"-ca.crt")
		writeFile(t, caFile, string(ca.CertPEM))
		if err := pki.WriteKeyPair(certFile, keyFile, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		return caFile, cert.Leaf.NotAfter
	}
	firstCA, _ := issue("first")

	config := filepath.Join(h.dir, "config")
	writeFile(t, filepath.Join(config, "clusters.yaml"), "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: local\n")
	admin, data := h.addr(), filepath.Join(h.dir, "data")
	h.trustAdmin(admin, firstCA)
	p := h.start("server", "server", "--relay-address", h.addr(), "--admin-address", admin, "--data-dir", data, "--config-dir", config,
		"--token-file", h.token, "--admin-token-file", h.adminToken, "--admin-tls-cert-file", certFile, "--admin-tls-key-file", keyFile)
	waitProcReady(t, p, admin)

	if out, errOut, err := cli(t, "get", "kubernetesclusters", "--server", admin, "--admin-ca-file", firstCA); err != nil || !strings.Contains(out, "local") {
		t.Fatalf("get with the CA of the brought certificate: %v\n%s%s", err, out, errOut)
	}
	relayCA := filepath.Join(data, "relay-ca.crt") // the server's own CA did not issue this one
	if _, errOut, code := cliExit(t, "get", "kubernetesclusters", "--server", admin, "--admin-ca-file", relayCA); code == 0 || !strings.Contains(errOut, relayCA) {
		t.Errorf("get with the relay CA against a brought certificate: exit %d, stderr:\n%s", code, errOut)
	}

	secondCA, secondNotAfter := issue("second")
	poll.Eventually(t, 10*time.Second, "the renewed certificate is served", func() error {
		if _, errOut, err := cli(t, "get", "kubernetesclusters", "--server", admin, "--admin-ca-file", secondCA); err != nil {
			return fmt.Errorf("%w: %s", err, errOut)
		}
		return nil
	})
	if _, _, code := cliExit(t, "get", "kubernetesclusters", "--server", admin, "--admin-ca-file", firstCA); code == 0 {
		t.Error("the replaced certificate is still served")
	}
	out, _, _ := cliExit(t, "check", "--server", admin, "--admin-ca-file", secondCA, "-o", "json")
	if !strings.Contains(out, `"check": "admin certificate"`) || !strings.Contains(out, secondNotAfter.UTC().Format(time.RFC3339)) {
		t.Errorf("check does not report the renewed admin certificate (expires %s):\n%s", secondNotAfter.UTC().Format(time.RFC3339), out)
	}
}

// /status, /metrics, /healthz and /readyz answer without a token, so they must reveal no
// secret: neither token, no private key of the data directory, the agents or the mesh
// identities the outputs carry, in PEM or base64.
func TestAdminStatusRevealsNoSecret(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 20*time.Second, "remote has blue", func() error { return outputHas(t, remote, blueInLocal) })

	relayToken, err := os.ReadFile(h.token)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"admin token": adminToken, "relay identity token": strings.TrimSpace(string(relayToken))}
	var keyFiles []string
	for _, pattern := range []string{filepath.Join(s.dataDir, "*.key"), filepath.Join(local.state, "*.key"), filepath.Join(remote.state, "*.key")} {
		m, _ := filepath.Glob(pattern)
		keyFiles = append(keyFiles, m...)
	}
	if len(keyFiles) < 5 { // relay CA, relay server, mesh CA, two agents
		t.Fatalf("private keys found: %v", keyFiles)
	}
	for _, f := range keyFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		addPEM(t, secrets, f, b)
	}
	// The mesh identities the server issued, as the agents received them (Secret data).
	for _, a := range []*agent{local, remote} {
		files, _ := filepath.Glob(filepath.Join(a.output, "*.yaml"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var obj struct {
				Kind string            `json:"kind"`
				Data map[string]string `json:"data"`
			}
			if err := yaml.Unmarshal(b, &obj); err != nil || obj.Kind != "Secret" {
				continue
			}
			for k, v := range obj.Data {
				if dec, err := base64.StdEncoding.DecodeString(v); err == nil && strings.Contains(string(dec), "PRIVATE KEY") {
					secrets[f+" "+k+" (base64)"] = v[len(v)/2 : len(v)/2+32]
					addPEM(t, secrets, f+" "+k, dec)
				}
			}
		}
	}
	if n := len(secrets); n < 2+5+2 {
		t.Fatalf("only %d secrets to look for (no mesh identity in the outputs?)", n)
	}

	for _, path := range []string{"/status", "/metrics", "/healthz", "/readyz"} {
		resp, err := adminGet(t.Context(), s.admin, path, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s without a token: %s", path, resp.Status)
		}
		if strings.Contains(body, "PRIVATE KEY") {
			t.Errorf("GET %s shows a private key", path)
		}
		for what, v := range secrets {
			if strings.Contains(body, v) {
				t.Errorf("GET %s reveals the %s", path, what)
			}
		}
	}
}

// addPEM adds the base64 lines of every private key block of b to secrets.
func addPEM(t *testing.T, secrets map[string]string, name string, b []byte) {
	t.Helper()
	found := false
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		if !strings.Contains(block.Type, "PRIVATE KEY") {
			continue
		}
		enc := base64.StdEncoding.EncodeToString(block.Bytes)
		for i := 0; i+32 <= len(enc); i += 32 {
			secrets[fmt.Sprintf("%s, private key bytes %d-%d (base64)", name, i, i+32)] = enc[i : i+32]
		}
		found = true
	}
	if !found {
		t.Fatalf("%s holds no private key", name)
	}
}
