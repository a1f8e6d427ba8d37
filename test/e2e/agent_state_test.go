package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// An agent killed (SIGKILL) while a stream of changes to its output arrives restarts from a
// consistent state on the same state dir: the base and delta log it left load without an
// error, every replayed delta verifies against its hash, the restarted agent serves exactly
// that state, and then catches up with the server's latest output. One kill follows a
// background compaction of the log (the base rewritten, a new log started). One of the kills also
// finds a record cut in half at the end of the log (a crash in the middle of a write): the
// agent drops it, says so, and starts from the record before.
func TestAgentKilledMidWriteRestartsConsistent(t *testing.T) {
	h := newHarness(t)
	// Several exported services make remote's output worth a base; the stream below moves
	// one of them, so remote receives a delta for each step.
	s, local, remote := localServesRemote(t, h)

	stopStream := streamEndpoints(t, local)
	defer stopStream()

	serving := regexp.MustCompile(`serving last applied output.* version=(\d+)`)
	appliedLine := regexp.MustCompile(`output applied.* version=(\d+)`)
	for round := 1; round <= 4; round++ {
		// Let a few more deltas arrive, then kill the agent in the middle of them.
		applied := metric(t, remote.admin, "meshrelay_agent_outputs_applied_total")
		poll.Eventually(t, 20*time.Second, "remote applies the stream", func() error {
			if got := metric(t, remote.admin, "meshrelay_agent_outputs_applied_total"); got < applied+5 {
				return fmt.Errorf("remote applied %v outputs since the last round, want 5", got-applied)
			}
			return nil
		})
		if round == 3 {
			// This time the log has outgrown its base and been compacted in the
			// background while the stream ran.
			poll.Eventually(t, 60*time.Second, "a compaction of remote's state log", func() error {
				if n := metric(t, remote.admin, "meshrelay_agent_state_compactions_total"); n == 0 {
					return fmt.Errorf("no compaction yet; log %v bytes", metric(t, remote.admin, "meshrelay_agent_state_log_bytes"))
				}
				return nil
			})
		}
		remote.p.Kill()

		torn := round == 2
		if torn {
			appendTornRecord(t, remote.state)
		}
		left, err := appliedState(remote)
		if err != nil || left == nil {
			t.Fatalf("round %d: the killed agent's state dir does not load: %v", round, err)
		}
		// Every output the killed agent logged as applied (and then ACKed) was persisted
		// before: the state dir holds at least the last of them.
		killedLog, err := os.ReadFile(remote.p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		all := appliedLine.FindAllSubmatch(killedLog, -1)
		if len(all) == 0 {
			t.Fatalf("round %d: the killed agent logged no applied output", round)
		}
		if last, _ := strconv.ParseUint(string(all[len(all)-1][1]), 10, 64); left.Version < last {
			t.Fatalf("round %d: the killed agent applied version %d, its state dir holds version %d", round, last, left.Version)
		}

		remote.p = h.start(fmt.Sprintf("agent-remote-%d", round), remote.args...)
		poll.Eventually(t, 20*time.Second, "the restarted agent serves its last output", func() error {
			return logContains(t, remote.p, "serving last applied output")
		})
		b, err := os.ReadFile(remote.p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		m := serving.FindSubmatch(b)
		if m == nil {
			t.Fatalf("round %d: no version in the restarted agent's log:\n%s", round, b)
		}
		if v, _ := strconv.ParseUint(string(m[1]), 10, 64); v != left.Version {
			t.Fatalf("round %d: the restarted agent serves version %d; its state dir held version %d", round, v, left.Version)
		}
		if err := logContains(t, remote.p, "last applied output unreadable"); err == nil {
			t.Fatalf("round %d: the restarted agent could not read its state", round)
		}
		// A kill may cut a real write too; the record cut on purpose must be noticed.
		if err := logContains(t, remote.p, "state log damaged"); torn && err != nil {
			t.Fatalf("round %d, a record cut in half: %v", round, err)
		}
		// The restarted agent persists what it applies next where a restart finds it
		// (after the repaired tail, not after the damage).
		poll.Eventually(t, 20*time.Second, "the restarted agent persists a new output", func() error {
			b, err := os.ReadFile(remote.p.LogPath)
			if err != nil {
				return err
			}
			all := appliedLine.FindAllSubmatch(b, -1)
			if len(all) == 0 {
				return fmt.Errorf("no output applied yet")
			}
			last, _ := strconv.ParseUint(string(all[len(all)-1][1]), 10, 64)
			held, err := appliedState(remote)
			if err != nil || held == nil {
				t.Fatalf("round %d: the running agent's state dir does not load: %v", round, err)
			}
			if held.Version < last {
				t.Fatalf("round %d: the restarted agent applied version %d, its state dir holds version %d", round, last, held.Version)
			}
			return nil
		})
	}

	// The stream ends: the restarted agent catches up with the server's latest output.
	stopStream()
	poll.Eventually(t, 20*time.Second, "remote catches up", func() error {
		var want string
		for _, c := range s.status(t).Clusters {
			if c.Name == "remote" && c.InSync {
				want = c.OutputHash
			}
		}
		if want == "" {
			return fmt.Errorf("remote not in sync on the server")
		}
		if st := remote.status(t); st.OutputHash != want || !st.Connected {
			return fmt.Errorf("remote serves %.12s (connected %v), the server's latest is %.12s", st.OutputHash, st.Connected, want)
		}
		held, err := appliedState(remote)
		if err != nil || held == nil || held.Hash != want {
			return fmt.Errorf("remote's state dir holds %v (%v), want %.12s", held, err, want)
		}
		return nil
	})
}

// appendTornRecord appends the first half of a record frame to the newest delta log of a
// stopped agent's state dir, as a write cut by a crash leaves it.
func appendTornRecord(t *testing.T, dir string) {
	t.Helper()
	newest, _ := newestLog(t, dir)
	f, err := os.OpenFile(newest, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A frame announcing 4,000 bytes of payload and holding 100.
	half := append([]byte{0xa0, 0x0f, 0, 0, 1, 2, 3, 4, 'D'}, make([]byte, 99)...)
	if _, err := f.Write(half); err != nil {
		t.Fatal(err)
	}
}

// localServesRemote starts a server and the agents of clusters local and remote, and five
// services in local that reach remote's output.
func localServesRemote(t *testing.T, h *harness) (s *server, local, remote *agent) {
	t.Helper()
	s = h.startServer("server", []string{"local", "remote"})
	local = h.startAgent("local", s)
	remote = h.startAgent("remote", s)
	for i := range 5 {
		writeFile(t, filepath.Join(local.discovery, fmt.Sprintf("svc-%d.yaml", i)), serviceYAML(fmt.Sprintf("svc-%d", i), fmt.Sprintf("10.2.0.%d", i+1), 80))
	}
	poll.Eventually(t, 20*time.Second, "services reach remote", func() error { return outputHas(t, remote, seKey("svc-4")) })
	return s, local, remote
}

// newestLog returns the path and sequence number of the newest delta log in an agent's
// state dir.
func newestLog(t *testing.T, dir string) (string, int) {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "output.*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no delta log in %s: %v", dir, err)
	}
	newest, seq := "", -1
	for _, l := range logs {
		var n int
		if _, err := fmt.Sscanf(filepath.Base(l), "output.%d.log", &n); err == nil && n > seq {
			newest, seq = l, n
		}
	}
	return newest, seq
}

// streamEndpoints moves service-blue's endpoint in local's discovery dir every 20ms until
// the returned stop is called (it waits for the stream to end).
func streamEndpoints(t *testing.T, local *agent) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		path := filepath.Join(local.discovery, "blue.yaml")
		for i := 0; ctx.Err() == nil; i++ {
			body := serviceYAML("service-blue", fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), 10000)
			if err := os.WriteFile(path+".tmp", []byte(body), 0o644); err != nil {
				t.Errorf("stream: %v", err)
				return
			}
			if err := os.Rename(path+".tmp", path); err != nil {
				t.Errorf("stream: %v", err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// An agent whose state dir cannot be compacted (here a directory stands where its next
// delta log goes, which fails even for root) keeps applying and ACKing, and says so: the
// agent logs and counts the failure and reports it to the server, whose log names it and
// whose `meshrelay check` fails on the cluster, naming the state dir, until a compaction
// succeeds again.
func TestOpsCheckShowsAgentStateDirFailing(t *testing.T) {
	h := newHarness(t)
	s, local, remote := localServesRemote(t, h)
	poll.Eventually(t, 20*time.Second, "check passes", func() error { return checkPasses(t, s.admin) })

	_, seq := newestLog(t, remote.state)
	var blocked []string
	for n := seq + 1; n <= seq+3; n++ { // should a compaction slip in meanwhile
		b := filepath.Join(remote.state, fmt.Sprintf("output.%d.log", n))
		if err := os.Mkdir(b, 0o700); err != nil {
			t.Fatal(err)
		}
		blocked = append(blocked, b)
	}
	stopStream := streamEndpoints(t, local)
	var out string
	poll.Eventually(t, 60*time.Second, "check names remote's state dir", func() error {
		err := checkFailsOn(t, s.admin, "cluster remote", "agent state dir", "compaction failed")
		_, out, _ = checkLine(t, s.admin, "cluster remote")
		return err
	})
	t.Logf("check while remote's state dir cannot be compacted:\n%s", out)
	if n := metric(t, remote.admin, "meshrelay_agent_state_compaction_failures_total"); n < 1 {
		t.Errorf("meshrelay_agent_state_compaction_failures_total = %v", n)
	}
	for _, err := range []error{
		logContains(t, remote.p, "state log compaction failed"),
		logContains(t, s.p, "agent reports a problem of its own"),
	} {
		if err != nil {
			t.Error(err)
		}
	}
	if v := metric(t, s.admin, "meshrelay_relay_data_plane_nacks", `cluster="remote"`, `node="agent state dir"`); v != 1 {
		t.Errorf(`meshrelay_relay_data_plane_nacks{cluster="remote",node="agent state dir"} = %v, want 1`, v)
	}
	// Outputs are still applied and acknowledged meanwhile.
	applied := metric(t, remote.admin, "meshrelay_agent_outputs_applied_total")
	poll.Eventually(t, 20*time.Second, "remote applies the stream", func() error {
		if got := metric(t, remote.admin, "meshrelay_agent_outputs_applied_total"); got < applied+3 {
			return fmt.Errorf("remote applied %v outputs, want 3 more", got-applied)
		}
		return nil
	})

	for _, b := range blocked {
		if err := os.Remove(b); err != nil {
			t.Fatal(err)
		}
	}
	compactions := metric(t, remote.admin, "meshrelay_agent_state_compactions_total")
	poll.Eventually(t, 60*time.Second, "a compaction succeeds", func() error {
		if n := metric(t, remote.admin, "meshrelay_agent_state_compactions_total"); n <= compactions {
			return fmt.Errorf("no compaction since the fix")
		}
		return nil
	})
	stopStream()
	poll.Eventually(t, 20*time.Second, "check passes again", func() error { return checkPasses(t, s.admin) })
}
