// Package demo runs meshrelay's story on one machine: a management server and two universal
// clusters, each with an agent, as real child processes of the running binary, with real
// files and real TLS on loopback. It narrates each step, checks that it happened, and fails
// if one does not.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/resource"
	"sigs.k8s.io/yaml"
)

// Options configure a demo run.
type Options struct {
	// Binary is the meshrelay executable to start as children (default: this process's).
	Binary string
	// Dir is the working directory (default: a new temporary directory, removed at the end).
	Dir string
	// KeepRunning leaves everything up until ctx ends.
	KeepRunning bool
	// StepTimeout bounds each step.
	StepTimeout time.Duration
}

type env struct {
	opts   Options
	out    io.Writer
	dir    string
	procs  []*proc.Process
	admin  string
	relay  string
	agents map[string]*agentInfo
}

type agentInfo struct {
	discovery, output, admin string
}

const virtualDestinations = `# Each service is reachable from every cluster under one global name.
apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata:
  name: service-blue
  namespace: default
spec:
  hosts: [blue.global]
  ports: [{number: 10000}]
  services: [{name: service-blue}]
---
apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata:
  name: service-green
  namespace: default
spec:
  hosts: [green.global]
  ports: [{number: 10000}]
  services: [{name: service-green}]
`

const clusters = `apiVersion: admin.gloo.solo.io/v2
kind: KubernetesCluster
metadata:
  name: local
  namespace: gloo-mesh
spec:
  clusterDomain: cluster.local
---
apiVersion: admin.gloo.solo.io/v2
kind: KubernetesCluster
metadata:
  name: remote
  namespace: gloo-mesh
spec:
  clusterDomain: cluster.local
`

