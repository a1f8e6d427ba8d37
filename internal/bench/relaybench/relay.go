// Package relaybench is `meshrelay-bench relay` and `baseline`: the management server and N
// simulated agents (package sim) as child processes, registration, propagation, one-cluster
// changes, churn and the server's cost (relay.go, phases.go, print.go), the profiled server
// (profile.go), and go-control-plane's SnapshotCache serving the same clients for comparison
// (baseline.go).
package relaybench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/promtext"
)

// Options configure `meshrelay-bench relay`.
type Options struct {
	World sim.RelayWorld `json:"world"`
	// Changes is how many changes of each kind are measured.
	Changes int `json:"changes"`
	// RedisAddress, when set, is the servers' store; empty gives each its default bolt store.
	RedisAddress string `json:"redisAddress,omitempty"`
	// MemoryStore runs the servers on --store memory: nothing durable, so that a run beside a
	// bolt one says what writing outputs through before agents see them costs.
	MemoryStore bool `json:"memoryStore,omitempty"`
	// Replicas > 1 starts that many servers with --cluster-load-balancing (needs Redis).
	Replicas int `json:"replicas"`
	// Churn measures a window of endpoint churn in every cluster.
	Churn         bool          `json:"churn"`
	ChurnWindow   time.Duration `json:"churnWindow"`
	ChurnInterval time.Duration `json:"churnInterval"`
	// StartRate is how many agents start per second (0: all at once).
	StartRate int `json:"agentStartRate"`
	// Baseline also runs the go-control-plane baseline with the measured payload sizes.
	Baseline bool `json:"baseline"`
	// ServerCPUs and AgentCPUs pin the servers (and the baseline's server) and the
	// simulated agents (and the baseline's clients) to these CPUs (taskset lists; empty:
	// unpinned), so that the server's figures are not muddied by the agents' CPU.
	ServerCPUs string `json:"serverCPUs,omitempty"`
	AgentCPUs  string `json:"agentCPUs,omitempty"`
	// Profile runs the servers under the hidden `meshrelay-bench server` (the same server with pprof
	// and a forced-GC endpoint) and writes CPU profiles of each phase to WorkDir.
	Profile bool `json:"profile"`
	// ServerLogLevel is the servers' --log-level (default warn; info logs each translation
	// in --dir's server logs).
	ServerLogLevel string `json:"serverLogLevel,omitempty"`
	// SyncTimeout bounds the initial sync; 0 picks one from the number of agents.
	SyncTimeout time.Duration `json:"syncTimeout"`
	// Quick shortens the fixed pauses between phases (for tests).
	Quick bool `json:"quick,omitempty"`
	// Binary is the meshrelay-bench executable (default: this one).
	Binary string `json:"-"`
	// WorkDir holds data, state and logs; default a temporary directory removed at the end.
	WorkDir string `json:"-"`
	// StateRoot holds the agents' state directories (default: /dev/shm when present).
	StateRoot string `json:"-"`
	// Progress receives progress lines (nil: none).
	Progress io.Writer `json:"-"`
}

// Report is the result of `meshrelay-bench relay`.
type Report struct {
	Options      Options            `json:"options"`
	Machine      bench.Machine      `json:"machine"`
	Registration RegistrationReport `json:"registration"`
	Output       OutputReport       `json:"output"`
	Propagation  ChangeReport       `json:"propagation"`
	OneCluster   OneClusterReport   `json:"oneCluster"`
	Server       ServerReport       `json:"server"`
	Churn        *ChurnReport       `json:"churn,omitempty"`
	Baseline     *BaselineReport    `json:"baseline,omitempty"`
	Ratio        *RatioReport       `json:"ratioOursToBaseline,omitempty"`
	Sim          bench.ProcStats    `json:"simAgentsProcess"`
	// ServerCPUsAllowed is the CPU affinity the first server ran with (see Options.ServerCPUs).
	ServerCPUsAllowed string   `json:"serverCPUsAllowed"`
	Notes             []string `json:"notes,omitempty"`
}

