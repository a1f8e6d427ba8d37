package bench

import (
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshrelay/meshrelay/internal/bench/gatewaybench"
)

// The gateway smoke tests run `meshrelay-bench health-failover` and `meshrelay-bench gateway` tiny, in this
// process, through the same functions as the commands, and check that the reports are sane.

func TestHealthFailoverSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gateways")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const interval = 200 * time.Millisecond
	rep, err := gatewaybench.HealthFailover(t.Context(), gatewaybench.HealthFailoverOptions{
		Runs: 3, Interval: interval, Timeout: 100 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1,
		Log: slog.New(slog.DiscardHandler), Progress: t.Output(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(t.Output())
	if len(rep.Runs) != 3 {
		t.Fatalf("%d runs, want 3", len(rep.Runs))
	}
	slack := float64(interval/time.Millisecond) + 1000 // interval × threshold + 1 s
	for name, s := range map[string]gatewaybench.SwitchReport{"failover": rep.Failover, "failback": rep.Failback} {
		d := s.FirstResponse
		if d.N != 3 || !d.Ordered() || d.P50 <= 0 || d.Max > slack {
			t.Errorf("%s: first response %+v, want 3 ordered samples in (0, %v ms]", name, d, slack)
		}
		if g := s.GatewaySwitch; g.N != 3 || !g.Ordered() || g.Max > d.Max {
			t.Errorf("%s: gateway switch %+v, want 3 ordered samples, none after the first response (%+v)", name, g, d)
		}
		if s.BoundMs != 200 || s.ExpectedMeanMs != 100 || s.Errors != 0 || s.WrongTarget != 0 {
			t.Errorf("%s: %+v", name, s)
		}
	}
	for i, r := range rep.Runs {
		if r.Failover.Probes != 1 || r.Failback.Probes != 1 {
			t.Errorf("run %d: %d failed and %d passed checks until the switch, want 1 and 1 (thresholds)", i+1, r.Failover.Probes, r.Failback.Probes)
		}
	}
	if rep.Errors != 0 || rep.Requests == 0 {
		t.Errorf("%d request errors of %d: %v", rep.Errors, rep.Requests, rep.ErrorSamples)
	}
}

func TestGatewayLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs gateways")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rep, err := gatewaybench.Run(t.Context(), gatewaybench.Options{
		Connections: 4, Duration: time.Second, Warmup: 200 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler), Progress: t.Output(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(t.Output())
	want := []string{"direct", "gateway", "gateway-mtls-gateway"}
	if len(rep.Targets) != len(want) {
		t.Fatalf("%d targets, want %v", len(rep.Targets), want)
	}
	for i, tg := range rep.Targets {
		l := tg.Latency
		if tg.Name != want[i] || tg.Requests < 10 || tg.RequestsPerSecond <= 0 || l.N != tg.Requests || !l.Ordered() || l.P50 <= 0 {
			t.Errorf("target %d: %+v", i, tg)
		}
		if tg.Errors != 0 {
			t.Errorf("%s: %d request errors: %v", tg.Name, tg.Errors, tg.ErrorSamples)
		}
		if tg.ThroughputVsDirect <= 0 || tg.CPUCores <= 0 {
			t.Errorf("%s: throughput vs direct %v, CPU cores %v", tg.Name, tg.ThroughputVsDirect, tg.CPUCores)
		}
	}
}
