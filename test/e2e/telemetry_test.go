package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/examples/telemetry"
	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/otlpsink"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
)

// collectorBin is meshrelay-collector, built once per test binary by collector.
var collectorBin struct {
	once sync.Once
	path string
	err  error
}

// collector returns the path of meshrelay-collector: $MESHRELAY_COLLECTOR (scripts/test.sh
// builds it there), else cmd/meshrelay-collector (its own module) built once.
func collector(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHRELAY_COLLECTOR"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("MESHRELAY_COLLECTOR: %v (build it: cd cmd/meshrelay-collector && go build -o %s .)", err, p)
		}
		return p
	}
	collectorBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "meshrelay-e2e-collector-")
		if err != nil {
			collectorBin.err = err
			return
		}
		collectorBin.path = filepath.Join(dir, "meshrelay-collector")
		build := exec.Command("go", "build", "-o", collectorBin.path, ".")
		build.Dir = "../../cmd/meshrelay-collector"
		if out, err := build.CombinedOutput(); err != nil {
			collectorBin.err = fmt.Errorf("build meshrelay-collector: %w\n%s", err, out)
		}
	})
	if collectorBin.err != nil {
		t.Fatal(collectorBin.err)
	}
	return collectorBin.path
}

// otlpDestination is a user's OTLP backend: internal/otlpsink's real OTLP/gRPC server,
// served until the test ends.
type otlpDestination struct {
	*otlpsink.Sink
	addr string
}

func startOTLPDestination(t *testing.T) *otlpDestination {
	t.Helper()
	return startOTLPDestinationAt(t, "127.0.0.1:0")
}

// startOTLPDestinationAt starts the OTLP destination on addr.
func startOTLPDestinationAt(t *testing.T, addr string) *otlpDestination {
	t.Helper()
	s, err := otlpsink.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &otlpDestination{Sink: s, addr: s.Addr()}
}

// changeTrace checks that the trace of the latest change that took path into the server
// after since arrived whole (otlpsink.Sink.ChangeTrace).
func (d *otlpDestination) changeTrace(path string, since time.Time, clusters ...string) error {
	_, err := d.ChangeTrace(path, since, clusters...)
	return err
}

// collectorConfig writes the example configuration file with its ${env:NAME} references
// replaced by vars, as the collector would from its environment.
func collectorConfig(t *testing.T, dir, example string, vars map[string]string) string {
	t.Helper()
	b, err := telemetry.Expand(example, vars)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, strings.TrimSuffix(example, ".yaml")+"-"+vars["NAME"]+".yaml")
	writeFile(t, path, string(b))
	return path
}

