package e2e

// `meshrelay check` (DESIGN §8) against a real server: healthy exits 0; a registered cluster
// whose agent is gone exits non-zero and names the cluster; -o json parses.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

func TestHACheck(t *testing.T) {
	rs := redistest.Start(t)
	h := newHarness(t)
	clusters := []string{"a", "b"}
	s := h.startMgmt("server", mgmtOpts{clusters: clusters, args: append([]string{"--redis-address", rs.Addr()}, haServerFlags...)})
	a := h.startAgentAt("a", s.relay, s.dataDir)
	b := h.startAgentAt("b", s.relay, s.dataDir)
	writeFile(t, filepath.Join(a.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 8080))
	poll.Eventually(t, 20*time.Second, "blue reaches b", func() error { return outputHas(t, b, seKey("service-blue")) })
	poll.Eventually(t, 10*time.Second, "in sync", func() error { return s.allInSync(clusters...) })

	type report struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Check  string `json:"check"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	checkJSON := func() (report, int, error) {
		out, errOut, code := cliExit(t, "check", "--server", s.admin, "--redis-address", rs.Addr(), "-o", "json")
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return r, code, fmt.Errorf("check -o json is not JSON (%v): %s %s", err, out, errOut)
		}
		return r, code, nil
	}
	var table string
	poll.Eventually(t, 15*time.Second, "check passes", func() error {
		out, errOut, code := cliExit(t, "check", "--server", s.admin, "--redis-address", rs.Addr())
		table = out
		if code != 0 {
			return fmt.Errorf("exit %d:\n%s%s", code, out, errOut)
		}
		return nil
	})
	t.Logf("healthy check:\n%s", table)
	if !containsAll(table, "cluster a", "cluster b", "redis reachable") {
		t.Fatalf("check does not show the clusters and redis:\n%s", table)
	}
	r, code, err := checkJSON()
	if err != nil || code != 0 || !r.OK || len(r.Checks) == 0 {
		t.Fatalf("check -o json on a healthy server: exit %d, %+v, %v", code, r, err)
	}

	b.p.Kill()
	poll.Eventually(t, 15*time.Second, "check fails and names b", func() error {
		out, _, code := cliExit(t, "check", "--server", s.admin, "--redis-address", rs.Addr())
		table = out
		if code == 0 {
			return fmt.Errorf("check still passes:\n%s", out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "cluster b") && strings.HasPrefix(line, "✗") {
				return nil
			}
		}
		return fmt.Errorf("no failed line for cluster b:\n%s", out)
	})
	t.Logf("check with b's agent killed:\n%s", table)
	r, code, err = checkJSON()
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 || r.OK {
		t.Fatalf("check -o json with b down: exit %d, ok %v", code, r.OK)
	}
	for _, c := range r.Checks {
		switch c.Check {
		case "cluster b":
			if c.OK {
				t.Fatalf("cluster b reported ok: %+v", c)
			}
		case "cluster a":
			if !c.OK {
				t.Fatalf("cluster a reported failing: %+v", c)
			}
		}
	}

	// A server that cannot be reached is a failure too.
	s.p.Kill()
	if _, _, code := cliExit(t, "check", "--server", s.admin); code == 0 {
		t.Fatal("check passes with the server down")
	}
}
