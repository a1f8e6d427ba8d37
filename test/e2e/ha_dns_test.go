package e2e

// Active/passive management servers in two regions sharing Redis (seed 001): agents reach
// the active one through a DNS name served by a real DNS server on loopback; the DNS record
// and the global lock are switched at runtime.

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

const (
	westIP  = "127.0.0.1"
	eastIP  = "127.0.0.2" // Linux routes all of 127.0.0.0/8 to lo: a second "host"
	mgmtDNS = "mgmt.test"
)

// regions is two management servers, west (started first, so active) and east, on the
// same relay port of two loopback addresses, with agents reaching them as mgmt.test.
type regions struct {
	h          *harness
	rs         *redistest.Server
	dns        *dnsServer
	port       string
	west, east *mgmt
	agents     []*agent
}

func startRegions(t *testing.T, clusters ...string) *regions {
	t.Helper()
	r := &regions{rs: redistest.Start(t), dns: startDNS(t), h: newHarness(t)}
	p, err := proc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r.port = strconv.Itoa(p)
	args := func(name string) []string {
		return append([]string{"--redis-address", r.rs.Addr(), "--mgmt-cluster-name", name, "--relay-server-names", mgmtDNS}, haServerFlags...)
	}
	r.west = r.h.startMgmt("west", mgmtOpts{relay: westIP + ":" + r.port, clusters: clusters, args: args("west")})
	poll.Eventually(t, 10*time.Second, "west takes the free lock", func() error { return r.activeIs(r.west) })
	r.east = r.h.startMgmt("east", mgmtOpts{relay: eastIP + ":" + r.port, clusters: clusters, caFrom: r.west, args: args("east")})
	poll.Eventually(t, 10*time.Second, "east is passive", func() error { return r.activeIs(r.west) })
	r.dns.set(mgmtDNS, westIP)
	for i, c := range clusters {
		a := r.startAgent(t, c)
		writeFile(t, filepath.Join(a.discovery, "svc.yaml"), serviceYAML(world3Services[i], fmt.Sprintf("10.%d.0.1", i+1), 8080))
	}
	poll.Eventually(t, 30*time.Second, "agents complete", func() error { return r.complete(t, world3Services[:len(clusters)]...) })
	poll.Eventually(t, 10*time.Second, "in sync on west", func() error { return r.west.allInSync(clusters...) })
	return r
}

// startAgent starts an agent whose relay address is mgmt.test:<port>, resolved with the
// test's DNS server. It registers once through west's IP first: registration itself does
// not use --dns-server (see TestHADNSAgentRegistersThroughDNS); its certificate then serves
// for the rest of the test.
func (r *regions) startAgent(t *testing.T, cluster string) *agent {
	t.Helper()
	a := r.h.startAgentAt(cluster, westIP+":"+r.port, r.west.dataDir)
	connected := func() error {
		if st, err := agentStat(a); err != nil || !st.Connected {
			return fmt.Errorf("agent %s not connected: %+v %v", cluster, st, err)
		}
		return nil
	}
	poll.Eventually(t, 20*time.Second, cluster+" registers through west's IP", connected)
	a.p.Kill()
	a.args = append(slices.Clone(a.args), "--relay-address", mgmtDNS+":"+r.port, "--dns-server", r.dns.addr) // the last flag wins
	r.h.rerunAgent(a)
	poll.Eventually(t, 20*time.Second, cluster+" connects through "+mgmtDNS, connected)
	r.agents = append(r.agents, a)
	return a
}

// activeIs is nil when both servers agree that m holds the global lock, and only m is active.
func (r *regions) activeIs(m *mgmt) error {
	for _, s := range []*mgmt{r.west, r.east} {
		if s == nil {
			continue
		}
		st, err := s.stat()
		if err != nil {
			return err
		}
		if st.HA.Lock == nil || st.HA.Lock.Name != m.name {
			return fmt.Errorf("%s sees lock %+v, want %s", s.name, st.HA.Lock, m.name)
		}
		if st.HA.Active != (s == m) {
			return fmt.Errorf("%s active=%v", s.name, st.HA.Active)
		}
	}
	return nil
}

