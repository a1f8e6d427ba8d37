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

// checkStoreFlags parses args as the server's flags and checks that Validate fails with an
// error containing wantErr, or, with wantErr "", passes and gives the store kind and name.
func checkStoreFlags(t *testing.T, args []string, wantErr, kind, name string) {
	t.Helper()
	c := parseFlags(t, args...)
	err := c.Validate()
	switch {
	case wantErr != "":
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: Validate = %v, want an error containing %q", args, err, wantErr)
		}
		return
	case err != nil:
		t.Errorf("%q: Validate = %v", args, err)
		return
	}
	if got := c.StoreKind(); got != kind {
		t.Errorf("%q: store %q, want %q", args, got, kind)
	}
	if got := storeName(c); got != name {
		t.Errorf("%q: storeName %q, want %q", args, got, name)
	}
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
		checkStoreFlags(t, tc.args, tc.err, tc.kind, tc.name)
	}
}

// TestRedisModeFlags: --redis-sentinel-addresses with --redis-master-name, and
// --redis-cluster-addresses, imply the Redis store and name their mode; exactly one mode
// may be given, completely, and each error names the flags.
func TestRedisModeFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" = valid
		name string
	}{
		{args: []string{"--redis-sentinel-addresses", "10.0.0.1:26379,10.0.0.2:26379", "--redis-master-name", "mymaster"}, name: "redis sentinel mymaster via 10.0.0.1:26379,10.0.0.2:26379"},
		{args: []string{"--redis-cluster-addresses", "10.0.0.1:6379,10.0.0.2:6379"}, name: "redis cluster via 10.0.0.1:6379,10.0.0.2:6379"},
		{args: []string{"--store", "redis", "--redis-cluster-addresses", "a:1", "--mgmt-cluster-name", "west", "--redis-tls"}, name: "redis cluster via a:1"},
		{args: []string{"--redis-address", "a:1", "--redis-cluster-addresses", "b:1"}, err: "--redis-address and --redis-cluster-addresses exclude each other"},
		{args: []string{"--redis-sentinel-addresses", "a:1", "--redis-master-name", "m", "--redis-cluster-addresses", "b:1"}, err: "--redis-sentinel-addresses and --redis-cluster-addresses exclude each other"},
		{args: []string{"--redis-sentinel-addresses", "a:1"}, err: "--redis-sentinel-addresses needs --redis-master-name"},
		{args: []string{"--redis-master-name", "m"}, err: "--redis-master-name needs --redis-sentinel-addresses"},
		{args: []string{"--redis-cluster-addresses", "a:1,b"}, err: `--redis-cluster-addresses "b": want host:port`},
		{args: []string{"--redis-sentinel-addresses", ":26379", "--redis-master-name", "m"}, err: `--redis-sentinel-addresses ":26379": want host:port`},
		{args: []string{"--store", "bolt", "--redis-cluster-addresses", "a:1"}, err: "--store bolt contradicts --redis-cluster-addresses"},
		{args: []string{"--store", "memory", "--redis-sentinel-addresses", "a:1", "--redis-master-name", "m"}, err: "--store memory contradicts --redis-sentinel-addresses"},
		{args: []string{"--store", "redis"}, err: "--store redis needs --redis-address, --redis-sentinel-addresses or --redis-cluster-addresses"},
		{args: []string{"--mgmt-cluster-name", "west"}, err: "need a shared store: set --redis-address (or --redis-sentinel-addresses or --redis-cluster-addresses)"},
		{args: []string{"--redis-tls"}, err: "--redis-tls, --redis-tls-ca-file and --redis-tls-server-name need --redis-address (or --redis-sentinel-addresses or --redis-cluster-addresses)"},
	} {
		checkStoreFlags(t, tc.args, tc.err, StoreRedis, tc.name)
	}
}

// TestRedisPasswordsFromEnv: both passwords default to their environment variables.
func TestRedisPasswordsFromEnv(t *testing.T) {
	t.Setenv("MESHRELAY_REDIS_PASSWORD", "data-secret")
	t.Setenv("MESHRELAY_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
	c := parseFlags(t, "--redis-sentinel-addresses", "a:1", "--redis-master-name", "m")
	o, err := c.RedisOptions(0)
	if err != nil || o.Password != "data-secret" || o.SentinelPassword != "sentinel-secret" {
		t.Fatalf("RedisOptions = %+v, %v; want the passwords of the environment", o, err)
	}
}
