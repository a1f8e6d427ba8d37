package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The seed 003 story, end to end with real processes: `meshrelay demo` starts a server, two
// clusters with agents and gateways and the two apps, and checks every step itself (blue,
// green after blue's health check fails, blue again, and the same with the server killed).
// The telemetry pipeline runs too — a telemetry gateway and a collector agent per cluster,
// real meshrelay-collector processes over TLS — and the demo's last step checks that the
// local gateway's request metrics (as many requests as the gateway counts) reach the
// telemetry gateway's Prometheus endpoint and a configuration change's whole trace its OTLP
// destination.
func TestDemoTellsSeed003Story(t *testing.T) {
	out, errOut, err := cli(t, "demo", "--step-timeout", "40s", "--collector-binary", collector(t))
	if err != nil {
		t.Fatalf("demo failed: %v\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{"→ blue-pod", "→ green-pod", "failover took", "blue-pod again", "management server goes away", "in sync again after", "demo complete",
		"telemetry pipeline (meshrelay-collector)", "as local's gateway counts", "config.apply → config.translate → relay.deliver and agent.apply for local and remote"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("demo output:\n%s", out)
}

// Without a meshrelay-collector — none given, none beside meshrelay or on PATH, and not in
// the source tree to build one — the demo refuses at once and says how to get one, rather
// than running without the pipeline.
func TestDemoWithoutCollectorSaysHowToGetOne(t *testing.T) {
	cmd := exec.CommandContext(t.Context(), bin, "demo")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err == nil {
		t.Fatalf("demo without a collector succeeded:\n%s", out)
	}
	for _, want := range []string{"no meshrelay-collector for the telemetry pipeline", "--collector-binary", "go build", "--telemetry=false"} {
		if !strings.Contains(out, want) {
			t.Errorf("error lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "1. apps") {
		t.Errorf("demo started its story before finding no collector:\n%s", out)
	}
	cmd = exec.CommandContext(t.Context(), bin, "demo", "--collector-binary", cmd.Dir+"/missing")
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "--collector-binary: stat") {
		t.Errorf("demo --collector-binary missing: %v\n%s", err, b)
	}
}
