package e2e

import (
	"strings"
	"testing"
)

// The seed 003 story, end to end with real processes: `meshrelay demo` starts a server, two
// clusters with agents and gateways and the two apps, and checks every step itself (blue,
// green after blue's health check fails, blue again, and the same with the server killed).
func TestDemoTellsSeed003Story(t *testing.T) {
	out, errOut, err := cli(t, "demo", "--step-timeout", "40s")
	if err != nil {
		t.Fatalf("demo failed: %v\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{"→ blue-pod", "→ green-pod", "failover took", "blue-pod again", "management server goes away", "in sync again after", "demo complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("demo output:\n%s", out)
}
