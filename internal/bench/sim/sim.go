// Package sim runs many real relay agents (internal/agent) in one process for the relay and
// failover benchmarks (the hidden `meshrelay-bench sim-agents`): each with an in-memory
// discovery source of the generated world (world.go, RelayWorld) and a sink that counts what
// it applies, reporting over a loopback HTTP API. Their relay flags are the real agent's.
package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/agent"
	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
)

// Config configures `meshrelay-bench sim-agents`: many real relay agents (internal/agent)
// in one process, each with an in-memory discovery source and a counting sink, reporting
// over a small loopback HTTP API (see simAPI).
type Config struct {
	World RelayWorld
	// First is the index of the first simulated cluster; Agents run First…First+Agents-1.
	First, Agents int
	// Agent is every agent's configuration but its cluster and state directory: the relay
	// address, token file, CA bundle, TLS mode and name, DNS server, resolve interval and
	// backoff, set by the real agent's flags (agent.Config.RegisterRelayFlags).
	Agent agent.Config
	// StateRoot holds one state directory per agent.
	StateRoot string
	// Listen is the address of the report API.
	Listen string
	// StartRate is how many agents start per second; 0 starts them all at once.
	StartRate int
	// RegisterAddress, when set, is where the sim registers every agent (token + CSR,
	// writing the certificate into its state directory) before starting it: agents
	// register by dialing their relay address with the system resolver, so a relay name
	// served only by DNSServer would not resolve for registration.
	RegisterAddress string
}

// simAgent is one simulated cluster.
type simAgent struct {
	idx    int
	name   string
	src    *memSource
	sink   *countSink
	agent  *agent.Agent
	status simStatus
}

// simStatus is the connection history of one agent, sampled by the sim's poller.
type simStatus struct {
	mu             sync.Mutex // guards everything below
	started        int64
	firstConnected int64
	connected      bool
	server         string
	lastUp         int64 // last transition to connected
	lastDown       int64 // last transition to disconnected
	ups            int
}

// Run runs the simulated agents until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Agents < 1 {
		return errors.New("sim: at least one agent")
	}
	bench.RaiseFileLimit()
	tok, err := tokenfile.Read(cfg.Agent.TokenFile)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	agents := make([]*simAgent, cfg.Agents)
	for k := range agents {
		i := cfg.First + k
		sa := &simAgent{idx: i, name: bench.ClusterName(i), src: newMemSource(cfg.World, i), sink: newCountSink()}
		ac := cfg.Agent
		ac.Cluster, ac.TokenFile, ac.Token, ac.StateDir = sa.name, "", tok, filepath.Join(cfg.StateRoot, sa.name)
		a, err := agent.New(ac, sa.src, sa.sink, log.With("cluster", sa.name), nil)
		if err != nil {
			return fmt.Errorf("sim: agent %s: %w", sa.name, err)
		}
		sa.agent = a
		agents[k] = sa
	}
	if cfg.RegisterAddress != "" {
		if err := preRegister(ctx, cfg, agents, tok); err != nil {
			return err
		}
	}
	api := &simAPI{agents: agents}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("sim: listen: %w", err)
	}
	srv := &http.Server{Handler: api.handler(ctx), ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("sim: report api: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error { api.poll(gctx); return nil })
	g.Go(func() error { api.churnLoop(gctx); return nil })
	var pace <-chan time.Time
	if cfg.StartRate > 0 {
		t := time.NewTicker(time.Second / time.Duration(cfg.StartRate))
		defer t.Stop()
		pace = t.C
	}
	for _, sa := range agents {
		if pace != nil {
			select {
			case <-gctx.Done():
				return g.Wait()
			case <-pace:
			}
		}
		sa.status.mu.Lock()
		sa.status.started = time.Now().UnixNano()
		sa.status.mu.Unlock()
		g.Go(func() error {
			if err := sa.agent.Start(gctx); err != nil {
				log.Error("simulated agent ended", "cluster", sa.name, "error", err)
			}
			return nil
		})
	}
	return g.Wait()
}

// memSource is an in-memory discovery source; churn replaces one endpoint of one service.
type memSource struct {
	world   RelayWorld
	idx     int
	changed chan struct{}

	mu      sync.Mutex // guards everything below
	objs    []resource.Object
	res     []snapshot.Resource
	slices  map[int]int // service → index of its EndpointSlice in objs
	gen     int
	history []InputRecord // the last inputs emitted, oldest first
}

type InputRecord struct {
	Hash string `json:"hash"`
	At   int64  `json:"at"`
}

const inputHistory = 64

func newMemSource(w RelayWorld, i int) *memSource {
	objs := w.ClusterInput(i)
	s := &memSource{world: w, idx: i, objs: objs, changed: make(chan struct{}, 1), slices: map[int]int{}}
	s.res = make([]snapshot.Resource, len(objs))
	for k, o := range objs {
		s.res[k] = o.Resource()
		if o.Kind == "EndpointSlice" && o.Namespace == "bench" {
			var n int
			if _, err := fmt.Sscanf(o.Name, "svc-%d-1", &n); err == nil {
				s.slices[n] = k
			}
		}
	}
	s.record()
	return s
}

// record notes the current input's content hash (the same the agent computes).
func (s *memSource) record() {
	h := snapshot.New(0, 0, s.res).Hash
	s.history = append(s.history, InputRecord{Hash: h, At: time.Now().UnixNano()})
	if len(s.history) > inputHistory {
		s.history = s.history[len(s.history)-inputHistory:]
	}
}

func (s *memSource) Start(ctx context.Context, emit func([]resource.Object)) error {
	for {
		s.mu.Lock()
		objs := append([]resource.Object(nil), s.objs...)
		s.mu.Unlock()
		emit(objs)
		select {
		case <-ctx.Done():
			return nil
		case <-s.changed:
		}
	}
}

// churn moves the first endpoint of a random service to a new address.
func (s *memSource) churn(rng *rand.Rand) {
	s.mu.Lock()
	s.gen++
	svc := rng.IntN(s.world.Services)
	o := ChurnedEndpointSlice(s.idx, svc, s.gen)
	k := s.slices[svc]
	s.objs[k], s.res[k] = o, o.Resource()
	s.record()
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *memSource) inputs() []InputRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]InputRecord(nil), s.history...)
}