// RegistrationReport times registration and the initial sync.
type RegistrationReport struct {
	Agents int `json:"agents"`
	// Connected: from the agents' process start to both streams open, per agent.
	Connected bench.Dist `json:"connected"`
	// Synced: from the agents' process start to the first output applied, per agent.
	Synced           bench.Dist `json:"synced"`
	AllSyncedSeconds float64    `json:"allSyncedSeconds"`
	SyncedAgents     int        `json:"syncedAgents"`
	// FullTranslationSeconds is the server's first translation (safe mode holds it until
	// every cluster reported).
	FullTranslationSeconds float64 `json:"fullTranslationSeconds"`
	Error                  string  `json:"error,omitempty"`
}

// OutputReport sizes what each agent holds.
type OutputReport struct {
	BytesPerAgent      float64 `json:"outputBytesPerAgent"`
	ResourcesPerAgent  float64 `json:"outputResourcesPerAgent"`
	InputBytesPerAgent float64 `json:"inputBytesPerAgent"`
}

// ChangeReport measures changes that reach every cluster.
type ChangeReport struct {
	Changes int `json:"changes"`
	// Latency is from the apply's HTTP 200 to each agent applying the output with the
	// change, over every agent × change.
	Latency bench.Dist `json:"latency"`
	// Distribution is Latency minus the translation time of that change.
	Distribution bench.Dist `json:"distribution"`
	// LastAgent is, per change, the latency of the last agent.
	LastAgent bench.Dist `json:"lastAgent"`
	// AllAcked is, per change, from the HTTP 200 until the server saw every ACK.
	AllAcked bench.Dist `json:"allAcked"`
	// ApplyMs is how long the apply request took (it waits while a translation runs).
	ApplyMs             bench.Dist `json:"applyRequest"`
	TranslationMs       float64    `json:"translationMsPerChange"`
	BytesPerChange      float64    `json:"bytesSentPerChange"`
	BytesPerAgentChange float64    `json:"bytesPerAgentPerChange"`
	CPUSecondsPerChange float64    `json:"serverCPUSecondsPerChange"`
	// AgentsCPUSecondsPerChange is the simulated agents' process CPU per change (applying,
	// hashing, persisting the output and ACKing, for every agent).
	AgentsCPUSecondsPerChange float64 `json:"agentsCPUSecondsPerChange"`
	Missing                   int     `json:"missing"`
	Error                     string  `json:"error,omitempty"`
}

// OneClusterReport measures a change to one cluster's route table.
type OneClusterReport struct {
	Changes       int        `json:"changes"`
	Latency       bench.Dist `json:"latency"`
	TranslationMs float64    `json:"translationMsPerChange"`
	// OtherAgentsBytes and OtherAgentsApplies are what every other agent received in the
	// windows (from the apply to 1 s after the target applied it): must be 0.
	OtherAgentsBytes   int     `json:"otherAgentsBytes"`
	OtherAgentsApplies int     `json:"otherAgentsApplies"`
	ServerBytesOthers  float64 `json:"serverBytesSentToOthers"`
	Error              string  `json:"error,omitempty"`
}

// ResourceSample is the servers' resource use at one moment (summed over replicas).
type ResourceSample struct {
	CPUSeconds     float64 `json:"cpuSeconds"`
	RSSBytes       float64 `json:"rssBytes"`
	PeakRSSBytes   float64 `json:"peakRSSBytes"`
	HeapInuseBytes float64 `json:"heapInuseBytes"`
	// HeapLiveBytes is the live heap: after a forced GC with --profile, otherwise
	// estimated as half the next GC goal minus stacks (GOGC=100).
	HeapLiveBytes   float64 `json:"heapLiveBytes"`
	StackInuseBytes float64 `json:"stackInuseBytes"`
	Goroutines      float64 `json:"goroutines"`
}

