// Package failoverbench is `meshrelay-bench failover`: replica loss, regional failover (agents
// resolve the relay name through a DNS server of this process), a Redis + server restart and
// a failover of a Sentinel-managed Redis (redis.go), with the server, Redis and the simulated
// agents (package sim) as child processes.
package failoverbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/pflag"

	"github.com/meshrelay/meshrelay/internal/bench"
	"github.com/meshrelay/meshrelay/internal/bench/sim"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
)

// Options configure `meshrelay-bench failover`.
type Options struct {
	World sim.RelayWorld `json:"world"`
	// Runs of each scenario.
	Runs int `json:"runs"`
	// Scenarios to run: "replica", "region", "restart", "redis-failover".
	Scenarios []string `json:"scenarios"`
	// Timeout bounds each wait (default 2 minutes plus 100 ms per agent).
	Timeout  time.Duration `json:"timeout"`
	Binary   string        `json:"-"`
	WorkDir  string        `json:"-"`
	Progress io.Writer     `json:"-"`
}

// Report is the result of `meshrelay-bench failover`.
type Report struct {
	Options Options         `json:"options"`
	Machine bench.Machine   `json:"machine"`
	Replica *ScenarioReport `json:"replicaLoss,omitempty"`
	Region  *ScenarioReport `json:"regionalFailover,omitempty"`
	Restart *ScenarioReport `json:"redisAndServerRestart,omitempty"`
	// RedisFailover is the redis-failover scenario: Sentinel promotes the replica of a
	// killed Redis primary.
	RedisFailover *ScenarioReport `json:"redisFailover,omitempty"`
	Errors        []string        `json:"errors,omitempty"`
}

// ScenarioReport holds the runs of one scenario.
type ScenarioReport struct {
	Name string `json:"name"`
	// Runs are the individual measurements.
	Runs []FailoverRun `json:"runs"`
	// Back: from the fault to the last affected agent connected again (both streams).
	Back bench.Dist `json:"back"`
	// InSync: from the fault to the last affected agent in sync (the server has its ACK of
	// the current output).
	InSync bench.Dist `json:"inSync"`
	// Resumed (restart only): from the restart to translation running again.
	Resumed bench.Dist `json:"translationResumed,omitempty"`
	// ResumedAfterLastAgent (restart only): from the last agent's return to translation
	// running again (negative: translation resumed first, from the inputs in Redis).
	ResumedAfterLastAgent bench.Dist `json:"translationResumedAfterLastAgent,omitempty"`
	// Promoted (redis-failover only): from killing the Redis primary to the sentinels naming
	// the replica, which answers as primary.
	Promoted bench.Dist `json:"promoted,omitzero"`
	// Writing (redis-failover only): from the kill to the server acknowledging an apply
	// again (written through the lock's fence on the new primary).
	Writing bench.Dist `json:"writing,omitzero"`
	// ChangeReached (redis-failover only): from the kill to the last agent applying the
	// change the server acknowledged first after it.
	ChangeReached bench.Dist `json:"changeReached,omitzero"`
}

// FailoverRun is one measured fault.
type FailoverRun struct {
	Affected int     `json:"affectedAgents"`
	BackMs   float64 `json:"backMs"`
	InSyncMs float64 `json:"inSyncMs"`
	// ContentChanges counts applied outputs whose content changed after the fault (a
	// regional failover must have none); EpochOnly counts outputs that only moved the
	// version or epoch.
	ContentChanges int `json:"contentChanges"`
	EpochOnly      int `json:"versionOrEpochOnly"`
	// FewerResources counts applied outputs with fewer resources than the one before.
	FewerResources int     `json:"fewerResources"`
	ResumedMs      float64 `json:"translationResumedMs,omitempty"`
	LastAgentMs    float64 `json:"lastAgentBackMs,omitempty"`
	// PromotedMs, WritingMs and ChangeReachedMs (redis-failover): see ScenarioReport.
	PromotedMs      float64 `json:"promotedMs,omitempty"`
	WritingMs       float64 `json:"writingMs,omitempty"`
	ChangeReachedMs float64 `json:"changeReachedMs,omitempty"`
	Error           string  `json:"error,omitempty"`
}

