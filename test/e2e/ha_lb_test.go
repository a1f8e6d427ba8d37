package e2e

// Replicas behind one load-balancer address (issue 12, case 4): the seed puts a single
// LoadBalancer in front of the replicas, so the relay address resolves to one IP that is
// none of the replicas' own addresses. A TCP load balancer in the test spreads connections
// over two replicas; agents redirected to the replica owning their cluster must stay there.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// tcpBalancer accepts connections on a loopback address and spreads them round-robin over
// its backends, copying bytes both ways (a layer-4 load balancer such as a cloud
// LoadBalancer Service). It stops with the test.
type tcpBalancer struct {
	ln       net.Listener
	backends []string
	wg       sync.WaitGroup // the accept loop and every connection's copiers

	mu     sync.Mutex // guards the fields below
	next   int
	conns  map[net.Conn]bool
	opened map[string]int // backend → connections sent to it
}

func startBalancer(t *testing.T, backends ...string) *tcpBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBalancer{ln: ln, backends: backends, conns: map[net.Conn]bool{}, opened: map[string]int{}}
	b.wg.Go(b.accept)
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.conns = nil // a pair accepted meanwhile is closed by track
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *tcpBalancer) addr() string { return b.ln.Addr().String() }

func (b *tcpBalancer) accept() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return // closed at cleanup
		}
		b.mu.Lock()
		backend := b.backends[b.next%len(b.backends)]
		b.next++
		b.opened[backend]++
		b.mu.Unlock()
		out, err := net.DialTimeout("tcp", backend, 2*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		if !b.track(in, out) {
			return
		}
		b.wg.Go(func() { b.pipe(out, in) })
		b.wg.Go(func() { b.pipe(in, out) })
	}
}

// track registers a connection pair; false when the balancer is closing.
func (b *tcpBalancer) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		b.conns[c] = true
	}
	return true
}

// pipe copies src to dst, then closes both (a layer-4 proxy ends the pair together).
func (b *tcpBalancer) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	b.mu.Lock()
	delete(b.conns, dst)
	delete(b.conns, src)
	b.mu.Unlock()
}

// connections returns how many connections were sent to each backend so far.
func (b *tcpBalancer) connections() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.opened))
	for k, v := range b.opened {
		out[k] = v
	}
	return out
}

// Two balancing replicas behind one load-balancer address: every agent ends up on the
// replica that owns its cluster — some through a redirect — and stays there over many
// resolve intervals (no reconnect anywhere), and a config change reaches every agent.
func TestHABalancingBehindOneAddress(t *testing.T) {
	rs := redistest.Start(t)
	h := newHarness(t)
	ids := []string{"replica-1", "replica-2"}
	clusters := twoPerReplica(ids)
	own := owners(clusters, ids)
	// The replicas listen on their own loopback addresses, none of them the balancer's, as
	// pods behind a LoadBalancer do; each advertises its own address for redirects.
	var relays []string
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		p, err := proc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		relays = append(relays, net.JoinHostPort(ip, strconv.Itoa(p)))
	}
	reps := startReplicasAt(h, rs.Addr(), ids, relays, clusters, true)
	lb := startBalancer(t, relays...)

	const resolveEvery = time.Second
	var agents []*agent
	for i, c := range clusters {
		a := h.startAgentAt(c, lb.addr(), reps[0].dataDir, "--resolve-interval", resolveEvery.String())
		writeFile(t, filepath.Join(a.discovery, "svc.yaml"), serviceYAML(fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.%d.0.1", i+1), 8080))
		agents = append(agents, a)
	}
	settled := func() {
		t.Helper()
		poll.Eventually(t, 30*time.Second, "agents on their owners", func() error { return placedAsOwned(reps, own) })
		poll.Eventually(t, 30*time.Second, "every agent connected and in sync", func() error {
			for _, a := range agents {
				if st, err := agentStat(a); err != nil || !st.Connected {
					return fmt.Errorf("agent %s not connected: %+v %v", a.cluster, st, err)
				}
			}
			for _, r := range reps {
				var mine []string
				for c, o := range own {
					if o == r.name {
						mine = append(mine, c)
					}
				}
				if err := r.allInSync(mine...); err != nil {
					return err
				}
			}
			return nil
		})
	}
	settled()
	redirects := func() float64 {
		n := 0.0
		for _, r := range reps {
			n += metricSum(t, r.admin, "meshrelay_relay_redirects_total")
		}
		return n
	}
	reconnects := func() map[string]float64 {
		m := map[string]float64{}
		for _, a := range agents {
			m[a.cluster] = mustMetric(t, a.admin, "meshrelay_agent_reconnects_total")
		}
		return m
	}
	// redirected lists the agents connected to a replica's own address (a redirect sent
	// them there) rather than through the balancer.
	redirected := func() []string {
		var out []string
		for _, a := range agents {
			if st, err := agentStat(a); err == nil && st.Connected && st.Server != lb.addr() {
				out = append(out, a.cluster+"@"+st.Server)
			}
		}
		return out
	}
	// The balancer's round robin decides where each agent lands first; an agent restarted
	// lands on the next replica, so a few restarts make sure the window below starts with
	// some agent on a redirected connection.
	var rcBefore map[string]float64
	var sinceBefore map[string]time.Time
	var moved []string
	for i := 0; ; i++ {
		var err error
		if _, sinceBefore, err = placement(reps); err != nil {
			t.Fatal(err)
		}
		rcBefore = reconnects()
		if moved = redirected(); len(moved) > 0 {
			break
		}
		if i == 2*len(agents) {
			t.Fatalf("no agent is on a redirected connection (balancer connections %v)", lb.connections())
		}
		a := agents[i%len(agents)]
		a.p.Kill()
		h.rerunAgent(a)
		settled()
	}
	lbBefore, redirectsBefore := lb.connections(), redirects()
	t.Logf("redirected agents %v; %v redirects; balancer connections %v", moved, redirectsBefore, lbBefore)

	// Several resolve intervals, then a config change that must reach every agent.
	sleep(t, 5*resolveEvery)
	writeFile(t, filepath.Join(reps[0].config, "lb-change.yaml"), extraVD("lb-change", "svc-0"))
	for _, a := range agents {
		poll.Eventually(t, 20*time.Second, "the config change reaches "+a.cluster, func() error { return outputHas(t, a, seKey("lb-change")) })
	}
	sleep(t, 2*resolveEvery)

	_, sinceAfter, err := placement(reps)
	if err != nil {
		t.Fatal(err)
	}
	rcAfter := reconnects()
	var errs []error
	for _, c := range clusters {
		if rcAfter[c] != rcBefore[c] || !sinceAfter[c].Equal(sinceBefore[c]) {
			errs = append(errs, fmt.Errorf("agent %s reconnected (%v → %v reconnects, connected to %s since %s → %s)",
				c, rcBefore[c], rcAfter[c], own[c], sinceBefore[c].Format(time.StampMilli), sinceAfter[c].Format(time.StampMilli)))
		}
	}
	if got := redirects(); got != redirectsBefore {
		errs = append(errs, fmt.Errorf("%v more redirects while nothing changed", got-redirectsBefore))
	}
	if got := lb.connections(); fmt.Sprint(got) != fmt.Sprint(lbBefore) {
		errs = append(errs, fmt.Errorf("new connections through the balancer: %v → %v", lbBefore, got))
	}
	if err := placedAsOwned(reps, own); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
