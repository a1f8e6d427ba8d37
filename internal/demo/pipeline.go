package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/examples/telemetry"
	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/promtext"
)

// The telemetry pipeline of the demo (README "Telemetry pipeline"): one telemetry gateway
// and one collector agent per cluster, all meshrelay-collector. The agents and gateways of a
// cluster export OTLP in plain text to their collector agent on loopback, which exports over
// TLS to the telemetry gateway; the management server, which runs in the management cluster
// beside the telemetry gateway and has no collector agent of its own there, exports to the
// telemetry gateway directly, over TLS. The telemetry gateway serves the merged metrics to
// Prometheus and forwards everything to the demo's OTLP destination (a user's backend).

// collectorName is the collector distribution's command.
const collectorName = "meshrelay-collector"

// telemetryServerName is the name in the telemetry gateway's certificate, which the
// collector agents and the server verify.
const telemetryServerName = "meshrelay-telemetry-gateway.meshrelay-system"

// module is meshrelay's Go module, whose source tree can build the collector.
const module = "github.com/meshrelay/meshrelay"

// ErrNoCollector is returned when the pipeline is on and meshrelay-collector is neither
// given, nor found, nor can be built.
var ErrNoCollector = errors.New("no " + collectorName + " for the telemetry pipeline")

// pipelineProcs are the pipeline's processes, stopped after the meshrelay processes that
// export to them.
var pipelineProcs = map[string]bool{"telemetry-gateway": true, "collector-local": true, "collector-remote": true}

// collector is the collector binary: a path at once, or a build running in the background.
type collector struct {
	ready chan struct{} // closed when path or err is set
	path  string
	err   error
}

// findCollector finds meshrelay-collector: flag (--collector-binary), else beside the
// meshrelay executable, else on PATH, else built from the source tree the working directory
// is in, into the user's cache directory; the build runs under ctx while the demo starts.
func findCollector(ctx context.Context, flag, meshrelay string, out func(string, ...any)) *collector {
	c := &collector{ready: make(chan struct{})}
	done := func(path string, err error) *collector {
		c.path, c.err = path, err
		close(c.ready)
		return c
	}
	if flag != "" {
		if err := executable(flag); err != nil {
			return done("", fmt.Errorf("--collector-binary: %w", err))
		}
		return done(flag, nil)
	}
	if p := filepath.Join(filepath.Dir(meshrelay), collectorName); executable(p) == nil {
		return done(p, nil)
	}
	if p, err := exec.LookPath(collectorName); err == nil {
		return done(p, nil)
	}
	wd, err := os.Getwd()
	if err != nil {
		return done("", fmt.Errorf("%w: %w", ErrNoCollector, err))
	}
	root, ok := sourceTree(wd)
	if !ok {
		return done("", fmt.Errorf("%w: not given (--collector-binary), not beside %s, not on PATH, and %s is not in meshrelay's source tree to build it from; "+
			"build it in a checkout (cd cmd/meshrelay-collector && go build -o %s .) and give --collector-binary PATH, or run the demo without the pipeline: --telemetry=false",
			ErrNoCollector, meshrelay, wd, collectorName))
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return done("", fmt.Errorf("%w: building it from %s needs the go command on PATH; give --collector-binary PATH, or --telemetry=false", ErrNoCollector, root))
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "meshrelay", "collector", collectorName)
	src := filepath.Join(root, "cmd", collectorName)
	out("building %s from %s into %s (go build; the first build takes about 3 minutes, later ones seconds) while the demo starts", collectorName, src, bin)
	go func() {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".")
		cmd.Dir = src
		if b, err := cmd.CombinedOutput(); err != nil {
			done("", fmt.Errorf("%w: go build in %s: %w\n%s(give --collector-binary PATH, or --telemetry=false)", ErrNoCollector, src, err, b))
			return
		}
		done(bin, nil)
	}()
	return c
}

