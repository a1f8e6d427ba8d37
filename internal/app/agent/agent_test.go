package agent

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func parse(t *testing.T, args ...string) *Config {
	t.Helper()
	var c Config
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	base := []string{"--cluster=east", "--relay-address=mgmt:9900", "--token-file=t", "--relay-ca-file=ca", "--state-dir=s"}
	if err := fs.Parse(append(base, args...)); err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestLeaderElectionFlags: the Lease and identity defaults, the kubeconfig of universal
// mode's Lease, and the refusals, each naming the flag.
func TestLeaderElectionFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	t.Setenv("POD_NAME", "")
	c := parse(t, "--kubernetes", "--leader-election")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	lc, err := c.leaseConfig()
	if err != nil || lc.Namespace != "meshrelay-system" || lc.Name != "meshrelay-agent-east" || lc.Identity == "" || lc.Duration.Seconds() != 15 {
		t.Errorf("defaults without the pod's environment: %+v %v", lc, err)
	}
	t.Setenv("POD_NAMESPACE", "istio-system")
	t.Setenv("POD_NAME", "agent-7d9f-x2")
	if lc, _ = c.leaseConfig(); lc.String() != "istio-system/meshrelay-agent-east" || lc.Identity != "agent-7d9f-x2" {
		t.Errorf("defaults in a pod: %+v", lc)
	}
	c = parse(t, "--discovery-dir=d", "--output-dir=o", "--leader-election", "--kubeconfig=k", "--leader-election-lease=ns/l", "--leader-election-id=a")
	if err := c.Validate(); err != nil {
		t.Errorf("universal mode with its Lease in the API server of --kubeconfig: %v", err)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--kubernetes", "--leader-election", "--leader-election-lease=nons"}, "--leader-election-lease"},
		{[]string{"--kubernetes", "--leader-election", "--lease-duration=100ms"}, "--lease-duration"},
		{[]string{"--kubernetes", "--leader-election-id=a"}, "need --leader-election"},
		{[]string{"--discovery-dir=d", "--output-dir=o", "--kubeconfig=k"}, "--kubeconfig needs --kubernetes"},
	} {
		err := parse(t, bad.args...).Validate()
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want an error naming %q", bad.args, err, bad.want)
		}
	}
}

// TestXDSAddressFlags: the default socket in the state dir, the accepted forms, and the
// refusal of plaintext TCP off loopback, naming the flag.
func TestXDSAddressFlags(t *testing.T) {
	c := parse(t, "--kubernetes")
	e, err := c.xdsEndpoint()
	if err != nil || e.Network != "unix" || !strings.HasSuffix(e.Address, "/s/xds.sock") || !strings.HasPrefix(e.Address, "/") {
		t.Errorf("default: %+v %v, want the absolute socket <state-dir>/xds.sock", e, err)
	}
	for _, ok := range [][]string{
		{"--xds-address=unix:///run/x.sock"}, {"--xds-address=unix:x.sock"}, {"--xds-address=127.0.0.1:18000"},
		{"--xds-address=[::1]:18000"}, {"--xds-address=localhost:0"}, {"--xds-address=:18000", "--xds-tls"},
		{"--xds-address=10.0.0.1:18000", "--xds-tls"}, {"--xds-address="},
	} {
		if err := parse(t, append([]string{"--kubernetes"}, ok...)...).Validate(); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--xds-address=:18000"}, "--xds-address :18000: a non-loopback TCP address needs --xds-tls"},
		{[]string{"--xds-address=10.0.0.1:18000"}, "needs --xds-tls"},
		{[]string{"--xds-address=unix://x.sock"}, "unix:// takes an absolute path"},
		{[]string{"--xds-address=18000"}, "--xds-address \"18000\": want host:port"},
		{[]string{"--xds-address=", "--xds-tls"}, "--xds-tls needs an --xds-address"},
	} {
		err := parse(t, append([]string{"--kubernetes"}, bad.args...)...).Validate()
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want an error saying %q", bad.args, err, bad.want)
		}
	}
}