// ServerReport is the servers' resource use.
type ServerReport struct {
	Idle         ResourceSample `json:"idleBeforeAgents"`
	Connected    ResourceSample `json:"connectedIdle"`
	Disconnected ResourceSample `json:"afterAgentsLeft"`
	Final        ResourceSample `json:"beforeAgentsLeft"`
	// Per connected agent: (connected idle - idle before agents) / agents.
	HeapInusePerAgent  float64 `json:"heapInusePerAgentBytes"`
	HeapLivePerAgent   float64 `json:"heapLivePerAgentBytes"`
	GoroutinesPerAgent float64 `json:"goroutinesPerAgent"`
	StackPerAgent      float64 `json:"stackPerAgentBytes"`
	RSSPerAgent        float64 `json:"rssPerAgentBytes"`
	// Beyond snapshots: what disconnecting the agents freed (their snapshots stay on the
	// server), per agent.
	ConnectionHeapPerAgent float64 `json:"connectionHeapPerAgentBytes"`
	ConnectionLivePerAgent float64 `json:"connectionLivePerAgentBytes"`
	// ConnectionStackPerAgent is the goroutine stack memory freed when the agents left.
	ConnectionStackPerAgent float64 `json:"connectionStackPerAgentBytes"`
	IdleCPUPerSecond        float64 `json:"idleConnectedCPUSecondsPerSecond"`
	CPUSecondsTotal         float64 `json:"cpuSecondsTotal"`
	PeakRSSBytes            float64 `json:"peakRSSBytes"`
}

// ChurnReport measures endpoint churn in every cluster.
type ChurnReport struct {
	WindowSeconds   float64 `json:"windowSeconds"`
	InputsPerSecond float64 `json:"inputChangesPerSecond"`
	SentPerSecond   float64 `json:"inputChangesSentPerSecond"`
	// InputLag is, per sample and cluster, how long the server's input lagged the agent's
	// (from the agent emitting the first input the server does not have yet).
	InputLag bench.Dist `json:"inputLag"`
	// Samples trace the lag and the staleness (max staleSeconds of /status) over the window.
	Samples []ChurnSample `json:"samples"`
	// Marker: changes to every cluster applied during churn, from the apply's HTTP 200 and
	// from the request (the apply itself waits while a translation holds the server).
	Marker         bench.Dist `json:"markerLatency"`
	MarkerFromSent bench.Dist `json:"markerLatencyFromRequest"`
	ApplyMs        bench.Dist `json:"applyRequest"`
	Markers        int        `json:"markers"`
	MarkerMissing  int        `json:"markerMissing"`
	CPUPerSecond   float64    `json:"serverCPUSecondsPerSecond"`
	Translations   float64    `json:"translations"`
	TranslationMs  float64    `json:"translationMsMean"`
	BytesPerSecond float64    `json:"bytesSentPerSecond"`
	KeepsUp        bool       `json:"keepsUp"`
	Verdict        string     `json:"verdict"`
}

// ChurnSample is one look at the server during churn.
type ChurnSample struct {
	// AtSeconds is when the sample completed, from the window's start.
	AtSeconds float64 `json:"atSeconds"`
	// StatusMs is how long /status took to answer (it waits while a translation runs).
	StatusMs  float64 `json:"statusMs"`
	LagP99Ms  float64 `json:"inputLagP99Ms"`
	LagMaxMs  float64 `json:"inputLagMaxMs"`
	StaleMaxS float64 `json:"staleSecondsMax"`
}

// RatioReport compares distribution with the go-control-plane baseline.
type RatioReport struct {
	DistributionP50 float64 `json:"distributionP50"`
	DistributionP99 float64 `json:"distributionP99"`
	DistributionMax float64 `json:"distributionMax"`
	WholePathP50    float64 `json:"wholePathP50"`
	WholePathP99    float64 `json:"wholePathP99"`
	WholePathMax    float64 `json:"wholePathMax"`
	InitialSyncAll  float64 `json:"initialSyncAll"`
}

// relayServer is one server process of the benchmark.
type relayServer struct {
	c     *bench.Child
	relay string
	admin string
	debug string // profiling harness only
	data  string
}

// relayRun is the state of one `meshrelay-bench relay` run.
type relayRun struct {
	o       Options
	p       *bench.Procs
	dir     string
	token   string
	config  string
	servers []*relayServer
	sim     *bench.Child
	simAPI  string
	rep     *Report
}

