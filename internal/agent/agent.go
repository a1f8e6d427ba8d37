// Package agent is the relay agent of one workload cluster: it reports what discovery finds
// (input snapshots, pushed as deltas), applies the output snapshots the management server
// sends (ACK or NACK), keeps the last applied output on disk and serves it after a restart,
// and keeps its cluster certificate fresh.
//
// # State directory
//
// Besides its key and certificates, the agent keeps the last applied output in --state-dir
// as a base and a log of the deltas applied since (docs/adr/0012):
//
//   - output.json: the base, the snapshot in its JSON form (the only file older agents
//     wrote; a directory holding only it loads unchanged). It exists once an output was
//     applied.
//   - output.<seq>.log: the delta log. It holds the line "meshrelay-agent-state-log-v1",
//     then frames: the payload's length and its CRC-32C (Castagnoli), 4 bytes little endian
//     each, then the payload. The first payload is the header, 'H' and the version, epoch
//     and hash of the state the log starts from (an empty hash for none). Each other payload
//     is one applied delta: 'D', the version, epoch and hash it leads to, the number of
//     upserts and each one's key, hash and body, the number of removals and each removed
//     key. Integers are uvarints; strings and bodies a uvarint length and the bytes.
//
// Applying a delta appends its record (one write) before the agent ACKs; a full output, or
// the first one, replaces the base instead. A background loop syncs the log and compacts
// it once it outweighs the base: it starts a new log from the current state, writes the
// base (temporary file, sync, rename, directory sync) and removes the older logs. Loading
// replays the first log whose header is the base and every following log whose header is
// the state reached, checking every delta against its hash; it stops at a torn or damaged
// record (a write cut by a crash), cuts it off with a warning and starts from the state
// before. Logs older than the base (a compaction stopped by a crash) are removed.
package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/tokenfile"
)

// Source is where the agent's discovered objects come from.
type Source interface {
	Start(ctx context.Context, emit func(objs []resource.Object)) error
}

// Sink applies output snapshots to the cluster.
type Sink interface {
	Apply(ctx context.Context, s *snapshot.Snapshot) error
}

// Config configures an Agent.
type Config struct {
	Cluster      string
	RelayAddress string // host:port, re-resolved on every connection attempt
	TokenFile    string
	Token        string // used when TokenFile is empty
	RelayCAFile  string
	ServerName   string // TLS server name; the host of RelayAddress when empty
	TLSMode      string // "mtls" or "tls"
	StateDir     string
	// MinBackoff and MaxBackoff bound the reconnect delay (exponential, full jitter).
	MinBackoff, MaxBackoff time.Duration
	// ResolveInterval is how often the relay address is re-resolved while connected; the
	// agent reconnects when the answer no longer contains the address the session was
	// reached through (not the replica a redirect sent it to).
	ResolveInterval time.Duration
	// DNSServer, when set (host:port), is the DNS server used to resolve the relay address
	// instead of the system's.
	DNSServer string
	// Version is the agent's build version, reported to the server in every Hello; with the
	// agent's instance it names the agent holding a cluster.
	Version string
}

// RegisterRelayFlags binds how the agent reaches the management server's relay to flags
// with their defaults: --relay-address, --token-file, --relay-ca-file, --relay-server-name,
// --relay-tls-mode, --resolve-interval, --dns-server, --max-backoff. `meshrelay agent` and the
// benchmarks' simulated agents share them.
func (c *Config) RegisterRelayFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.RelayAddress, "relay-address", "", "host:port of the management server's relay endpoint; the host is re-resolved on every connection attempt and every --resolve-interval (required)")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the relay identity token (or set MESHRELAY_TOKEN)")
	fs.StringVar(&c.RelayCAFile, "relay-ca-file", "", "PEM bundle of the relay CA that signed the server's certificate (the server writes it to <data-dir>/relay-ca.crt) (required)")
	fs.StringVar(&c.ServerName, "relay-server-name", "", "TLS server name to verify (default: the host of --relay-address)")
	fs.StringVar(&c.TLSMode, "relay-tls-mode", "mtls", "mtls or tls; must match the server")
	fs.DurationVar(&c.ResolveInterval, "resolve-interval", 10*time.Second, "how often the relay address is re-resolved while connected; the agent reconnects when the answer no longer contains the address it connected through (an agent redirected to its replica stays there while the relay address still resolves as before)")
	fs.StringVar(&c.DNSServer, "dns-server", "", "host:port of a DNS server to resolve the relay address with instead of the system resolver")
	fs.DurationVar(&c.MaxBackoff, "max-backoff", 15*time.Second, "upper bound of the reconnect backoff (exponential with full jitter)")
}