// countSink records what an agent applies: when, how many bytes changed, and when each
// marker host first appeared.
type countSink struct {
	mu       sync.Mutex // guards everything below
	held     map[string]string
	hash     string
	events   []ApplyEvent
	markers  map[string]int64
	first    int64
	outBytes int
	outRes   int
}

// ApplyEvent is one applied output snapshot.
type ApplyEvent struct {
	At       int64  `json:"at"`
	Version  uint64 `json:"version"`
	Epoch    uint64 `json:"epoch"`
	Bytes    int    `json:"bytes"`
	Upserts  int    `json:"upserts"`
	Removals int    `json:"removals"`
	// Resources is the number of resources of the applied output.
	Resources int `json:"resources"`
	// Changed is false when the content hash stayed (only version or epoch moved).
	Changed bool `json:"changed"`
}

func newCountSink() *countSink {
	return &countSink{held: map[string]string{}, markers: map[string]int64{}}
}

func (s *countSink) Apply(_ context.Context, snap *snapshot.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := ApplyEvent{Version: snap.Version, Epoch: snap.Epoch, Changed: snap.Hash != s.hash, Resources: len(snap.Resources)}
	total := 0
	for k, r := range snap.Resources {
		total += len(r.Body)
		if s.held[k] == r.Hash {
			continue
		}
		ev.Upserts++
		ev.Bytes += len(r.Body) + len(r.Key) + len(r.Hash) // as the server counts it
		s.scanLocked(r.Body)
	}
	for k := range s.held {
		if _, ok := snap.Resources[k]; !ok {
			ev.Removals++
			ev.Bytes += len(k)
		}
	}
	s.held = snap.ResourceHashes()
	s.hash, s.outBytes, s.outRes = snap.Hash, total, len(snap.Resources)
	ev.At = time.Now().UnixNano()
	if s.first == 0 {
		s.first = ev.At
	}
	for id, at := range s.markers {
		if at == 0 {
			s.markers[id] = ev.At
		}
	}
	s.events = append(s.events, ev)
	return nil
}

// scanLocked notes the marker hosts in body (their time is filled in by Apply).
func (s *countSink) scanLocked(body []byte) {
	prefix := []byte(MarkerPrefix)
	for {
		i := bytes.Index(body, prefix)
		if i < 0 {
			return
		}
		body = body[i+len(prefix):]
		j := bytes.IndexAny(body, `."`)
		if j < 0 {
			return
		}
		id := string(body[:j])
		if _, seen := s.markers[id]; !seen {
			s.markers[id] = 0
		}
		body = body[j:]
	}
}

