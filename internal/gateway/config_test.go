package gateway

import (
	"strings"
	"testing"
)

// TestConfigXDSAddress: the socket and loopback forms are accepted in plaintext; any other
// TCP address needs the four TLS flags, and they go together.
func TestConfigXDSAddress(t *testing.T) {
	tlsFlags := Config{XDSCertFile: "c", XDSKeyFile: "k", XDSCAFile: "ca", Cluster: "east"}
	with := func(addr string, tls bool) Config {
		c := Config{XDSAddress: addr, NodeID: "gw"}
		if tls {
			c.XDSCertFile, c.XDSKeyFile, c.XDSCAFile, c.Cluster = tlsFlags.XDSCertFile, tlsFlags.XDSKeyFile, tlsFlags.XDSCAFile, tlsFlags.Cluster
		}
		return c
	}
	for _, c := range []Config{with("unix:///run/a.sock", false), with("unix:a.sock", false), with("127.0.0.1:1", false),
		with("[::1]:1", false), with("localhost:1", false), with("agent.example:18000", true), with("unix:a.sock", true)} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{with("agent.example:18000", false), "--xds-address agent.example:18000: a non-loopback TCP address needs mutual TLS"},
		{with(":18000", false), "needs mutual TLS"},
		{Config{XDSAddress: "unix:a.sock", NodeID: "gw", XDSCertFile: "c"}, "go together"},
		{Config{XDSAddress: "unix:a.sock", NodeID: "gw", XDSCertFile: "c", XDSKeyFile: "k", XDSCAFile: "ca"}, "go together"},
		{with("unix://a.sock", false), "absolute path"},
	} {
		if err := c.cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}
