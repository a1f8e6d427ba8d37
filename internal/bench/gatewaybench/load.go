package gatewaybench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/bench"
)

// Options configure `meshrelay-bench gateway`.
type Options struct {
	// Connections is the number of concurrent keep-alive clients, one connection each.
	Connections int
	// Duration is the measured time per target, after Warmup.
	Duration time.Duration
	// Warmup runs the same load unmeasured first (default a fifth of Duration, at most 1 s).
	Warmup time.Duration
	// MaxRequests bounds the measured requests per target (0: 50 million).
	MaxRequests int
	// Log receives the gateways' and apps' logs (nil: discarded).
	Log *slog.Logger
	// Progress receives a line per target (nil: none).
	Progress io.Writer
}

func (o Options) withDefaults() Options {
	if o.Connections <= 0 {
		o.Connections = 32
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = min(time.Second, o.Duration/5)
	}
	if o.MaxRequests <= 0 {
		o.MaxRequests = 50_000_000
	}
	return o
}

// Config is the effective configuration, in the report.
type Config struct {
	Connections int     `json:"connections"`
	Seconds     float64 `json:"durationSeconds"`
	Warmup      float64 `json:"warmupSeconds"`
	MaxRequests int     `json:"maxRequestsPerTarget"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
}

// Report is the result of `meshrelay-bench gateway`.
type Report struct {
	Setup   string        `json:"setup"`
	Config  Config        `json:"config"`
	Machine bench.Machine `json:"machine"`
	// LoadAverage is the machine's 1-minute load average when the benchmark started.
	LoadAverage float64  `json:"loadAverage1m"`
	Targets     []Target `json:"targets"`
}

// Target is the load measured on one path.
type Target struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// Requests answered 200 by the expected app, and Errors (transport errors, other
	// statuses, other bodies), within Seconds.
	Requests          int      `json:"requests"`
	Errors            int      `json:"requestErrors"`
	ErrorSamples      []string `json:"errorSamples,omitempty"`
	Seconds           float64  `json:"seconds"`
	RequestsPerSecond float64  `json:"requestsPerSecond"`
	// Latency is from sending a request to having read its body, per request.
	Latency bench.Dist `json:"latency"`
	// CPUCores is the process's CPU time (load generator, gateways and apps together)
	// over the wall time; CPUMicrosPerRequest the same per request.
	CPUCores            float64 `json:"cpuCores"`
	CPUMicrosPerRequest float64 `json:"cpuMicrosPerRequest"`
	// Compared with the direct target: throughput as a fraction of direct's, and the
	// latency added at p50 and p99.
	ThroughputVsDirect float64 `json:"throughputVsDirect"`
	AddedP50Ms         float64 `json:"addedP50Ms"`
	AddedP99Ms         float64 `json:"addedP99Ms"`
}

// Run measures throughput and latency of C keep-alive clients on three paths of
// seed 003's data plane, in this process: directly to blue-pod; through local's
// gateway-proxy to blue-pod; and, with blue-pod failed over, through local's
// gateway-proxy, mTLS and remote's failover gateway to green-pod.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	bench.RaiseFileLimit()
	// The seed's health check; the benchmark does not depend on it but for the failover.
	hc := gwHealthCheck{Interval: time.Second, Timeout: time.Second, Unhealthy: 1, Healthy: 1}
	w, err := startGatewayWorld(ctx, hc, o.Log)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		Setup: gatewayWorldDescription + "; load generator in the same process: C goroutines, one keep-alive HTTP/1.1 connection each, GET / back to back",
		Config: Config{Connections: o.Connections, Seconds: o.Duration.Seconds(), Warmup: o.Warmup.Seconds(),
			MaxRequests: o.MaxRequests, GOMAXPROCS: runtime.GOMAXPROCS(0)},
		Machine: bench.ThisMachine(), LoadAverage: loadAverage(),
	}
	runErr := func() error {
		targets := []struct {
			name, path, url, want string
			before                func() error
		}{
			{"direct", "client → blue-pod", "http://" + w.blueAddr + "/", blueText, nil},
			{"gateway", "client → local gateway-proxy (HTTP) → blue-pod", w.proxyURL, blueText, nil},
			{"gateway-mtls-gateway", "client → local gateway-proxy (HTTP) → mTLS → remote failover gateway (TCP, SNI) → green-pod",
				w.proxyURL, greenText, func() error { return failOver(ctx, w) }},
		}
		for _, t := range targets {
			if t.before != nil {
				if err := t.before(); err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
			}
			res, err := runLoad(ctx, t.url, t.want, o)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			res.Name, res.Path = t.name, t.path
			if len(rep.Targets) > 0 {
				d := rep.Targets[0]
				if d.RequestsPerSecond > 0 {
					res.ThroughputVsDirect = res.RequestsPerSecond / d.RequestsPerSecond
				}
				res.AddedP50Ms, res.AddedP99Ms = res.Latency.P50-d.Latency.P50, res.Latency.P99-d.Latency.P99
			} else {
				res.ThroughputVsDirect = 1
			}
			rep.Targets = append(rep.Targets, res)
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "%s: %.0f requests/s, latency %s, %d errors\n", t.name, res.RequestsPerSecond, res.Latency, res.Errors)
			}
		}
		return nil
	}()
	if err := w.stop(); err != nil && runErr == nil {
		runErr = err
	}
	return rep, runErr
}

// failOver fails blue-pod's health check and waits until local's gateway-proxy answers
// green-pod.
func failOver(ctx context.Context, w *gatewayWorld) error {
	w.blue.SetHealthy(false)
	c := &http.Client{Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	return bench.WaitFor(ctx, 15*time.Second, 10*time.Millisecond, func() (bool, error) {
		body, err := getBody(c, w.proxyURL)
		return body == greenText, err
	})
}

// loadWorker is one client with its own connection.
type loadWorker struct {
	client *http.Client
	req    *http.Request
	want   []byte
	buf    bytes.Buffer
	lat    []time.Duration
	errs   int
	sample []string
}

// run sends requests back to back until the deadline, the budget or ctx ends,
// recording latencies and errors when record is set.
func (lw *loadWorker) run(ctx context.Context, deadline time.Time, budget *atomic.Int64, record bool) {
	for ctx.Err() == nil && time.Now().Before(deadline) && budget.Add(-1) >= 0 {
		start := time.Now()
		err := lw.do()
		switch {
		case err == nil && record:
			lw.lat = append(lw.lat, time.Since(start))
		case err != nil:
			if record {
				lw.errs++
				if len(lw.sample) < maxErrorSamples {
					lw.sample = append(lw.sample, err.Error())
				}
			}
			time.Sleep(time.Millisecond) // no hot loop on a broken path
		}
	}
}

func (lw *loadWorker) do() error {
	resp, err := lw.client.Do(lw.req)
	if err != nil {
		return err
	}
	lw.buf.Reset()
	_, err = lw.buf.ReadFrom(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(lw.buf.Bytes()))
	case !bytes.Equal(lw.buf.Bytes(), lw.want):
		return fmt.Errorf("unexpected body %q", bytes.TrimSpace(lw.buf.Bytes()))
	}
	return nil
}

// runLoad warms up, then measures o.Connections clients sending GET url for o.Duration.
func runLoad(ctx context.Context, url, want string, o Options) (Target, error) {
	workers := make([]*loadWorker, o.Connections)
	for i := range workers {
		tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true, ForceAttemptHTTP2: false}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return Target{}, err
		}
		workers[i] = &loadWorker{client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, req: req, want: []byte(want + "\n"),
			lat: make([]time.Duration, 0, 4096)}
	}
	defer func() {
		for _, lw := range workers {
			lw.client.CloseIdleConnections()
		}
	}()
	phase := func(d time.Duration, budget int64, record bool) time.Duration {
		var b atomic.Int64
		b.Store(budget)
		start := time.Now()
		deadline := start.Add(d)
		var wg sync.WaitGroup
		for _, lw := range workers {
			wg.Go(func() { lw.run(ctx, deadline, &b, record) })
		}
		wg.Wait()
		return time.Since(start)
	}
	phase(o.Warmup, int64(o.MaxRequests), false)
	if err := ctx.Err(); err != nil {
		return Target{}, err
	}
	cpu0 := cpuTime()
	elapsed := phase(o.Duration, int64(o.MaxRequests), true)
	cpu := cpuTime() - cpu0
	if err := ctx.Err(); err != nil {
		return Target{}, err
	}

	var res Target
	var lat []float64
	for _, lw := range workers {
		for _, d := range lw.lat {
			lat = append(lat, msOf(d))
		}
		res.Errors += lw.errs
		for _, s := range lw.sample {
			if len(res.ErrorSamples) < maxErrorSamples {
				res.ErrorSamples = append(res.ErrorSamples, s)
			}
		}
	}
	res.Requests, res.Seconds, res.Latency = len(lat), elapsed.Seconds(), bench.NewDist(lat)
	res.RequestsPerSecond = float64(res.Requests) / elapsed.Seconds()
	res.CPUCores = cpu.Seconds() / elapsed.Seconds()
	if res.Requests > 0 {
		res.CPUMicrosPerRequest = float64(cpu.Microseconds()) / float64(res.Requests)
	}
	return res, nil
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// us formats milliseconds as microseconds below 1 ms.
func us(v float64) string {
	if v < 1 && v > -1 {
		return fmt.Sprintf("%.0f µs", v*1000)
	}
	return bench.Ms(v)
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "setup\t%s\n", r.Setup)
	fmt.Fprintf(tw, "load\t%d connections, %.0f s measured per target after %.1f s warm-up, GOMAXPROCS %d\n", c.Connections, c.Seconds, c.Warmup, c.GOMAXPROCS)
	fmt.Fprintf(tw, "machine\t%d CPUs, %s, %s, load average %.2f at start\n", r.Machine.CPUs, r.Machine.Model, r.Machine.GoVersion, r.LoadAverage)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trequests/s\tvs direct\tp50\tp90\tp99\tmax\t+p50\t+p99\tCPU cores\tCPU/request\terrors\t")
	for _, t := range r.Targets {
		l := t.Latency
		add50, add99 := "-", "-"
		if t.Name != "direct" {
			add50, add99 = us(t.AddedP50Ms), us(t.AddedP99Ms)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f×\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.0f µs\t%d\t\n", t.Name, t.RequestsPerSecond, t.ThroughputVsDirect,
			us(l.P50), us(l.P90), us(l.P99), us(l.Max), add50, add99, t.CPUCores, t.CPUMicrosPerRequest, t.Errors)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, t := range r.Targets {
		fmt.Fprintf(w, "%s: %s\n", t.Name, t.Path)
		for _, e := range t.ErrorSamples {
			fmt.Fprintf(w, "  error: %s\n", e)
		}
	}
}

// Flags registers the gateway benchmark's flags with their defaults.
func (o *Options) Flags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Connections, "connections", 32, "concurrent keep-alive clients, one connection each")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per target")
	fs.DurationVar(&o.Warmup, "warmup", 0, "unmeasured load before each target (default a fifth of --duration, at most 1s)")
	fs.IntVar(&o.MaxRequests, "max-requests", 0, "bound of the measured requests per target (default 50 million)")
}

// Validate checks the flags' values.
func (o Options) Validate() error {
	if o.Connections < 1 || o.Duration <= 0 {
		return errors.New("--connections must be at least 1 and --duration positive")
	}
	return nil
}
