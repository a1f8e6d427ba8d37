package e2e

// The fencing epoch after the store lost its data (issue 12, case 3).

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// Two management servers share a Redis without persistence. switch-active moves the global
// lock to epoch 2 and every agent applies epoch-2 outputs; then Redis restarts empty, so
// its lock and epoch counter are gone and the next server to take the lock would get epoch
// 1. The agents must keep receiving: a configuration change reaches every agent, each
// agent's epoch never goes backwards, the lock ends above every epoch an agent holds, and
// no agent is left refusing. A refusal on the way (an agent holding a newer epoch than the
// server's outputs) is visible: logged and counted by the agent or the server.
func TestHAStoreLostEpochNeverGoesBackwards(t *testing.T) {
	r := startRegions(t, "a", "b")
	services := world3Services[:2]

	// Epoch 2: switch-active to the server that already holds the lock.
	r.switchActive(t, r.west)
	poll.Eventually(t, 20*time.Second, "agents on epoch 2", func() error {
		for _, a := range r.agents {
			if st, err := agentStat(a); err != nil || st.OutputEpoch < 2 {
				return fmt.Errorf("agent %s at epoch %d (%v)", a.cluster, st.OutputEpoch, err)
			}
		}
		return nil
	})
	held := map[string]uint64{}
	for c, st := range r.statuses(t) {
		held[c] = st.OutputEpoch
	}

	// Redis restarts empty: the lock and its epoch counter are lost.
	r.rs.Stop()
	r.rs.Restart(t)
	lost := time.Now()
	poll.Eventually(t, 15*time.Second, "a server takes the lock again", func() error {
		for _, m := range []*mgmt{r.west, r.east} {
			if st, err := m.stat(); err != nil || st.StoreError != "" || st.HA.Lock == nil {
				return fmt.Errorf("%s: store error %q, lock %+v (%v)", m.name, st.StoreError, st.HA.Lock, err)
			}
		}
		return nil
	})

	// A configuration change (written to both servers' config dirs, as a pipeline that
	// writes every management cluster does) reaches every agent.
	vd := "extra-after-loss"
	writeFile(t, filepath.Join(r.west.config, vd+".yaml"), extraVD(vd, services[0]))
	writeFile(t, filepath.Join(r.east.config, vd+".yaml"), extraVD(vd, services[0]))
	poll.Eventually(t, 30*time.Second, "the change reaches every agent after redis lost its data", func() error {
		return r.complete(t, append([]string{vd}, services...)...)
	})
	t.Logf("redis restarted empty: a config change reached every agent %s after the restart", time.Since(lost).Round(time.Millisecond))

	// The lock is above every epoch an agent holds, and no agent went back or stays refusing.
	rc := r.rs.Client(t)
	poll.Eventually(t, 10*time.Second, "the lock is above every epoch agents held", func() error {
		e, err := rc.HGet(t.Context(), "meshrelay:{meshrelay}:activelock", "epoch").Uint64()
		if err != nil {
			return fmt.Errorf("read lock epoch: %w", err)
		}
		for c, h := range held {
			if e <= h {
				return fmt.Errorf("lock epoch %d, agent %s held epoch %d", e, c, h)
			}
		}
		for _, a := range r.agents {
			var st epochAgentStatus
			if err := getJSON(a.admin, "/status", &st); err != nil {
				return err
			}
			if st.OutputEpoch != e {
				return fmt.Errorf("agent %s at epoch %d, lock at %d", a.cluster, st.OutputEpoch, e)
			}
			if st.RefusedEpoch != 0 {
				return fmt.Errorf("agent %s still refuses epoch %d: %s", a.cluster, st.RefusedEpoch, st.LastRefusal)
			}
		}
		return nil
	})
	for _, a := range r.agents {
		if err := checkHistory(a, true); err != nil {
			t.Error(err)
		}
		if st, _ := agentStat(a); st.OutputEpoch < held[a.cluster] {
			t.Errorf("agent %s epoch went back: %d → %d", a.cluster, held[a.cluster], st.OutputEpoch)
		}
		// A transient refusal is never silent: counted and logged with both epochs.
		if v := mustMetric(t, a.admin, "meshrelay_agent_outputs_refused_total", `reason="stale_epoch"`); v > 0 {
			if err := logContains(t, a.p, `"msg":"output refused: stale epoch"`); err != nil {
				t.Errorf("agent %s refused %v stale-epoch outputs without logging it: %v", a.cluster, v, err)
			}
			t.Logf("agent %s refused %v stale-epoch outputs on the way", a.cluster, v)
		}
	}
	for _, m := range []*mgmt{r.west, r.east} {
		v := mustMetric(t, m.admin, "meshrelay_relay_epoch_refusals_total")
		if v > 0 {
			if err := logContains(t, m.p, `"msg":"agent holds a newer epoch than this server's output"`); err != nil {
				t.Errorf("%s counted %v epoch refusals without logging them: %v", m.name, v, err)
			}
			t.Logf("%s saw %v epoch refusals on the way", m.name, v)
		}
		out, errOut, code := cliExit(t, "check", "--server", m.admin)
		if strings.Contains(out+errOut, "refuses epoch") {
			t.Errorf("%s: check still reports a refused epoch (exit %d): %s", m.name, code, out)
		}
	}
}

// epochAgentStatus is the part of an agent's /status about epochs and refusals.
type epochAgentStatus struct {
	OutputEpoch  uint64 `json:"outputEpoch"`
	RefusedEpoch uint64 `json:"refusedEpoch"`
	LastRefusal  string `json:"lastRefusal"`
}
