package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// appliedRouteYAML is a RouteTable applied through the API: on local's HTTP gateway,
// requests for host go to green in remote (through remote's failover gateway). Without it
// seed 003's route for every host ("*") answers blue, so the answer tells them apart.
func appliedRouteYAML(name, host string) string {
	return fmt.Sprintf(`apiVersion: meshrelay.io/v1alpha1
kind: RouteTable
metadata:
  name: %s
  namespace: gloo-system
spec:
  hosts: [%s]
  clusters: [local]
  http:
  - matchers:
    - uri: {prefix: /}
    forwardTo:
      destinations:
      - ref: {name: default-service-green-10000, namespace: gloo-system, cluster: remote}
`, name, host)
}

// answerHost is answer with a Host header.
func answerHost(url, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

// servesHost is nil when local's gateway answers want for host.
func (w *seedWorld) servesHost(host, want string) error {
	got, err := answerHost(w.url, host)
	if err != nil {
		return fmt.Errorf("host %s: %w", host, err)
	}
	if got != want {
		return fmt.Errorf("host %s answered %q, want %q", host, got, want)
	}
	return nil
}

// apply runs `meshrelay apply -f` of content against the world's server and fails the
// test unless it succeeds.
func (w *seedWorld) apply(t *testing.T, name, content string) {
	t.Helper()
	path := filepath.Join(w.h.dir, name+".yaml")
	writeFile(t, path, content)
	if out, errOut, err := cli(t, "apply", "-f", path, "--server", w.server.admin); err != nil {
		t.Fatalf("meshrelay apply -f %s: %v\n%s%s", path, err, out, errOut)
	}
}

// settled is nil once the restarted server translated and both agents hold its outputs.
func (w *seedWorld) settled(t *testing.T) error {
	st := w.server.status(t)
	if st.SafeMode.Active || st.Translations == 0 {
		return fmt.Errorf("server has not translated yet (safe mode %v, %d translations)", st.SafeMode.Active, st.Translations)
	}
	if len(st.Clusters) != 2 {
		return fmt.Errorf("server knows %d clusters, want local and remote", len(st.Clusters))
	}
	for _, c := range st.Clusters {
		if !c.InSync {
			return fmt.Errorf("cluster %s not in sync (output v%d)", c.Name, c.OutputVersion)
		}
	}
	return nil
}

// TestOpsRestartKeepsAppliedConfig (issue 12 case 1): with the default store, what
// `meshrelay apply` accepted survives a restart of the server with the same --data-dir,
// graceful or kill -9 right after apply returned; no output without it is ever published.
func TestOpsRestartKeepsAppliedConfig(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil) // no --store: the default
	const first, second = "applied.example", "second.example"
	if err := w.servesHost(first, "blue-pod"); err != nil {
		t.Fatalf("before apply, seed 003's route must answer every host: %v", err)
	}
	w.apply(t, "route-first", appliedRouteYAML("applied-first", first))
	poll.Eventually(t, 30*time.Second, "gateway serves the applied route", func() error { return w.servesHost(first, "green-pod") })

	// Graceful restart (SIGTERM).
	if err := w.server.p.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop server: %v", err)
	}
	w.h.restartServer(w.server, "server-after-sigterm")
	poll.Eventually(t, 30*time.Second, "restarted server settles", func() error { return w.settled(t) })
	if err := w.servesHost(first, "green-pod"); err != nil {
		t.Fatalf("after a graceful restart: %v", err)
	}
	for _, a := range []*agent{w.local, w.remote} {
		if err := historyNoShrink(a, true); err != nil {
			t.Fatalf("after a graceful restart an output lost resources: %v", err)
		}
	}

	// kill -9 as soon as apply returned success.
	w.apply(t, "route-second", appliedRouteYAML("applied-second", second))
	w.server.p.Kill()
	w.h.restartServer(w.server, "server-after-kill")
	poll.Eventually(t, 30*time.Second, "gateway serves the route applied just before kill -9", func() error { return w.servesHost(second, "green-pod") })
	poll.Eventually(t, 30*time.Second, "restarted server settles", func() error { return w.settled(t) })
	for host, want := range map[string]string{first: "green-pod", second: "green-pod", "other.example": "blue-pod"} {
		if err := w.servesHost(host, want); err != nil {
			t.Fatalf("after kill -9 and restart: %v", err)
		}
	}
	for _, a := range []*agent{w.local, w.remote} {
		if err := historyNoShrink(a, true); err != nil {
			t.Fatalf("after kill -9 and restart an output lost resources: %v", err)
		}
	}
	if got := mustMetric(t, w.server.admin, "meshrelay_safe_mode_config_not_loaded"); got != 0 {
		t.Errorf("meshrelay_safe_mode_config_not_loaded = %v on a settled server", got)
	}
}

// TestOpsSecondServerOnDataDirRefused: a second server on a data directory another server
// holds exits at once with an error naming the directory, instead of writing beside it.
func TestOpsSecondServerOnDataDirRefused(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"local"})
	args := append([]string(nil), s.args...)
	setFlag(args, "--relay-address", h.addr())
	setFlag(args, "--admin-address", h.addr())
	p := h.start("server-second", args...)
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a second server on the same --data-dir is still running")
	}
	if p.Err() == nil {
		t.Fatal("second server exited 0")
	}
	want := "--data-dir " + s.dataDir + ": another meshrelay server holds it"
	poll.Eventually(t, 5*time.Second, "error naming the data dir", func() error { return logContains(t, p, want) })
	waitReady(t, s.admin) // the first one is untouched
}