// scrape returns the text a collector's Prometheus exporter serves.
func scrape(addr string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// hasSample reports whether text has a sample of metric (every metric of the prefix when it
// ends with "_") with every label given.
func hasSample(text, metric string, labels ...string) error {
	for _, line := range strings.Split(text, "\n") {
		name, _, ok := strings.Cut(line, "{")
		if !ok || !(name == metric || strings.HasSuffix(metric, "_") && strings.HasPrefix(name, metric)) {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		if all {
			return nil
		}
	}
	return fmt.Errorf("no sample of %s with %v among %d bytes", metric, labels, len(text))
}

// telemetryServerName is the name the telemetry gateways' certificate is issued for.
const telemetryServerName = "meshrelay-telemetry-gateway.meshrelay-system"

// telemetryCerts are bring-your-own telemetry certificates: a CA and the telemetry
// gateways' serving pair.
type telemetryCerts struct{ caFile, certFile, keyFile string }

func newTelemetryCerts(t *testing.T, h *harness) telemetryCerts {
	t.Helper()
	ca, err := pki.NewCA("telemetry.test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, certPEM, keyPEM, err := ca.IssueServer([]string{telemetryServerName}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.dir, "otel-certs")
	c := telemetryCerts{caFile: filepath.Join(dir, "ca.crt"), certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key")}
	writeFile(t, c.caFile, string(ca.CertPEM))
	if err := pki.WriteKeyPair(c.certFile, c.keyFile, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return c
}

// telemetryGateway is a running telemetry gateway: its OTLP and Prometheus addresses and
// its configuration file (to start it again).
type telemetryGateway struct {
	otlp, prom, config string
	p                  *proc.Process
}

// startTelemetryGateway runs meshrelay-collector with examples/telemetry/telemetry-gateway.yaml,
// forwarding to dest.
func startTelemetryGateway(h *harness, col, name string, certs telemetryCerts, dest *otlpDestination) *telemetryGateway {
	g := &telemetryGateway{otlp: h.addr(), prom: h.addr()}
	g.config = collectorConfig(h.t, h.dir, "telemetry-gateway.yaml", map[string]string{"NAME": name,
		"TELEMETRY_GATEWAY_LISTEN": g.otlp, "TELEMETRY_GATEWAY_CERT_FILE": certs.certFile, "TELEMETRY_GATEWAY_KEY_FILE": certs.keyFile,
		"TELEMETRY_GATEWAY_PROMETHEUS": g.prom, "TELEMETRY_BACKEND_ENDPOINT": dest.addr, "TELEMETRY_BACKEND_INSECURE": "true"})
	g.p = h.startBin("telemetry-gateway-"+name, col, "--config", g.config)
	return g
}

// startCollectorAgents runs a collector agent (examples/telemetry/collector-agent.yaml) for
// clusters local and remote, exporting to the first two of tgws (the first twice when there
// is one), and returns their OTLP addresses by cluster.
func startCollectorAgents(h *harness, col string, certs telemetryCerts, tgws ...*telemetryGateway) map[string]string {
	second := tgws[len(tgws)-1]
	collectors := map[string]string{}
	for _, c := range []string{"local", "remote"} {
		collectors[c] = h.addr()
		cfg := collectorConfig(h.t, h.dir, "collector-agent.yaml", map[string]string{"NAME": c, "COLLECTOR_AGENT_LISTEN": collectors[c],
			"TELEMETRY_GATEWAY_1": tgws[0].otlp, "TELEMETRY_GATEWAY_2": second.otlp, "TELEMETRY_CA_FILE": certs.caFile, "TELEMETRY_SERVER_NAME": telemetryServerName})
		h.startBin("collector-agent-"+c, col, "--config", cfg)
	}
	return collectors
}

// serverOTLPFlags export the management server's telemetry to tgw directly.
func serverOTLPFlags(tgw *telemetryGateway, certs telemetryCerts) []string {
	return []string{"--otlp-endpoint", tgw.otlp, "--otlp-ca-file", certs.caFile, "--otlp-server-name", telemetryServerName, "--otlp-metrics-interval", "1s"}
}

// clusterOTLPFlags export the agent's and the gateway's telemetry of each cluster to the
// cluster's collector agent (newSeedWorldIn's processExtra).
func clusterOTLPFlags(collectors map[string]string) func(role, cluster string) []string {
	return func(role, cluster string) []string {
		args := []string{"--otlp-endpoint", collectors[cluster], "--otlp-insecure", "--otlp-metrics-interval", "1s"}
		if role == "gateway" {
			args = append(args, "--cluster", cluster)
		}
		return args
	}
}

// The telemetry pipeline of issue 18 as real processes: both clusters' agents and gateways
// export OTLP to their cluster's collector agent (meshrelay-collector), which exports over
// TLS (BYO certificates) to every telemetry gateway — two here, one exporter each (seed
// 001's otlp and otlp/2) — and the management server exports to a telemetry gateway
// directly. The gateways' request metrics and a configuration change's trace (apply →
// translation → each agent's ACK, the agents' apply as children) arrive at the telemetry
// gateway's Prometheus endpoint and at an OTLP destination. Killing a telemetry gateway
// loses no data-plane request, and the collectors deliver to it again when it returns.
func TestTelemetryPipeline(t *testing.T) {
	h := newHarness(t)
	col := collector(t)
	dest := startOTLPDestination(t)
	certs := newTelemetryCerts(t, h)
	tgws := []*telemetryGateway{startTelemetryGateway(h, col, "1", certs, dest), startTelemetryGateway(h, col, "2", certs, dest)}
	collectors := startCollectorAgents(h, col, certs, tgws...)
	w := newSeedWorldIn(h, serverOTLPFlags(tgws[0], certs), nil, nil, clusterOTLPFlags(collectors))

	// Traffic through the local gateway: its request metrics reach both telemetry gateways'
	// Prometheus endpoints, labelled with the cluster, and the OTLP destination.
	start := time.Now()
	for range 5 {
		if _, err := answer(w.url); err != nil {
			t.Fatal(err)
		}
	}
	const requests = "meshrelay_gateway_requests_total"
	for i, g := range tgws {
		poll.Eventually(t, 60*time.Second, fmt.Sprintf("telemetry gateway %d serves the local gateway's request metric", i+1), func() error {
			text, err := scrape(g.prom)
			if err != nil {
				return err
			}
			return hasSample(text, requests, `meshrelay_cluster="local"`)
		})
	}
	poll.Eventually(t, 30*time.Second, "the request metric reaches the OTLP destination", func() error {
		return dest.MetricSince("meshrelay-gateway", requests, start)
	})

	// A configuration change through the admin API: its trace arrives whole.
	change := filepath.Join(h.dir, "traced-change.yaml")
	writeFile(t, change, "apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata:\n  name: traced\n  namespace: default\nspec:\n"+
		"  hosts: [traced.global]\n  ports: [{number: 80, targetPort: {name: color}}]\n  services: [{name: service-green}, {name: service-blue}]\n")
	applied := time.Now()
	if out, errOut, err := cli(t, "apply", "-f", change, "--server", w.server.admin); err != nil {
		t.Fatalf("apply: %v\n%s%s", err, out, errOut)
	}
	poll.Eventually(t, 60*time.Second, "the configuration change's trace reaches the OTLP destination", func() error {
		return dest.changeTrace(changelog.PathApply, applied, "local", "remote")
	})

	// The first telemetry gateway dies: no data-plane request fails meanwhile.
	tgws[0].p.Kill()
	down := time.Now()
	for i := range 20 {
		if _, err := answer(w.url); err != nil {
			t.Fatalf("request %d with the telemetry gateway down: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The second one keeps receiving.
	poll.Eventually(t, 30*time.Second, "metrics keep arriving through the other telemetry gateway", func() error {
		return dest.MetricSince("meshrelay-gateway", requests, down.Add(time.Second))
	})
	// It returns on the same address: the collectors deliver to it again (a new process,
	// so whatever its Prometheus endpoint shows arrived after its return).
	tgws[0].p = h.startBin("telemetry-gateway-1-again", col, "--config", tgws[0].config)
	for range 5 {
		if _, err := answer(w.url); err != nil {
			t.Fatal(err)
		}
	}
	poll.Eventually(t, 60*time.Second, "the returned telemetry gateway receives the clusters' metrics again", func() error {
		text, err := scrape(tgws[0].prom)
		if err != nil {
			return err
		}
		for _, c := range []string{"local", "remote"} {
			if err := hasSample(text, "meshrelay_agent_", `meshrelay_cluster="`+c+`"`); err != nil {
				return err
			}
		}
		return hasSample(text, requests, `meshrelay_cluster="local"`)
	})
	if b, err := os.ReadFile(tgws[0].p.LogPath); err == nil && bytes.Contains(b, []byte("panic")) {
		t.Fatalf("telemetry gateway log has a panic:\n%s", b)
	}
}
