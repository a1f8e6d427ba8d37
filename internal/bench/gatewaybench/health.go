package gatewaybench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/bench"
)

// HealthFailoverOptions configure `meshrelay-bench health-failover`.
type HealthFailoverOptions struct {
	// Runs is the number of failovers, each followed by a failback.
	Runs int
	// The active health check of the primary's cluster.
	Interval, Timeout                    time.Duration
	UnhealthyThreshold, HealthyThreshold uint32
	// PollInterval is the pause between two requests of the polling client.
	PollInterval time.Duration
	// Log receives the gateways' and apps' logs (nil: discarded).
	Log *slog.Logger
	// Progress receives a line per run (nil: none).
	Progress io.Writer
}

// withDefaults fills zero fields with the command's defaults.
func (o HealthFailoverOptions) withDefaults() HealthFailoverOptions {
	if o.Runs <= 0 {
		o.Runs = 30
	}
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	o.UnhealthyThreshold = max(o.UnhealthyThreshold, 1) // 0 counts as 1, as in Envoy
	o.HealthyThreshold = max(o.HealthyThreshold, 1)
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Millisecond
	}
	return o
}

// HealthFailoverConfig is the effective configuration, in the report.
type HealthFailoverConfig struct {
	Runs               int     `json:"runs"`
	IntervalMs         float64 `json:"intervalMs"`
	TimeoutMs          float64 `json:"timeoutMs"`
	UnhealthyThreshold uint32  `json:"unhealthyThreshold"`
	HealthyThreshold   uint32  `json:"healthyThreshold"`
	PollIntervalMs     float64 `json:"pollIntervalMs"`
}

// HealthFailoverReport is the result of `meshrelay-bench health-failover`.
type HealthFailoverReport struct {
	Setup   string               `json:"setup"`
	Config  HealthFailoverConfig `json:"config"`
	Machine bench.Machine        `json:"machine"`
	// LoadAverage is the machine's 1-minute load average when the benchmark started.
	LoadAverage float64 `json:"loadAverage1m"`
	// Failover: blue-pod's /health fails at T0, until green-pod answers through the
	// failover gateway. Failback: /health passes again at T0, until blue-pod answers.
	Failover SwitchReport        `json:"failover"`
	Failback SwitchReport        `json:"failback"`
	Runs     []HealthFailoverRun `json:"runs"`
	// Requests counts every request of the polling client, switches and steady phases;
	// Errors those that failed (transport error, status other than 200, unknown body).
	Requests     int      `json:"requests"`
	Errors       int      `json:"requestErrors"`
	ErrorSamples []string `json:"errorSamples,omitempty"`
}

// SwitchReport sums up one direction of the switch over every run.
type SwitchReport struct {
	// FirstResponse is from T0 (the demo app's /health flipped) to the first response
	// from the other target, as the polling client received it.
	FirstResponse bench.Dist `json:"firstResponse"`
	// GatewaySwitch is from T0 to the gateway changing its active priority (the `since`
	// of its /status): FirstResponse without the polling delay.
	GatewaySwitch bench.Dist `json:"gatewaySwitch"`
	// Threshold is the unhealthy (failover) or healthy (failback) threshold.
	Threshold uint32 `json:"threshold"`
	// BoundMs is interval × threshold: the check that sees the change runs within one
	// interval of T0, and threshold − 1 more checks follow one interval apart (a check
	// answered 503 fails at once; one that hangs would add the timeout).
	BoundMs float64 `json:"boundMs"`
	// ExpectedMeanMs is (threshold − ½) × interval: the first check after T0 comes
	// uniformly within one interval.
	ExpectedMeanMs float64 `json:"expectedMeanMs"`
	// WithinBound counts the runs whose FirstResponse was within BoundMs.
	WithinBound int `json:"withinBound"`
	// Requests and Errors are those sent between T0 and the first response from the
	// target; WrongTarget counts responses from the previous target after it.
	Requests    int `json:"requests"`
	Errors      int `json:"requestErrors"`
	WrongTarget int `json:"wrongTargetAfterSwitch"`
}

