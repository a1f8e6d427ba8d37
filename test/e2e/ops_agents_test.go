package e2e

// Operating agents (issue 12): a second agent for a registered cluster, required paths that
// do not exist, a discovery directory that disappears, two agents on one machine.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// opsAgentStatus is the agent's /status with the fields these tests read.
type opsAgentStatus struct {
	Instance        string   `json:"instance"`
	Connected       bool     `json:"connected"`
	InputResources  int      `json:"inputResources"`
	DiscoveryErrors []string `json:"discoveryErrors"`
	Refused         *struct {
		Holder struct {
			Peer     string `json:"peer"`
			Instance string `json:"instance"`
		} `json:"holder"`
		Attempts int `json:"attempts"`
	} `json:"refused"`
}

func opsAgentStat(a *agent) (opsAgentStatus, error) {
	var st opsAgentStatus
	err := getJSON(a.admin, "/status", &st)
	return st, err
}

// opsServerStatus is the server's /status with the fields these tests read.
type opsServerStatus struct {
	Clusters []struct {
		Name           string `json:"name"`
		InputHash      string `json:"inputHash"`
		InputResources int    `json:"inputResources"`
	} `json:"clusters"`
	Connections map[string]struct {
		Push     int    `json:"push"`
		Pull     int    `json:"pull"`
		Instance string `json:"instance"`
		Refused  *struct {
			Instance string `json:"instance"`
		} `json:"refusedDuplicate"`
	} `json:"connections"`
}

// input returns the hash and size of the input the server holds for cluster.
func (s *server) input(t *testing.T, cluster string) (string, int) {
	t.Helper()
	var st opsServerStatus
	if err := getJSON(s.admin, "/status", &st); err != nil {
		t.Fatalf("server status: %v", err)
	}
	for _, c := range st.Clusters {
		if c.Name == cluster {
			return c.InputHash, c.InputResources
		}
	}
	t.Fatalf("server status has no cluster %s", cluster)
	return "", 0
}

// secondAgent starts another agent for cluster with its own, empty directories and ports and
// valid credentials, and waits until its admin endpoint answers.
func (h *harness) secondAgent(s *server, cluster, name string) *agent {
	h.t.Helper()
	base := filepath.Join(h.dir, name)
	a := &agent{cluster: cluster, discovery: filepath.Join(base, "discovery"), output: filepath.Join(base, "output"),
		state: filepath.Join(base, "state"), admin: h.addr()}
	if err := os.MkdirAll(a.discovery, 0o755); err != nil {
		h.t.Fatal(err)
	}
	a.args = []string{"agent", "--cluster", cluster, "--relay-address", s.relay, "--token-file", h.token,
		"--relay-ca-file", filepath.Join(s.dataDir, "relay-ca.crt"), "--state-dir", a.state, "--discovery-dir", a.discovery,
		"--output-dir", a.output, "--admin-address", a.admin, "--xds-address", "127.0.0.1:0", "--max-backoff", "1s", "--log-level", "debug"}
	a.p = h.start(name, a.args...)
	if err := waitUp(h.t, a.p, 0, func() string { return a.admin }, "/healthz", 30*time.Second); err != nil {
		h.t.Fatal(err)
	}
	return a
}