// simAPI serves the sim's reports.
type simAPI struct {
	agents []*simAgent

	churnMu  sync.Mutex // guards churnReq
	churnReq chan time.Duration
}

// AgentState is one agent's row of GET /agents.
type AgentState struct {
	Name            string `json:"name"`
	Started         int64  `json:"started"`
	FirstConnected  int64  `json:"firstConnected"`
	FirstApplied    int64  `json:"firstApplied"`
	Connected       bool   `json:"connected"`
	Server          string `json:"server,omitempty"`
	LastUp          int64  `json:"lastUp"`
	LastDown        int64  `json:"lastDown"`
	Ups             int    `json:"ups"`
	OutputVersion   uint64 `json:"outputVersion"`
	OutputEpoch     uint64 `json:"outputEpoch"`
	OutputHash      string `json:"outputHash"`
	OutputBytes     int    `json:"outputBytes"`
	OutputResources int    `json:"outputResources"`
	Applies         int    `json:"applies"`
	BytesReceived   int    `json:"bytesReceived"`
	InputHash       string `json:"inputHash"`
	LastError       string `json:"lastError,omitempty"`
}

func (api *simAPI) handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	// A CPU profile of the simulated agents, on demand (loopback only, as the whole API):
	// curl -o agents.pprof 'http://<listen>/debug/pprof/profile?seconds=10'.
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /agents", func(w http.ResponseWriter, _ *http.Request) {
		out := make([]AgentState, 0, len(api.agents))
		for _, sa := range api.agents {
			st := sa.agent.Status()
			row := AgentState{Name: sa.name, InputHash: st.InputHash, LastError: st.LastError, OutputVersion: st.OutputVersion, OutputEpoch: st.OutputEpoch}
			sa.status.mu.Lock()
			row.Started, row.FirstConnected, row.Connected, row.Server = sa.status.started, sa.status.firstConnected, sa.status.connected, sa.status.server
			row.LastUp, row.LastDown, row.Ups = sa.status.lastUp, sa.status.lastDown, sa.status.ups
			sa.status.mu.Unlock()
			sa.sink.mu.Lock()
			row.FirstApplied, row.OutputHash, row.OutputBytes, row.OutputResources, row.Applies = sa.sink.first, sa.sink.hash, sa.sink.outBytes, sa.sink.outRes, len(sa.sink.events)
			for _, e := range sa.sink.events {
				row.BytesReceived += e.Bytes
			}
			sa.sink.mu.Unlock()
			out = append(out, row)
		}
		bench.ServeJSON(w, out)
	})
	// GET /markers?id=p3 → {cluster: unix nanos} for the agents that applied marker p3.
	mux.HandleFunc("GET /markers", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		out := map[string]int64{}
		for _, sa := range api.agents {
			sa.sink.mu.Lock()
			if at := sa.sink.markers[id]; at > 0 {
				out[sa.name] = at
			}
			sa.sink.mu.Unlock()
		}
		bench.ServeJSON(w, out)
	})
	// GET /events?from=NS&to=NS → {cluster: [events]} applied in the window.
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
		to, _ := strconv.ParseInt(r.URL.Query().Get("to"), 10, 64)
		if to == 0 {
			to = 1<<63 - 1
		}
		out := map[string][]ApplyEvent{}
		for _, sa := range api.agents {
			sa.sink.mu.Lock()
			for _, e := range sa.sink.events {
				if e.At >= from && e.At <= to {
					out[sa.name] = append(out[sa.name], e)
				}
			}
			sa.sink.mu.Unlock()
		}
		bench.ServeJSON(w, out)
	})
	// GET /inputs → {cluster: the last inputs emitted, oldest first}.
	mux.HandleFunc("GET /inputs", func(w http.ResponseWriter, _ *http.Request) {
		out := make(map[string][]InputRecord, len(api.agents))
		for _, sa := range api.agents {
			out[sa.name] = sa.src.inputs()
		}
		bench.ServeJSON(w, out)
	})
	// POST /churn?interval=1s starts churn (every agent changes one endpoint per interval);
	// interval=0 stops it.
	mux.HandleFunc("POST /churn", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("interval"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case api.churnChan() <- d:
		case <-ctx.Done():
		}
		bench.ServeJSON(w, map[string]string{"churn": d.String()})
	})
	return mux
}

