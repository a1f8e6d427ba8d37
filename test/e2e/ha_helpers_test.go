package e2e

// Helpers of the high-availability tests (ha_*_test.go): management servers started with
// full control over their flags and restarted in any state, agents pointed at any relay
// address, a loopback DNS server whose answer changes at runtime, and readers of what an
// agent really applied (its state file and its log).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"

	relayagent "github.com/meshrelay/meshrelay/internal/agent"
	"github.com/meshrelay/meshrelay/internal/proc"
	"github.com/meshrelay/meshrelay/internal/promtext"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/snapshot/redisstore"
)

// Timing flags that keep the HA tests fast: a 2s leader lease (coordination every 400ms),
// agents that re-resolve every 500ms and back off at most 1s.
var (
	haServerFlags = []string{"--lease-duration", "2s"}
	haAgentFlags  = []string{"--resolve-interval", "500ms", "--max-backoff", "1s"}
)

// procGroup holds the processes a test started with startFast. They are stopped together
// (each takes about a second to stop gracefully, which adds up with 30 agents), and on
// failure the tail of each log is printed once. MESHRELAY_E2E_KEEP_LOGS=<dir> keeps every
// log in <dir>/<test name>/.
type procGroup struct {
	mu    sync.Mutex // guards procs and logs
	procs []*proc.Process
	logs  []string
}

var (
	groupsMu sync.Mutex
	groups   = map[*harness]*procGroup{}
)

// startFast starts a process like h.start, in the test's process group.
func (h *harness) startFast(name string, args ...string) *proc.Process {
	h.t.Helper()
	groupsMu.Lock()
	g := groups[h]
	if g == nil {
		g = &procGroup{}
		groups[h] = g
		h.t.Cleanup(func() { g.stop(h.t) })
		h.t.Cleanup(func() {
			groupsMu.Lock()
			delete(groups, h)
			groupsMu.Unlock()
		})
	}
	groupsMu.Unlock()
	logPath := filepath.Join(h.dir, name+".log")
	p, err := proc.Start(name, bin, logPath, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	g.mu.Lock()
	g.procs = append(g.procs, p)
	if !slices.Contains(g.logs, logPath) {
		g.logs = append(g.logs, logPath)
	}
	g.mu.Unlock()
	return p
}

func (g *procGroup) stop(t *testing.T) {
	g.mu.Lock()
	procs, logs := g.procs, g.logs
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			_ = p.Signal(syscall.SIGCONT) // a test may have left it stopped
			if err := p.Stop(10 * time.Second); err != nil {
				t.Errorf("stop %s: %v", p.Name, err)
			}
		})
	}
	wg.Wait()
	if d := os.Getenv("MESHRELAY_E2E_KEEP_LOGS"); d != "" {
		dst := filepath.Join(d, t.Name())
		_ = os.MkdirAll(dst, 0o755)
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			_ = os.WriteFile(filepath.Join(dst, filepath.Base(l)), b, 0o644)
		}
	}
	if !t.Failed() {
		return
	}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Logf("----- %s (tail) -----\n%s", filepath.Base(l), b)
	}
}

// mgmt is a management server process whose flags the test controls entirely.
type mgmt struct {
	h       *harness
	name    string
	p       *proc.Process
	relay   string
	admin   string
	dataDir string
	config  string
	args    []string
	// fresh is set during the first start, when ports may still be picked anew;
	// autoRelay when the relay address was picked here (not given by the test).
	fresh, autoRelay bool
}

type mgmtOpts struct {
	relay    string   // relay listen address; default: a free loopback port
	config   string   // config dir; default: a new <name>-config dir registering clusters
	clusters []string // clusters registered in the default config dir
	caFrom   *mgmt    // share this server's relay CA and mesh CA (replicas, active/passive)
	noWait   bool     // do not wait for /readyz (the store may be down)
	args     []string // more flags
}

// caFile is the relay CA that issued the server's admin certificate: its own data
// directory's, or that of the server it shares the CA with.
func (m *mgmt) caFile() string {
	if i := slices.Index(m.args, "--relay-ca-cert"); i >= 0 {
		return m.args[i+1]
	}
	return filepath.Join(m.dataDir, "relay-ca.crt")
}

