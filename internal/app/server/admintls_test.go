package server

import (
	"slices"
	"strings"
	"testing"
)

// TestAdminTLSFlags: HTTPS unless plain HTTP is asked for on a loopback address; a plain
// admin API anywhere else is refused naming both flags.
func TestAdminTLSFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" = valid
	}{
		{args: nil},
		{args: []string{"--admin-address", ":9901"}},
		{args: []string{"--admin-plaintext"}}, // the default address is 127.0.0.1:9901
		{args: []string{"--admin-plaintext", "--admin-address", "127.0.0.2:9901"}},
		{args: []string{"--admin-plaintext", "--admin-address", "[::1]:9901"}},
		{args: []string{"--admin-plaintext", "--admin-address", "localhost:9901"}},
		{args: []string{"--admin-plaintext", "--admin-address", ":9901"}, err: `--admin-plaintext needs a loopback --admin-address (127.0.0.1, ::1 or localhost), got ":9901"`},
		{args: []string{"--admin-plaintext", "--admin-address", "0.0.0.0:9901"}, err: `--admin-plaintext needs a loopback --admin-address`},
		{args: []string{"--admin-plaintext", "--admin-address", "10.0.0.5:9901"}, err: `--admin-plaintext needs a loopback --admin-address`},
		{args: []string{"--admin-plaintext", "--admin-address", "mgmt.example.com:9901"}, err: `--admin-plaintext needs a loopback --admin-address`},
		{args: []string{"--admin-tls-cert-file", "a.crt"}, err: "--admin-tls-cert-file and --admin-tls-key-file go together"},
		{args: []string{"--admin-tls-cert-file", "a.crt", "--admin-tls-key-file", "a.key"}},
		{args: []string{"--admin-plaintext", "--admin-tls-cert-file", "a.crt", "--admin-tls-key-file", "a.key"}, err: "--admin-plaintext and --admin-tls-cert-file exclude each other"},
	} {
		c := parseFlags(t, tc.args...)
		err := c.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: Validate = %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: Validate = %v, want an error containing %q", tc.args, err, tc.err)
		}
	}
}

// TestAdminHosts: the generated admin certificate names what the relay's does, plus the host
// of --admin-address when it names one.
func TestAdminHosts(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		extra []string // beyond the relay certificate's names
	}{
		{args: []string{"--admin-address", ":9901"}},
		{args: []string{"--admin-address", "0.0.0.0:9901"}},
		{args: []string{"--admin-address", "[::]:9901"}},
		{args: []string{"--admin-address", "127.0.0.1:9901"}},
		{args: []string{"--admin-address", "10.1.2.3:9901"}, extra: []string{"10.1.2.3"}},
		{args: []string{"--admin-address", "mgmt-east-admin:9901", "--relay-server-names", "mgmt.example.com"}, extra: []string{"mgmt-east-admin"}},
	} {
		c := parseFlags(t, tc.args...)
		got, want := adminHosts(c), append(serverHosts(c), tc.extra...)
		if !slices.Equal(got, want) {
			t.Errorf("%q: admin certificate hosts %q, want %q", tc.args, got, want)
		}
	}
	c := parseFlags(t, "--relay-server-names", "mgmt.example.com,10.9.9.9")
	if h := adminHosts(c); !slices.Contains(h, "mgmt.example.com") || !slices.Contains(h, "10.9.9.9") || !slices.Contains(h, "127.0.0.1") {
		t.Errorf("admin certificate hosts %q lack the relay server names or loopback", h)
	}
}
