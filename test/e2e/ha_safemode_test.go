package e2e

// Safe mode (seed 002): the management plane restarted with its store emptied must not
// translate partial inputs; an agent that never returns holds translation until the
// configured window, skipWarming or deregistration.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// haSeed returns the seed of a randomized test (MESHRELAY_E2E_SEED overrides it) and logs
// it so that a failure can be replayed.
func haSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MESHRELAY_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("MESHRELAY_E2E_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with MESHRELAY_E2E_SEED=%d)", seed, seed)
	return seed
}

// world3 is a server and three agents a, b, c exporting blue, green and red.
type world3 struct {
	h        *harness
	s        *mgmt
	clusters []string
	agents   []*agent
}

var world3Services = []string{"service-blue", "service-green", "service-red"}

func startWorld3(t *testing.T, serverArgs ...string) *world3 {
	t.Helper()
	h := newHarness(t)
	w := &world3{h: h, clusters: []string{"a", "b", "c"}}
	w.s = h.startMgmt("server", mgmtOpts{clusters: w.clusters, args: serverArgs})
	for i, c := range w.clusters {
		a := h.startAgentAt(c, w.s.relay, w.s.dataDir)
		writeFile(t, filepath.Join(a.discovery, "svc.yaml"), serviceYAML(world3Services[i], fmt.Sprintf("10.%d.0.1", i+1), 8080))
		w.agents = append(w.agents, a)
	}
	w.converge(t, 30*time.Second)
	if err := w.inSync(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return w
}

// converge waits until every agent is connected and has every service, and the server
// translates (no safe mode).
func (w *world3) converge(t *testing.T, timeout time.Duration) {
	t.Helper()
	poll.Eventually(t, timeout, "every agent connected and complete", func() error {
		for _, a := range w.agents {
			st, err := agentStat(a)
			if err != nil {
				return err
			}
			if !st.Connected {
				return fmt.Errorf("agent %s not connected: %s", a.cluster, st.LastError)
			}
			for _, svc := range world3Services {
				if err := outputHas(t, a, seKey(svc)); err != nil {
					return err
				}
			}
		}
		st, err := w.s.stat()
		if err != nil {
			return err
		}
		if st.SafeMode.Active {
			return fmt.Errorf("safe mode: %+v", st.SafeMode)
		}
		return nil
	})
}

// inSync waits up to timeout for the server to report every cluster in sync.
func (w *world3) inSync(t *testing.T, timeout time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := w.s.allInSync(w.clusters...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		sleep(t, 100*time.Millisecond)
	}
}

// bugs collects violated promises a test found; the test fails with all of them once
// everything else was checked.
type bugs []string

func (b *bugs) add(format string, args ...any) { *b = append(*b, fmt.Sprintf(format, args...)) }

func (b bugs) skipIfAny(t *testing.T) {
	t.Helper()
	if len(b) > 0 {
		t.Fatalf("%s", strings.Join(b, "\n"))
	}
}

// agentView is what an agent applied: the keys of its state file and of its output dir.
type agentView struct {
	st        haAgentStatus
	stateKeys map[string]bool
	dirKeys   map[string]bool
	files     map[string]time.Time
}

func viewOf(t *testing.T, a *agent) agentView {
	t.Helper()
	v := agentView{files: mtimes(t, a.output)}
	snap, err := appliedState(a)
	if err != nil || snap == nil {
		t.Fatalf("agent %s has no readable state: %v", a.cluster, err)
	}
	v.stateKeys = keySet(snap.Keys())
	v.st.OutputHash, v.st.OutputVersion, v.st.OutputEpoch, v.st.OutputCount = snap.Hash, snap.Version, snap.Epoch, snap.Len()
	if v.dirKeys, err = outputKeys(a.output); err != nil {
		t.Fatal(err)
	}
	return v
}

// keeps is nil when the agent still holds every key it held in before (state and dir).
func keeps(t *testing.T, a *agent, before agentView) error {
	now := viewOf(t, a)
	if m := missingKeys(before.stateKeys, now.stateKeys); len(m) > 0 {
		return fmt.Errorf("agent %s applied an output without %v", a.cluster, m)
	}
	if m := missingKeys(before.dirKeys, now.dirKeys); len(m) > 0 {
		return fmt.Errorf("agent %s output dir lost %v", a.cluster, m)
	}
	return nil
}

// Redis (without persistence) and the server are killed together and agents return one
// by one in random order (seed 002's "Redis and management server restart"). Until the
// last is back: safe mode is on for exactly the missing clusters (gauge and /status), no
// translation runs, and no agent's output changes. Then everything converges.
func TestHARedisAndServerRestartTogether(t *testing.T) {
	rng := rand.New(rand.NewPCG(haSeed(t), 7))
	rs := redistest.Start(t)
	w := startWorld3(t, append([]string{"--redis-address", rs.Addr()}, haServerFlags...)...)
	s := w.s
	// One more change, so that agents hold outputs past version 1.
	writeFile(t, filepath.Join(w.agents[2].discovery, "svc-2.yaml"), serviceYAML("svc-2", "10.3.0.9", 8080))
	for _, a := range w.agents {
		poll.Eventually(t, 20*time.Second, "svc-2 reaches "+a.cluster, func() error { return outputHas(t, a, seKey("svc-2")) })
	}
	if err := w.inSync(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	before := map[string]agentView{}
	for _, a := range w.agents {
		before[a.cluster] = viewOf(t, a)
	}

	s.p.Kill()
	rs.Stop()
	for _, a := range w.agents {
		a.p.Kill()
	}
	rs.Restart(t) // empty: no persistence
	s.restart(true)
	restarted := time.Now()

	unchanged := func(a *agent) error {
		v := viewOf(t, a)
		b := before[a.cluster]
		if v.st.OutputHash != b.st.OutputHash || v.st.OutputVersion != b.st.OutputVersion {
			return fmt.Errorf("agent %s output changed during safe mode: v%d %.12s → v%d %.12s", a.cluster, b.st.OutputVersion, b.st.OutputHash, v.st.OutputVersion, v.st.OutputHash)
		}
		if fmt.Sprint(v.files) != fmt.Sprint(b.files) {
			return fmt.Errorf("agent %s output dir rewritten during safe mode", a.cluster)
		}
		return nil
	}
	order := rng.Perm(len(w.agents))
	var back []string
	for i, idx := range order {
		a := w.agents[idx]
		sleep(t, time.Duration(200+rng.IntN(1300))*time.Millisecond)
		h := w.h
		h.rerunAgent(a)
		back = append(back, a.cluster)
		if i == len(order)-1 {
			break
		}
		var missing []string
		for _, c := range w.clusters {
			if !slices.Contains(back, c) {
				missing = append(missing, c)
			}
		}
		poll.Eventually(t, 20*time.Second, a.cluster+"'s input reaches the new server", func() error {
			st, err := s.stat()
			if err != nil {
				return err
			}
			if !st.connected(a.cluster) || slices.Contains(st.SafeMode.Missing, a.cluster) {
				return fmt.Errorf("%s not back (missing %v)", a.cluster, st.SafeMode.Missing)
			}
			return nil
		})
		// Give a wrong translation every chance to happen, then look.
		sleep(t, 1500*time.Millisecond)
		st, err := s.stat()
		if err != nil {
			t.Fatal(err)
		}
		if !st.SafeMode.Active || strings.Join(st.SafeMode.Missing, ",") != strings.Join(missing, ",") {
			t.Fatalf("with %v back: safe mode %+v, want active with missing %v", back, st.SafeMode, missing)
		}
		for _, c := range missing {
			if v := mustMetric(t, s.admin, "meshrelay_safe_mode_active", `cluster="`+c+`"`); v != 1 {
				t.Fatalf("meshrelay_safe_mode_active{cluster=%q} = %v while it is missing", c, v)
			}
		}
		for _, c := range back {
			if v := mustMetric(t, s.admin, "meshrelay_safe_mode_active", `cluster="`+c+`"`); v != 0 {
				t.Fatalf("meshrelay_safe_mode_active{cluster=%q} = %v although it is back", c, v)
			}
		}
		if v := mustMetric(t, s.admin, "meshrelay_translation_total"); v != 0 || st.Translations != 0 {
			t.Fatalf("the new server translated (%v, status %d) with %v still missing", v, st.Translations, missing)
		}
		for _, ag := range w.agents {
			if err := unchanged(ag); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s back after %s: safe mode holds for %v, no translation, no output changed", a.cluster, time.Since(restarted).Round(time.Millisecond), missing)
	}
	w.converge(t, 30*time.Second)
	t.Logf("redis and server restarted together: every agent complete %s after the server restart (agents returned in order %v)", time.Since(restarted).Round(time.Millisecond), back)
	// Safe mode ends when the last input arrives; the translation it releases is counted a
	// moment later, when its outputs are published.
	poll.Eventually(t, 10*time.Second, "translation resumes after the last agent returned", func() error {
		if v, err := metricOf(s.admin, "meshrelay_translation_total"); err != nil || v == 0 {
			return fmt.Errorf("converged without a translation (meshrelay_translation_total %v, %v)", v, err)
		}
		return nil
	})
	for _, a := range w.agents {
		if err := keeps(t, a, before[a.cluster]); err != nil {
			t.Error(err)
		}
		if err := historyNoShrink(a, true); err != nil {
			t.Error(err)
		}
	}
	var found bugs
	if err := w.inSync(t, 5*time.Second); err != nil {
		found.add("after safe mode ends, a cluster whose agent already holds the new output is never in sync: %v", err)
	} else {
		t.Logf("redis and server restarted together: in sync %s after the server restart", time.Since(restarted).Round(time.Millisecond))
	}

	// Changes flow again, and every agent sees versions only grow.
	writeFile(t, filepath.Join(w.agents[0].discovery, "svc-0.yaml"), serviceYAML("svc-0", "10.1.0.9", 8080))
	for _, a := range w.agents {
		poll.Eventually(t, 20*time.Second, "svc-0 reaches "+a.cluster, func() error { return outputHas(t, a, seKey("svc-0")) })
	}
	for _, a := range w.agents {
		if err := historyNoShrink(a, true); err != nil {
			t.Error(err)
		}
		if err := historyVersionsGrow(a); err != nil {
			found.add("output versions restart below what agents hold once the store lost its outputs: %v", err)
		}
	}
	found.skipIfAny(t)
}

// Randomized restart orders of the server, the agents and Redis (without persistence),
// three rounds: after every step, no agent holds an output (state file or output dir)
// without a resource it had at the start of the round. No configuration changes, so
// nothing may ever disappear.
func TestHARestartOrderInvariant(t *testing.T) {
	rng := rand.New(rand.NewPCG(haSeed(t), 11))
	rs := redistest.Start(t)
	w := startWorld3(t, append([]string{"--redis-address", rs.Addr()}, haServerFlags...)...)
	redisUp := true
	var found bugs
	inSyncBug, versionBug := false, map[string]bool{}
	type step struct {
		what string
		do   func()
	}
	for round := 1; round <= 3; round++ {
		base := map[string]agentView{}
		for _, a := range w.agents {
			base[a.cluster] = viewOf(t, a)
		}
		kill := map[string]func(){
			"server": func() { w.s.p.Kill() },
			"agents": func() {
				for _, a := range w.agents {
					a.p.Kill()
				}
			},
			"redis": func() { rs.Stop(); redisUp = false },
		}
		restart := map[string]func(){
			"server": func() { w.s.restart(redisUp) },
			"agents": func() {
				for _, i := range rng.Perm(len(w.agents)) {
					w.h.rerunAgent(w.agents[i])
					sleep(t, time.Duration(rng.IntN(400))*time.Millisecond)
				}
			},
			"redis": func() { rs.Restart(t); redisUp = true },
		}
		// A random interleaving of the three kills and three restarts, each restart after
		// its kill.
		var steps []step
		pending := []string{"server", "agents", "redis"}
		var down []string
		for len(pending)+len(down) > 0 {
			k := rng.IntN(len(pending) + len(down))
			if k < len(pending) {
				c := pending[k]
				pending = slices.Delete(pending, k, k+1)
				down = append(down, c)
				steps = append(steps, step{"kill " + c, kill[c]})
			} else {
				k -= len(pending)
				c := down[k]
				down = slices.Delete(down, k, k+1)
				steps = append(steps, step{"restart " + c, restart[c]})
			}
		}
		var names []string
		for _, s := range steps {
			names = append(names, s.what)
		}
		t.Logf("round %d: %s", round, strings.Join(names, ", "))
		start := time.Now()
		for _, s := range steps {
			s.do()
			sleep(t, time.Duration(300+rng.IntN(1200))*time.Millisecond)
			for _, a := range w.agents {
				if err := keeps(t, a, base[a.cluster]); err != nil {
					t.Fatalf("round %d, after %q: %v", round, s.what, err)
				}
			}
		}
		last := time.Now()
		w.converge(t, 60*time.Second)
		for _, a := range w.agents {
			if err := keeps(t, a, base[a.cluster]); err != nil {
				t.Fatalf("round %d, after convergence: %v", round, err)
			}
			if err := historyNoShrink(a, true); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		t.Logf("round %d: every agent complete %s after the last restart (round took %s)", round, time.Since(last).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if !inSyncBug {
			if err := w.inSync(t, 5*time.Second); err != nil {
				found.add("round %d: not in sync after convergence (see TestHARedisAndServerRestartTogether): %v", round, err)
				inSyncBug = true
			}
		}
		for _, a := range w.agents {
			if err := historyVersionsGrow(a); err != nil && !versionBug[a.cluster] {
				found.add("round %d: output versions went back (see TestHARedisAndServerRestartTogether): %v", round, err)
				versionBug[a.cluster] = true
			}
		}
	}
	found.skipIfAny(t)
}

// One agent never returns after the management plane restarted: safe mode holds (and
// keeps holding), and ends only (a) when that cluster gets skipWarming, (c) when its
// KubernetesCluster is deleted, or (b) with --safe-mode=false, when the safe start window
// (3s) has passed.
func TestHASafeModeAgentNeverReturns(t *testing.T) {
	// An explicit memory store: a restart loses every input (the durable default keeps them).
	w := startWorld3(t, "--store", "memory")
	s := w.s
	a, b, c := w.agents[0], w.agents[1], w.agents[2]
	clustersFile := filepath.Join(s.config, "clusters.yaml")
	holding := func() error {
		st, err := s.stat()
		if err != nil {
			return err
		}
		if !st.connected("a") || !st.connected("b") {
			return fmt.Errorf("a and b not both back: %v", st.Connections)
		}
		if !st.SafeMode.Active || strings.Join(st.SafeMode.Missing, ",") != "c" {
			return fmt.Errorf("safe mode %+v, want active for c", st.SafeMode)
		}
		return nil
	}
	// restartWithoutC kills c's agent (if it runs) and the server, and waits for safe mode.
	restartWithoutC := func() time.Time {
		c.p.Kill()
		s.p.Kill()
		s.restart(true)
		at := time.Now()
		poll.Eventually(t, 20*time.Second, "a and b back, safe mode for c", holding)
		return at
	}
	c.p.Kill()
	before := map[string]agentView{}
	for _, ag := range w.agents {
		before[ag.cluster] = viewOf(t, ag)
	}
	restarted := restartWithoutC()

	// Safe mode holds indefinitely: still on seconds later, nothing translated, outputs as
	// they were.
	for range 4 {
		sleep(t, time.Second)
		if err := holding(); err != nil {
			t.Fatalf("safe mode ended on its own: %v", err)
		}
	}
	st, _ := s.stat()
	if st.Translations != 0 || mustMetric(t, s.admin, "meshrelay_translation_total") != 0 {
		t.Fatalf("translated while c is missing: %d", st.Translations)
	}
	if v := mustMetric(t, s.admin, "meshrelay_safe_mode_active", `cluster="c"`); v != 1 {
		t.Fatalf(`meshrelay_safe_mode_active{cluster="c"} = %v`, v)
	}
	for _, ag := range w.agents {
		if v := viewOf(t, ag); v.st.OutputHash != before[ag.cluster].st.OutputHash {
			t.Fatalf("agent %s output changed during safe mode", ag.cluster)
		}
	}
	t.Logf("safe mode held for %s with c missing", time.Since(restarted).Round(time.Millisecond))

	// (a) skipWarming for c ends it; translation resumes with what is present.
	writeFile(t, clustersFile, clustersYAML(w.clusters, map[string]bool{"c": true}))
	changed := time.Now()
	poll.Eventually(t, 20*time.Second, "skipWarming ends safe mode", func() error {
		st, err := s.stat()
		if err != nil {
			return err
		}
		if st.SafeMode.Active || st.Translations == 0 {
			return fmt.Errorf("safe mode %+v, translations %d", st.SafeMode, st.Translations)
		}
		return nil
	})
	t.Logf("(a) skipWarming: translation resumed %s after the config change", time.Since(changed).Round(time.Millisecond))
	if v := mustMetric(t, s.admin, "meshrelay_safe_mode_active", `cluster="c"`); v != 0 {
		t.Fatalf(`meshrelay_safe_mode_active{cluster="c"} = %v after skipWarming`, v)
	}
	writeFile(t, filepath.Join(a.discovery, "svc-0.yaml"), serviceYAML("svc-0", "10.1.0.9", 8080))
	poll.Eventually(t, 20*time.Second, "a change in a reaches b", func() error { return outputHas(t, b, seKey("svc-0")) })
	t.Logf("(a) b's output with c skipped has red (c's service): %v", outputHas(t, b, seKey("service-red")) == nil)

	// (c) Deleting c's KubernetesCluster ends safe mode.
	writeFile(t, clustersFile, clustersYAML(w.clusters, nil))
	restartWithoutC()
	writeFile(t, clustersFile, clustersYAML([]string{"a", "b"}, nil))
	changed = time.Now()
	poll.Eventually(t, 20*time.Second, "deregistering c ends safe mode", func() error {
		st, err := s.stat()
		if err != nil {
			return err
		}
		if st.SafeMode.Active || st.Translations == 0 {
			return fmt.Errorf("safe mode %+v, translations %d", st.SafeMode, st.Translations)
		}
		return nil
	})
	t.Logf("(c) deregistration: translation resumed %s after the config change", time.Since(changed).Round(time.Millisecond))
	poll.Eventually(t, 20*time.Second, "c's service leaves b with c", func() error { return outputLacks(t, b, seKey("service-red")) })

	// (b) With --safe-mode=false --safe-start-window 3, translation waits 3s, then goes on
	// with what is present.
	writeFile(t, clustersFile, clustersYAML(w.clusters, nil))
	s.p.Kill()
	s.args = append(s.args, "--safe-mode=false", "--safe-start-window", "3")
	// since is when the server started (its own clock, from /status while the window
	// holds); before the process starts is a lower bound if the test never sees it hold.
	since := time.Now()
	s.restart(false)
	poll.Eventually(t, 20*time.Second, "the window holds translation", func() error {
		st, err := s.stat()
		if err != nil {
			return err
		}
		if st.Translations != 0 {
			return nil // too late to see it hold (a slow start): keep the lower bound
		}
		if !st.SafeMode.Active || !strings.Contains(st.SafeMode.Reason, "window") {
			return fmt.Errorf("not holding: %+v", st.SafeMode)
		}
		since = st.SafeMode.Since
		return nil
	})
	poll.Eventually(t, 20*time.Second, "translation after the window", func() error {
		st, err := s.stat()
		if err != nil {
			return err
		}
		if st.SafeMode.Active || st.Translations == 0 {
			return fmt.Errorf("safe mode %+v, translations %d", st.SafeMode, st.Translations)
		}
		if wait := st.LastTranslation.Sub(since); wait < 3*time.Second {
			return fmt.Errorf("first translation %s after start, inside the 3s window", wait)
		} else {
			t.Logf("(b) safe start window 3s: first translation %s after the server started", wait.Round(time.Millisecond))
		}
		return nil
	})
	writeFile(t, filepath.Join(a.discovery, "svc-1.yaml"), serviceYAML("svc-1", "10.1.0.10", 8080))
	poll.Eventually(t, 20*time.Second, "changes flow after the window", func() error { return outputHas(t, b, seKey("svc-1")) })
}