// resolver returns the resolver for the relay address.
func (c *Config) resolver() *net.Resolver {
	if c.DNSServer == "" {
		return net.DefaultResolver
	}
	server := c.DNSServer
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("--cluster is required"))
	}
	if c.RelayAddress == "" {
		errs = append(errs, errors.New("--relay-address is required"))
	} else if _, _, err := net.SplitHostPort(c.RelayAddress); err != nil {
		errs = append(errs, fmt.Errorf("--relay-address %q: want host:port: %w", c.RelayAddress, err))
	}
	if c.TokenFile == "" && c.Token == "" {
		errs = append(errs, errors.New("--token-file (or MESHRELAY_TOKEN) is required"))
	}
	if c.RelayCAFile == "" {
		errs = append(errs, errors.New("--relay-ca-file is required: copy the server's relay-ca.crt"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir is required"))
	}
	switch c.TLSMode {
	case "":
		c.TLSMode = "mtls"
	case "mtls", "tls":
	default:
		errs = append(errs, fmt.Errorf("--relay-tls-mode %q: want mtls or tls", c.TLSMode))
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 15 * time.Second
	}
	if c.ResolveInterval <= 0 {
		c.ResolveInterval = 10 * time.Second
	}
	return errors.Join(errs...)
}

func (c *Config) token() (string, error) {
	if c.TokenFile == "" {
		return c.Token, nil
	}
	return tokenfile.Read(c.TokenFile)
}

// Agent is a relay agent. Build it with New and run it with Start.
type Agent struct {
	cfg    Config
	source Source
	sink   Sink
	log    *slog.Logger
	m      *metrics
	creds  *credentials
	state  *stateStore
	// reporter, when set, tells what the agent's parts see wrong (WithReporter).
	reporter Reporter
	// tracer records the apply of traced outputs (WithTracerProvider; no-op by default).
	tracer trace.Tracer
	// reach is the ExternalReach of the input last asked about.
	reach reachCache

	inputChanged chan struct{}
	// instance names this process to the server (relaywire.MetadataAgentInstance).
	instance string

	mu        sync.Mutex // guards everything below
	input     *snapshot.Snapshot
	applied   *snapshot.Snapshot
	refusals  []ObjectRefusal // objects of applied the cluster refused
	connected bool
	server    string
	lastErr   string
	redirect  string
	// refusedEpoch is the epoch of the output last refused as older than the applied one
	// (0 once an output is applied again); lastRefusal is the last refusal's reason.
	refusedEpoch uint64
	lastRefusal  string
	refused      *Refusal // set while the server refuses the session: another agent holds the cluster
}

// Refusal says that the server refuses this agent's session because another agent of the
// same cluster holds it; the agent keeps retrying and takes over once that one is gone.
type Refusal struct {
	// Holder is the agent the server says holds the cluster.
	Holder relaywire.Holder `json:"holder"`
	// Since is the first refusal in a row, At the last one.
	Since    time.Time `json:"since"`
	At       time.Time `json:"at"`
	Attempts int       `json:"attempts"`
}

// New builds an agent; it does no I/O.
func New(cfg Config, source Source, sink Sink, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, source: source, sink: sink, log: log.With("cluster", cfg.Cluster), m: newMetrics(reg),
		inputChanged: make(chan struct{}, 1), instance: rand.Text()[:16], tracer: noop.NewTracerProvider().Tracer(changetrace.Name)}
	a.state = newStateStore(cfg.StateDir, a.log, a.m)
	a.creds = newCredentials(&a.cfg, a.log, a.m)
	for _, o := range opts {
		o(a)
	}
	return a, nil
}