// complete is nil when every agent is connected and has every given service.
func (r *regions) complete(t *testing.T, services ...string) error {
	for _, a := range r.agents {
		st, err := agentStat(a)
		if err != nil {
			return err
		}
		if !st.Connected {
			return fmt.Errorf("agent %s not connected: %s", a.cluster, st.LastError)
		}
		for _, s := range services {
			if err := outputHas(t, a, seKey(s)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *regions) statuses(t *testing.T) map[string]haAgentStatus {
	t.Helper()
	out := map[string]haAgentStatus{}
	for _, a := range r.agents {
		st, err := agentStat(a)
		if err != nil {
			t.Fatal(err)
		}
		out[a.cluster] = st
	}
	return out
}

// holds is nil when m's current output of every agent's cluster is what the agent applied.
func (r *regions) holds(m *mgmt) error {
	st, err := m.stat()
	if err != nil {
		return err
	}
	for _, a := range r.agents {
		as, err := agentStat(a)
		if err != nil {
			return err
		}
		if cs := st.cluster(a.cluster); cs.OutputHash != as.OutputHash || cs.OutputVersion != as.OutputVersion {
			return fmt.Errorf("%s holds v%d %.12s for %s, the agent v%d %.12s", m.name, cs.OutputVersion, cs.OutputHash, a.cluster, as.OutputVersion, as.OutputHash)
		}
	}
	return nil
}

// moveDNS points mgmt.test at to and waits until every agent is connected to it.
func (r *regions) moveDNS(t *testing.T, to *mgmt, ip string) time.Duration {
	t.Helper()
	r.dns.set(mgmtDNS, ip)
	start := time.Now()
	poll.Eventually(t, 30*time.Second, "agents follow the DNS record to "+to.name, func() error {
		for _, a := range r.agents {
			st, err := agentStat(a)
			if err != nil {
				return err
			}
			if !st.Connected || st.Server != to.relay {
				return fmt.Errorf("agent %s connected=%v to %q", a.cluster, st.Connected, st.Server)
			}
		}
		return nil
	})
	return time.Since(start)
}

// switchActive runs `meshrelay switch-active` and waits until the servers agree.
func (r *regions) switchActive(t *testing.T, to *mgmt) {
	t.Helper()
	out, errOut, code := cliExit(t, "switch-active", "--mgmt-cluster-name", to.name, "--redis-address", r.rs.Addr())
	if code != 0 {
		t.Fatalf("switch-active %s: exit %d: %s %s", to.name, code, out, errOut)
	}
	t.Logf("switch-active: %s", out)
}

// The seeds' regional failover: switch the DNS record, agents move without a restart and
// keep identical outputs, the passive server translates nothing and sends nothing; then
// switch-active makes it active (new epoch on every output) and its config dir changes
// reach the agents. Switching back works the same way.
func TestHADNSSwitchActivePassive(t *testing.T) {
	r := startRegions(t, "a", "b")
	services := world3Services[:2]
	for _, step := range []struct {
		from, to *mgmt
		ip       string
	}{{r.west, r.east, eastIP}, {r.east, r.west, westIP}} {
		from, to := step.from, step.to
		// The passive server polls Redis every second; move once it holds what the agents
		// hold (moving earlier hits TestHADNSSwitchRightAfterChange's bug).
		poll.Eventually(t, 10*time.Second, "agents settled and "+to.name+" holds their outputs", func() error {
			if err := r.holds(from); err != nil {
				return err
			}
			return r.holds(to)
		})
		before := r.statuses(t)
		translated := mustMetric(t, to.admin, "meshrelay_translation_total")
		sent := map[string]float64{}
		for _, a := range r.agents {
			sent[a.cluster] = mustMetric(t, to.admin, "meshrelay_relay_pull_resources_sent_total", `cluster="`+a.cluster+`"`)
		}

		took := r.moveDNS(t, to, step.ip)
		t.Logf("DNS %s → %s: every agent moved to %s in %s without a restart", from.name, to.name, to.name, took.Round(time.Millisecond))
		sleep(t, time.Second) // anything the passive server would send, it sends now
		for _, a := range r.agents {
			st, _ := agentStat(a)
			if b := before[a.cluster]; st.OutputHash != b.OutputHash || st.OutputVersion != b.OutputVersion || st.OutputEpoch != b.OutputEpoch {
				t.Errorf("agent %s output changed by the move to the passive %s: v%d e%d %.12s → v%d e%d %.12s", a.cluster, to.name,
					b.OutputVersion, b.OutputEpoch, b.OutputHash, st.OutputVersion, st.OutputEpoch, st.OutputHash)
			}
			if got := mustMetric(t, to.admin, "meshrelay_relay_pull_resources_sent_total", `cluster="`+a.cluster+`"`); got != sent[a.cluster] {
				t.Errorf("passive %s sent %v resources to %s", to.name, got-sent[a.cluster], a.cluster)
			}
		}
		if got := mustMetric(t, to.admin, "meshrelay_translation_total"); got != translated {
			t.Errorf("passive %s translated %v times", to.name, got-translated)
		}

		switched := time.Now()
		r.switchActive(t, to)
		poll.Eventually(t, 15*time.Second, to.name+" active", func() error { return r.activeIs(to) })
		lock, _ := to.stat()
		epoch := lock.HA.Lock.Epoch
		poll.Eventually(t, 20*time.Second, "agents on the new epoch", func() error {
			for _, a := range r.agents {
				st, err := agentStat(a)
				if err != nil {
					return err
				}
				if st.OutputEpoch != epoch {
					return fmt.Errorf("agent %s at epoch %d, lock at %d", a.cluster, st.OutputEpoch, epoch)
				}
			}
			return nil
		})
		t.Logf("switch-active %s: every agent applied epoch %d outputs %s after running the command", to.name, epoch, time.Since(switched).Round(time.Millisecond))
		for _, a := range r.agents {
			if st, _ := agentStat(a); st.OutputEpoch <= before[a.cluster].OutputEpoch {
				t.Errorf("agent %s epoch did not grow: %d → %d", a.cluster, before[a.cluster].OutputEpoch, st.OutputEpoch)
			}
		}
		rc := r.rs.Client(t)
		poll.Eventually(t, 10*time.Second, "redis holds the new epoch's outputs", func() error {
			for _, a := range r.agents {
				out, err := redisSnapshot(t, rc, snapshot.Output, a.cluster)
				if err != nil {
					return err
				}
				st, _ := agentStat(a)
				if out == nil || out.Epoch != epoch || out.Hash != st.OutputHash || out.Version != st.OutputVersion {
					return fmt.Errorf("redis output of %s is v%d epoch %d %.12s, the agent applied v%d epoch %d %.12s", a.cluster, out.Version, out.Epoch, out.Hash, st.OutputVersion, st.OutputEpoch, st.OutputHash)
				}
			}
			return nil
		})

		// A config change in the new active's config dir reaches the agents. (The pipeline
		// writes every management cluster, as the seeds recommend, so switching back keeps it.)
		vd := "extra-" + to.name
		changed := time.Now()
		writeFile(t, filepath.Join(to.config, vd+".yaml"), extraVD(vd, services[0]))
		writeFile(t, filepath.Join(from.config, vd+".yaml"), extraVD(vd, services[0]))
		poll.Eventually(t, 20*time.Second, "config change on "+to.name+" reaches agents", func() error {
			return r.complete(t, append([]string{vd}, services...)...)
		})
		t.Logf("config change on the new active %s reached every agent in %s", to.name, time.Since(changed).Round(time.Millisecond))
	}
	for _, a := range r.agents {
		if err := checkHistory(a, true); err != nil {
			t.Error(err)
		}
		if v := mustMetric(t, a.admin, "meshrelay_agent_outputs_refused_total"); v != 0 {
			t.Errorf("agent %s refused %v outputs", a.cluster, v)
		}
	}
}

// Split brain: the active west is frozen (SIGSTOP) while the lock moves to east and the
// agents follow the DNS record to east, which writes. West then wakes up with a config
// change waiting and the agents reconnecting to it: every write west attempts is fenced,
// Redis keeps east's outputs at east's epoch, west turns passive, and no agent ever
// applies an output of the older epoch (any that reached one was refused).
func TestHAFencingSplitBrain(t *testing.T) {
	r := startRegions(t, "a", "b")
	rc := r.rs.Client(t)
	west, east := r.west, r.east
	if err := west.p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = west.p.Signal(syscall.SIGCONT) })
	r.switchActive(t, east)
	poll.Eventually(t, 15*time.Second, "east active", func() error {
		st, err := east.stat()
		if err != nil {
			return err
		}
		if !st.HA.Active {
			return fmt.Errorf("east passive: %+v", st.HA)
		}
		return nil
	})
	st, _ := east.stat()
	epoch := st.HA.Lock.Epoch
	took := r.moveDNS(t, east, eastIP)
	t.Logf("west frozen: agents moved to east in %s", took.Round(time.Millisecond))
	poll.Eventually(t, 10*time.Second, "east's epoch in redis", func() error {
		for _, a := range r.agents {
			out, err := redisSnapshot(t, rc, snapshot.Output, a.cluster)
			if err != nil {
				return err
			}
			if out == nil || out.Epoch != epoch {
				return fmt.Errorf("redis output of %s not at epoch %d yet", a.cluster, epoch)
			}
		}
		return nil
	})

	// Watch Redis from now on: no output of an older epoch may ever land.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stale []string
	wg.Go(func() {
		for {
			for _, a := range r.agents {
				if out, err := redisSnapshot(t, rc, snapshot.Output, a.cluster); err == nil && out != nil && out.Epoch < epoch {
					mu.Lock()
					stale = append(stale, fmt.Sprintf("%s v%d epoch %d", a.cluster, out.Version, out.Epoch))
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	// East writes: a new service in a.
	writeFile(t, filepath.Join(r.agents[0].discovery, "svc-0.yaml"), serviceYAML("svc-0", "10.1.0.9", 8080))
	poll.Eventually(t, 20*time.Second, "east's translation reaches the agents at its epoch", func() error {
		for _, a := range r.agents {
			st, err := agentStat(a)
			if err != nil {
				return err
			}
			if st.OutputEpoch != epoch {
				return fmt.Errorf("agent %s at epoch %d", a.cluster, st.OutputEpoch)
			}
		}
		return r.complete(t, "svc-0")
	})
	eastOut := map[string]string{}
	poll.Eventually(t, 10*time.Second, "east's outputs stored", func() error {
		st, err := east.stat()
		if err != nil {
			return err
		}
		for _, a := range r.agents {
			out, err := redisSnapshot(t, rc, snapshot.Output, a.cluster)
			if err != nil {
				return err
			}
			if out == nil || out.Hash != st.cluster(a.cluster).OutputHash || out.Epoch != epoch {
				return fmt.Errorf("redis output of %s is not east's", a.cluster)
			}
			eastOut[a.cluster] = out.Hash
		}
		return nil
	})

	// While west is still frozen, a config change waits in its config dir and the DNS record
	// points back at it (a stale record, a mistaken flip): the agents' connections queue up
	// in west's listen backlog. Then west wakes up, believing for a moment that it is active
	// at epoch 1.
	writeFile(t, filepath.Join(west.config, "stale.yaml"), extraVD("stale-west", world3Services[0]))
	r.dns.set(mgmtDNS, westIP)
	sleep(t, 1500*time.Millisecond)
	if err := west.p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	woke := time.Now()
	poll.Eventually(t, 15*time.Second, "west turns passive", func() error {
		st, err := west.stat()
		if err != nil {
			return err
		}
		if st.HA.Active || st.HA.Lock == nil || st.HA.Lock.Name != "east" {
			return fmt.Errorf("west: %+v", st.HA)
		}
		return nil
	})
	t.Logf("west woke up and turned passive within %s", time.Since(woke).Round(time.Millisecond))
	r.moveDNS(t, west, westIP)
	sleep(t, 2*time.Second) // whatever west would push or write, it does now
	fenced := mustMetric(t, west.admin, "meshrelay_store_writes_fenced_total")
	t.Logf("west: %v writes fenced", fenced)

	mu.Lock()
	if len(stale) > 0 {
		t.Errorf("redis held outputs of the old epoch: %v", stale)
	}
	mu.Unlock()
	for _, a := range r.agents {
		out, err := redisSnapshot(t, rc, snapshot.Output, a.cluster)
		if err != nil || out == nil || out.Hash != eastOut[a.cluster] || out.Epoch != epoch {
			t.Errorf("redis output of %s changed after west woke up: %+v %v", a.cluster, out, err)
		}
		st, _ := agentStat(a)
		if st.OutputEpoch != epoch {
			t.Errorf("agent %s at epoch %d, want %d", a.cluster, st.OutputEpoch, epoch)
		}
		if err := outputLacks(t, a, seKey("stale-west")); err != nil {
			t.Errorf("the deposed server's config reached an agent: %v", err)
		}
		if err := historyNoShrink(a, true); err != nil {
			t.Error(err)
		}
		if err := historyVersionsGrow(a); err != nil {
			t.Error(err)
		}
		refused := mustMetric(t, a.admin, "meshrelay_agent_outputs_refused_total")
		t.Logf("agent %s refused %v outputs from the deposed server", a.cluster, refused)
		if refused > 0 {
			if err := logContains(t, a.p, "older than applied epoch"); err != nil {
				t.Errorf("agent %s refused outputs for another reason: %v", a.cluster, err)
			}
		}
	}

	// And whatever a server still believing in epoch 1 writes is refused by the fence: the
	// deposed server's own store code, run here against the same Redis.
	old := redisstore.New(rc, "").WithFence(redisstore.Fence{Name: west.name, Epoch: func() uint64 { return epoch - 1 }})
	stalePut := snapshot.New(99, epoch-1, nil)
	if err := old.Put(t.Context(), snapshot.Output, r.agents[0].cluster, stalePut); !errors.Is(err, snapshot.ErrFenced) {
		t.Errorf("a write under the old epoch was not fenced: %v", err)
	}
	if out, err := redisSnapshot(t, rc, snapshot.Output, r.agents[0].cluster); err != nil || out == nil || out.Hash != eastOut[r.agents[0].cluster] {
		t.Errorf("redis output of %s changed by a fenced write: %+v %v", r.agents[0].cluster, out, err)
	}

	// Back to the real active: everything converges on east.
	r.moveDNS(t, east, eastIP)
	writeFile(t, filepath.Join(r.agents[1].discovery, "svc-1.yaml"), serviceYAML("svc-1", "10.2.0.9", 8080))
	poll.Eventually(t, 20*time.Second, "east still serves", func() error { return r.complete(t, "svc-0", "svc-1") })
}

// An agent configured with a DNS name and --dns-server registers (obtains its certificate)
// through that DNS server, like its relay streams do.
func TestHADNSAgentRegistersThroughDNS(t *testing.T) {
	d := startDNS(t)
	h := newHarness(t)
	s := h.startMgmt("server", mgmtOpts{clusters: []string{"a"}, args: []string{"--relay-server-names", mgmtDNS}})
	d.set(mgmtDNS, westIP)
	_, port, _ := net.SplitHostPort(s.relay)
	a := h.startAgentAt("a", mgmtDNS+":"+port, s.dataDir, "--dns-server", d.addr)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := agentStat(a)
		if err == nil && st.Connected {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("an agent whose --relay-address is a DNS name (%s) did not register with --dns-server: %s", mgmtDNS+":"+port, st.LastError)
		}
		sleep(t, 100*time.Millisecond)
	}
}

// The DNS record is switched to the passive server right after the active one made a
// change. The active server sends a new output to its agents at once but writes it to Redis
// only at its next store sync (up to a second later), and the passive server learns outputs
// from Redis, so the agents may arrive holding an output newer than anything the passive
// server can read. It must never answer them with an older one: no agent may lose a
// resource or see its version go back.
func TestHADNSSwitchRightAfterChange(t *testing.T) {
	r := startRegions(t, "a", "b")
	a, b := r.agents[0], r.agents[1]
	rc := r.rs.Client(t)
	storedHash := func(cluster string) string {
		v, _ := rc.HGet(t.Context(), "meshrelay:{meshrelay}:index:output", cluster).Result()
		return v
	}
	var found bugs
	pairs := [][2]string{{"svc-0", "svc-1"}, {"svc-2", "svc-3"}, {"svc-4", "svc-new"}}
	for cycle, p := range pairs {
		// Align with west's store syncs: a first change, and the moment west writes it.
		was := storedHash(a.cluster)
		writeFile(t, filepath.Join(a.discovery, p[0]+".yaml"), serviceYAML(p[0], fmt.Sprintf("10.1.%d.1", cycle+1), 8080))
		poll.Every(t, 10*time.Second, 2*time.Millisecond, "west stores the first change", func() error {
			if storedHash(a.cluster) == was {
				return fmt.Errorf("redis still has a's previous output")
			}
			return nil
		})
		// A second change at once, and the DNS switch to east as soon as west has it: west
		// stores it only at its next sync, about a second later.
		wst, err := r.west.stat()
		if err != nil {
			t.Fatal(err)
		}
		inB := wst.cluster(b.cluster).InputHash
		writeFile(t, filepath.Join(b.discovery, p[1]+".yaml"), serviceYAML(p[1], fmt.Sprintf("10.2.%d.1", cycle+1), 8080))
		poll.Every(t, 10*time.Second, 5*time.Millisecond, "west receives the second change", func() error {
			st, err := r.west.stat()
			if err != nil {
				return err
			}
			if st.cluster(b.cluster).InputHash == inB {
				return fmt.Errorf("west still has b's old input")
			}
			return nil
		})
		r.dns.set(mgmtDNS, eastIP)
		r.moveDNS(t, r.east, eastIP)
		sleep(t, 1500*time.Millisecond) // west has stored the change and east read it since
		for _, ag := range r.agents {
			if err := r.complete(t, p[0], p[1]); err != nil {
				found.add("cycle %d: agents on the passive server lack a change: %v", cycle+1, err)
				break
			}
			if err := historyNoShrink(ag, true); err != nil {
				found.add("cycle %d: %v", cycle+1, err)
				break
			}
			if err := historyVersionsGrow(ag); err != nil {
				found.add("cycle %d: %v", cycle+1, err)
				break
			}
		}
		if len(found) > 0 {
			break
		}
		r.moveDNS(t, r.west, westIP)
	}
	if len(found) > 0 {
		found.add("the passive server answered agents with an output older than the one they held: the active server publishes a new " +
			"output to its agents (reconcile.reconcile notifies subscribers) before it writes it to Redis (marked dirty, flushed by the next " +
			"store sync, up to a tick later), so the store — and RefreshOutput's read of it when the agent connects — can be behind the agent, " +
			"and relay.Pull sends any output whose hash differs from the agent's, even one with a lower version in the same epoch")
	}
	found.skipIfAny(t)
}
