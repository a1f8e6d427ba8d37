package bench

import (
	"bytes"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/failoverbench"
	"github.com/meshrelay/meshrelay/internal/bench/relaybench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
)

// The smoke tests run `meshrelay-bench relay` and `meshrelay-bench failover` small, through the same
// code as the commands (the built binary as child processes), and check that the reports
// are sane. They measure nothing: performance figures come from the commands (see the
// README's Performance section).

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/meshrelay-bench once per test process (without -race: the children are
// measured, not checked; set MESHRELAY_BENCH_RACE=1 to build them with -race).
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshrelay-bench-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "meshrelay-bench")
		args := []string{"build", "-o", binPath, "../cmd/meshrelay-bench"}
		if os.Getenv("MESHRELAY_BENCH_RACE") != "" {
			args = []string{"build", "-race", "-o", binPath, "../cmd/meshrelay-bench"}
		}
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		t.Fatalf("build meshrelay-bench: %v", buildErr)
	}
	return binPath
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func TestRelaySmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const agents = 20
	rep, err := relaybench.Run(t.Context(), relaybench.Options{
		World:   sim.RelayWorld{Clusters: agents, Services: 10, ExportPercent: 10},
		Changes: 3, Churn: true, ChurnWindow: 3 * time.Second, ChurnInterval: time.Second,
		Baseline: true, Quick: true, Binary: binary(t), WorkDir: t.TempDir(), StateRoot: t.TempDir(), Progress: testWriter{t},
		ServerCPUs: "0", AgentCPUs: "0", // CPU 0 exists everywhere: runs the pinned path
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ServerCPUsAllowed != "0" || rep.Sim.CPUsAllowed != "0" {
		t.Errorf("pinned to CPU 0, the server ran on CPUs %q and the agents on %q", rep.ServerCPUsAllowed, rep.Sim.CPUsAllowed)
	}
	if rep.Registration.SyncedAgents != agents || rep.Registration.AllSyncedSeconds <= 0 {
		t.Errorf("registration: %+v", rep.Registration)
	}
	if rep.Output.ResourcesPerAgent < 10 || rep.Output.BytesPerAgent <= 0 {
		t.Errorf("output per agent: %+v", rep.Output)
	}
	p := rep.Propagation
	if p.Error != "" || p.Missing != 0 || p.Latency.N != 3*agents || !p.Latency.Ordered() || p.Latency.P50 <= 0 {
		t.Errorf("propagation: %+v", p)
	}
	if !p.Distribution.Ordered() || p.Distribution.Max > p.Latency.Max || p.BytesPerChange <= 0 {
		t.Errorf("propagation distribution: %+v", p)
	}
	o := rep.OneCluster
	if o.Error != "" || o.Latency.N != 3 || !o.Latency.Ordered() {
		t.Errorf("one-cluster change: %+v", o)
	}
	if o.OtherAgentsBytes != 0 || o.OtherAgentsApplies != 0 || o.ServerBytesOthers != 0 {
		t.Errorf("one-cluster change reached other agents: %d bytes in %d applies (server counted %.0f)", o.OtherAgentsBytes, o.OtherAgentsApplies, o.ServerBytesOthers)
	}
	s := rep.Server
	if s.Idle.Goroutines <= 0 || s.Connected.Goroutines <= s.Idle.Goroutines || s.GoroutinesPerAgent <= 0 || s.Connected.HeapInuseBytes <= 0 {
		t.Errorf("server resources: %+v", s)
	}
	if s.CPUSecondsTotal <= 0 || s.PeakRSSBytes <= 0 {
		t.Errorf("server totals: %+v", s)
	}
	c := rep.Churn
	if c == nil || c.InputsPerSecond <= 0 || c.Markers == 0 || c.MarkerMissing != 0 || !c.Marker.Ordered() || len(c.Samples) == 0 {
		t.Errorf("churn: %+v", c)
	}
	b := rep.Baseline
	if b == nil || b.Missing != 0 || b.Latency.N != 3*agents || !b.Latency.Ordered() || b.AllSyncedSeconds <= 0 || rep.Ratio == nil || rep.Ratio.WholePathP99 <= 0 {
		t.Errorf("baseline: %+v ratio %+v", b, rep.Ratio)
	}
	title, series := rep.Plot()
	svg := bench.LatencySVG(title, series)
	if err := xml.Unmarshal(svg, new(struct{})); err != nil || len(series) != 3 || !bytes.Contains(svg, []byte("go-control-plane")) {
		t.Errorf("plot of %d series: %v\n%s", len(series), err, svg)
	}
	rep.Print(testWriter{t})
}

func TestFailoverSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not on PATH (%v); install it, e.g. apt-get install -y redis-server", err)
	}
	rep, err := failoverbench.Run(t.Context(), failoverbench.Options{
		World: sim.RelayWorld{Clusters: 10, Services: 10, ExportPercent: 10}, Runs: 1,
		Scenarios: []string{"replica", "region", "restart"}, Binary: binary(t), WorkDir: t.TempDir(), Progress: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep.Errors {
		t.Error(e)
	}
	for _, s := range []*failoverbench.ScenarioReport{rep.Replica, rep.Region, rep.Restart} {
		if s == nil || len(s.Runs) != 1 || s.Back.N != 1 || s.InSync.N != 1 || s.Runs[0].Affected == 0 {
			t.Errorf("scenario %+v", s)
			continue
		}
		if r := s.Runs[0]; r.FewerResources != 0 {
			t.Errorf("%s: %d outputs with fewer resources", s.Name, r.FewerResources)
		}
	}
	if rep.Region != nil && len(rep.Region.Runs) == 1 && rep.Region.Runs[0].ContentChanges != 0 {
		t.Errorf("regional failover changed %d outputs", rep.Region.Runs[0].ContentChanges)
	}
	rep.Print(testWriter{t})
}

// The redis-failover scenario measures the three steps of a Sentinel failover, and no agent
// applies an output with fewer resources.
func TestRedisFailoverSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	rep, err := failoverbench.Run(t.Context(), failoverbench.Options{
		World: sim.RelayWorld{Clusters: 5, Services: 5, ExportPercent: 20}, Runs: 1,
		Scenarios: []string{"redis-failover"}, Binary: binary(t), WorkDir: t.TempDir(), Progress: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep.Errors {
		t.Error(e)
	}
	s := rep.RedisFailover
	if s == nil || len(s.Runs) != 1 || s.Promoted.N != 1 || s.Writing.N != 1 || s.ChangeReached.N != 1 {
		t.Fatalf("scenario %+v", s)
	}
	if r := s.Runs[0]; r.FewerResources != 0 {
		t.Errorf("%d outputs with fewer resources after the Redis failover", r.FewerResources)
	}
	rep.Print(testWriter{t})
}