func (r *relayRun) logf(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

// Run runs the relay benchmark: servers and simulated agents as child processes.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.World.Clusters < 1 || o.World.Services < 1 {
		return nil, errors.New("--agents and --services-per-cluster must be at least 1")
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.MemoryStore && o.RedisAddress != "" {
		return nil, errors.New("--memory-store contradicts --redis-address: drop one of them")
	}
	if o.Replicas > 1 && o.RedisAddress == "" {
		return nil, errors.New("--replicas > 1 needs a shared store: set --redis-address")
	}
	if o.Changes < 1 {
		o.Changes = 1
	}
	if o.ChurnWindow <= 0 {
		o.ChurnWindow = 20 * time.Second
	}
	if o.ChurnInterval <= 0 {
		o.ChurnInterval = time.Second
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = 3*time.Minute + time.Duration(o.World.Clusters)*300*time.Millisecond
	}
	dir, cleanup, err := bench.PrepareRun(&o.Binary, o.WorkDir, "relay")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &relayRun{o: o, rep: &Report{Options: o, Machine: bench.ThisMachine()}}
	r.dir = dir
	r.p = bench.NewProcs(o.Binary, dir)
	defer r.p.StopAll()
	stateRoot := o.StateRoot
	if stateRoot == "" {
		stateRoot = dir
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			stateRoot = "/dev/shm"
		}
	}
	sd, err := os.MkdirTemp(stateRoot, "meshrelay-bench-agents-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sd)

	if err := r.startServers(ctx); err != nil {
		return r.rep, err
	}
	r.pause(2 * time.Second)
	if r.rep.Server.Idle, err = r.sample(ctx); err != nil {
		return r.rep, err
	}
	var syncErr error
	r.profile(ctx, "initial-sync", func() {
		if syncErr = r.startSim(ctx, sd); syncErr == nil {
			syncErr = r.initialSync(ctx)
		}
	})
	if syncErr != nil {
		r.rep.Registration.Error = syncErr.Error()
		return r.rep, syncErr
	}
	if err := r.settle(ctx, 3*time.Second); err != nil {
		r.note("settle after initial sync: %v", err)
	}
	r.rep.Server.Connected, _ = r.sample(ctx)
	if o.Profile {
		r.saveProfiles(ctx, "connected")
	}
	idle0, _ := r.sample(ctx)
	t0 := time.Now()
	r.pause(5 * time.Second)
	idle1, _ := r.sample(ctx)
	r.rep.Server.IdleCPUPerSecond = (idle1.CPUSeconds - idle0.CPUSeconds) / time.Since(t0).Seconds()

	r.profile(ctx, "propagation", func() { r.propagation(ctx) })
	r.profile(ctx, "one-cluster", func() { r.oneCluster(ctx) })
	if o.Churn {
		r.profile(ctx, "churn", func() { r.churn(ctx) })
	}
	if err := r.settle(ctx, 3*time.Second); err != nil {
		r.note("settle before agents leave: %v", err)
	}
	r.rep.Server.Final, _ = r.sample(ctx)
	if st, err := bench.ReadProcStats(r.sim.Pid()); err == nil {
		r.rep.Sim = st
	}
	r.logf("stopping the simulated agents")
	_ = r.sim.Stop(20 * time.Second)
	r.pause(5 * time.Second)
	r.rep.Server.Disconnected, _ = r.sample(ctx)
	r.finishServer()
	for _, s := range r.servers {
		_ = s.c.Stop(10 * time.Second)
	}
	if o.Baseline {
		r.baseline(ctx)
	}
	return r.rep, nil
}

func (r *relayRun) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.rep.Notes = append(r.rep.Notes, msg)
	r.logf("note: %s", msg)
}

func (r *relayRun) startServers(ctx context.Context) error {
	r.token = filepath.Join(r.dir, "token")
	if err := os.WriteFile(r.token, []byte("bench-token-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"\n"), 0o600); err != nil {
		return err
	}
	r.config = filepath.Join(r.dir, "config")
	if err := os.MkdirAll(r.config, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.config, "clusters.yaml"), []byte(r.o.World.RelayConfig()), 0o644); err != nil {
		return err
	}
	for i := range r.o.Replicas {
		s, err := r.startServer(ctx, i)
		if err != nil {
			return err
		}
		r.servers = append(r.servers, s)
	}
	return nil
}

