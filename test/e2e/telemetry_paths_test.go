package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/poll"
)

// tracedVD is a VirtualDestination that changes both seed clusters' outputs.
func tracedVD(name string) string {
	return "apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata:\n  name: " + name + "\n  namespace: default\nspec:\n" +
		"  hosts: [" + name + ".global]\n  ports: [{number: 80, targetPort: {name: color}}]\n  services: [{name: service-green}, {name: service-blue}]\n"
}

// otlpTo are the flags that export a server's or agent's telemetry to dest in plain text.
func otlpTo(dest *otlpDestination) []string {
	return []string{"--otlp-endpoint", dest.addr, "--otlp-insecure", "--otlp-metrics-interval", "1s"}
}

// Every path a configuration change takes into the server starts one trace, named by its
// path (meshrelay.path): an apply and a delete through the admin API and a file written to
// the config directory each reach the OTLP destination whole, down to both agents' apply.
func TestChangeTracePaths(t *testing.T) {
	h := newHarness(t)
	dest := startOTLPDestination(t)
	w := newSeedWorldIn(h, otlpTo(dest), nil, nil, func(role, _ string) []string {
		if role == "agent" {
			return otlpTo(dest)
		}
		return nil
	})
	traced := func(path string, since time.Time) {
		t.Helper()
		poll.Eventually(t, 60*time.Second, "the trace of a change through "+path+" reaches the OTLP destination", func() error {
			return dest.changeTrace(path, since, "local", "remote")
		})
	}

	change := filepath.Join(h.dir, "traced-apply.yaml")
	writeFile(t, change, tracedVD("traced-apply"))
	since := time.Now()
	if out, errOut, err := cli(t, "apply", "-f", change, "--server", w.server.admin); err != nil {
		t.Fatalf("apply: %v\n%s%s", err, out, errOut)
	}
	traced(changelog.PathApply, since)

	since = time.Now()
	if out, errOut, err := cli(t, "delete", "virtualdestination", "traced-apply", "-n", "default", "--server", w.server.admin); err != nil {
		t.Fatalf("delete: %v\n%s%s", err, out, errOut)
	}
	traced(changelog.PathDelete, since)

	since = time.Now()
	writeFile(t, filepath.Join(w.server.config, "traced-dir.yaml"), tracedVD("traced-dir"))
	traced(changelog.PathConfigDir, since)
}

// A change of the Kubernetes custom resources starts its trace too (meshrelay.path cr),
// with both agents' apply in it: the server runs in Kubernetes mode against a real API
// server.
func TestChangeTraceCustomResources(t *testing.T) {
	h := newHarness(t)
	dest := startOTLPDestination(t)
	mgmt := kubetest.Start(t, kubetest.WithRBAC())
	for _, c := range []string{"local", "remote"} {
		applyCR(t, mgmt.Client, fmt.Sprintf("apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: %s}\n", c))
	}
	s := h.startKubeServer("server", serverIdentity(t, mgmt, nil), otlpTo(dest)...)
	local := h.startAgent("local", s, otlpTo(dest)...)
	remote := h.startAgent("remote", s, otlpTo(dest)...)
	writeFile(t, filepath.Join(local.discovery, "blue.yaml"), serviceYAML("service-blue", "10.1.0.1", 10000))
	writeFile(t, filepath.Join(remote.discovery, "blue.yaml"), serviceYAML("service-blue", "10.2.0.1", 10000))
	poll.Eventually(t, 30*time.Second, "both agents in sync", func() error {
		for _, c := range s.status(t).Clusters {
			if !c.InSync {
				return fmt.Errorf("%s not in sync", c.Name)
			}
		}
		return nil
	})

	since := time.Now()
	applyCR(t, mgmt.Client, blueVD) // blue in both clusters: each output gets the other's
	poll.Eventually(t, 30*time.Second, "both outputs have blue from the custom resource", func() error {
		if err := outputHas(t, local, seKey("service-blue")); err != nil {
			return err
		}
		return outputHas(t, remote, seKey("service-blue"))
	})
	poll.Eventually(t, 60*time.Second, "the custom resource change's trace reaches the OTLP destination", func() error {
		return dest.changeTrace(changelog.PathCR, since, "local", "remote")
	})
}

// `meshrelay check` reports failing OTLP exports, of the server itself and of its agents,
// while the collector they export to is down (a closed loopback port), and passes again
// once a collector listens there.
func TestCheckTelemetryExport(t *testing.T) {
	h := newHarness(t)
	collector := h.addr() // nothing listens here yet
	otlp := []string{"--otlp-endpoint", collector, "--otlp-insecure", "--otlp-metrics-interval", "500ms"}
	off := h.startServer("server-off", []string{"local"})
	if _, out, line := checkLine(t, off.admin, "telemetry export"); !strings.HasPrefix(line, "✓") || !strings.HasSuffix(line, " off") {
		t.Errorf("check of a server without --otlp-endpoint: no passed telemetry export line saying off:\n%s", out)
	}
	if err := off.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	s := h.startServer("server", []string{"local"}, otlp...)
	h.startAgent("local", s, otlp...)
	poll.Eventually(t, 90*time.Second, "check fails the server's and the agent's telemetry export", func() error {
		if err := checkFailsOn(t, s.admin, "telemetry export", "otlp export to "+collector+" failing since", "exports failed in a row, the last at"); err != nil {
			return err
		}
		return checkFailsOn(t, s.admin, "telemetry export local", "agent: otlp export to "+collector+" failing since")
	})
	if n := metric(t, s.admin, "meshrelay_relay_agent_otlp_export_failing", `cluster="local"`); n != 1 {
		t.Errorf("meshrelay_relay_agent_otlp_export_failing{cluster=local} = %v, want 1", n)
	}
	if n := metric(t, s.admin, "meshrelay_otlp_export_errors_total"); n == 0 {
		t.Error("meshrelay_otlp_export_errors_total is 0 with the collector down")
	}
	if _, out, line := checkLine(t, s.admin, "cluster local"); !strings.HasPrefix(line, "✓") {
		t.Errorf("the agent's telemetry fails its cluster's line:\n%s", out)
	}

	// A collector comes up there: both exports recover and check passes.
	dest := startOTLPDestinationAt(t, collector)
	poll.Eventually(t, 3*time.Minute, "check passes once the collector listens", func() error {
		if _, out, line := checkLine(t, s.admin, "telemetry export"); !strings.HasPrefix(line, "✓") || !strings.Contains(line, "to "+collector+", last export at ") {
			return fmt.Errorf("no passed telemetry export line:\n%s", out)
		}
		return checkPasses(t, s.admin)
	})
	// What check says matches what arrived.
	if err := dest.MetricSince("meshrelay-server", "meshrelay_otlp_export_errors_total", time.Time{}); err != nil {
		t.Error(err)
	}
	if err := dest.MetricSince("meshrelay-agent", "meshrelay_agent_connected", time.Time{}); err != nil {
		t.Error(err)
	}
}