// TestOpsSecondAgentForCluster (issue 12 case 2): a second agent for a registered cluster,
// with valid credentials and an empty discovery directory, is refused while the first is
// connected — it says so, naming the holder, and so do the server's log, metric and
// `meshrelay check` — and the cluster's input and what other clusters receive stay as they
// were, also after it leaves. When the first agent stops instead, the second takes over.
func TestOpsSecondAgentForCluster(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 20*time.Second, "blue reaches remote", func() error { return outputHas(t, remote, blueInLocal) })
	poll.Eventually(t, 10*time.Second, "local's input held", func() error {
		if _, n := s.input(t, "local"); n == 0 {
			return errors.New("local's input is empty")
		}
		return nil
	})
	inputHash, _ := s.input(t, "local")
	remoteKeys, err := outputKeys(remote.output)
	if err != nil {
		t.Fatal(err)
	}
	first, err := opsAgentStat(local)
	if err != nil || !first.Connected {
		t.Fatalf("first agent status %+v, %v: want connected", first, err)
	}
	// Nothing of local's input replaced, nothing other clusters get dropped.
	unchanged := func(what string) {
		t.Helper()
		if got, n := s.input(t, "local"); got != inputHash {
			t.Fatalf("%s: local's input changed to %s (%d resources), want %s", what, got, n, inputHash)
		}
		got, err := outputKeys(remote.output)
		if err != nil {
			t.Fatal(err)
		}
		if missing := missingKeys(remoteKeys, got); len(missing) > 0 {
			t.Fatalf("%s: remote's output lost %v", what, missing)
		}
		if st, _ := opsAgentStat(local); !st.Connected {
			t.Fatalf("%s: the first agent is no longer connected: %+v", what, st)
		}
	}

	second := h.secondAgent(s, "local", "agent-local-second")
	// Wait until the second agent was refused a few times — or until the server
	// acknowledged an input from it, which must not happen.
	poll.Eventually(t, 20*time.Second, "the second agent is refused (or its input taken)", func() error {
		if v, err := metricOf(second.admin, "meshrelay_agent_input_version"); err == nil && v > 0 {
			return nil
		}
		st, err := opsAgentStat(second)
		if err != nil {
			return err
		}
		if st.Refused == nil || st.Refused.Attempts < 3 {
			return fmt.Errorf("second agent status %+v (refused %+v): want refused 3 times", st, st.Refused)
		}
		return nil
	})
	unchanged("with a second agent for local")
	st, err := opsAgentStat(second)
	if err != nil || st.Connected || st.Refused == nil || first.Instance == "" || st.Refused.Holder.Instance != first.Instance {
		t.Fatalf("second agent status %+v (refused %+v), %v: want refused by the first agent's instance %q", st, st.Refused, err, first.Instance)
	}
	if err := logContains(t, second.p, "relay session refused: another agent holds the cluster"); err != nil {
		t.Error(err)
	}
	if err := logContains(t, second.p, "holderInstance="+first.Instance); err != nil {
		t.Error(err)
	}
	if v := metric(t, second.admin, "meshrelay_agent_session_refused"); v != 1 {
		t.Errorf("second agent's meshrelay_agent_session_refused = %v, want 1", v)
	}
	if err := logContains(t, s.p, "stream refused: another agent holds the cluster"); err != nil {
		t.Error(err)
	}
	if v := metric(t, s.admin, "meshrelay_relay_streams_refused_total", `cluster="local"`, `reason="duplicate"`); v < 3 {
		t.Errorf("server's meshrelay_relay_streams_refused_total{cluster=local,reason=duplicate} = %v, want at least 3", v)
	}
	out, errOut, code := cliExit(t, "check", "--server", s.admin)
	if code == 0 || !strings.Contains(out, "✗ duplicate agent local") || !strings.Contains(out, first.Instance) {
		t.Errorf("check exits %d, want non-zero with a failed 'duplicate agent local' line naming instance %s:\n%s%s", code, first.Instance, out, errOut)
	}
	t.Logf("check with a second agent for local:\n%s", out)
	unchanged("with a second agent refused")

	if err := second.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	unchanged("after the second agent stopped")
	// A change of local still flows: the first agent still holds the cluster.
	writeFile(t, filepath.Join(local.discovery, "red.yaml"), serviceYAML("service-red", "10.1.0.2", 8080))
	poll.Eventually(t, 20*time.Second, "red reaches remote", func() error { return outputHas(t, remote, seKey("service-red")) })
	inputHash, _ = s.input(t, "local")

	// The second agent again; this time the first one stops: the second takes over, and its
	// (empty) discovery is now legitimately local's input.
	second = h.secondAgent(s, "local", "agent-local-second")
	poll.Eventually(t, 20*time.Second, "the second agent is refused again", func() error {
		if st, err := opsAgentStat(second); err != nil || st.Refused == nil {
			return fmt.Errorf("second agent status %+v, %v: want refused", st, err)
		}
		return nil
	})
	unchanged("with the second agent back")
	if err := local.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "the second agent takes over", func() error {
		st, err := opsAgentStat(second)
		if err != nil || !st.Connected || st.Refused != nil {
			return fmt.Errorf("second agent status %+v, %v: want connected, no longer refused", st, err)
		}
		if _, n := s.input(t, "local"); n != 0 {
			return fmt.Errorf("local's input has %d resources, want the second agent's empty discovery", n)
		}
		return nil
	})
	poll.Eventually(t, 20*time.Second, "blue leaves remote", func() error { return outputLacks(t, remote, blueInLocal) })
}

