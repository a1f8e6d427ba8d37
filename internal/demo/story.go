package demo

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
)

// The seed 003 resources (exported for the end-to-end tests), as the seed writes them; only addresses and ports differ (every
// listener is on loopback here).
// ClustersYAML registers local and remote.
const ClustersYAML = `apiVersion: admin.gloo.solo.io/v2
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

// FailoverSchemeYAML is the seed's FailoverScheme.
const FailoverSchemeYAML = `apiVersion: fed.solo.io/v1
kind: FailoverScheme
metadata:
 name: failover-scheme
 namespace: gloo-fed
spec:
 failoverGroups:
 - priorityGroup:
   - cluster: remote
     upstreams:
     - name: default-service-green-10000
       namespace: gloo-system
 primary:
   clusterName: local
   name: default-service-blue-10000
   namespace: gloo-system
`

// AppYAML is a seed app's Service (as in the seed) and the EndpointSlice where it runs here.
func AppYAML(color, text string, port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
 labels:
   app: bluegreen
   text: %[1]s
 name: service-%[1]s
 namespace: default
spec:
 ports:
 - name: color
   port: 10000
   protocol: TCP
   targetPort: 10000
 selector:
   app: bluegreen
   text: %[1]s
 type: ClusterIP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: service-%[1]s-pod
  namespace: default
  labels:
    kubernetes.io/service-name: service-%[1]s
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
ports:
- name: color
  port: %[2]d
`, color, port)
}

// HealthCheckPatchYAML is the seed's health-check patch of blue's upstream.
var HealthCheckPatchYAML = HealthCheckYAML(time.Second, time.Second, 1, 1)

// HealthCheckYAML is the seed's health-check patch of blue's upstream with other settings.
func HealthCheckYAML(timeout, interval time.Duration, unhealthy, healthy uint32) string {
	return fmt.Sprintf(`# kubectl patch upstream -n gloo-system default-service-blue-10000 (seed 003)
apiVersion: gloo.solo.io/v1
kind: Upstream
metadata:
  name: default-service-blue-10000
  namespace: gloo-system
spec:
 healthChecks:
 - timeout: %s
   interval: %s
   unhealthyThreshold: %d
   healthyThreshold: %d
   httpHealthCheck:
     path: /health
`, timeout, interval, unhealthy, healthy)
}

// RouteYAML is local's HTTP gateway with the seed's route to blue.
func RouteYAML(port int) string {
	return fmt.Sprintf(`# glooctl add route --path-prefix / --dest-name default-service-blue-10000 (seed 003),
# served by local's HTTP gateway.
apiVersion: gateway.solo.io/v1
kind: Gateway
metadata:
  name: gateway-proxy
  namespace: gloo-system
spec:
  bindAddress: 127.0.0.1
  bindPort: %d
  httpGateway: {}
---
apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata:
  name: default
  namespace: gloo-system
spec:
  hosts: ["*"]
  http:
  - matchers:
    - uri: {prefix: /}
    forwardTo:
      destinations:
      - ref: {name: default-service-blue-10000, namespace: gloo-system}
`, port)
}

// FailoverGatewayYAML is remote's failover gateway and the Service exposing it.
func FailoverGatewayYAML(port int) string {
	return fmt.Sprintf(`# The seed's failover gateway and its Service (the gateway terminates mTLS and forwards
# by SNI). Without the seed's openssl secret the management server's mesh identity is used.
apiVersion: gateway.solo.io/v1
kind: Gateway
metadata:
 name: failover-gateway
 namespace: gloo-system
 labels:
   app: gloo
spec:
 bindAddress: "127.0.0.1"
 bindPort: %[1]d
 tcpGateway:
   tcpHosts:
   - name: failover
     sslConfig:
       secretRef:
         name: failover-downstream
         namespace: gloo-system
     destination:
       forwardSniClusterName: {}
---
apiVersion: v1
kind: Service
metadata:
 labels:
   app: gloo
 name: failover
 namespace: gloo-system
spec:
 ports:
 - name: failover
   port: %[1]d
   protocol: TCP
   targetPort: %[1]d
 type: LoadBalancer
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: failover-gateway
  namespace: gloo-system
  labels:
    kubernetes.io/service-name: failover
addressType: IPv4
endpoints:
- addresses: ["127.0.0.1"]
ports:
- name: failover
  port: %[1]d
`, port)
}

// WorldPorts are the loopback ports of the story's apps and gateway listeners.
type WorldPorts struct {
	Blue, Green    int // blue-pod's and green-pod's HTTP ports
	HTTP, Failover int // local's HTTP gateway and remote's failover gateway
}

