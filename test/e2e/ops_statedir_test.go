package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// Two agents started with one --state-dir (a copy-pasted command, a second replica on the same
// volume) would overwrite each other's key, certificate and last applied output. The second
// one is refused at start, naming the flag and the holder, and the first keeps running
// untouched.
func TestOpsTwoAgentsShareStateDir(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 20*time.Second, "local connected and in sync", func() error {
		if st := local.status(t); !st.Connected || st.OutputVersion == 0 {
			return fmt.Errorf("local agent: %+v", st)
		}
		return nil
	})
	before := local.status(t)
	stateBefore, err := os.ReadFile(filepath.Join(local.state, "output.json"))
	if err != nil {
		t.Fatal(err)
	}

	empty := filepath.Join(h.dir, "second", "discovery")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	second := h.start("agent-local-same-state", "agent", "--cluster", "local", "--relay-address", s.relay, "--token-file", h.token,
		"--relay-ca-file", filepath.Join(s.dataDir, "relay-ca.crt"), "--state-dir", local.state, "--discovery-dir", empty,
		"--output-dir", filepath.Join(h.dir, "second", "output"), "--admin-address", h.addr(), "--xds-address", "127.0.0.1:0")
	select {
	case <-second.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a second agent on the same --state-dir kept running")
	}
	if second.Err() == nil {
		t.Fatal("the second agent exited 0; want a failure")
	}
	if err := logContains(t, second, "give each agent its own --state-dir"); err != nil {
		t.Fatal(err)
	}
	if err := logContains(t, second, fmt.Sprintf("pid %d", local.p.Pid())); err != nil {
		t.Fatalf("the refusal does not name the holder: %v", err)
	}

	// The first agent is untouched: still connected, same output, same state file.
	after := local.status(t)
	if !after.Connected || after.OutputHash != before.OutputHash {
		t.Fatalf("first agent changed: before %+v, after %+v", before, after)
	}
	stateAfter, err := os.ReadFile(filepath.Join(local.state, "output.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(stateAfter) != string(stateBefore) {
		t.Fatal("the first agent's last applied output was rewritten")
	}
}