// runExit runs the binary and waits at most limit for it to exit; it returns stderr and the
// exit error. A process still running at the limit is a failure: the point is to fail fast.
func runExit(t *testing.T, limit time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("meshrelay %s still ran after %s (killed); stderr:\n%s", args[0], limit, errOut.String())
	}
	return errOut.String(), err
}

// wantExitNaming runs the binary and wants a non-zero exit whose stderr says all of want.
func wantExitNaming(t *testing.T, args []string, want ...string) {
	t.Helper()
	errOut, err := runExit(t, 20*time.Second, args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("exit %v, want a non-zero exit; stderr:\n%s", err, errOut)
	}
	for _, w := range want {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr does not say %q:\n%s", w, errOut)
		}
	}
}

// TestOpsMissingDiscoveryDir (issue 12 case 6): an agent whose --discovery-dir (or any other
// path it needs) does not exist exits at once, naming the flag and the path, instead of
// connecting with no input while the server waits in safe mode.
func TestOpsMissingDiscoveryDir(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	a := h.agentDirs("local")
	notADir := filepath.Join(h.dir, "a-file")
	writeFile(t, notADir, "x")
	missing := filepath.Join(h.dir, "nowhere", "discovery")
	args := func(kv ...string) []string {
		flags := map[string]string{"--cluster": "local", "--relay-address": s.relay, "--token-file": h.token,
			"--relay-ca-file": filepath.Join(s.dataDir, "relay-ca.crt"), "--state-dir": a.state, "--discovery-dir": a.discovery,
			"--output-dir": a.output, "--admin-address": h.addr(), "--xds-address": "127.0.0.1:0"}
		for i := 0; i < len(kv); i += 2 {
			flags[kv[i]] = kv[i+1]
		}
		out := []string{"agent"}
		for k, v := range flags {
			out = append(out, k, v)
		}
		return out
	}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"discovery dir missing", args("--discovery-dir", missing), []string{"--discovery-dir " + missing + ": no such directory"}},
		{"discovery dir is a file", args("--discovery-dir", notADir), []string{"--discovery-dir " + notADir + ": not a directory"}},
		{"relay CA file missing", args("--relay-ca-file", missing+".crt"), []string{"--relay-ca-file " + missing + ".crt: no such file"}},
		{"token file missing", args("--token-file", missing+".token"), []string{"--token-file " + missing + ".token: no such file"}},
		{"state dir cannot be created", args("--state-dir", filepath.Join(notADir, "state")), []string{"--state-dir " + filepath.Join(notADir, "state") + ": cannot create directory"}},
		{"output dir cannot be created", args("--output-dir", filepath.Join(notADir, "out")), []string{"--output-dir " + filepath.Join(notADir, "out") + ": cannot create directory"}},
		{"kubeconfig missing", append(args("--discovery-dir", "", "--output-dir", ""), "--kubernetes", "--kubeconfig", missing+".kubeconfig"), []string{"--kubeconfig " + missing + ".kubeconfig: no such file"}},
		{"several at once", args("--discovery-dir", missing, "--relay-ca-file", missing+".crt"), []string{"--discovery-dir " + missing, "--relay-ca-file " + missing + ".crt"}},
	} {
		t.Run(c.name, func(t *testing.T) { wantExitNaming(t, c.args, c.want...) })
	}
	if st := s.status(t); len(st.SafeMode.Missing) != 2 {
		t.Errorf("server safe mode %+v: no agent should have connected", st.SafeMode)
	}
}

// TestOpsServerMissingConfigDir (issue 12 case 6): the server's required paths fail fast too,
// naming the flag and the path.
func TestOpsServerMissingConfigDir(t *testing.T) {
	h := newHarness(t)
	missing := filepath.Join(h.dir, "nowhere", "config")
	base := func(kv ...string) []string {
		return append([]string{"server", "--relay-address", h.addr(), "--admin-address", h.addr(), "--data-dir", filepath.Join(h.dir, "data"),
			"--token-file", h.token, "--admin-token-file", h.adminToken}, kv...)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"config dir missing", base("--config-dir", missing), "--config-dir " + missing + ": no such directory"},
		{"token file missing", base("--token-file", missing+".token"), "--token-file " + missing + ".token: no such file"},
		{"admin token file missing", base("--admin-token-file", missing+".admin"), "--admin-token-file " + missing + ".admin: no such file"},
		{"relay CA missing", base("--relay-ca-cert", missing+".crt", "--relay-ca-key", missing+".key"), "--relay-ca-cert " + missing + ".crt: no such file"},
		{"serving certificate missing", base("--relay-server-cert", missing+".crt", "--relay-server-key", missing+".key"), "--relay-server-key " + missing + ".key: no such file"},
	} {
		t.Run(c.name, func(t *testing.T) { wantExitNaming(t, c.args, c.want) })
	}
}