func (api *simAPI) churnChan() chan time.Duration {
	api.churnMu.Lock()
	defer api.churnMu.Unlock()
	if api.churnReq == nil {
		api.churnReq = make(chan time.Duration)
	}
	return api.churnReq
}

// churnLoop runs churn while it is switched on: each agent changes one endpoint per
// interval, at a phase of its own so changes are spread evenly.
func (api *simAPI) churnLoop(ctx context.Context) {
	req := api.churnChan()
	stop := func() {}
	defer func() { stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-req:
			stop()
			stop = func() {}
			if d <= 0 {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				api.churn(cctx, d)
			}()
			stop = func() { cancel(); <-done }
		}
	}
}

func (api *simAPI) churn(ctx context.Context, every time.Duration) {
	// One ticker drives every agent: a slot of every/len(agents) each.
	step := every / time.Duration(len(api.agents))
	if step <= 0 {
		step = time.Nanosecond
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	const tick = 5 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	next := 0 // index of the next change since start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := int(now.Sub(start) / step)
			for ; next < due; next++ {
				api.agents[next%len(api.agents)].src.churn(rng)
			}
		}
	}
}

// poll samples every agent's connection state.
func (api *simAPI) poll(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		for _, sa := range api.agents {
			connected, server := sa.agent.Connection()
			s := &sa.status
			s.mu.Lock()
			if connected && !s.connected {
				s.lastUp, s.ups = now, s.ups+1
				if s.firstConnected == 0 {
					s.firstConnected = now
				}
			}
			if !connected && s.connected {
				s.lastDown = now
			}
			s.connected, s.server = connected, server
			s.mu.Unlock()
		}
	}
}

// preRegister obtains every agent's certificate from RegisterAddress, as the agent would.
func preRegister(ctx context.Context, cfg Config, agents []*simAgent, token string) error {
	ca, err := os.ReadFile(cfg.Agent.RelayCAFile)
	if err != nil {
		return fmt.Errorf("sim: read relay ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("sim: %s holds no certificate", cfg.Agent.RelayCAFile)
	}
	name := cfg.Agent.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(cfg.Agent.RelayAddress)
	}
	conn, err := grpc.NewClient("passthrough:///"+cfg.RegisterAddress,
		grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name})))
	if err != nil {
		return fmt.Errorf("sim: dial %s: %w", cfg.RegisterAddress, err)
	}
	defer conn.Close()
	client := relayv1.NewRelayServiceClient(conn)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for _, sa := range agents {
		g.Go(func() error {
			dir := filepath.Join(cfg.StateRoot, sa.name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			key, err := pki.NewKey()
			if err != nil {
				return err
			}
			csr, err := pki.NewCSR(key, sa.name)
			if err != nil {
				return err
			}
			rctx, cancel := context.WithTimeout(gctx, 30*time.Second)
			defer cancel()
			resp, err := client.Register(rctx, &relayv1.RegisterRequest{Token: token, Cluster: sa.name, CsrPem: csr})
			if err != nil {
				return fmt.Errorf("sim: register %s: %w", sa.name, err)
			}
			keyPEM, err := pki.KeyPEM(key)
			if err != nil {
				return err
			}
			return pki.WriteKeyPair(filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key"), resp.GetCertificatePem(), keyPEM)
		})
	}
	return g.Wait()
}

// Flags registers the simulated agents' flags with their defaults; the relay flags are the
// real agent's (agent.Config.RegisterRelayFlags).
func (c *Config) Flags(fs *pflag.FlagSet) {
	fs.IntVar(&c.Agents, "agents", 100, "number of agents")
	fs.IntVar(&c.First, "first", 0, "index of the first simulated cluster")
	c.World.ServiceFlags(fs)
	c.Agent.RegisterRelayFlags(fs)
	fs.StringVar(&c.StateRoot, "state-root", "", "directory for the agents' state directories")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address of the report API")
	fs.IntVar(&c.StartRate, "start-rate", 0, "agents started per second (0: all at once)")
	fs.StringVar(&c.RegisterAddress, "register-address", "", "register every agent at this address before starting it")
}