// startMgmt starts a management server.
func (h *harness) startMgmt(name string, o mgmtOpts) *mgmt {
	h.t.Helper()
	m := &mgmt{h: h, name: name, relay: o.relay, admin: h.addr(), dataDir: filepath.Join(h.dir, name+"-data"), config: o.config}
	if m.relay == "" {
		m.relay = h.addr()
	}
	if m.config == "" {
		m.config = filepath.Join(h.dir, name+"-config")
		writeConfigDir(h.t, m.config, o.clusters)
	}
	m.args = []string{"server", "--relay-address", m.relay, "--admin-address", m.admin, "--data-dir", m.dataDir,
		"--config-dir", m.config, "--token-file", h.token, "--admin-token-file", h.adminToken, "--log-level", "info"}
	if o.caFrom != nil {
		d := o.caFrom.dataDir
		m.args = append(m.args, "--relay-ca-cert", filepath.Join(d, "relay-ca.crt"), "--relay-ca-key", filepath.Join(d, "relay-ca.key"),
			"--mesh-ca-cert", filepath.Join(d, "mesh-ca.crt"), "--mesh-ca-key", filepath.Join(d, "mesh-ca.key"))
	}
	m.args = append(m.args, o.args...)
	m.fresh, m.autoRelay = true, o.relay == ""
	m.run(!o.noWait)
	m.fresh = false
	return m
}

// run starts the process with m.args (same ports, dirs and log file every time) and waits
// for /readyz (wait) or /healthz. Ports are picked free a moment before the process binds
// them: when one was taken meanwhile at the first start, run picks new ones.
func (m *mgmt) run(wait bool) {
	m.h.t.Helper()
	path := "/healthz"
	if wait {
		path = "/readyz"
	}
	for attempt := 1; ; attempt++ {
		off := logSize(m.h, m.name)
		m.p = m.h.startFast(m.name, m.args...)
		m.h.trustAdmin(m.admin, m.caFile())
		err := waitUp(m.h.t, m.p, off, func() string { return m.admin }, path, 30*time.Second)
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || !m.fresh || attempt == 3 {
			m.h.t.Fatalf("%s: %v", m.name, err)
		}
		m.admin = m.h.addr()
		setFlag(m.args, "--admin-address", m.admin)
		if m.autoRelay {
			m.relay = m.h.addr()
			setFlag(m.args, "--relay-address", m.relay)
		}
	}
}

// errPortTaken says a process exited because a port picked for it was taken meanwhile.
var errPortTaken = errors.New("a port picked for the process was taken meanwhile")

// logSize is the size of a process's log before a start (the log is shared by restarts).
func logSize(h *harness, name string) int64 {
	fi, err := os.Stat(filepath.Join(h.dir, name+".log"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitUp polls url() until it answers 200. When the process exits first it returns
// errPortTaken for a bind conflict (seen in the log after off), another error otherwise.
func waitUp(t *testing.T, p *proc.Process, off int64, addr func() string, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if resp, err := adminGet(t.Context(), addr(), path, time.Second); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			b, _ := os.ReadFile(p.LogPath)
			if int64(len(b)) >= off {
				b = b[off:]
			}
			if bytes.Contains(b, []byte("address already in use")) {
				return fmt.Errorf("%s: %w", p.Name, errPortTaken)
			}
			return fmt.Errorf("%s exited (%v): %s", p.Name, p.Err(), b)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s on %s not ready within %s", p.Name, path, addr(), timeout)
		}
		sleep(t, 50*time.Millisecond)
	}
}

// setFlag replaces the value of flag in args (its first occurrence).
func setFlag(args []string, flag, value string) {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		args[i+1] = value
	}
}

// restart starts the server again after it stopped or was killed.
func (m *mgmt) restart(wait bool) {
	m.h.t.Helper()
	if !m.p.Exited() {
		m.h.t.Fatalf("%s still runs", m.name)
	}
	m.run(wait)
}

// writeConfigDir writes clusters.yaml (one KubernetesCluster per name) and the shared
// VirtualDestinations into dir.
func writeConfigDir(t *testing.T, dir string, clusters []string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "clusters.yaml"), clustersYAML(clusters, nil))
	writeFile(t, filepath.Join(dir, "virtual-destinations.yaml"), virtualDestinations)
}

// clustersYAML registers clusters; those in skip get spec.skipWarming: true.
func clustersYAML(clusters []string, skip map[string]bool) string {
	var b strings.Builder
	for _, c := range clusters {
		fmt.Fprintf(&b, "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n", c)
		if skip[c] {
			b.WriteString("spec:\n  skipWarming: true\n")
		}
		b.WriteString("---\n")
	}
	return b.String()
}