// TestOpsDiscoveryDirRemovedAtRuntime (issue 12 case 6): a discovery directory that goes away
// while the agent runs is reported at once — log, /status, metric — and the cluster's input
// keeps what was last read (no data never means delete).
func TestOpsDiscoveryDirRemovedAtRuntime(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	local := h.startAgent("local", s)
	remote := h.startAgent("remote", s)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	poll.Eventually(t, 20*time.Second, "blue reaches remote", func() error { return outputHas(t, remote, blueInLocal) })
	inputHash, _ := s.input(t, "local")

	// Moved away in one step (removing the files first would be a legitimate "no services").
	if err := os.Rename(local.discovery, local.discovery+".moved"); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "the agent reports its discovery failing", func() error {
		st, err := opsAgentStat(local)
		if err != nil {
			return err
		}
		if len(st.DiscoveryErrors) == 0 || !strings.Contains(strings.Join(st.DiscoveryErrors, " "), local.discovery) {
			return fmt.Errorf("discoveryErrors %q: want the directory named", st.DiscoveryErrors)
		}
		return nil
	})
	if err := logContains(t, local.p, "read manifest directory failed"); err != nil {
		t.Error(err)
	}
	if v := metric(t, local.admin, "meshrelay_agent_discovery_errors"); v < 1 {
		t.Errorf("meshrelay_agent_discovery_errors = %v, want at least 1", v)
	}
	if local.p.Exited() {
		t.Fatal("the agent exited; it should keep serving its last output")
	}
	if got, _ := s.input(t, "local"); got != inputHash {
		t.Errorf("local's input changed from %s to %s when its discovery directory went away", inputHash, got)
	}
	if err := outputHas(t, remote, blueInLocal); err != nil {
		t.Error(err)
	}
}

// TestOpsTwoAgentsOneMachineDefaultPorts (issue 12 case 11): a second agent (another cluster)
// on one machine with the first one's admin or xDS address exits at once, naming the flag and
// what to do.
func TestOpsTwoAgentsOneMachineDefaultPorts(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local", "remote"})
	xdsAddr := h.addr()
	local := h.startAgent("local", s, "--xds-address", xdsAddr) // the last --xds-address wins
	if err := waitUp(t, local.p, 0, func() string { return local.admin }, "/healthz", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 20*time.Second, "local's xDS listening", func() error { return logContains(t, local.p, "xds listening") })

	r := h.agentDirs("remote")
	args := func(admin, xds string) []string {
		return []string{"agent", "--cluster", "remote", "--relay-address", s.relay, "--token-file", h.token,
			"--relay-ca-file", filepath.Join(s.dataDir, "relay-ca.crt"), "--state-dir", r.state, "--discovery-dir", r.discovery,
			"--output-dir", r.output, "--admin-address", admin, "--xds-address", xds}
	}
	hint := "give each agent its own --xds-address and --admin-address"
	wantExitNaming(t, args(local.admin, h.addr()), "--admin-address "+local.admin+": address already in use", hint)
	wantExitNaming(t, args(h.addr(), xdsAddr), "--xds-address "+xdsAddr+": address already in use", hint)

	// The server's ports likewise.
	wantExitNaming(t, []string{"server", "--relay-address", s.relay, "--admin-address", h.addr(), "--data-dir", filepath.Join(h.dir, "data2"),
		"--token-file", h.token, "--admin-token-file", h.adminToken}, "--relay-address "+s.relay+": address already in use", "give each server its own")
	wantExitNaming(t, []string{"server", "--relay-address", h.addr(), "--admin-address", s.admin, "--data-dir", filepath.Join(h.dir, "data3"),
		"--token-file", h.token, "--admin-token-file", h.adminToken}, "--admin-address "+s.admin+": address already in use")
}