// Run runs the failover benchmarks.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.World.Clusters < 1 || o.World.Services < 1 {
		return nil, errors.New("--agents and --services-per-cluster must be at least 1")
	}
	if o.Runs < 1 {
		o.Runs = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 2*time.Minute + time.Duration(o.World.Clusters)*100*time.Millisecond
	}
	dir, cleanup, err := bench.PrepareRun(&o.Binary, o.WorkDir, "failover")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("bench failover needs redis-server on PATH: %w", err)
	}
	rep := &Report{Options: o, Machine: bench.ThisMachine()}
	scenarios := map[string]struct {
		dst *(*ScenarioReport)
		run func(context.Context, *failoverRun) FailoverRun
	}{
		"replica":        {&rep.Replica, func(ctx context.Context, f *failoverRun) FailoverRun { return f.replicaLoss(ctx) }},
		"region":         {&rep.Region, func(ctx context.Context, f *failoverRun) FailoverRun { return f.regionalFailover(ctx) }},
		"restart":        {&rep.Restart, func(ctx context.Context, f *failoverRun) FailoverRun { return f.restart(ctx) }},
		"redis-failover": {&rep.RedisFailover, func(ctx context.Context, f *failoverRun) FailoverRun { return f.redisFailover(ctx) }},
	}
	for _, name := range o.Scenarios {
		sc, ok := scenarios[name]
		if !ok {
			return rep, fmt.Errorf("--scenarios: unknown scenario %q: want replica, region, restart or redis-failover", name)
		}
		sr := &ScenarioReport{Name: name}
		*sc.dst = sr
		for i := range o.Runs {
			rdir := filepath.Join(dir, fmt.Sprintf("%s-%d", name, i+1))
			fr := &failoverRun{o: o, dir: rdir, p: bench.NewProcs(o.Binary, rdir)}
			if err := os.MkdirAll(rdir, 0o755); err != nil {
				return rep, err
			}
			fr.logf("%s run %d/%d", name, i+1, o.Runs)
			res := sc.run(ctx, fr)
			fr.close()
			if res.Error != "" {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s run %d: %s", name, i+1, res.Error))
				fr.logf("%s run %d failed: %s", name, i+1, res.Error)
			} else if res.PromotedMs > 0 {
				fr.logf("%s run %d: replica promoted after %s, server writing after %s, the change at all %d agents after %s", name, i+1,
					bench.Ms(res.PromotedMs), bench.Ms(res.WritingMs), res.Affected, bench.Ms(res.ChangeReachedMs))
			} else {
				fr.logf("%s run %d: %d agents back in %s, in sync in %s; content changes %d", name, i+1, res.Affected, bench.Ms(res.BackMs), bench.Ms(res.InSyncMs), res.ContentChanges)
			}
			sr.Runs = append(sr.Runs, res)
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
		}
		var back, insync, resumed, after, promoted, writing, reached []float64
		for _, r := range sr.Runs {
			if r.PromotedMs > 0 {
				promoted = append(promoted, r.PromotedMs)
			}
			if r.WritingMs > 0 {
				writing = append(writing, r.WritingMs)
			}
			if r.ChangeReachedMs > 0 {
				reached = append(reached, r.ChangeReachedMs)
			}
			if r.BackMs > 0 {
				back = append(back, r.BackMs)
			}
			if name == "restart" && r.ResumedMs > 0 {
				resumed, after = append(resumed, r.ResumedMs), append(after, r.ResumedMs-r.LastAgentMs)
			}
			if r.Error == "" {
				insync = append(insync, r.InSyncMs)
			}
		}
		sr.Back, sr.InSync, sr.Resumed, sr.ResumedAfterLastAgent = bench.NewDist(back), bench.NewDist(insync), bench.NewDist(resumed), bench.NewDist(after)
		sr.Promoted, sr.Writing, sr.ChangeReached = bench.NewDist(promoted), bench.NewDist(writing), bench.NewDist(reached)
	}
	return rep, nil
}

// relayServer is one server process of the benchmark.
type relayServer struct {
	c     *bench.Child
	relay string
	admin string
	data  string
}

