package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

var blueInLocal = seKey("service-blue")

// A Service added to one cluster's discovery directory reaches the other cluster's output,
// and removing it removes it there.
func TestServicePropagatesBetweenClusters(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)

	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "blue reaches remote", func() error { return outputHas(t, remote, blueInLocal) })
	// The endpoint address travelled with it.
	b, err := os.ReadFile(filepath.Join(remote.output, "serviceentry_default_vd-service-blue.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !containsAll(string(b), "10.1.0.1", "service-blue.global", "meshrelay.io/cluster: local", "# managed by meshrelay agent") {
		t.Fatalf("unexpected ServiceEntry file:\n%s", b)
	}

	if err := os.Remove(filepath.Join(local.discovery, "blue.yaml")); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 15*time.Second, "blue leaves remote", func() error { return outputLacks(t, remote, blueInLocal) })
	poll.Eventually(t, 5*time.Second, "both in sync", func() error {
		for _, c := range s.status(t).Clusters {
			if !c.InSync {
				return fmt.Errorf("cluster %s not in sync", c.Name)
			}
		}
		return nil
	})
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// With Redis, a new server process on the same Redis takes over: agents reconnect and keep
// their outputs without a change (same versions, no file rewritten, nothing re-applied).
func TestRedisServerReplacementKeepsOutputs(t *testing.T) {
	rs := redistest.Start(t)
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"}, "--redis-address", rs.Addr())
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 15*time.Second, "blue reaches remote", func() error { return outputHas(t, remote, blueInLocal) })
	poll.Eventually(t, 5*time.Second, "remote applied", func() error {
		if st := remote.status(t); st.OutputHash == "" || !st.Connected {
			return fmt.Errorf("remote status %+v", st)
		}
		return nil
	})
	before := remote.status(t)
	// Local has nothing of remote's to receive, so it may get its first output after remote
	// (under load): wait for it, or the comparison below would catch that first output.
	poll.Eventually(t, 15*time.Second, "local has its first output", func() error {
		if v := local.status(t).OutputVersion; v == 0 {
			return fmt.Errorf("local output version %d", v)
		}
		return nil
	})
	beforeLocal := local.status(t)
	files := mtimes(t, remote.output)
	applied := metric(t, remote.admin, "meshrelay_agent_outputs_applied_total")

	s.p.Kill() // kill -9: no goodbye to the agents
	poll.Eventually(t, 10*time.Second, "agents notice", func() error {
		if remote.status(t).Connected {
			return fmt.Errorf("remote still connected")
		}
		return nil
	})
	// The data plane keeps its configuration while the server is gone.
	if err := outputHas(t, remote, blueInLocal); err != nil {
		t.Fatal(err)
	}
	h.restartServer(s, "server-2")
	poll.Eventually(t, 20*time.Second, "agents reconnect to the new server", func() error {
		if !remote.status(t).Connected || !local.status(t).Connected {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	poll.Eventually(t, 10*time.Second, "new server sees both clusters in sync", func() error {
		st := s.status(t)
		if len(st.Clusters) != 2 {
			return fmt.Errorf("clusters %+v", st.Clusters)
		}
		for _, c := range st.Clusters {
			if !c.InSync {
				return fmt.Errorf("cluster %s not in sync: %+v", c.Name, c)
			}
		}
		return nil
	})
	after := remote.status(t)
	if after.OutputVersion != before.OutputVersion || after.OutputHash != before.OutputHash {
		t.Fatalf("remote output changed across the server replacement: before v%d %s, after v%d %s", before.OutputVersion, before.OutputHash, after.OutputVersion, after.OutputHash)
	}
	if l := local.status(t); l.OutputVersion != beforeLocal.OutputVersion {
		t.Fatalf("local output version moved from %d to %d", beforeLocal.OutputVersion, l.OutputVersion)
	}
	if got := metric(t, remote.admin, "meshrelay_agent_outputs_applied_total"); got != applied {
		t.Fatalf("remote re-applied outputs after the replacement: %v → %v", applied, got)
	}
	if got := mtimes(t, remote.output); !reflect.DeepEqual(got, files) {
		t.Fatalf("output files rewritten: %v → %v", files, got)
	}
	// And the new server still translates changes.
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 8080))
	poll.Eventually(t, 15*time.Second, "red reaches remote via the new server", func() error {
		return outputHas(t, remote, seKey("service-red"))
	})
}

// An agent restarted with its state dir keeps its output directory untouched and is not sent
// its configuration again.
func TestAgentRestartNeedsNoRepush(t *testing.T) {
	h := newHarness(t)
	s, local, remote := localServesRemote(t, h)
	poll.Eventually(t, 5*time.Second, "remote in sync", func() error {
		for _, c := range s.status(t).Clusters {
			if c.Name == "remote" && c.InSync {
				return nil
			}
		}
		return fmt.Errorf("remote not in sync")
	})
	before := remote.status(t)
	files := mtimes(t, remote.output)
	sent := metric(t, s.admin, "meshrelay_relay_pull_resources_sent_total", `cluster="remote"`)
	if sent < 5 {
		t.Fatalf("expected at least 5 resources sent to remote, metric says %v", sent)
	}

	if err := remote.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	h.restartAgent(remote)
	poll.Eventually(t, 15*time.Second, "restarted agent connected", func() error {
		if st := remote.status(t); !st.Connected {
			return fmt.Errorf("not connected: %s", st.LastError)
		}
		return nil
	})
	if st := remote.status(t); st.OutputVersion != before.OutputVersion || st.OutputHash != before.OutputHash {
		t.Fatalf("restarted agent serves v%d %s, want v%d %s", st.OutputVersion, st.OutputHash, before.OutputVersion, before.OutputHash)
	}
	if got := metric(t, s.admin, "meshrelay_relay_pull_resources_sent_total", `cluster="remote"`); got != sent {
		t.Fatalf("server re-sent %v resources to the restarted agent", got-sent)
	}
	if got := mtimes(t, remote.output); !reflect.DeepEqual(got, files) {
		t.Fatalf("restart rewrote output files: %v → %v", files, got)
	}
	// Only the change travels afterwards.
	writeFile(t, filepath.Join(local.discovery, "svc-new.yaml"), serviceYAML("svc-new", "10.2.0.99", 80))
	poll.Eventually(t, 15*time.Second, "change reaches restarted agent", func() error {
		return outputHas(t, remote, seKey("svc-new"))
	})
	// One new service is a ServiceEntry, an Envoy cluster and its endpoints: only those travel.
	if got := metric(t, s.admin, "meshrelay_relay_pull_resources_sent_total", `cluster="remote"`); got-sent < 1 || got-sent > 3 {
		t.Fatalf("one new service should send at most 3 resources, sent %v", got-sent)
	}
}
