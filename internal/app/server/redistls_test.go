package server

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
	"github.com/meshrelay/meshrelay/internal/snapshot/redistest"
)

// TestRedisTLS starts a real redis-server that speaks only TLS and checks that the
// server's Redis client (--redis-tls) reaches it when it trusts the CA, and does not when
// it does not or when it speaks plaintext.
func TestRedisTLS(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not on PATH (%v); install it, e.g. apt-get install -y redis-server", err)
	}
	dir := t.TempDir()
	ca := pkitest.CA(t, "test.local")
	caFile := pkitest.CAFile(t, ca)
	certFile, keyFile := pkitest.Server(t, ca, "127.0.0.1", "localhost").Write(t, dir, "tls.crt", "tls.key")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	ping := func(cfg Config) error {
		c, err := newRedisClient(cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	}
	deadline := time.Now().Add(10 * time.Second)
	trusted := Config{RedisAddress: addr, RedisTLS: true, RedisTLSCAFile: caFile}
	for {
		err := ping(trusted)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS client trusting the CA: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := ping(Config{RedisAddress: addr, RedisTLS: true}); err == nil {
		t.Error("a client trusting only the system roots reached Redis")
	}
	if err := ping(Config{RedisAddress: addr, RedisTLS: true, RedisTLSCAFile: caFile, RedisTLSName: "redis.example"}); err == nil {
		t.Error("a client verifying another server name reached Redis")
	}
	if err := ping(Config{RedisAddress: addr}); err == nil {
		t.Error("a plaintext client reached a TLS-only Redis")
	}
	if _, err := newRedisClient(Config{RedisAddress: addr, RedisTLS: true, RedisTLSCAFile: filepath.Join(dir, "missing.crt")}); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

// TestRedisTLSModes: with --redis-tls, the server's client reaches a Sentinel topology and a
// Redis Cluster that speak only TLS (replication, the cluster bus and the sentinels too),
// verifying the sentinels, the primary they name and the nodes the cluster announces against
// the CA with the host it dials; a client that does not trust the CA, verifies another name
// or speaks plaintext does not reach them.
func TestRedisTLSModes(t *testing.T) {
	ca := pkitest.CA(t, "test.local")
	caFile := pkitest.CAFile(t, ca)
	dir := t.TempDir()
	certFile, keyFile := pkitest.Server(t, ca, "127.0.0.1", "localhost").Write(t, dir, "tls.crt", "tls.key")
	clientCert, clientKey := pkitest.Cluster(t, ca, "redis").Write(t, dir, "client.crt", "client.key")
	opts := []redistest.Option{redistest.WithPassword("data-secret"), redistest.WithTLS(redistest.TLSFiles{
		Cert: certFile, Key: keyFile, ClientCert: clientCert, ClientKey: clientKey, CA: caFile})}
	// write sets and reads a key through a client of cfg: it reaches the primary.
	write := func(cfg Config) error {
		cfg.RedisPassword = "data-secret"
		c, err := newRedisClient(cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := c.Set(ctx, "{meshrelay}:k", "v", 0).Err(); err != nil {
			return err
		}
		return c.Get(ctx, "{meshrelay}:k").Err()
	}
	check := func(t *testing.T, base Config) {
		trusted := base
		trusted.RedisTLS, trusted.RedisTLSCAFile = true, caFile
		if err := write(trusted); err != nil {
			t.Fatalf("TLS client trusting the CA: %v", err)
		}
		named := trusted
		named.RedisTLSName = "localhost" // a name every certificate carries
		if err := write(named); err != nil {
			t.Fatalf("TLS client verifying localhost: %v", err)
		}
		untrusted := base
		untrusted.RedisTLS = true
		if err := write(untrusted); err == nil {
			t.Error("a client trusting only the system roots reached Redis")
		}
		wrong := trusted
		wrong.RedisTLSName = "redis.example"
		if err := write(wrong); err == nil {
			t.Error("a client verifying another server name reached Redis")
		}
		if err := write(base); err == nil {
			t.Error("a plaintext client reached a TLS-only Redis")
		}
	}
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		s := redistest.StartSentinel(t, opts...)
		check(t, Config{RedisSentinelAddresses: s.SentinelAddrs(), RedisMasterName: redistest.MasterName})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		c := redistest.StartCluster(t, opts...)
		check(t, Config{RedisClusterAddresses: c.Addrs()[:1]})
	})
}