// failoverRun is the state of one run of a scenario.
type failoverRun struct {
	o       Options
	dir     string
	p       *bench.Procs
	token   string
	config  string
	servers []*relayServer
	sim     *bench.Child
	simAPI  string
	redis   *bench.Child
	redisAt string
	// redisFlags connect the servers to Redis (default: --redis-address redisAt).
	redisFlags []string
	dnsStop    func()
}

func (f *failoverRun) logf(format string, args ...any) {
	if f.o.Progress != nil {
		fmt.Fprintf(f.o.Progress, "%s  failover: "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

func (f *failoverRun) close() {
	f.p.StopAll()
	if f.dnsStop != nil {
		f.dnsStop()
	}
}

func failed(err error) FailoverRun { return FailoverRun{Error: err.Error()} }

// setup writes the token and config dir.
func (f *failoverRun) setup() error {
	f.token = filepath.Join(f.dir, "token")
	if err := os.WriteFile(f.token, []byte("bench-token-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"\n"), 0o600); err != nil {
		return err
	}
	f.config = filepath.Join(f.dir, "config")
	if err := os.MkdirAll(f.config, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(f.config, "clusters.yaml"), []byte(f.o.World.RelayConfig()), 0o644)
}

// startRedis starts (or restarts on the same port and directory) redis-server with an
// append-only file fsynced on every write.
func (f *failoverRun) startRedis(ctx context.Context) error {
	if f.redisAt == "" {
		a, err := bench.Loopback()
		if err != nil {
			return err
		}
		f.redisAt = a
	}
	_, port, _ := net.SplitHostPort(f.redisAt)
	rdir := filepath.Join(f.dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return err
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	c, err := f.p.StartBinary(bin, "redis-"+strconv.FormatInt(time.Now().UnixNano(), 36), "--port", port, "--bind", "127.0.0.1", "--save", "", "--dir", rdir,
		"--appendonly", "yes", "--appendfsync", "always")
	if err != nil {
		return err
	}
	f.redis = c
	return bench.WaitFor(ctx, 10*time.Second, 20*time.Millisecond, func() (bool, error) {
		if c.Exited() {
			return false, fmt.Errorf("redis-server exited: %s", bench.LogTail(c, 2000))
		}
		return redisPing(f.redisAt) == nil, nil
	})
}

func redisPing(addr string) error {
	c, err := redisstore.Dial(redisstore.Options{Addr: addr, Timeout: time.Second, MaxRetries: -1})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// startServer starts a management server with the run's token and config.
func (f *failoverRun) startServer(ctx context.Context, name, relay string, extra ...string) (*relayServer, error) {
	admin, err := bench.Loopback()
	if err != nil {
		return nil, err
	}
	s := &relayServer{relay: relay, admin: admin, data: filepath.Join(f.dir, name)}
	args := append([]string{bench.ProductCommand, "server", "--relay-address", relay, "--admin-address", admin, "--admin-plaintext", "--data-dir", s.data, "--config-dir", f.config,
		"--token-file", f.token, "--log-level", "warn"}, extra...)
	if f.redisFlags != nil {
		args = append(args, f.redisFlags...)
	} else {
		args = append(args, "--redis-address", f.redisAt)
	}
	if len(f.servers) > 0 {
		d0 := f.servers[0].data
		args = append(args, "--relay-ca-cert", filepath.Join(d0, "relay-ca.crt"), "--relay-ca-key", filepath.Join(d0, "relay-ca.key"),
			"--mesh-ca-cert", filepath.Join(d0, "mesh-ca.crt"), "--mesh-ca-key", filepath.Join(d0, "mesh-ca.key"))
	}
	c, err := f.p.Start(name, args...)
	if err != nil {
		return nil, err
	}
	s.c = c
	if err := f.waitReady(ctx, s); err != nil {
		return nil, err
	}
	return s, nil
}

func (f *failoverRun) waitReady(ctx context.Context, s *relayServer) error {
	return bench.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		if s.c.Exited() {
			return false, fmt.Errorf("server exited: %s", bench.LogTail(s.c, 2000))
		}
		_, err := bench.HTTPGet(ctx, "http://"+s.admin+"/readyz")
		return err == nil, err
	})
}

// startSim starts the simulated agents against relay (a host:port, maybe a DNS name).
func (f *failoverRun) startSim(relay string, extra ...string) error {
	api, err := bench.Loopback()
	if err != nil {
		return err
	}
	f.simAPI = api
	w := f.o.World
	state := filepath.Join(f.dir, "agents")
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if state, err = os.MkdirTemp("/dev/shm", "meshrelay-bench-failover-"); err != nil {
			return err
		}
		prev := f.dnsStop
		f.dnsStop = func() {
			os.RemoveAll(state)
			if prev != nil {
				prev()
			}
		}
	}
	args := append([]string{"sim-agents", "--agents", strconv.Itoa(w.Clusters), "--services-per-cluster", strconv.Itoa(w.Services),
		"--exported-percent", strconv.Itoa(w.ExportPercent), "--relay-address", relay, "--token-file", f.token,
		"--relay-ca-file", filepath.Join(f.servers[0].data, "relay-ca.crt"), "--state-root", state, "--listen", api, "--log-level", "warn"}, extra...)
	f.sim, err = f.p.Start("sim-agents", args...)
	return err
}

func (f *failoverRun) agents(ctx context.Context) ([]sim.AgentState, error) {
	var out []sim.AgentState
	err := bench.GetJSON(ctx, "http://"+f.simAPI+"/agents", &out)
	return out, err
}

// inSyncOn returns the clusters in sync on the given servers.
func inSyncOn(ctx context.Context, servers ...*relayServer) (map[string]bool, error) {
	in := map[string]bool{}
	for _, s := range servers {
		if s.c.Exited() {
			continue
		}
		var st configapi.ServerStatus
		if err := bench.GetJSON(ctx, "http://"+s.admin+"/status", &st); err != nil {
			return nil, err
		}
		for _, c := range st.Clusters {
			in[c.Name] = in[c.Name] || c.InSync
		}
	}
	return in, nil
}

// waitSynced waits until every agent applied an output and every cluster is in sync.
func (f *failoverRun) waitSynced(ctx context.Context) error {
	n := f.o.World.Clusters
	return bench.WaitFor(ctx, f.o.Timeout, 200*time.Millisecond, func() (bool, error) {
		if f.sim.Exited() {
			return false, fmt.Errorf("simulated agents exited: %s", bench.LogTail(f.sim, 2000))
		}
		st, err := f.agents(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range st {
			if a.FirstApplied == 0 || !a.Connected {
				return false, nil
			}
		}
		in, err := inSyncOn(ctx, f.servers...)
		if err != nil {
			return false, err
		}
		c := 0
		for _, ok := range in {
			if ok {
				c++
			}
		}
		return c == n, nil
	})
}

// awaitBack waits until every affected agent reconnected after t0 (to a server other than
// gone, when set) and is in sync on the live servers; it returns both durations.
func (f *failoverRun) awaitBack(ctx context.Context, t0 time.Time, affected map[string]bool, gone string) (back, insync time.Duration, err error) {
	var backAt time.Time
	err = bench.WaitFor(ctx, f.o.Timeout, 50*time.Millisecond, func() (bool, error) {
		st, err := f.agents(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range st {
			if affected[a.Name] && (!a.Connected || a.LastUp < t0.UnixNano() || (gone != "" && a.Server == gone)) {
				return false, nil
			}
		}
		if backAt.IsZero() {
			var last int64
			for _, a := range st {
				if affected[a.Name] {
					last = max(last, a.LastUp)
				}
			}
			backAt = time.Unix(0, last)
		}
		in, err := inSyncOn(ctx, f.servers...)
		if err != nil {
			return false, err
		}
		for c := range affected {
			if !in[c] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		if !backAt.IsZero() {
			in, _ := inSyncOn(ctx, f.servers...)
			n := 0
			for c := range affected {
				if in[c] {
					n++
				}
			}
			err = fmt.Errorf("all %d agents back after %s, but only %d in sync on the servers' /status: %w", len(affected), backAt.Sub(t0).Round(time.Millisecond), n, err)
			return backAt.Sub(t0), 0, err
		}
		return 0, 0, err
	}
	return backAt.Sub(t0), time.Since(t0), nil
}

// outputChanges counts, from t0 on, applied outputs whose content changed, those that
// only moved version or epoch, and those with fewer resources than the one before.
func (f *failoverRun) outputChanges(ctx context.Context, t0 time.Time) (content, epochOnly, fewer int, err error) {
	var ev map[string][]sim.ApplyEvent
	if err := bench.GetJSON(ctx, "http://"+f.simAPI+"/events", &ev); err != nil {
		return 0, 0, 0, err
	}
	for _, es := range ev {
		prev := -1
		for _, e := range es {
			if e.At >= t0.UnixNano() {
				if e.Changed {
					content++
				} else {
					epochOnly++
				}
				if prev >= 0 && e.Resources < prev {
					fewer++
				}
			}
			prev = e.Resources
		}
	}
	return content, epochOnly, fewer, nil
}

// replicaLoss: three replicas balance the agents; one is killed with kill -9.
func (f *failoverRun) replicaLoss(ctx context.Context) FailoverRun {
	if err := f.setup(); err != nil {
		return failed(err)
	}
	if err := f.startRedis(ctx); err != nil {
		return failed(err)
	}
	for i := range 3 {
		relay, err := bench.Loopback()
		if err != nil {
			return failed(err)
		}
		s, err := f.startServer(ctx, fmt.Sprintf("replica-%d", i), relay, "--cluster-load-balancing", "--leader-election",
			"--replica-id", fmt.Sprintf("replica-%d", i))
		if err != nil {
			return failed(err)
		}
		f.servers = append(f.servers, s)
	}
	// Agents enter through replica 0 and are redirected to their owner; replica 1 dies.
	if err := f.startSim(f.servers[0].relay); err != nil {
		return failed(err)
	}
	if err := f.waitSynced(ctx); err != nil {
		return failed(fmt.Errorf("initial sync: %w", err))
	}
	time.Sleep(2 * time.Second)
	victim := f.servers[1]
	st, err := f.agents(ctx)
	if err != nil {
		return failed(err)
	}
	affected := map[string]bool{}
	for _, a := range st {
		if a.Server == victim.relay {
			affected[a.Name] = true
		}
	}
	if len(affected) == 0 {
		return failed(errors.New("no agent on the replica to kill"))
	}
	t0 := time.Now()
	victim.c.Kill()
	back, insync, err := f.awaitBack(ctx, t0, affected, victim.relay)
	res := FailoverRun{Affected: len(affected), BackMs: float64(back) / 1e6, InSyncMs: float64(insync) / 1e6}
	if err != nil {
		res.Error = fmt.Sprintf("%d agents of the killed replica: %v", len(affected), err)
		return res
	}
	res.ContentChanges, res.EpochOnly, res.FewerResources, _ = f.outputChanges(ctx, t0)
	return res
}

// dnsServer answers A queries for one name with an address that can be switched.
type dnsServer struct {
	name string
	mu   sync.Mutex // guards ip
	ip   net.IP
}

func (d *dnsServer) set(ip string) {
	d.mu.Lock()
	d.ip = net.ParseIP(ip)
	d.mu.Unlock()
}

func (d *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for _, q := range req.Question {
		if q.Qtype == dns.TypeA && strings.EqualFold(q.Name, d.name) {
			d.mu.Lock()
			ip := d.ip
			d.mu.Unlock()
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: ip})
		}
	}
	_ = w.WriteMsg(m)
}

// startDNS serves name on a loopback UDP port and returns the server and its address.
func (f *failoverRun) startDNS(name, ip string) (*dnsServer, string, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	d := &dnsServer{name: dns.Fqdn(name)}
	d.set(ip)
	srv := &dns.Server{PacketConn: pc, Handler: d}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	prev := f.dnsStop
	f.dnsStop = func() {
		_ = srv.Shutdown()
		<-done
		if prev != nil {
			prev()
		}
	}
	return d, pc.LocalAddr().String(), nil
}

// regionalFailover: an active and a passive management server share Redis; agents reach
// the active one through a DNS name. The active one is killed, the DNS answer switched and
// the lock moved.
func (f *failoverRun) regionalFailover(ctx context.Context) FailoverRun {
	const name = "mgmt.bench.meshrelay.test"
	if err := f.setup(); err != nil {
		return failed(err)
	}
	if err := f.startRedis(ctx); err != nil {
		return failed(err)
	}
	// Both servers listen on the same port, on 127.0.0.1 and 127.0.0.2.
	east, err := bench.Loopback()
	if err != nil {
		return failed(err)
	}
	_, port, _ := net.SplitHostPort(east)
	west := net.JoinHostPort("127.0.0.2", port)
	se, err := f.startServer(ctx, "mgmt-east", east, "--mgmt-cluster-name", "east", "--relay-server-names", name)
	if err != nil {
		return failed(err)
	}
	f.servers = append(f.servers, se)
	sw, err := f.startServer(ctx, "mgmt-west", west, "--mgmt-cluster-name", "west", "--relay-server-names", name)
	if err != nil {
		return failed(err)
	}
	f.servers = append(f.servers, sw)
	d, dnsAddr, err := f.startDNS(name, "127.0.0.1")
	if err != nil {
		return failed(err)
	}
	// The agents register at the active server's address: registration dials the relay
	// address with the system resolver, which does not know the name (see the report).
	if err := f.startSim(net.JoinHostPort(name, port), "--dns-server", dnsAddr, "--resolve-interval", "1s", "--register-address", east); err != nil {
		return failed(err)
	}
	if err := f.waitSynced(ctx); err != nil {
		return failed(fmt.Errorf("initial sync: %w", err))
	}
	time.Sleep(2 * time.Second)
	before, err := f.agents(ctx)
	if err != nil {
		return failed(err)
	}
	affected := map[string]bool{}
	for _, a := range before {
		affected[a.Name] = true
	}
	t0 := time.Now()
	se.c.Kill()
	d.set("127.0.0.2")
	sa, err := f.p.Start("switch-active", bench.ProductCommand, "switch-active", "--mgmt-cluster-name", "west", "--redis-address", f.redisAt)
	if err != nil {
		return failed(err)
	}
	if err := sa.Err(); err != nil {
		return failed(fmt.Errorf("switch-active: %w: %s", err, bench.LogTail(sa, 1000)))
	}
	back, insync, err := f.awaitBack(ctx, t0, affected, east)
	res := FailoverRun{Affected: len(affected), BackMs: float64(back) / 1e6, InSyncMs: float64(insync) / 1e6}
	if err != nil {
		res.Error = fmt.Sprintf("agents to the standby: %v", err)
		return res
	}
	// Let the new active server translate once more before counting changes.
	time.Sleep(3 * time.Second)
	res.ContentChanges, res.EpochOnly, res.FewerResources, _ = f.outputChanges(ctx, t0)
	after, err := f.agents(ctx)
	if err == nil {
		hash := map[string]string{}
		for _, a := range before {
			hash[a.Name] = a.OutputHash
		}
		for _, a := range after {
			if hash[a.Name] != a.OutputHash && res.ContentChanges == 0 {
				res.ContentChanges = -1 // cannot happen: an output changed without an apply
			}
		}
	}
	return res
}

// restart: Redis and the server are killed together and restarted; agents return.
func (f *failoverRun) restart(ctx context.Context) FailoverRun {
	if err := f.setup(); err != nil {
		return failed(err)
	}
	if err := f.startRedis(ctx); err != nil {
		return failed(err)
	}
	relay, err := bench.Loopback()
	if err != nil {
		return failed(err)
	}
	s, err := f.startServer(ctx, "server", relay)
	if err != nil {
		return failed(err)
	}
	f.servers = append(f.servers, s)
	if err := f.startSim(relay, "--max-backoff", "2s"); err != nil {
		return failed(err)
	}
	if err := f.waitSynced(ctx); err != nil {
		return failed(fmt.Errorf("initial sync: %w", err))
	}
	time.Sleep(2 * time.Second)
	affected := map[string]bool{}
	for i := range f.o.World.Clusters {
		affected[bench.ClusterName(i)] = true
	}
	t0 := time.Now()
	s.c.Kill()
	f.redis.Kill()
	if err := f.startRedis(ctx); err != nil {
		return failed(fmt.Errorf("restart redis: %w", err))
	}
	c, err := f.p.Start("server-again", s.c.Args...)
	if err != nil {
		return failed(err)
	}
	s.c = c
	restarted := time.Now()
	// Translation resumes when /status shows a translation and no safe-mode hold.
	var resumedAt time.Time
	resumeErr := make(chan error, 1)
	go func() {
		resumeErr <- bench.WaitFor(ctx, f.o.Timeout, 20*time.Millisecond, func() (bool, error) {
			var st configapi.ServerStatus
			if err := bench.GetJSON(ctx, "http://"+s.admin+"/status", &st); err != nil {
				return false, nil
			}
			if st.Translations > 0 && !st.SafeMode.Active {
				resumedAt = time.Now()
				return true, nil
			}
			return false, nil
		})
	}()
	back, insync, err := f.awaitBack(ctx, t0, affected, "")
	if rerr := <-resumeErr; rerr != nil && err == nil {
		err = fmt.Errorf("translation did not resume: %w", rerr)
	}
	res := FailoverRun{Affected: len(affected), BackMs: float64(back) / 1e6, InSyncMs: float64(insync) / 1e6,
		LastAgentMs: float64(back-restarted.Sub(t0)) / 1e6}
	if !resumedAt.IsZero() {
		res.ResumedMs = float64(resumedAt.Sub(restarted)) / 1e6
	}
	res.ContentChanges, res.EpochOnly, res.FewerResources, _ = f.outputChanges(ctx, t0)
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "failover: %d agents × %d services, %d run(s) each; %d CPUs (%s), %s\n", r.Options.World.Clusters, r.Options.World.Services,
		r.Options.Runs, r.Machine.CPUs, r.Machine.Model, r.Machine.GoVersion)
	for _, s := range []*ScenarioReport{r.Replica, r.Region, r.Restart, r.RedisFailover} {
		if s == nil {
			continue
		}
		var changes, epoch, fewer, affected []string
		for _, run := range s.Runs {
			changes = append(changes, strconv.Itoa(run.ContentChanges))
			epoch = append(epoch, strconv.Itoa(run.EpochOnly))
			fewer = append(fewer, strconv.Itoa(run.FewerResources))
			affected = append(affected, strconv.Itoa(run.Affected))
		}
		fmt.Fprintf(w, "%-8s agents affected %s\n", s.Name, strings.Join(affected, ", "))
		if s.Name == "redis-failover" {
			fmt.Fprintf(w, "  replica promoted by the sentinels  %s\n  server writes again (apply acked)  %s\n  that change at every agent         %s\n",
				s.Promoted, s.Writing, s.ChangeReached)
		} else {
			fmt.Fprintf(w, "  back        %s\n  in sync     %s\n", s.Back, s.InSync)
		}
		if s.Name == "restart" {
			fmt.Fprintf(w, "  translation resumed after restart     %s\n  translation resumed after last agent  %s\n", s.Resumed, s.ResumedAfterLastAgent)
		}
		fmt.Fprintf(w, "  outputs applied after the fault: content changed %s; version/epoch only %s; with removals %s\n",
			strings.Join(changes, ", "), strings.Join(epoch, ", "), strings.Join(fewer, ", "))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

// Flags registers the failover benchmark's flags with their defaults.
func (o *Options) Flags(fs *pflag.FlagSet) {
	o.World.Flags(fs)
	fs.IntVar(&o.Runs, "runs", 3, "runs of each scenario")
	fs.StringSliceVar(&o.Scenarios, "scenarios", []string{"replica", "region", "restart", "redis-failover"}, "scenarios to run: replica, region, restart, redis-failover (a Sentinel-managed Redis loses its primary)")
	fs.StringVar(&o.WorkDir, "dir", "", "working directory (default: a temporary directory removed at exit)")
}