// WorldFiles returns the story's resource files by path relative to its working directory:
// config/ for the management server's --config-dir, local/discovery/ and remote/discovery/
// for the agents' --discovery-dir. examples/two-clusters in the repository is WorldFiles of
// fixed ports (checked by a test).
func WorldFiles(p WorldPorts) map[string]string {
	return map[string]string{
		"config/clusters.yaml":                      ClustersYAML,
		"config/failover-scheme.yaml":               FailoverSchemeYAML,
		"local/discovery/service-blue.yaml":         AppYAML("blue", "blue-pod", p.Blue),
		"local/discovery/upstream-healthcheck.yaml": HealthCheckPatchYAML,
		"local/discovery/route.yaml":                RouteYAML(p.HTTP),
		"remote/discovery/service-green.yaml":       AppYAML("green", "green-pod", p.Green),
		"remote/discovery/failover-gateway.yaml":    FailoverGatewayYAML(p.Failover),
	}
}

func (e *env) story(ctx context.Context) error {
	e.say("meshrelay demo — seed 003's service failover on one machine (working directory %s)", e.dir)
	ports := []string{"relay", "admin", "blue", "blue-admin", "green", "green-admin", "http", "failover",
		"agent-local", "agent-remote", "gw-local", "gw-remote"}
	if e.opts.Telemetry {
		ports = append(ports, "otlp-gateway", "otlp-prom", "otlp-local", "otlp-remote")
		if err := e.writeTelemetryCerts(); err != nil {
			return err
		}
	} else {
		e.say("telemetry pipeline off (--telemetry=false): no collectors, and no process exports OTLP")
	}
	for _, n := range ports {
		if _, err := e.port(n); err != nil {
			return err
		}
	}
	files := WorldFiles(WorldPorts{Blue: e.ports["blue"], Green: e.ports["green"], HTTP: e.ports["http"], Failover: e.ports["failover"]})
	for path, content := range files {
		if err := e.write(filepath.Join(e.dir, path), content); err != nil {
			return err
		}
	}
	cfg := filepath.Join(e.dir, "config")
	token := filepath.Join(e.dir, "relay-identity-token")
	if err := e.write(token, "demo-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"\n"); err != nil {
		return err
	}

	e.step("apps: blue-pod in cluster local (%s), green-pod in cluster remote (%s)", e.addr("blue"), e.addr("green"))
	for _, app := range []struct{ name, text string }{{"blue", "blue-pod"}, {"green", "green-pod"}} {
		if err := e.start("app-"+app.name, "demo-app", "--text", app.text, "--port", strconv.Itoa(e.ports[app.name]),
			"--admin-port", strconv.Itoa(e.ports[app.name+"-admin"])); err != nil {
			return err
		}
	}
	serverData := e.serverDataDir()
	e.step("management server on %s (admin API https://%s) with clusters local and remote and the seed's FailoverScheme", e.addr("relay"), e.addr("admin"))
	if err := e.startServer(cfg, serverData, token); err != nil {
		return err
	}
	for _, c := range []string{"local", "remote"} {
		state, err := filepath.Abs(filepath.Join(e.dir, c, "state"))
		if err != nil {
			return fmt.Errorf("state directory of %s: %w", c, err)
		}
		xdsSocket := "unix://" + filepath.Join(state, "xds.sock") // the agent's default --xds-address
		say := e.step
		if c != "local" {
			say = e.sameStep
		}
		say("cluster %s: agent (registers with the token, mTLS to the server, xDS on its socket %s) and its gateway", c, xdsSocket)
		if err := e.start("agent-"+c, append([]string{"agent", "--cluster", c, "--relay-address", e.addr("relay"), "--token-file", token,
			"--relay-ca-file", filepath.Join(serverData, "relay-ca.crt"), "--state-dir", state,
			"--discovery-dir", filepath.Join(e.dir, c, "discovery"), "--output-dir", filepath.Join(e.dir, c, "output"),
			"--admin-address", e.addr("agent-" + c), "--max-backoff", "1s"}, e.clusterOTLP(c)...)...); err != nil {
			return err
		}
		if err := e.start("gateway-"+c, append([]string{"gateway", "--xds-address", xdsSocket, "--node-id", c + "-gateway",
			"--admin-address", e.addr("gw-" + c), "--cluster", c}, e.clusterOTLP(c)...)...); err != nil {
			return err
		}
	}
	if e.opts.Telemetry {
		if err := e.startPipeline(ctx); err != nil {
			return err
		}
	}
	url := "http://" + e.addr("http") + "/"
	e.step("curl %s", url)
	if _, err := e.waitAnswer(ctx, url, "blue-pod"); err != nil {
		return err
	}
	e.say("   → blue-pod")
	if err := e.failover(ctx, url); err != nil {
		return err
	}
	e.step("the management server goes away (killed); data planes keep their configuration")
	e.procs["server"].Kill()
	if got, err := get(url); err != nil || got != "blue-pod" {
		return fmt.Errorf("after the server was killed the gateway answered %q, %v; want blue-pod", got, err)
	}
	e.say("   → blue-pod, still")
	if err := e.failover(ctx, url); err != nil {
		return fmt.Errorf("without the management server: %w", err)
	}
	e.step("the management server returns; the agents reconnect and resume")
	if err := e.startServer(cfg, serverData, token); err != nil {
		return err
	}
	d, err := e.waitInSync(ctx, "local", "remote")
	if err != nil {
		return err
	}
	if got, err := get(url); err != nil || got != "blue-pod" {
		return fmt.Errorf("after the server returned the gateway answered %q, %v; want blue-pod", got, err)
	}
	e.say("   → both agents connected and in sync again after %s; blue-pod", d.Round(time.Millisecond))
	if e.opts.Telemetry {
		return e.checkPipeline(ctx)
	}
	return nil
}