// HealthFailoverRun is one failover and its failback.
type HealthFailoverRun struct {
	Failover SwitchRun `json:"failover"`
	Failback SwitchRun `json:"failback"`
	// Errors counts the run's failed requests, steady phases included.
	Errors int `json:"requestErrors"`
}

// SwitchRun is one measured switch.
type SwitchRun struct {
	FirstResponseMs float64 `json:"firstResponseMs"`
	// GatewaySwitchMs is -1 when the gateway's status did not show the change.
	GatewaySwitchMs float64 `json:"gatewaySwitchMs"`
	// Probes counts the health checks blue-pod answered with its new health from T0 to
	// the gateway's switch (the threshold, when all is well).
	Probes int `json:"probes"`
	// Requests and Errors are from T0 to the first response from the target;
	// WrongTarget counts responses from the old target in the steady phase after it.
	Requests    int `json:"requests"`
	Errors      int `json:"requestErrors"`
	WrongTarget int `json:"wrongTargetAfter"`
}

// maxErrorSamples bounds the error messages kept in a report.
const maxErrorSamples = 10

// HealthFailover measures seed 003's health-check failover and failback with the real
// gateway package in this process: Runs times, blue-pod's /health turns to 503 at T0 and
// a client polling local's gateway-proxy every PollInterval waits for green-pod (served by
// remote's gateway over mTLS); then /health passes again and it waits for blue-pod.
func HealthFailover(ctx context.Context, o HealthFailoverOptions) (*HealthFailoverReport, error) {
	o = o.withDefaults()
	hc := gwHealthCheck{Interval: o.Interval, Timeout: o.Timeout, Unhealthy: o.UnhealthyThreshold, Healthy: o.HealthyThreshold}
	w, err := startGatewayWorld(ctx, hc, o.Log)
	if err != nil {
		return nil, err
	}
	rep := &HealthFailoverReport{
		Setup: gatewayWorldDescription + "; polling client: one keep-alive connection to local's gateway-proxy",
		Config: HealthFailoverConfig{Runs: o.Runs, IntervalMs: msOf(o.Interval), TimeoutMs: msOf(o.Timeout),
			UnhealthyThreshold: o.UnhealthyThreshold, HealthyThreshold: o.HealthyThreshold, PollIntervalMs: msOf(o.PollInterval)},
		Machine: bench.ThisMachine(), LoadAverage: loadAverage(),
	}
	h := &healthRun{o: o, w: w, rep: rep, client: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}}
	runErr := h.run(ctx)
	h.client.CloseIdleConnections()
	if err := w.stop(); err != nil && runErr == nil {
		runErr = err
	}
	h.summarize()
	return rep, runErr
}

// healthRun is one HealthFailover in progress.
type healthRun struct {
	o      HealthFailoverOptions
	w      *gatewayWorld
	rep    *HealthFailoverReport
	client *http.Client
}

func (h *healthRun) run(ctx context.Context) error {
	// Each switch starts at a random phase of the health checks, after a steady phase
	// of half to one and a half intervals.
	settle := func() time.Duration { return h.o.Interval/2 + rand.N(h.o.Interval) }
	var pre HealthFailoverRun
	if err := h.steady(ctx, blueText, settle(), &pre, &pre.Failback); err != nil {
		return err
	}
	for i := range h.o.Runs {
		r := HealthFailoverRun{Errors: pre.Errors}
		pre = HealthFailoverRun{}
		var err error
		if r.Failover, err = h.flip(ctx, false, &r); err != nil {
			return fmt.Errorf("failover %d: %w", i+1, err)
		}
		if err := h.steady(ctx, greenText, settle(), &r, &r.Failover); err != nil {
			return err
		}
		if r.Failback, err = h.flip(ctx, true, &r); err != nil {
			return fmt.Errorf("failback %d: %w", i+1, err)
		}
		if err := h.steady(ctx, blueText, settle(), &r, &r.Failback); err != nil {
			return err
		}
		h.rep.Runs = append(h.rep.Runs, r)
		if h.o.Progress != nil {
			fo, fb := r.Failover, r.Failback
			fmt.Fprintf(h.o.Progress, "run %d/%d: failover %s (gateway switched after %s, %d failed checks), failback %s (%s, %d passed checks), %d request errors\n",
				i+1, h.o.Runs, bench.Ms(fo.FirstResponseMs), bench.Ms(fo.GatewaySwitchMs), fo.Probes, bench.Ms(fb.FirstResponseMs), bench.Ms(fb.GatewaySwitchMs), fb.Probes, r.Errors)
		}
	}
	return nil
}

