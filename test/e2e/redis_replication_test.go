package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// startReplicated starts a Redis primary and a replica of it, and waits until the replica is
// in sync. Restart brings the replica back as a replica.
func startReplicated(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Start(t, redistest.WithArgs("--repl-diskless-sync-delay", "0"))
	host, port, _ := net.SplitHostPort(primary.Addr())
	replica = redistest.Start(t, redistest.WithArgs("--replicaof", host, port))
	waitReplicas(t, primary, 1)
	return primary, replica
}

// waitReplicas waits until primary has n replicas online.
func waitReplicas(t *testing.T, primary *redistest.Server, n int) {
	t.Helper()
	pc := primary.Client(t)
	poll.Eventually(t, 20*time.Second, fmt.Sprintf("%d replicas of %s in sync", n, primary.Addr()), func() error {
		info, err := pc.Info(t.Context(), "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, fmt.Sprintf("connected_slaves:%d", n)) || (n > 0 && !strings.Contains(info, "state=online")) {
			return fmt.Errorf("replication: %s", info)
		}
		return nil
	})
}

// With the Redis replica stopped, an apply is refused instead of reported done: the CLI
// fails saying the change is on the primary and may be lost, the server logs it, counts it
// and `meshrelay check` fails until a later apply reaches the replica again.
func TestRedisReplicaLostApplyRefused(t *testing.T) {
	primary, replica := startReplicated(t)
	h := newHarness(t)
	clusters := []string{"a", "b"}
	s := h.startMgmt("server", mgmtOpts{clusters: clusters, args: append([]string{"--redis-address", primary.Addr(), "--mgmt-cluster-name", "west"}, haServerFlags...)})
	a := h.startAgentAt("a", s.relay, s.dataDir)
	b := h.startAgentAt("b", s.relay, s.dataDir)
	writeFile(t, filepath.Join(a.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 8080))
	poll.Eventually(t, 20*time.Second, "blue reaches b", func() error { return outputHas(t, b, seKey("service-blue")) })

	apply := func(name string) (string, int) {
		f := filepath.Join(h.dir, name+".yaml")
		writeFile(t, f, extraVD(name, "service-blue"))
		_, errOut, code := cliExit(t, "apply", "-f", f, "--server", s.admin)
		return errOut, code
	}
	if errOut, code := apply("extra-1"); code != 0 {
		t.Fatalf("apply with the replica in sync: exit %d: %s", code, errOut)
	}
	poll.Eventually(t, 20*time.Second, "extra-1 reaches b", func() error { return outputHas(t, b, seKey("extra-1")) })
	// (A replica slowed down by a busy machine may miss a lock round's short WAIT: count from here.)
	before := mustMetric(t, s.admin, "meshrelay_redis_wait_shortfalls_total")

	replica.Stop()
	waitReplicas(t, primary, 0)
	errOut, code := apply("extra-2")
	if code == 0 || !strings.Contains(errOut, "extra-2") ||
		!strings.Contains(errOut, "no redis replica acknowledged the write") || !strings.Contains(errOut, "it is on the redis primary") {
		t.Fatalf("apply without the replica: exit %d, stderr %q; want a failure naming the resource and saying the change is on the primary", code, errOut)
	}
	t.Logf("apply without the replica: %s", strings.TrimSpace(errOut))
	if v := mustMetric(t, s.admin, "meshrelay_redis_wait_shortfalls_total"); v <= before {
		t.Errorf("meshrelay_redis_wait_shortfalls_total = %v after a refused apply, %v before", v, before)
	}
	if err := logContains(t, s.p, "redis write not acknowledged by a replica"); err != nil {
		t.Error(err)
	}
	// The line names the last write that fell short: extra-2, or a lock round since.
	out, _, code := cliExit(t, "check", "--server", s.admin)
	if code == 0 || !strings.Contains(out, "✗ store replication") || !strings.Contains(out, "0 of 1 redis replicas acknowledged it") {
		t.Errorf("check without the replica: exit %d:\n%s\nwant a failing store replication line", code, out)
	}

	replica.Restart(t)
	waitReplicas(t, primary, 1)
	if errOut, code := apply("extra-3"); code != 0 {
		t.Fatalf("apply with the replica back: exit %d: %s", code, errOut)
	}
	for _, key := range []string{"extra-2", "extra-3"} { // extra-2 was on the primary all along
		poll.Eventually(t, 20*time.Second, key+" reaches a and b", func() error {
			if err := outputHas(t, a, seKey(key)); err != nil {
				return err
			}
			return outputHas(t, b, seKey(key))
		})
	}
	poll.Eventually(t, 10*time.Second, "check passes on store replication", func() error {
		out, _, _ := cliExit(t, "check", "--server", s.admin)
		if strings.Contains(out, "store replication") {
			return fmt.Errorf("check still reports:\n%s", out)
		}
		return nil
	})
}