func (r *relayRun) startServer(ctx context.Context, i int) (*relayServer, error) {
	relay, err := bench.Loopback()
	if err != nil {
		return nil, err
	}
	admin, err := bench.Loopback()
	if err != nil {
		return nil, err
	}
	s := &relayServer{relay: relay, admin: admin, data: filepath.Join(r.dir, fmt.Sprintf("server-%d", i))}
	args := []string{bench.ProductCommand, "server"}
	if r.o.Profile {
		if s.debug, err = bench.Loopback(); err != nil {
			return nil, err
		}
		args = []string{"server", "--debug-address", s.debug}
	}
	// The admin API is plain HTTP on loopback: the bench measures the relay, and reads
	// /status and /metrics as often as it can.
	args = append(args, "--relay-address", relay, "--admin-address", admin, "--admin-plaintext", "--data-dir", s.data, "--config-dir", r.config,
		"--token-file", r.token, "--log-level", cmp.Or(r.o.ServerLogLevel, "warn"))
	if r.o.MemoryStore {
		args = append(args, "--store", "memory")
	}
	if r.o.RedisAddress != "" {
		args = append(args, "--redis-address", r.o.RedisAddress, "--redis-prefix", "bench"+strconv.FormatInt(time.Now().UnixNano(), 36))
	}
	if r.o.Replicas > 1 {
		args = append(args, "--cluster-load-balancing", "--leader-election", "--replica-id", fmt.Sprintf("replica-%d", i))
		if i > 0 {
			d0 := r.servers[0].data
			args = append(args, "--relay-ca-cert", filepath.Join(d0, "relay-ca.crt"), "--relay-ca-key", filepath.Join(d0, "relay-ca.key"),
				"--mesh-ca-cert", filepath.Join(d0, "mesh-ca.crt"), "--mesh-ca-key", filepath.Join(d0, "mesh-ca.key"))
		}
	}
	c, err := r.p.StartOn(r.o.ServerCPUs, fmt.Sprintf("server-%d", i), args...)
	if err != nil {
		return nil, err
	}
	s.c = c
	r.logf("server %d: relay %s admin %s (pid %d)", i, relay, admin, c.Pid())
	err = bench.WaitFor(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if c.Exited() {
			return false, fmt.Errorf("server exited: %s", bench.LogTail(c, 2000))
		}
		_, err := bench.HTTPGet(ctx, "http://"+admin+"/readyz")
		return err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("server %d not ready: %w", i, err)
	}
	if ps, err := bench.ReadProcStats(c.Pid()); err == nil && i == 0 { // taskset has exec'd it
		r.rep.ServerCPUsAllowed = ps.CPUsAllowed
	}
	return s, nil
}

func (r *relayRun) startSim(ctx context.Context, stateRoot string) error {
	api, err := bench.Loopback()
	if err != nil {
		return err
	}
	r.simAPI = api
	w := r.o.World
	args := []string{"sim-agents", "--agents", strconv.Itoa(w.Clusters), "--services-per-cluster", strconv.Itoa(w.Services),
		"--exported-percent", strconv.Itoa(w.ExportPercent), "--relay-address", r.servers[0].relay,
		"--token-file", r.token, "--relay-ca-file", filepath.Join(r.servers[0].data, "relay-ca.crt"), "--state-root", stateRoot,
		"--listen", api, "--start-rate", strconv.Itoa(r.o.StartRate), "--log-level", "warn"}
	r.sim, err = r.p.StartOn(r.o.AgentCPUs, "sim-agents", args...)
	if err != nil {
		return err
	}
	r.logf("simulated agents: %d (pid %d)", w.Clusters, r.sim.Pid())
	return nil
}

func (r *relayRun) agents(ctx context.Context) ([]sim.AgentState, error) {
	var out []sim.AgentState
	err := bench.GetJSON(ctx, "http://"+r.simAPI+"/agents", &out)
	return out, err
}

func (r *relayRun) aliveErr() error {
	for i, s := range r.servers {
		if s.c.Exited() {
			return fmt.Errorf("server %d exited: %s", i, bench.LogTail(s.c, 3000))
		}
	}
	if r.sim != nil && r.sim.Exited() {
		return fmt.Errorf("simulated agents exited: %s", bench.LogTail(r.sim, 3000))
	}
	return nil
}

