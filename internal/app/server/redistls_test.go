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
