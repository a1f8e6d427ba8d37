package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the collectors compress OTLP with gzip

	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/changetrace"
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

// otlpDestination is a user's OTLP backend: a real OTLP/gRPC server of the metrics and
// trace services that records what arrives.
type otlpDestination struct {
	collmetricpb.UnimplementedMetricsServiceServer
	addr string

	mu      sync.Mutex          // guards metrics and spans
	metrics map[string]metricAt // "service metric" → its last arrival
	spans   []arrivedSpan
}

type metricAt struct {
	at     time.Time
	points int
}

type arrivedSpan struct {
	service, name, cluster string
	path                   string // changetrace.AttrPath
	start                  time.Time
	traceID, spanID        string
	parentID               string
}

func startOTLPDestination(t *testing.T) *otlpDestination {
	t.Helper()
	return startOTLPDestinationAt(t, "127.0.0.1:0")
}

// startOTLPDestinationAt starts the OTLP destination on addr.
func startOTLPDestinationAt(t *testing.T, addr string) *otlpDestination {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &otlpDestination{addr: lis.Addr().String(), metrics: map[string]metricAt{}}
	gs := grpc.NewServer()
	collmetricpb.RegisterMetricsServiceServer(gs, d)
	colltracepb.RegisterTraceServiceServer(gs, traceServer{otlpDestination: d})
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return d
}

func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func (d *otlpDestination) Export(_ context.Context, req *collmetricpb.ExportMetricsServiceRequest) (*collmetricpb.ExportMetricsServiceResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		svc := attr(rm.GetResource().GetAttributes(), "service.name")
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				n := len(m.GetSum().GetDataPoints()) + len(m.GetGauge().GetDataPoints()) + len(m.GetHistogram().GetDataPoints())
				d.metrics[svc+" "+m.GetName()] = metricAt{at: time.Now(), points: n}
			}
		}
	}
	return &collmetricpb.ExportMetricsServiceResponse{}, nil
}

// traceServer adapts the trace service's Export, whose name collides with the metrics one.
type traceServer struct {
	colltracepb.UnimplementedTraceServiceServer
	*otlpDestination
}

func (d *otlpDestination) exportTraces(req *colltracepb.ExportTraceServiceRequest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		svc := attr(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				d.spans = append(d.spans, arrivedSpan{service: svc, name: s.GetName(), cluster: attr(s.GetAttributes(), "meshrelay.cluster"),
					path: attr(s.GetAttributes(), changetrace.AttrPath), start: time.Unix(0, int64(s.GetStartTimeUnixNano())),
					traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()), parentID: hex.EncodeToString(s.GetParentSpanId())})
			}
		}
	}
}

func (t traceServer) Export(_ context.Context, req *colltracepb.ExportTraceServiceRequest) (*colltracepb.ExportTraceServiceResponse, error) {
	t.exportTraces(req)
	return &colltracepb.ExportTraceServiceResponse{}, nil
}

// metricSince reports whether metric of service arrived after since.
func (d *otlpDestination) metricSince(service, metric string, since time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, ok := d.metrics[service+" "+metric]
	if !ok {
		return fmt.Errorf("%s of %s never arrived (%d metrics did)", metric, service, len(d.metrics))
	}
	if !m.at.After(since) || m.points == 0 {
		return fmt.Errorf("%s of %s last arrived at %s, %d points, not after %s", metric, service, m.at.Format(time.RFC3339Nano), m.points, since.Format(time.RFC3339Nano))
	}
	return nil
}

// changeTrace finds the trace of the latest change that took path into the server (apply,
// delete, config-dir, cr) after since, and checks that it holds the translation and, for
// every cluster, the delivery (a child of the translation) and the agent's apply (a child
// of the delivery, from the agent's process).
func (d *otlpDestination) changeTrace(path string, since time.Time, clusters ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var apply *arrivedSpan
	for i, s := range d.spans {
		if s.name == changetrace.SpanApply && s.service == "meshrelay-server" && s.path == path && s.start.After(since) {
			apply = &d.spans[i]
		}
	}
	if apply == nil {
		return fmt.Errorf("no %s span of path %s since %s arrived (%d spans did)", changetrace.SpanApply, path, since.Format(time.RFC3339Nano), len(d.spans))
	}
	byID := map[string]arrivedSpan{}
	for _, s := range d.spans {
		if s.traceID == apply.traceID {
			byID[s.spanID] = s
		}
	}
	var translate *arrivedSpan
	for _, s := range byID {
		if s.name == changetrace.SpanTranslate && s.parentID == apply.spanID {
			translate = &s
		}
	}
	if translate == nil {
		return fmt.Errorf("trace %s has no %s span under the apply: %v", apply.traceID, changetrace.SpanTranslate, byID)
	}
	for _, c := range clusters {
		var deliver, agentApply *arrivedSpan
		for _, s := range byID {
			if s.name == changetrace.SpanDeliver && s.cluster == c && s.parentID == translate.spanID {
				deliver = &s
			}
		}
		if deliver == nil {
			return fmt.Errorf("trace %s has no %s span of cluster %s under the translation", apply.traceID, changetrace.SpanDeliver, c)
		}
		for _, s := range byID {
			if s.name == changetrace.SpanAgent && s.service == "meshrelay-agent" && s.cluster == c && s.parentID == deliver.spanID {
				agentApply = &s
			}
		}
		if agentApply == nil {
			return fmt.Errorf("trace %s has no %s span of cluster %s's agent under its delivery", apply.traceID, changetrace.SpanAgent, c)
		}
	}
	return nil
}

// collectorConfig writes the example configuration file with its ${env:NAME} references
// replaced by vars, as the collector would from its environment.
func collectorConfig(t *testing.T, dir, example string, vars map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../examples/telemetry", example))
	if err != nil {
		t.Fatal(err)
	}
	out := regexp.MustCompile(`\$\{env:([A-Z0-9_]+)\}`).ReplaceAllFunc(b, func(m []byte) []byte {
		name := string(m[len("${env:") : len(m)-1])
		v, ok := vars[name]
		if !ok {
			t.Fatalf("%s: no value for %s", example, name)
		}
		return []byte(v)
	})
	path := filepath.Join(dir, strings.TrimSuffix(example, ".yaml")+"-"+vars["NAME"]+".yaml")
	writeFile(t, path, string(out))
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
		return dest.metricSince("meshrelay-gateway", requests, start)
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
		return dest.metricSince("meshrelay-gateway", requests, down.Add(time.Second))
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