func (r *relayRun) initialSync(ctx context.Context) error {
	n := r.o.World.Clusters
	var last []sim.AgentState
	lastLog := time.Now()
	err := bench.WaitFor(ctx, r.o.SyncTimeout, 200*time.Millisecond, func() (bool, error) {
		if err := r.aliveErr(); err != nil {
			return false, err
		}
		st, err := r.agents(ctx)
		if err != nil {
			return false, err
		}
		last = st
		synced, connected := 0, 0
		for _, a := range st {
			if a.FirstApplied > 0 {
				synced++
			}
			if a.FirstConnected > 0 {
				connected++
			}
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			r.logf("initial sync: %d/%d connected, %d/%d synced", connected, n, synced, n)
		}
		return synced == n, nil
	})
	reg := &r.rep.Registration
	reg.Agents = n
	var conn, synced []float64
	var maxSynced int64
	var start int64
	for _, a := range last {
		if start == 0 || (a.Started > 0 && a.Started < start) {
			start = a.Started
		}
	}
	for _, a := range last {
		if a.FirstConnected > 0 {
			conn = append(conn, float64(a.FirstConnected-start)/1e6)
		}
		if a.FirstApplied > 0 {
			synced = append(synced, float64(a.FirstApplied-start)/1e6)
			maxSynced = max(maxSynced, a.FirstApplied)
			reg.SyncedAgents++
		}
	}
	reg.Connected, reg.Synced = bench.NewDist(conn), bench.NewDist(synced)
	if maxSynced > 0 {
		reg.AllSyncedSeconds = float64(maxSynced-start) / 1e9
	}
	if m, err := bench.ScrapeMetrics(ctx, r.servers[0].admin); err == nil {
		reg.FullTranslationSeconds = m.Sum("meshrelay_translation_duration_seconds_sum")
	}
	var outB, outR float64
	for _, a := range last {
		outB += float64(a.OutputBytes)
		outR += float64(a.OutputResources)
	}
	if len(last) > 0 {
		r.rep.Output.BytesPerAgent, r.rep.Output.ResourcesPerAgent = outB/float64(len(last)), outR/float64(len(last))
	}
	in := 0
	for _, o := range r.o.World.ClusterInput(0) {
		in += len(o.Raw)
	}
	r.rep.Output.InputBytesPerAgent = float64(in)
	if err != nil {
		return fmt.Errorf("initial sync: %d/%d agents synced: %w", reg.SyncedAgents, n, err)
	}
	r.logf("initial sync: all %d agents synced in %.2f s (first translation %.2f s)", n, reg.AllSyncedSeconds, reg.FullTranslationSeconds)
	return nil
}

// status reads /status of every server; a cluster is in sync when any server says so.
func (r *relayRun) inSync(ctx context.Context) (int, float64, error) {
	in := map[string]bool{}
	stale := 0.0
	for _, s := range r.servers {
		var st configapi.ServerStatus
		if err := bench.GetJSON(ctx, "http://"+s.admin+"/status", &st); err != nil {
			return 0, 0, err
		}
		for _, c := range st.Clusters {
			in[c.Name] = in[c.Name] || c.InSync
			stale = max(stale, c.StaleSeconds)
		}
	}
	n := 0
	for _, ok := range in {
		if ok {
			n++
		}
	}
	return n, stale, nil
}

// settle waits until every cluster is in sync, then quiet more.
func (r *relayRun) settle(ctx context.Context, quiet time.Duration) error {
	err := bench.WaitFor(ctx, 2*time.Minute, 200*time.Millisecond, func() (bool, error) {
		if err := r.aliveErr(); err != nil {
			return false, err
		}
		n, _, err := r.inSync(ctx)
		return n == r.o.World.Clusters, err
	})
	r.pause(quiet)
	return err
}

// pause sleeps d, or a fifth of it in quick mode.
func (r *relayRun) pause(d time.Duration) {
	if r.o.Quick {
		d /= 5
	}
	time.Sleep(d)
}

// sample sums the servers' resource use.
func (r *relayRun) sample(ctx context.Context) (ResourceSample, error) {
	var s ResourceSample
	for _, srv := range r.servers {
		if srv.c.Exited() {
			continue
		}
		if srv.debug != "" {
			var ms runtime.MemStats
			if err := bench.PostJSON(ctx, "http://"+srv.debug+"/debug/gc", nil, &ms); err == nil {
				s.HeapLiveBytes += float64(ms.HeapAlloc)
			}
		}
		ps, err := bench.ReadProcStats(srv.c.Pid())
		if err != nil {
			return s, err
		}
		m, err := bench.ScrapeMetrics(ctx, srv.admin)
		if err != nil {
			return s, err
		}
		s.CPUSeconds += ps.CPUSeconds
		s.RSSBytes += float64(ps.RSSBytes)
		s.PeakRSSBytes += float64(ps.HWMBytes)
		s.HeapInuseBytes += m.Sum("go_memstats_heap_inuse_bytes")
		s.StackInuseBytes += m.Sum("go_memstats_stack_inuse_bytes")
		s.Goroutines += m.Sum("go_goroutines")
		if srv.debug == "" {
			s.HeapLiveBytes += max(0, (m.Sum("go_memstats_next_gc_bytes")-m.Sum("go_memstats_stack_inuse_bytes"))/2)
		}
	}
	return s, nil
}