// extraVD is a VirtualDestination for a config change that shows in every cluster's output
// (a ServiceEntry vd-<name> as soon as service exists somewhere).
func extraVD(name, service string) string {
	return fmt.Sprintf("apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata:\n  name: %[1]s\n  namespace: default\nspec:\n  hosts: [%[1]s.global]\n  ports: [{number: 80, targetPort: {name: http}}]\n  services: [{name: %[2]s}]\n", name, service)
}

// startAgentAt starts the agent of cluster against relay (any host:port, a DNS name too),
// trusting caDir's relay CA, and waits until its admin endpoint answers. Its log is JSON so
// that appliedHistory can read it.
func (h *harness) startAgentAt(cluster, relay, caDir string, extra ...string) *agent {
	h.t.Helper()
	a := h.launchAgent(cluster, relay, caDir, extra...)
	h.agentUp(a, 0)
	return a
}

// launchAgent starts an agent without waiting for it (agentUp waits).
func (h *harness) launchAgent(cluster, relay, caDir string, extra ...string) *agent {
	h.t.Helper()
	a := h.agentDirs(cluster)
	a.args = append([]string{"agent", "--cluster", cluster, "--relay-address", relay, "--token-file", h.token,
		"--relay-ca-file", filepath.Join(caDir, "relay-ca.crt"), "--state-dir", a.state, "--discovery-dir", a.discovery,
		"--output-dir", a.output, "--admin-address", a.admin, "--xds-address", "127.0.0.1:0", "--log-level", "info", "--log-format", "json"},
		haAgentFlags...)
	a.args = append(a.args, extra...)
	a.p = h.startFast("agent-"+cluster, a.args...)
	return a
}

// agentUp waits until the agent's admin endpoint answers (off: its log's size before the
// start); when its admin port was taken meanwhile, the agent starts again on another.
func (h *harness) agentUp(a *agent, off int64) {
	h.t.Helper()
	for attempt := 1; ; attempt++ {
		err := waitUp(h.t, a.p, off, func() string { return a.admin }, "/healthz", 30*time.Second)
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			h.t.Fatalf("agent %s: %v", a.cluster, err)
		}
		a.admin = h.addr()
		setFlag(a.args, "--admin-address", a.admin)
		off = logSize(h, "agent-"+a.cluster)
		a.p = h.startFast("agent-"+a.cluster, a.args...)
	}
}

// rerunAgent starts a stopped or killed agent again with the same flags, dirs and log, and
// waits until its admin endpoint answers.
func (h *harness) rerunAgent(a *agent) {
	h.t.Helper()
	if !a.p.Exited() {
		h.t.Fatalf("agent %s still runs", a.cluster)
	}
	off := logSize(h, "agent-"+a.cluster)
	a.p = h.startFast("agent-"+a.cluster, a.args...)
	h.agentUp(a, off)
}

// haAgentStatus is the agent's /status with every field the HA tests read.
type haAgentStatus struct {
	Cluster       string `json:"cluster"`
	Connected     bool   `json:"connected"`
	Server        string `json:"server"`
	InputHash     string `json:"inputHash"`
	OutputVersion uint64 `json:"outputVersion"`
	OutputHash    string `json:"outputHash"`
	OutputEpoch   uint64 `json:"outputEpoch"`
	OutputCount   int    `json:"outputResources"`
	LastError     string `json:"lastError"`
}

func agentStat(a *agent) (haAgentStatus, error) {
	var st haAgentStatus
	err := getJSON(a.admin, "/status", &st)
	return st, err
}

// haStatus is the server's /status with every field the HA tests read.
type haStatus struct {
	Ready      bool   `json:"ready"`
	StoreError string `json:"storeError"`
	SafeMode   struct {
		Active  bool      `json:"active"`
		Reason  string    `json:"reason"`
		Missing []string  `json:"missingClusters"`
		Since   time.Time `json:"since"`
	} `json:"safeMode"`
	Translations    uint64            `json:"translations"`
	LastTranslation time.Time         `json:"lastTranslation"`
	Clusters        []haClusterStatus `json:"clusters"`
	HA              struct {
		MgmtCluster string `json:"mgmtCluster"`
		Replica     string `json:"replica"`
		Active      bool   `json:"active"`
		Lock        *struct {
			Name  string `json:"name"`
			Epoch uint64 `json:"epoch"`
		} `json:"lock"`
		Leader bool `json:"leader"`
		Lease  *struct {
			Holder string `json:"holder"`
			Epoch  uint64 `json:"epoch"`
		} `json:"lease"`
		Replicas []struct {
			ID      string `json:"id"`
			Address string `json:"address"`
		} `json:"replicas"`
		Error string `json:"error"`
	} `json:"ha"`
	Connections map[string]struct {
		Push  int       `json:"push"`
		Pull  int       `json:"pull"`
		Since time.Time `json:"since"`
	} `json:"connections"`
}