// poll sends one request and classifies the answer: the body of a 200 from one of the
// two apps, or a request error.
func (h *healthRun) poll(ctx context.Context, r *HealthFailoverRun) (string, bool) {
	h.rep.Requests++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.w.proxyURL, nil)
	if err != nil {
		h.requestError(r, err)
		return "", false
	}
	resp, err := h.client.Do(req)
	if err == nil {
		var b []byte
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		body := strings.TrimSpace(string(b))
		switch {
		case err != nil:
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		case body != blueText && body != greenText:
			err = fmt.Errorf("unexpected body %q", body)
		default:
			return body, true
		}
	}
	if ctx.Err() == nil {
		h.requestError(r, err)
	}
	return "", false
}

func (h *healthRun) requestError(r *HealthFailoverRun, err error) {
	r.Errors++
	h.rep.Errors++
	if len(h.rep.ErrorSamples) < maxErrorSamples {
		h.rep.ErrorSamples = append(h.rep.ErrorSamples, err.Error())
	}
}

func (h *healthRun) pause(ctx context.Context) error {
	t := time.NewTimer(h.o.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// steady polls for d, expecting every answer from want; answers from the other target
// count as after's WrongTarget.
func (h *healthRun) steady(ctx context.Context, want string, d time.Duration, r *HealthFailoverRun, after *SwitchRun) error {
	for end := time.Now().Add(d); time.Now().Before(end); {
		if body, ok := h.poll(ctx, r); ok && body != want {
			after.WrongTarget++
		}
		if err := h.pause(ctx); err != nil {
			return err
		}
	}
	return nil
}

// flip sets blue-pod's health at T0 and polls until the other target answers.
func (h *healthRun) flip(ctx context.Context, healthy bool, r *HealthFailoverRun) (SwitchRun, error) {
	want, priority, threshold := greenText, 1, h.o.UnhealthyThreshold
	if healthy {
		want, priority, threshold = blueText, 0, h.o.HealthyThreshold
	}
	// Far beyond the bound: the switch did not happen.
	limit := time.Duration(threshold+2)*(h.o.Interval+h.o.Timeout) + 5*time.Second
	requests0, errors0 := h.rep.Requests, r.Errors
	var res SwitchRun
	t0 := time.Now()
	h.w.blue.SetHealthy(healthy)
	for {
		if body, ok := h.poll(ctx, r); ok && body == want {
			res.FirstResponseMs = msOf(time.Since(t0))
			break
		}
		if time.Since(t0) > limit {
			return res, fmt.Errorf("%s did not answer within %v of /health turning healthy=%v (%s)", want, limit, healthy, h.w.diagnosis())
		}
		if err := h.pause(ctx); err != nil {
			return res, err
		}
	}
	res.Requests, res.Errors = h.rep.Requests-requests0, r.Errors-errors0
	res.GatewaySwitchMs = -1
	until := time.Now()
	if c, ok := h.w.cluster(); ok && c.ActivePriority == priority && !c.Since.Before(t0) {
		res.GatewaySwitchMs, until = msOf(c.Since.Sub(t0)), c.Since
	}
	for _, p := range h.w.blue.Probes() {
		if p.Healthy == healthy && !p.Time.Before(t0) && !p.Time.After(until) {
			res.Probes++
		}
	}
	return res, nil
}

// summarize fills the distributions from the runs.
func (h *healthRun) summarize() {
	iv := msOf(h.o.Interval)
	sum := func(threshold uint32, pick func(HealthFailoverRun) SwitchRun) SwitchReport {
		s := SwitchReport{Threshold: threshold, BoundMs: iv * float64(threshold), ExpectedMeanMs: iv * (float64(threshold) - 0.5)}
		var first, gw []float64
		for _, r := range h.rep.Runs {
			sr := pick(r)
			first = append(first, sr.FirstResponseMs)
			if sr.GatewaySwitchMs >= 0 {
				gw = append(gw, sr.GatewaySwitchMs)
			}
			if sr.FirstResponseMs <= s.BoundMs {
				s.WithinBound++
			}
			s.Requests += sr.Requests
			s.Errors += sr.Errors
			s.WrongTarget += sr.WrongTarget
		}
		s.FirstResponse, s.GatewaySwitch = bench.NewDist(first), bench.NewDist(gw)
		return s
	}
	h.rep.Failover = sum(h.o.UnhealthyThreshold, func(r HealthFailoverRun) SwitchRun { return r.Failover })
	h.rep.Failback = sum(h.o.HealthyThreshold, func(r HealthFailoverRun) SwitchRun { return r.Failback })
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Print writes the report as a table.
func (r *HealthFailoverReport) Print(w io.Writer) {
	c := r.Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "setup\t%s\n", r.Setup)
	fmt.Fprintf(tw, "health check\tinterval %s, timeout %s, unhealthy threshold %d, healthy threshold %d; polled every %s\n",
		bench.Ms(c.IntervalMs), bench.Ms(c.TimeoutMs), c.UnhealthyThreshold, c.HealthyThreshold, bench.Ms(c.PollIntervalMs))
	fmt.Fprintf(tw, "machine\t%d CPUs, %s, %s, load average %.2f at start\n", r.Machine.CPUs, r.Machine.Model, r.Machine.GoVersion, r.LoadAverage)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tn\tp50\tp90\tp99\tmax\tmean\tbound\texpected mean\twithin bound\t")
	row := func(name string, s SwitchReport, d bench.Dist, full bool) {
		b, e, wb := "", "", ""
		if full {
			b, e, wb = bench.Ms(s.BoundMs), bench.Ms(s.ExpectedMeanMs), fmt.Sprintf("%d/%d", s.WithinBound, d.N)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, d.N, bench.Ms(d.P50), bench.Ms(d.P90), bench.Ms(d.P99), bench.Ms(d.Max), bench.Ms(d.Mean), b, e, wb)
	}
	row("failover: first green-pod answer", r.Failover, r.Failover.FirstResponse, true)
	row("gateway switched", r.Failover, r.Failover.GatewaySwitch, false)
	row("failback: first blue-pod answer", r.Failback, r.Failback.FirstResponse, true)
	row("gateway switched", r.Failback, r.Failback.GatewaySwitch, false)
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "bound = interval × threshold; expected mean = (threshold − ½) × interval (the first check after T0 is uniform within an interval)\n")
	fmt.Fprintf(w, "request errors: %d of %d requests (%d of %d during failovers, %d of %d during failbacks); answers from the old target after a switch: %d\n",
		r.Errors, r.Requests, r.Failover.Errors, r.Failover.Requests, r.Failback.Errors, r.Failback.Requests, r.Failover.WrongTarget+r.Failback.WrongTarget)
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
}

// ErrRequestErrors reports that a benchmark saw failed requests (its report says which).
var ErrRequestErrors = errors.New("requests failed during the benchmark")

// Flags registers the health-failover benchmark's flags with their defaults.
func (o *HealthFailoverOptions) Flags(fs *pflag.FlagSet) {
	fs.IntVar(&o.Runs, "runs", 30, "failovers to measure, each followed by a failback")
	fs.DurationVar(&o.Interval, "interval", 200*time.Millisecond, "health check interval")
	fs.DurationVar(&o.Timeout, "timeout", 100*time.Millisecond, "health check timeout")
	fs.Uint32Var(&o.UnhealthyThreshold, "unhealthy-threshold", 1, "failed checks that make an endpoint unhealthy")
	fs.Uint32Var(&o.HealthyThreshold, "healthy-threshold", 1, "passed checks that make an unhealthy endpoint healthy")
	fs.DurationVar(&o.PollInterval, "poll-interval", 2*time.Millisecond, "pause between two requests of the polling client")
}

// Validate checks the flags' values.
func (o HealthFailoverOptions) Validate() error {
	if o.Runs < 1 || o.Interval <= 0 || o.Timeout <= 0 || o.PollInterval <= 0 {
		return errors.New("--runs must be at least 1 and --interval, --timeout, --poll-interval positive")
	}
	return nil
}