// Start runs the agent until ctx ends: it restores and re-applies the last output, starts
// discovery and keeps a connection to the management server.
func (a *Agent) Start(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	release, err := lockStateDir(a.cfg.StateDir)
	if err != nil {
		return err
	}
	defer release()
	if err := a.creds.loadCA(); err != nil {
		return err
	}
	snap, err := a.state.open()
	if err != nil {
		return err
	}
	defer func() {
		if err := a.state.close(); err != nil {
			a.log.Warn("closing the state log failed", "error", err)
		}
	}()
	if snap != nil {
		err := a.sink.Apply(ctx, snap)
		refusals, partial := partialApply(err)
		if err != nil && !partial {
			return fmt.Errorf("re-apply last output version %d: %w", snap.Version, err)
		}
		a.setRefusals(snap.Version, refusals)
		a.mu.Lock()
		a.applied = snap
		a.mu.Unlock()
		a.m.outputVersion.Set(float64(snap.Version))
		a.log.Info("serving last applied output", "version", snap.Version, "epoch", snap.Epoch, "resources", snap.Len())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(3)
	go func() {
		defer wg.Done()
		a.state.run(ctx)
	}()
	go func() {
		defer wg.Done()
		if err := a.source.Start(ctx, a.setInput); err != nil && ctx.Err() == nil {
			// Without discovery the agent has no input to report: stop now, so that the
			// error is seen at once rather than when the agent is stopped.
			errc <- fmt.Errorf("discovery: %w", err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		a.creds.renewLoop(ctx)
	}()
	a.connectLoop(ctx)
	cancel()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (a *Agent) setInput(objs []resource.Object) {
	rs := make([]snapshot.Resource, len(objs))
	for i, o := range objs {
		rs[i] = o.Resource()
	}
	s := snapshot.New(0, 0, rs)
	a.mu.Lock()
	changed := a.input == nil || a.input.Hash != s.Hash
	if changed {
		a.input = s
	}
	a.mu.Unlock()
	if changed {
		a.log.Info("discovered objects changed", "resources", s.Len())
		select {
		case a.inputChanged <- struct{}{}:
		default:
		}
	}
}

func (a *Agent) currentInput() *snapshot.Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.input
}

func (a *Agent) currentApplied() *snapshot.Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied
}

// connectLoop keeps one session with the server, reconnecting with backoff and jitter.
func (a *Agent) connectLoop(ctx context.Context) {
	attempt, redirects := 0, 0
	for ctx.Err() == nil {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return
		}
		a.setConnected(false, "", err)
		a.m.reconnects.Inc()
		holder, refused := relaywire.DuplicateHolder(err)
		a.setRefused(holder, refused)
		if time.Since(start) > 30*time.Second {
			attempt, redirects = 0, 0 // the session was healthy for a while
		}
		a.mu.Lock()
		redirected := a.redirect != ""
		a.mu.Unlock()
		var d time.Duration
		if redirected && redirects < maxQuickRedirects {
			// A server named the replica that owns this cluster: go there at once (with
			// a little jitter so a replica's agents do not arrive in one burst). Servers
			// that keep bouncing the agent get the usual backoff.
			redirects++
			d = time.Duration(mrand.Int64N(int64(quickRedirectJitter)))
		} else {
			attempt++
			d = backoff(attempt, a.cfg.MinBackoff, a.cfg.MaxBackoff)
		}
		if refused {
			a.log.Warn("relay session refused: another agent holds the cluster; retrying", "holder", holder.Peer,
				"holderInstance", holder.Instance, "holderVersion", holder.Version, "holderSince", holder.Since, "in", d.Round(time.Millisecond))
		} else {
			a.log.Warn("relay session ended; reconnecting", "error", err, "in", d.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// An agent follows up to maxQuickRedirects redirects in a row without backoff, each after
// a random delay under quickRedirectJitter.
const (
	maxQuickRedirects   = 3
	quickRedirectJitter = 100 * time.Millisecond
)

// backoff is exponential with full jitter: uniform in [min, min·2^attempt], capped at max.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	ceil := lo << min(attempt, 16)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	return lo + time.Duration(mrand.Int64N(int64(ceil-lo)+1))
}

func (a *Agent) setConnected(c bool, server string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.connected, a.server = c, server
	if err != nil {
		a.lastErr = err.Error()
	}
	if c {
		a.m.connected.Set(1)
		a.refused = nil
		a.m.refused.Set(0)
	} else {
		a.m.connected.Set(0)
	}
}

// setRefused records whether the last session was refused because another agent holds the
// cluster.
func (a *Agent) setRefused(holder relaywire.Holder, refused bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !refused {
		a.refused = nil
		a.m.refused.Set(0)
		return
	}
	now := time.Now().UTC()
	if a.refused == nil {
		a.refused = &Refusal{Since: now}
	}
	a.refused.Holder, a.refused.At = holder, now
	a.refused.Attempts++
	a.m.refused.Set(1)
	a.m.refusals.Inc()
}

// Status is the agent's /status document.
type Status struct {
	Cluster string `json:"cluster"`
	// Instance names this agent process to the server (the holder a refused agent is told).
	Instance       string `json:"instance"`
	Connected      bool   `json:"connected"`
	Server         string `json:"server,omitempty"`
	InputVersion   uint64 `json:"inputVersion,omitempty"`
	InputHash      string `json:"inputHash,omitempty"`
	InputResources int    `json:"inputResources"`
	OutputVersion  uint64 `json:"outputVersion,omitempty"`
	OutputHash     string `json:"outputHash,omitempty"`
	OutputEpoch    uint64 `json:"outputEpoch,omitempty"`
	OutputCount    int    `json:"outputResources"`
	// RefusedObjects are the objects of the applied output the cluster refused while the rest
	// was applied; they are reported to the server with the ACK.
	RefusedObjects []ObjectRefusal `json:"refusedObjects,omitempty"`
	// ExternalReach says where other clusters reach this cluster's exposed Services (such as
	// the failover gateway's), and why.
	ExternalReach []ServiceReach `json:"externalReach,omitempty"`
	CertNotAfter  time.Time      `json:"certificateNotAfter,omitzero"`
	LastError     string         `json:"lastError,omitempty"`
	// RefusedEpoch is set while the agent refuses the server's outputs because they are of
	// an older epoch than the one it applied; LastRefusal is the last refusal's reason.
	RefusedEpoch uint64 `json:"refusedEpoch,omitempty"`
	LastRefusal  string `json:"lastRefusal,omitempty"`
	// Refused is set while the server refuses this agent because another agent of the
	// cluster holds it.
	Refused *Refusal `json:"refused,omitempty"`
}

// Status reports the agent's state.
func (a *Agent) Status() Status {
	st, in := a.status()
	st.ExternalReach = a.reach.of(in)
	return st
}

// Connection reports whether the agent's streams are open, and to which server: the part of
// Status a caller sampling many agents often needs (the benchmarks' simulated agents).
func (a *Agent) Connection() (connected bool, server string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.connected, a.server
}

func (a *Agent) status() (Status, *snapshot.Snapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{Cluster: a.cfg.Cluster, Instance: a.instance, Connected: a.connected, Server: a.server, LastError: a.lastErr, CertNotAfter: a.creds.notAfter(),
		RefusedEpoch: a.refusedEpoch, LastRefusal: a.lastRefusal}
	if a.refused != nil {
		r := *a.refused
		st.Refused = &r
	}
	if a.input != nil {
		st.InputHash, st.InputResources = a.input.Hash, a.input.Len()
	}
	if a.applied != nil {
		st.OutputVersion, st.OutputHash, st.OutputEpoch, st.OutputCount = a.applied.Version, a.applied.Hash, a.applied.Epoch, a.applied.Len()
		st.RefusedObjects = append([]ObjectRefusal(nil), a.refusals...)
	}
	return st, a.input
}

// Ready is nil once the agent has an output to serve (applied now or restored from disk).
func (a *Agent) Ready() error {
	if a.currentApplied() == nil {
		return errors.New("no output snapshot applied yet")
	}
	return nil
}