func service(name, ip string, port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: default
  labels:
    app: %[1]s
spec:
  selector:
    app: %[1]s
  ports:
  - name: http
    port: %[3]d
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %[1]s-1
  namespace: default
  labels:
    kubernetes.io/service-name: %[1]s
addressType: IPv4
endpoints:
- addresses: ["%[2]s"]
  conditions:
    ready: true
  zone: zone-a
ports:
- name: http
  port: %[3]d
`, name, ip, port)
}

// Run runs the demo and returns an error if any step does not happen.
func Run(ctx context.Context, opts Options, out io.Writer) (err error) {
	if opts.Binary == "" {
		if opts.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
	}
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = 20 * time.Second
	}
	e := &env{opts: opts, out: out, agents: map[string]*agentInfo{}}
	if opts.Dir == "" {
		if e.dir, err = os.MkdirTemp("", "meshrelay-demo-"); err != nil {
			return err
		}
		if !opts.KeepRunning {
			defer os.RemoveAll(e.dir)
		}
	} else {
		e.dir = opts.Dir
	}
	defer e.stopAll()
	start := time.Now()
	if err := e.story(ctx); err != nil {
		e.say("FAILED: %v", err)
		e.say("logs are in %s", e.dir)
		if opts.Dir == "" && !opts.KeepRunning {
			e.dumpLogs()
		}
		return err
	}
	e.say("demo complete in %s", time.Since(start).Round(time.Millisecond))
	if opts.KeepRunning {
		e.say("")
		e.say("everything stays up until Ctrl-C. Try:")
		e.say("  meshrelay get kubernetesclusters --server %s", e.admin)
		e.say("  meshrelay debug snapshot --cluster remote --server %s -o table", e.admin)
		e.say("  curl -s http://%s/status", e.admin)
		e.say("  ls %s", e.agents["remote"].output)
		e.say("  edit files in %s and watch %s", e.agents["local"].discovery, e.agents["remote"].output)
		<-ctx.Done()
	}
	return nil
}

func (e *env) say(format string, args ...any) { fmt.Fprintf(e.out, format+"\n", args...) }

func (e *env) stopAll() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		_ = e.procs[i].Stop(5 * time.Second)
	}
}

func (e *env) dumpLogs() {
	for _, p := range e.procs {
		b, _ := os.ReadFile(p.LogPath)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		fmt.Fprintf(e.out, "----- %s (tail) -----\n%s\n", p.Name, b)
	}
}

func (e *env) start(name string, args ...string) error {
	p, err := proc.Start(name, e.opts.Binary, filepath.Join(e.dir, name+".log"), args...)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	return nil
}

func freeAddr() (string, error) {
	p, err := proc.FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

func (e *env) story(ctx context.Context) error {
	e.say("meshrelay demo — working directory %s", e.dir)
	cfgDir := filepath.Join(e.dir, "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "clusters.yaml"), []byte(clusters), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "virtual-destinations.yaml"), []byte(virtualDestinations), 0o644); err != nil {
		return err
	}
	token := filepath.Join(e.dir, "relay-identity-token")
	if err := os.WriteFile(token, []byte("demo-token-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"\n"), 0o600); err != nil {
		return err
	}
	var err error
	if e.relay, err = freeAddr(); err != nil {
		return err
	}
	if e.admin, err = freeAddr(); err != nil {
		return err
	}
	serverData := filepath.Join(e.dir, "server")
	e.say("1. management server on %s (admin %s), clusters local and remote registered from %s", e.relay, e.admin, cfgDir)
	if err := e.start("server", "server", "--relay-address", e.relay, "--admin-address", e.admin,
		"--data-dir", serverData, "--config-dir", cfgDir, "--token-file", token); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, e.opts.StepTimeout)
	defer cancel()
	if err := proc.WaitHTTP(sctx, "http://"+e.admin+"/readyz"); err != nil {
		return fmt.Errorf("server not ready: %w", err)
	}
	for _, c := range []string{"local", "remote"} {
		a := &agentInfo{discovery: filepath.Join(e.dir, c, "discovery"), output: filepath.Join(e.dir, c, "output")}
		if a.admin, err = freeAddr(); err != nil {
			return err
		}
		if err := os.MkdirAll(a.discovery, 0o755); err != nil {
			return err
		}
		e.agents[c] = a
	}
	if err := os.WriteFile(filepath.Join(e.agents["local"].discovery, "service-blue.yaml"), []byte(service("service-blue", "10.0.1.10", 10000)), 0o644); err != nil {
		return err
	}
	for _, c := range []string{"local", "remote"} {
		a := e.agents[c]
		e.say("2. agent of cluster %s: registers with the token, gets a certificate, connects over mTLS", c)
		if err := e.start("agent-"+c, "agent", "--cluster", c, "--relay-address", e.relay, "--token-file", token,
			"--relay-ca-file", filepath.Join(serverData, "relay-ca.crt"), "--state-dir", filepath.Join(e.dir, c, "state"),
			"--discovery-dir", a.discovery, "--output-dir", a.output, "--admin-address", a.admin, "--xds-address", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	e.say("3. service-blue runs in cluster local; waiting for it to reach cluster remote's output")
	t0 := time.Now()
	if err := e.waitFor(ctx, "remote", "ServiceEntry/default/vd-service-blue", true); err != nil {
		return err
	}
	e.say("   remote now has ServiceEntry blue.global with local's endpoint (%s)", time.Since(t0).Round(time.Millisecond))
	e.say("4. service-green starts in cluster remote")
	t0 = time.Now()
	if err := os.WriteFile(filepath.Join(e.agents["remote"].discovery, "service-green.yaml"), []byte(service("service-green", "10.0.2.20", 10000)), 0o644); err != nil {
		return err
	}
	if err := e.waitFor(ctx, "local", "ServiceEntry/default/vd-service-green", true); err != nil {
		return err
	}
	e.say("   local now has ServiceEntry green.global with remote's endpoint (%s after the file was written)", time.Since(t0).Round(time.Millisecond))
	e.say("5. service-blue is removed from cluster local")
	t0 = time.Now()
	if err := os.Remove(filepath.Join(e.agents["local"].discovery, "service-blue.yaml")); err != nil {
		return err
	}
	if err := e.waitFor(ctx, "remote", "ServiceEntry/default/vd-service-blue", false); err != nil {
		return err
	}
	e.say("   remote no longer has it (%s)", time.Since(t0).Round(time.Millisecond))
	return nil
}

// waitFor polls a cluster's output directory until key is present (or absent).
func (e *env) waitFor(ctx context.Context, cluster, key string, present bool) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.StepTimeout)
	defer cancel()
	for {
		keys, err := OutputKeys(e.agents[cluster].output)
		if err != nil {
			return err
		}
		if keys[key] == present {
			return nil
		}
		select {
		case <-ctx.Done():
			state := "appear"
			if !present {
				state = "disappear"
			}
			return fmt.Errorf("%s did not %s in cluster %s's output within %s", key, state, cluster, e.opts.StepTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// OutputKeys reads an agent's output directory and returns the keys (Kind/namespace/name) of
// the objects in it.
func OutputKeys(dir string) (map[string]bool, error) {
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