func (m *mgmt) stat() (haStatus, error) {
	var st haStatus
	err := getJSON(m.admin, "/status", &st)
	return st, err
}

// haClusterStatus is one cluster in the server's /status.
type haClusterStatus struct {
	Name          string `json:"name"`
	InputVersion  uint64 `json:"inputVersion"`
	InputHash     string `json:"inputHash"`
	OutputVersion uint64 `json:"outputVersion"`
	OutputHash    string `json:"outputHash"`
	AckedVersion  uint64 `json:"ackedVersion"`
	InSync        bool   `json:"inSync"`
}

// cluster returns the status of one cluster (zero when absent).
func (st haStatus) cluster(name string) haClusterStatus {
	for _, x := range st.Clusters {
		if x.Name == name {
			return x
		}
	}
	return haClusterStatus{}
}

// connected reports whether cluster has both streams open on this server.
func (st haStatus) connected(cluster string) bool {
	c, ok := st.Connections[cluster]
	return ok && c.Push > 0 && c.Pull > 0
}

// allInSync is nil when every named cluster is connected here and in sync.
func (m *mgmt) allInSync(clusters ...string) error {
	st, err := m.stat()
	if err != nil {
		return err
	}
	if st.SafeMode.Active {
		return fmt.Errorf("%s in safe mode (missing %v)", m.name, st.SafeMode.Missing)
	}
	for _, c := range clusters {
		if !st.connected(c) {
			return fmt.Errorf("%s: cluster %s not connected (%v)", m.name, c, st.Connections)
		}
		if cs := st.cluster(c); !cs.InSync {
			return fmt.Errorf("%s: cluster %s not in sync: %+v", m.name, c, cs)
		}
	}
	return nil
}

// metricOf reads one sample like metric() but returns errors instead of failing, for
// processes that may be down or stopped.
func metricOf(admin, name string, labels ...string) (float64, error) {
	vs, err := metricSamples(admin, name, labels...)
	if err != nil || len(vs) == 0 {
		return 0, err
	}
	return vs[0], nil
}