// wait returns the collector's path once it is there.
func (c *collector) wait(ctx context.Context) (string, error) {
	select {
	case <-c.ready:
		return c.path, c.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// sourceTree walks up from dir to meshrelay's source tree: a go.mod of module
// github.com/meshrelay/meshrelay beside cmd/meshrelay-collector (a module of its own).
func sourceTree(dir string) (string, bool) {
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == module {
			_, err := os.Stat(filepath.Join(dir, "cmd", collectorName, "go.mod"))
			return dir, err == nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// telemetryCerts are the demo's bring-your-own telemetry certificates: a telemetry CA apart
// from the relay CA, and the telemetry gateway's serving pair.
type telemetryCerts struct{ ca, cert, key string }

func (e *env) telemetryCerts() telemetryCerts {
	d := filepath.Join(e.dir, "telemetry-certs")
	return telemetryCerts{ca: filepath.Join(d, "ca.crt"), cert: filepath.Join(d, "tls.crt"), key: filepath.Join(d, "tls.key")}
}

func (e *env) writeTelemetryCerts() error {
	c := e.telemetryCerts()
	ca, err := pki.NewCA("telemetry.meshrelay-demo", 30*24*time.Hour)
	if err != nil {
		return fmt.Errorf("telemetry CA: %w", err)
	}
	_, certPEM, keyPEM, err := ca.IssueServer([]string{telemetryServerName}, 30*24*time.Hour)
	if err != nil {
		return fmt.Errorf("telemetry gateway certificate: %w", err)
	}
	if err := e.write(c.ca, string(ca.CertPEM)); err != nil {
		return err
	}
	return pki.WriteKeyPair(c.cert, c.key, certPEM, keyPEM)
}

// serverOTLP are the management server's telemetry flags: OTLP to the telemetry gateway,
// over TLS, and the gateway's merged metrics for the UI's gateways and traffic.
func (e *env) serverOTLP() []string {
	if !e.opts.Telemetry {
		return nil
	}
	return []string{"--otlp-endpoint", e.addr("otlp-gateway"), "--otlp-ca-file", e.telemetryCerts().ca,
		"--otlp-server-name", telemetryServerName, "--otlp-metrics-interval", "1s",
		"--telemetry-prometheus-url", "http://" + e.addr("otlp-prom") + "/metrics"}
}

// clusterOTLP are the OTLP flags of a cluster's agent and gateway: to its collector agent on
// loopback, in plain text.
func (e *env) clusterOTLP(cluster string) []string {
	if !e.opts.Telemetry {
		return nil
	}
	return []string{"--otlp-endpoint", e.addr("otlp-" + cluster), "--otlp-insecure", "--otlp-metrics-interval", "1s"}
}

// startPipeline starts the telemetry gateway and the collector agents, once the collector
// binary is there, and waits until they listen.
func (e *env) startPipeline(ctx context.Context) error {
	e.step("telemetry pipeline (%s): a telemetry gateway receiving OTLP over TLS on %s (certificates from the demo's telemetry CA %s, apart from the relay CA), "+
		"merged metrics for Prometheus at http://%s/metrics, forwarding to an OTLP destination on %s; a collector agent per cluster (local %s, remote %s) exporting to it",
		collectorName, e.addr("otlp-gateway"), e.telemetryCerts().ca, e.addr("otlp-prom"), e.sink.Addr(), e.addr("otlp-local"), e.addr("otlp-remote"))
	select {
	case <-e.collector.ready:
	default:
		e.say("   (waiting for the %s build)", collectorName)
	}
	bin, err := e.collector.wait(ctx)
	if err != nil {
		return err
	}
	c := e.telemetryCerts()
	gw, err := telemetry.Expand(telemetry.TelemetryGateway, map[string]string{"TELEMETRY_GATEWAY_LISTEN": e.addr("otlp-gateway"),
		"TELEMETRY_GATEWAY_CERT_FILE": c.cert, "TELEMETRY_GATEWAY_KEY_FILE": c.key, "TELEMETRY_GATEWAY_PROMETHEUS": e.addr("otlp-prom"),
		"TELEMETRY_BACKEND_ENDPOINT": e.sink.Addr(), "TELEMETRY_BACKEND_INSECURE": "true"})
	if err != nil {
		return err
	}
	if err := e.startCollector(bin, "telemetry-gateway", gw); err != nil {
		return err
	}
	for _, cl := range []string{"local", "remote"} {
		cfg, err := telemetry.CollectorAgentFor(map[string]string{"COLLECTOR_AGENT_LISTEN": e.addr("otlp-" + cl),
			"TELEMETRY_CA_FILE": c.ca, "TELEMETRY_SERVER_NAME": telemetryServerName}, []string{e.addr("otlp-gateway")})
		if err != nil {
			return err
		}
		if err := e.startCollector(bin, "collector-"+cl, cfg); err != nil {
			return err
		}
	}
	for name, addr := range map[string]string{"telemetry-gateway": e.addr("otlp-gateway"), "collector-local": e.addr("otlp-local"), "collector-remote": e.addr("otlp-remote")} {
		if err := e.waitListening(ctx, name, addr); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) startCollector(bin, name string, config []byte) error {
	path := filepath.Join(e.dir, "telemetry", name+".yaml")
	if err := e.write(path, string(config)); err != nil {
		return err
	}
	return e.startBin(name, bin, "--config", path)
}

// waitListening waits until the process name accepts connections on addr.
func (e *env) waitListening(ctx context.Context, name, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.StepTimeout)
	defer cancel()
	for {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn.Close()
		}
		if e.procs[name].Exited() {
			return fmt.Errorf("%s exited: %w (its log: %s)", name, e.procs[name].Err(), e.procs[name].LogPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not listen on %s: %w", name, addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tracedChange is the configuration change whose trace the demo follows: a
// VirtualDestination over blue and green, which both clusters' outputs take in. Its name
// is new at every run, so that a run in the --dir of an earlier one changes something too.
func tracedChange(name string) string {
	return fmt.Sprintf(`apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata:
  name: %[1]s
  namespace: default
spec:
  hosts: [%[1]s.global]
  ports: [{number: 80, targetPort: {name: color}}]
  services: [{name: service-blue}, {name: service-green}]
`, name)
}

const (
	requestsMetric = "meshrelay_gateway_requests_total"
	durationCount  = "meshrelay_gateway_request_duration_seconds_count"
)

// checkPipeline checks that local's gateway's request metrics (every request the demo sent
// through it) and the trace of a configuration change reach the telemetry gateway.
func (e *env) checkPipeline(ctx context.Context) error {
	start := time.Now()
	vd := "bluegreen-" + strconv.FormatInt(start.Unix(), 36)
	e.step("telemetry: a configuration change through the admin API (VirtualDestination %s); its trace and local's gateway's request metrics reach the telemetry gateway", vd)
	token, err := os.ReadFile(filepath.Join(e.serverDataDir(), configapi.TokenFileName))
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	c, err := configapi.NewClient(e.addr("admin"), strings.TrimSpace(string(token)), filepath.Join(e.serverDataDir(), pki.CACertName))
	if err != nil {
		return err
	}
	if _, err := c.Apply(ctx, "meshrelay-demo", []byte(tracedChange(vd))); err != nil {
		return fmt.Errorf("apply VirtualDestination %s: %w", vd, err)
	}
	// The gateway's own count, which the demo's traffic is over: the telemetry gateway must
	// come to show the same.
	own, err := scrape(ctx, e.addr("gw-local"))
	if err != nil {
		return fmt.Errorf("local gateway's metrics: %w", err)
	}
	want, _ := sum(own, requestsMetric)
	if want == 0 {
		return fmt.Errorf("local gateway's /metrics counts no request in %s", requestsMetric)
	}
	var traceID string
	err = e.until(ctx, func() error {
		var traceErr error
		traceID, traceErr = e.sink.ChangeTrace(changelog.PathApply, start, "local", "remote")
		return errors.Join(e.mergedRequests(ctx, want), traceErr)
	})
	if err != nil {
		return fmt.Errorf("telemetry pipeline: %w", err)
	}
	e.say("   → %s and request_duration_seconds of cluster local at the telemetry gateway: %g requests, as local's gateway counts (after %s)",
		requestsMetric, want, time.Since(start).Round(time.Millisecond))
	e.say("   → trace %s at the OTLP destination: config.apply → config.translate → relay.deliver and agent.apply for local and remote", traceID)
	return nil
}

// mergedRequests checks that the telemetry gateway's Prometheus endpoint shows want
// requests of local's gateway, in its request counter and in its latency histogram.
func (e *env) mergedRequests(ctx context.Context, want float64) error {
	merged, err := scrape(ctx, e.addr("otlp-prom"))
	if err != nil {
		return fmt.Errorf("telemetry gateway's metrics: %w", err)
	}
	for _, m := range []string{requestsMetric, durationCount} {
		got, err := sum(merged, m, `meshrelay_cluster="local"`, `service_name="meshrelay-gateway"`)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("telemetry gateway at http://%s/metrics shows %s of cluster local = %g; local's gateway counts %g", e.addr("otlp-prom"), m, got, want)
		}
	}
	return nil
}

// until calls f until it succeeds or the step times out, and then returns f's last error.
func (e *env) until(ctx context.Context, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.StepTimeout)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %s: %w", e.opts.StepTimeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func scrape(ctx context.Context, addr string) (promtext.Samples, error) {
	return promtext.Fetch(ctx, &http.Client{Timeout: 2 * time.Second}, "http://"+addr+"/metrics")
}

// sum adds the series of name with every selector.
func sum(s promtext.Samples, name string, selectors ...string) (float64, error) {
	vs, err := s.Values(name, selectors...)
	total := 0.0
	for _, v := range vs {
		total += v
	}
	return total, err
}