func (r *relayRun) finishServer() {
	s := &r.rep.Server
	n := float64(r.o.World.Clusters)
	s.HeapInusePerAgent = (s.Connected.HeapInuseBytes - s.Idle.HeapInuseBytes) / n
	s.HeapLivePerAgent = (s.Connected.HeapLiveBytes - s.Idle.HeapLiveBytes) / n
	s.GoroutinesPerAgent = (s.Connected.Goroutines - s.Idle.Goroutines) / n
	s.StackPerAgent = (s.Connected.StackInuseBytes - s.Idle.StackInuseBytes) / n
	s.RSSPerAgent = (s.Connected.RSSBytes - s.Idle.RSSBytes) / n
	s.ConnectionHeapPerAgent = (s.Final.HeapInuseBytes - s.Disconnected.HeapInuseBytes) / n
	s.ConnectionLivePerAgent = (s.Final.HeapLiveBytes - s.Disconnected.HeapLiveBytes) / n
	s.ConnectionStackPerAgent = (s.Final.StackInuseBytes - s.Disconnected.StackInuseBytes) / n
	s.CPUSecondsTotal = max(s.Disconnected.CPUSeconds, s.Final.CPUSeconds)
	s.PeakRSSBytes = max(s.Disconnected.PeakRSSBytes, s.Final.PeakRSSBytes)
}

// serverMetrics sums the servers' metrics.
func (r *relayRun) serverMetrics(ctx context.Context, at windowEdge) (promtext.Samples, float64, error) {
	var all promtext.Samples
	cpu := 0.0
	readCPU := func(s *relayServer) {
		if ps, err := bench.ReadProcStats(s.c.Pid()); err == nil {
			cpu += ps.CPUSeconds
		}
	}
	for _, s := range r.servers {
		if s.c.Exited() {
			continue
		}
		if at == windowEnd {
			readCPU(s)
		}
		m, err := bench.ScrapeMetrics(ctx, s.admin)
		if err != nil {
			return all, 0, err
		}
		all = append(all, m...)
		if at == windowStart {
			readCPU(s)
		}
	}
	return all, cpu, nil
}

// windowEdge says which end of a measured window serverMetrics is called at: it reads the
// servers' CPU time after scraping at the start and before at the end, so that the window's
// CPU leaves out the scrapes (at 1,000 clusters one costs the server about 80 ms).
type windowEdge int

const (
	windowStart windowEdge = iota
	windowEnd
)

// profile runs f, with a CPU profile of the servers written when profiling.
func (r *relayRun) profile(ctx context.Context, name string, f func()) {
	if !r.o.Profile {
		f()
		return
	}
	var wg sync.WaitGroup
	pctx, cancel := context.WithCancel(ctx)
	for i, s := range r.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(r.dir, fmt.Sprintf("cpu-%s-server-%d.pprof", name, i))
			if err := captureProfile(pctx, s.debug, path); err != nil {
				r.note("profile %s: %v", name, err)
			} else {
				r.logf("cpu profile: %s", path)
			}
		}()
	}
	f()
	cancel()
	wg.Wait()
}