// metricSamples returns the value of every sample of a metric whose label set contains every
// given label, in exposition order.
func metricSamples(admin, name string, labels ...string) ([]float64, error) {
	resp, err := adminGet(context.Background(), admin, "/metrics", 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	s, err := promtext.Parse(resp.Body)
	if err != nil {
		return nil, err
	}
	return s.Values(name, labels...)
}

// metricSum is the sum of every sample of a metric (all its label sets) at admin.
func metricSum(t *testing.T, admin, name string) float64 {
	t.Helper()
	vs, err := metricSamples(admin, name)
	if err != nil {
		t.Fatalf("metric %s at %s: %v", name, admin, err)
	}
	sum := 0.0
	for _, v := range vs {
		sum += v
	}
	return sum
}

// mustMetric is metricOf failing the test on error.
func mustMetric(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	v, err := metricOf(admin, name, labels...)
	if err != nil {
		t.Fatalf("metric %s at %s: %v", name, admin, err)
	}
	return v
}

// appliedState reads the output snapshot an agent last applied from its state dir (what it
// serves after a restart too: the base and the delta log); nil when it has none yet.
func appliedState(a *agent) (*snapshot.Snapshot, error) {
	s, err := relayagent.ReadState(a.state)
	if err != nil {
		return nil, fmt.Errorf("agent %s state: %w", a.cluster, err)
	}
	return s, nil
}

// applied is one "output applied" line of an agent's JSON log.
type applied struct {
	Version   uint64 `json:"version"`
	Epoch     uint64 `json:"epoch"`
	Resources int    `json:"resources"`
	Upserts   int    `json:"upserts"`
	Removals  int    `json:"removals"`
}

func (x applied) String() string { return fmt.Sprintf("v%d/e%d/%d", x.Version, x.Epoch, x.Resources) }

// appliedHistory returns every output the agent applied, in order, over all its runs (the
// log file is shared by restarts).
func appliedHistory(a *agent) ([]applied, error) {
	b, err := os.ReadFile(a.p.LogPath)
	if err != nil {
		return nil, err
	}
	var out []applied
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"msg":"output applied"`)) {
			continue
		}
		var x applied
		if err := json.Unmarshal(line, &x); err != nil {
			return nil, fmt.Errorf("agent %s log line %q: %w", a.cluster, line, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// checkHistory is nil when, over the agent's whole life, every applied output had a higher
// version than the one before (versionsGrow), never an older epoch, and (noShrink) never
// fewer resources.
func checkHistory(a *agent, noShrink bool) error {
	if err := historyNoShrink(a, noShrink); err != nil {
		return err
	}
	return historyVersionsGrow(a)
}

// historyNoShrink is nil when the agent never applied an older epoch and, with noShrink,
// never fewer resources than before.
func historyNoShrink(a *agent, noShrink bool) error {
	hist, err := appliedHistory(a)
	if err != nil {
		return err
	}
	for i := 1; i < len(hist); i++ {
		p, c := hist[i-1], hist[i]
		switch {
		case c.Epoch < p.Epoch:
			return fmt.Errorf("agent %s applied epoch %d after %d (history %v)", a.cluster, c.Epoch, p.Epoch, hist)
		case noShrink && c.Resources < p.Resources:
			return fmt.Errorf("agent %s applied %d resources after %d (history %v)", a.cluster, c.Resources, p.Resources, hist)
		}
	}
	return nil
}

// historyVersionsGrow is nil when every output the agent applied had a higher version than
// the one before, except the same content re-stamped with a newer epoch (a new active
// server), which may keep its version.
func historyVersionsGrow(a *agent) error {
	hist, err := appliedHistory(a)
	if err != nil {
		return err
	}
	for i := 1; i < len(hist); i++ {
		p, c := hist[i-1], hist[i]
		if c.Version == p.Version && c.Epoch > p.Epoch && c.Upserts == 0 && c.Removals == 0 {
			continue
		}
		if c.Version <= p.Version {
			return fmt.Errorf("agent %s applied version %d after %d (history %v)", a.cluster, hist[i].Version, hist[i-1].Version, hist)
		}
	}
	return nil
}

// sleep waits d unless the test ends.
func sleep(t *testing.T, d time.Duration) {
	select {
	case <-t.Context().Done():
	case <-time.After(d):
	}
}

// redisSnapshot reads a stored snapshot straight from Redis (nil when the key is absent),
// through a store of its own, which verifies every hash.
func redisSnapshot(t *testing.T, rc *redis.Client, kind snapshot.Kind, cluster string) (*snapshot.Snapshot, error) {
	t.Helper()
	s, err := redisstore.New(rc, "").Get(t.Context(), kind, cluster)
	if errors.Is(err, snapshot.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s of %s in redis: %w", kind, cluster, err)
	}
	return s, nil
}

// cliExit runs the CLI and returns stdout, stderr and the exit code.
func cliExit(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, err := cli(t, args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out, errOut, 0
	case errors.As(err, &ee):
		return out, errOut, ee.ExitCode()
	}
	t.Fatalf("run meshrelay %v: %v", args, err)
	return "", "", -1
}

// keysOf returns the sorted keys of a set.
func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// missingKeys lists the keys of want that got lacks.
func missingKeys(want, got map[string]bool) []string {
	var out []string
	for k := range want {
		if !got[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func keySet(keys []string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// dnsServer is an authoritative DNS server on loopback UDP whose A records the test changes
// at runtime (TTL 0). Unknown names are NXDOMAIN; known names have no AAAA.
type dnsServer struct {
	addr string
	srv  *dns.Server

	mu      sync.Mutex        // guards records
	records map[string]string // fqdn (lower case, trailing dot) → IPv4
	queries int
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{addr: pc.LocalAddr().String(), records: map[string]string{}}
	started := make(chan struct{})
	d.srv = &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: func() { close(started) }}
	go func() { _ = d.srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("dns server did not start")
	}
	t.Cleanup(func() { _ = d.srv.Shutdown() })
	return d
}

// set points name at ip.
func (d *dnsServer) set(name, ip string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[dns.Fqdn(strings.ToLower(name))] = ip
}

func (d *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	d.mu.Lock()
	d.queries++
	for _, q := range r.Question {
		ip, ok := d.records[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
			continue
		}
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.ParseIP(ip).To4()})
		}
	}
	d.mu.Unlock()
	_ = w.WriteMsg(m)
}
