package server

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func parseFlags(t *testing.T, args ...string) Config {
	t.Helper()
	var c Config
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStoreFlag: bolt by default, redis implied by --redis-address, memory only when asked,
// and a contradictory combination names both flags.
func TestStoreFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		kind string // "" = invalid
		err  string
		name string
	}{
		{args: nil, kind: StoreBolt, name: "bolt meshrelay-data/store.db"},
		{args: []string{"--data-dir", "/var/lib/mr"}, kind: StoreBolt, name: "bolt /var/lib/mr/store.db"},
		{args: []string{"--store", "memory"}, kind: StoreMemory, name: "memory"},
		{args: []string{"--redis-address", "127.0.0.1:6379"}, kind: StoreRedis, name: "redis 127.0.0.1:6379"},
		{args: []string{"--store", "redis", "--redis-address", "127.0.0.1:6379"}, kind: StoreRedis, name: "redis 127.0.0.1:6379"},
		{args: []string{"--store", "redis"}, err: "--store redis needs --redis-address"},
		{args: []string{"--store", "bolt", "--redis-address", "127.0.0.1:6379"}, err: "--store bolt contradicts --redis-address"},
		{args: []string{"--store", "memory", "--redis-address", "127.0.0.1:6379"}, err: "--store memory contradicts --redis-address"},
		{args: []string{"--store", "etcd"}, err: `--store "etcd": want bolt, redis or memory`},
	} {
		c := parseFlags(t, tc.args...)
		err := c.Validate()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: Validate = %v, want an error containing %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: Validate = %v", tc.args, err)
			continue
		}
		if got := c.StoreKind(); got != tc.kind {
			t.Errorf("%q: store %q, want %q", tc.args, got, tc.kind)
		}
		if got := storeName(c); got != tc.name {
			t.Errorf("%q: storeName %q, want %q", tc.args, got, tc.name)
		}
	}
}