// baseline runs the go-control-plane baseline with this run's per-agent sizes and
// compares.
func (r *relayRun) baseline(ctx context.Context) {
	o := BaselineOptions{Clients: r.o.World.Clusters, PayloadBytes: int(r.rep.Output.BytesPerAgent), Quick: r.o.Quick,
		ChangeBytes: int(r.rep.Propagation.BytesPerAgentChange), Changes: r.o.Changes, Binary: r.o.Binary, Progress: r.o.Progress,
		ServerCPUs: r.o.ServerCPUs, ClientCPUs: r.o.AgentCPUs}
	if r.o.WorkDir != "" {
		o.WorkDir = filepath.Join(r.o.WorkDir, "baseline")
		_ = os.MkdirAll(o.WorkDir, 0o755)
	}
	b, err := Baseline(ctx, o)
	r.rep.Baseline = b
	if err != nil {
		r.note("baseline: %v", err)
		return
	}
	ratio := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	p := r.rep.Propagation
	r.rep.Ratio = &RatioReport{
		DistributionP50: ratio(p.Distribution.P50, b.Latency.P50), DistributionP99: ratio(p.Distribution.P99, b.Latency.P99),
		DistributionMax: ratio(p.Distribution.Max, b.Latency.Max),
		WholePathP50:    ratio(p.Latency.P50, b.Latency.P50), WholePathP99: ratio(p.Latency.P99, b.Latency.P99), WholePathMax: ratio(p.Latency.Max, b.Latency.Max),
		InitialSyncAll: ratio(r.rep.Registration.AllSyncedSeconds, b.AllSyncedSeconds),
	}
}

// saveProfiles writes the servers' heap and goroutine profiles (profiling harness only).
func (r *relayRun) saveProfiles(ctx context.Context, phase string) {
	for i, s := range r.servers {
		for _, p := range []struct{ name, query string }{{"heap", "heap"}, {"goroutine", "goroutine?debug=1"}} {
			b, err := bench.HTTPGet(ctx, "http://"+s.debug+"/debug/pprof/"+p.query)
			if err != nil {
				r.note("%s profile: %v", p.name, err)
				continue
			}
			path := filepath.Join(r.dir, fmt.Sprintf("%s-%s-server-%d.pprof", p.name, phase, i))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				r.note("%s profile: %v", p.name, err)
				continue
			}
			r.logf("%s profile: %s", p.name, path)
		}
	}
}

// Flags registers the relay benchmark's flags with their defaults.
func (o *Options) Flags(fs *pflag.FlagSet) {
	o.World.Flags(fs)
	fs.IntVar(&o.Changes, "changes", 10, "changes of each kind to measure")
	fs.StringVar(&o.RedisAddress, "redis-address", "", "Redis for the servers; empty gives each server its own bolt store in its --data-dir")
	fs.BoolVar(&o.MemoryStore, "memory-store", false, "run the servers on --store memory (nothing durable): beside a bolt run, what writing outputs through before agents see them costs")
	fs.IntVar(&o.Replicas, "replicas", 1, "server replicas (> 1 needs --redis-address; starts them with --cluster-load-balancing)")
	fs.BoolVar(&o.Churn, "churn", false, "also measure endpoint churn in every cluster")
	fs.DurationVar(&o.ChurnWindow, "churn-window", 20*time.Second, "measured churn window")
	fs.DurationVar(&o.ChurnInterval, "churn-interval", time.Second, "each cluster changes one endpoint this often during churn")
	fs.IntVar(&o.StartRate, "start-rate", 0, "agents started per second (0: all at once)")
	fs.BoolVar(&o.Baseline, "baseline", false, "also run the go-control-plane baseline with the measured payload sizes and print ours/baseline")
	fs.StringVar(&o.ServerCPUs, "server-cpus", "", "pin the servers (and the baseline's server) to these CPUs, taskset list form (e.g. 0)")
	fs.StringVar(&o.AgentCPUs, "agent-cpus", "", "pin the simulated agents (and the baseline's clients) to these CPUs, taskset list form (e.g. 1)")
	fs.BoolVar(&o.Profile, "profile", false, "run the servers with pprof (the hidden `server` command), force GC for exact heap figures, write CPU profiles per phase to --dir")
	fs.StringVar(&o.ServerLogLevel, "server-log-level", "warn", "the servers' --log-level (info logs every translation in --dir's server logs)")
	fs.DurationVar(&o.SyncTimeout, "sync-timeout", 0, "time allowed for the initial sync (default 3m + 300ms per agent)")
	fs.StringVar(&o.WorkDir, "dir", "", "working directory for data, logs and profiles (default: a temporary directory removed at exit)")
	fs.StringVar(&o.StateRoot, "state-root", "", "where the agents keep their state (default /dev/shm)")
}