// serverDataDir is the management server's --data-dir.
func (e *env) serverDataDir() string { return filepath.Join(e.dir, "server") }

func (e *env) startServer(cfg, data, token string) error {
	if err := e.start("server", append([]string{"server", "--relay-address", e.addr("relay"), "--admin-address", e.addr("admin"),
		"--data-dir", data, "--config-dir", cfg, "--token-file", token}, e.serverOTLP()...)...); err != nil {
		return err
	}
	return e.waitServerReady(context.Background())
}

// failover fails blue's health check, waits for green, restores blue and waits for blue.
func (e *env) failover(ctx context.Context, url string) error {
	admin := "http://" + e.addr("blue-admin")
	e.step("blue's health check is failed: curl -X POST %s/healthcheck/fail", admin)
	if err := post(admin + "/healthcheck/fail"); err != nil {
		return err
	}
	d, err := e.waitAnswer(ctx, url, "green-pod")
	if err != nil {
		return err
	}
	e.say("   → green-pod, served by cluster remote through its failover gateway over mTLS (failover took %s; health check interval 1s, unhealthyThreshold 1)", d.Round(time.Millisecond))
	e.step("blue recovers: curl -X POST %s/healthcheck/ok", admin)
	if err := post(admin + "/healthcheck/ok"); err != nil {
		return err
	}
	d, err = e.waitAnswer(ctx, url, "blue-pod")
	if err != nil {
		return err
	}
	e.say("   → blue-pod again (after %s)", d.Round(time.Millisecond))
	return nil
}

func (e *env) keepRunning(ctx context.Context) {
	e.say("")
	e.say("everything stays up until Ctrl-C. Try:")
	e.say("  curl http://%s/                                    # through local's gateway", e.addr("http"))
	e.say("  curl -X POST http://%s/healthcheck/fail             # fail blue (…/healthcheck/ok to restore)", e.addr("blue-admin"))
	e.say("  curl -s http://%s/status                            # local gateway: active priority, health", e.addr("gw-local"))
	token := filepath.Join(e.serverDataDir(), configapi.TokenFileName) // generated by the server
	ca := filepath.Join(e.serverDataDir(), pki.CACertName)             // verifies the admin API's certificate
	e.say("  open https://%s/ui                                 # the web UI: log in with the admin token in %s", e.addr("admin"), token)
	e.say("      (the browser does not know the demo's CA %s: accept its warning for this address, or import that CA)", ca)
	e.say("  meshrelay get failoverschemes --server %s --admin-ca-file %s --admin-token-file %s", e.addr("admin"), ca, token)
	e.say("  meshrelay check --server %s --admin-ca-file %s", e.addr("admin"), ca)
	if e.opts.Telemetry {
		e.say("  curl -s http://%s/metrics | grep meshrelay_gateway_  # the telemetry gateway's merged metrics of both clusters (scrape it with Prometheus)", e.addr("otlp-prom"))
	}
	e.say("  meshrelay debug snapshot --cluster local --server %s --admin-ca-file %s --admin-token-file %s -o table", e.addr("admin"), ca, token)
	<-ctx.Done()
}
