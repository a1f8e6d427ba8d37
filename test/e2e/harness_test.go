// Package e2e runs meshrelay as real processes — the built binary, real TLS on loopback, a
// real redis-server — and checks what users were promised.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/promtext"
	"github.com/meshrelay/meshrelay/internal/resource"
	"sigs.k8s.io/yaml"
)

var bin string

// adminToken is the admin token of every server the tests start (--admin-token-file
// harness.adminToken); cli passes it to the CLI as MESHRELAY_ADMIN_TOKEN.
var adminToken = "e2e-admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshrelay-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "meshrelay")
	args := []string{"build", "-race", "-ldflags", "-X github.com/meshrelay/meshrelay/internal/cli.Version=" + gitVersion(), "-o", bin, "../../cmd/meshrelay"}
	if os.Getenv("MESHRELAY_E2E_NORACE") != "" {
		args = slices.DeleteFunc(args, func(a string) bool { return a == "-race" })
	}
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build meshrelay:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if collectorBin.path != "" {
		os.RemoveAll(filepath.Dir(collectorBin.path)) // built by collector
	}
	os.Exit(code)
}

// gitVersion is the version `make build` stamps (git describe), or "" without git.
func gitVersion() string {
	out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// harness owns the processes and files of one test.
type harness struct {
	t          *testing.T
	dir        string
	token      string // relay identity token file
	adminToken string // admin token file
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir()}
	h.token = filepath.Join(h.dir, "token")
	if err := os.WriteFile(h.token, []byte("e2e-token-"+strconv.FormatInt(time.Now().UnixNano(), 36)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.adminToken = filepath.Join(h.dir, "admin-token")
	if err := os.WriteFile(h.adminToken, []byte(adminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) addr() string {
	h.t.Helper()
	p, err := proc.FreePort()
	if err != nil {
		h.t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

func (h *harness) start(name string, args ...string) *proc.Process {
	h.t.Helper()
	return h.startBin(name, bin, args...)
}

// startBin runs another binary than meshrelay's (the collector) as start does.
func (h *harness) startBin(name, path string, args ...string) *proc.Process {
	h.t.Helper()
	logPath := filepath.Join(h.dir, name+".log")
	p, err := proc.Start(name, path, logPath, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			h.t.Errorf("stop %s: %v", name, err)
		}
		if h.t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			h.t.Logf("----- %s log (tail) -----\n%s", name, b)
		}
	})
	return p
}

type server struct {
	p       *proc.Process
	relay   string
	admin   string
	dataDir string
	config  string
	args    []string
}

// startServer runs a server with a config dir registering the named clusters.
func (h *harness) startServer(name string, clusters []string, extra ...string) *server {
	h.t.Helper()
	s := &server{relay: h.addr(), admin: h.addr(), dataDir: filepath.Join(h.dir, "server-data"), config: filepath.Join(h.dir, "config")}
	if err := os.MkdirAll(s.config, 0o755); err != nil {
		h.t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range clusters {
		fmt.Fprintf(&b, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n---\n", c)
	}
	writeFile(h.t, filepath.Join(s.config, "clusters.yaml"), b.String())
	writeFile(h.t, filepath.Join(s.config, "virtual-destinations.yaml"), virtualDestinations)
	s.args = append([]string{"server", "--relay-address", s.relay, "--admin-address", s.admin, "--data-dir", s.dataDir, "--admin-token-file", h.adminToken,
		"--config-dir", s.config, "--token-file", h.token, "--log-level", "debug"}, extra...)
	h.trustAdmin(s.admin, s.caFile())
	s.p = h.start(name, s.args...)
	waitProcReady(h.t, s.p, s.admin)
	return s
}

// caFile is the relay CA the server generated into its data directory, which issued its
// admin API's certificate.
func (s *server) caFile() string { return filepath.Join(s.dataDir, "relay-ca.crt") }

// adminCAs maps the admin address of every management server a test started to what
// verifies its admin API (HTTPS): the helpers below (adminGet and those built on it, cli)
// speak verified HTTPS to those and plain HTTP to agents and gateways.
var adminCAs sync.Map // admin address → *adminTrust

// adminTrust is the CA file of a server's admin API and, once that file exists, a client
// verifying with it (kept, so that polls reuse its connections).
type adminTrust struct {
	addr, caFile string

	mu     sync.Mutex // guards client
	client *configapi.Client
}

func (a *adminTrust) get() (*configapi.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client == nil {
		c, err := configapi.NewClient(a.addr, "", a.caFile) // fails until the server wrote its CA
		if err != nil {
			return nil, err
		}
		a.client = c
	}
	return a.client, nil
}

// trustAdmin records that the server at admin serves its admin API over HTTPS with a
// certificate issued by the CA in caFile, until the test ends.
func (h *harness) trustAdmin(admin, caFile string) {
	adminCAs.Store(admin, &adminTrust{addr: admin, caFile: caFile})
	h.t.Cleanup(func() { adminCAs.Delete(admin) })
}

// adminGet sends GET path to an admin address: verified HTTPS to a management server's
// (trustAdmin), plain HTTP to an agent's or a gateway's.
func adminGet(ctx context.Context, addr, path string, timeout time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	base, c := "http://"+addr, http.DefaultClient
	if a, ok := adminCAs.Load(addr); ok {
		ac, err := a.(*adminTrust).get()
		if err != nil {
			cancel()
			return nil, err
		}
		base, c = ac.Base, ac.HTTP
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// cancelOnClose ends a request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// waitAdmin polls GET path on an admin address until it answers 200 or ctx ends.
func waitAdmin(ctx context.Context, addr, path string) error {
	for {
		resp, err := adminGet(ctx, addr, path, time.Second)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s on %s: %w (last: %v)", path, addr, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restart starts the same server again (same ports, data dir and flags).
func (h *harness) restartServer(s *server, name string) {
	h.t.Helper()
	s.p = h.start(name, s.args...)
	waitProcReady(h.t, s.p, s.admin)
}

// waitProcReady waits for /readyz, failing at once (with the log) if the process exits.
func waitProcReady(t *testing.T, p *proc.Process, admin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := waitAdmin(ctx, admin, "/readyz"); err != nil {
		b, _ := os.ReadFile(p.LogPath)
		t.Fatalf("%s not ready (exited: %v, %v): %v\n%s", p.Name, p.Exited(), exitErr(p), err, b)
	}
}

func exitErr(p *proc.Process) error {
	if !p.Exited() {
		return nil
	}
	return p.Err()
}

func waitReady(t *testing.T, admin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := waitAdmin(ctx, admin, "/readyz"); err != nil {
		t.Fatal(err)
	}
}

type agent struct {
	p         *proc.Process
	cluster   string
	discovery string
	output    string
	state     string
	admin     string
	args      []string
}

func (h *harness) agentDirs(cluster string) *agent {
	a := &agent{cluster: cluster, discovery: filepath.Join(h.dir, cluster, "discovery"), output: filepath.Join(h.dir, cluster, "output"),
		state: filepath.Join(h.dir, cluster, "state"), admin: h.addr()}
	if err := os.MkdirAll(a.discovery, 0o755); err != nil {
		h.t.Fatal(err)
	}
	return a
}

func (h *harness) startAgent(cluster string, s *server, extra ...string) *agent {
	h.t.Helper()
	a := h.agentDirs(cluster)
	a.args = append([]string{"agent", "--cluster", cluster, "--relay-address", s.relay, "--token-file", h.token,
		"--relay-ca-file", filepath.Join(s.dataDir, "relay-ca.crt"), "--state-dir", a.state, "--discovery-dir", a.discovery,
		"--output-dir", a.output, "--admin-address", a.admin, "--max-backoff", "1s", "--log-level", "debug"}, extra...)
	a.p = h.start("agent-"+cluster, a.args...)
	return a
}

// xdsSocket is the agent's default --xds-address: the Unix socket xds.sock in its state dir.
func (a *agent) xdsSocket() string { return "unix://" + filepath.Join(a.state, "xds.sock") }

func (h *harness) restartAgent(a *agent) {
	h.t.Helper()
	a.p = h.start("agent-"+a.cluster+"-again", a.args...)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// exported are the services the tests share across clusters: each has a
// VirtualDestination <name>.global selecting it in every cluster.
var exported = []string{"service-blue", "service-green", "service-red", "svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "svc-new"}

var virtualDestinations = func() string {
	var b strings.Builder
	for _, n := range exported {
		fmt.Fprintf(&b, "apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata:\n  name: %[1]s\n  namespace: default\nspec:\n  hosts: [%[1]s.global]\n  ports: [{number: 80, targetPort: {name: http}}]\n  services: [{name: %[1]s}]\n---\n", n)
	}
	return b.String()
}()

// seKey is the key of the ServiceEntry a cluster's output has for an exported service.
func seKey(service string) string { return "ServiceEntry/default/vd-" + service }

func serviceYAML(name, ip string, port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
spec:
  ports:
  - name: http
    port: %[3]d
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-abc
  namespace: default
  labels:
    kubernetes.io/service-name: %[1]s
addressType: IPv4
endpoints:
- addresses: ["%[2]s"]
  conditions: {ready: true}
ports:
- name: http
  port: %[3]d
`, name, ip, port)
}

func outputHas(t *testing.T, a *agent, key string) error {
	keys, err := outputKeys(a.output)
	if err != nil {
		return err
	}
	if !keys[key] {
		return fmt.Errorf("%s output lacks %s (has %v)", a.cluster, key, keys)
	}
	return nil
}

func outputLacks(t *testing.T, a *agent, key string) error {
	keys, err := outputKeys(a.output)
	if err != nil {
		return err
	}
	if keys[key] {
		return fmt.Errorf("%s output still has %s", a.cluster, key)
	}
	return nil
}

func getJSON(addr, path string, v any) error {
	resp, err := adminGet(context.Background(), addr, path, 2*time.Second)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type agentStatus struct {
	Cluster       string `json:"cluster"`
	Connected     bool   `json:"connected"`
	OutputVersion uint64 `json:"outputVersion"`
	OutputHash    string `json:"outputHash"`
	LastError     string `json:"lastError"`
}

func (a *agent) status(t *testing.T) agentStatus {
	var st agentStatus
	_ = getJSON(a.admin, "/status", &st)
	return st
}

type serverStatus struct {
	SafeMode struct {
		Active  bool     `json:"active"`
		Missing []string `json:"missingClusters"`
	} `json:"safeMode"`
	Translations uint64   `json:"translations"`
	ConfigErrors []string `json:"configErrors"`
	Clusters     []struct {
		Name          string `json:"name"`
		OutputVersion uint64 `json:"outputVersion"`
		OutputHash    string `json:"outputHash"`
		InSync        bool   `json:"inSync"`
	} `json:"clusters"`
}

func (s *server) status(t *testing.T) serverStatus {
	t.Helper()
	var st serverStatus
	if err := getJSON(s.admin, "/status", &st); err != nil {
		t.Logf("server status: %v", err)
	}
	return st
}

// metric returns the value of a Prometheus sample whose name matches and whose label set
// contains every given label (`cluster="a"`), or 0 when absent.
func metric(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	resp, err := adminGet(t.Context(), admin, "/metrics", 10*time.Second)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	s, err := promtext.Parse(resp.Body)
	if err != nil {
		t.Fatalf("metrics at %s: %v", admin, err)
	}
	vs, err := s.Values(name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		return 0
	}
	return vs[0]
}

// mtimes maps every file of dir to its modification time.
func mtimes(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]time.Time{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = info.ModTime()
	}
	return m
}

func logContains(t *testing.T, p *proc.Process, s string) error {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), s) {
		return fmt.Errorf("log of %s does not contain %q", p.Name, s)
	}
	return nil
}

// outputKeys reads an agent's output directory and returns the keys (Kind/namespace/name)
// of the objects in it.
func outputKeys(dir string) (map[string]bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			if os.IsNotExist(err) {
				continue // replaced or removed while we listed
			}
			return nil, err
		}
		var h struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(b, &h); err != nil {
			return nil, fmt.Errorf("output file %s: %w", f, err)
		}
		keys[resource.Key(h.Kind, h.Metadata.Namespace, h.Metadata.Name)] = true
	}
	return keys, nil
}
