// Package redistest runs real Redis processes for tests: one redis-server (Start, this
// file), and the highly available topologies, a primary with a replica under three
// sentinels (StartSentinel) and a Redis Cluster of three primaries with a replica each
// (StartCluster; topology.go).
//
// The redis-server binary must be on PATH (apt-get install -y redis-server), and
// redis-sentinel for StartSentinel (apt-get install -y redis-sentinel); tests that use this
// package fail, rather than skip, without them.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/meshrelay/meshrelay/internal/proc"
)

// startTimeout bounds how long a started server may take to answer PING.
const startTimeout = 10 * time.Second

// Option configures Start.
type Option func(*config)

type config struct {
	persistence bool
	password    string // requirepass and masterauth
	// sentinelPassword is the requirepass of StartSentinel's sentinels.
	sentinelPassword string
	args             []string // more redis-server arguments
	// Set by the topologies (topology.go):
	sentinelConf string // not "": run as a sentinel with this configuration file text
	cluster      bool   // cluster-enabled, with its bus on a port of its own
}

// WithPersistence makes the server keep an append-only file (fsynced on every write) in its
// directory, so that data survives Stop and Restart.
func WithPersistence() Option { return func(c *config) { c.persistence = true } }

// WithPassword makes the server require password (requirepass) and use it towards its
// primary (masterauth); Client and the topologies' clients send it.
func WithPassword(password string) Option { return func(c *config) { c.password = password } }

// WithArgs passes more arguments to redis-server, e.g. "--min-replicas-to-write", "1".
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is a running redis-server listening on a loopback port.
type Server struct {
	bin     string
	port    int
	busPort int // the cluster bus's port (cluster nodes only)
	dir     string
	cfg     config

	mu   sync.Mutex    // guards cmd and done
	cmd  *exec.Cmd     // nil when stopped
	done chan struct{} // closed when cmd has exited
}

// Start runs redis-server on a free loopback port with its data in t.TempDir(), waits until
// it answers PING and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	return start(t, cfg)
}

// start runs a server of cfg: redis-server, or redis-sentinel for a sentinel.
func start(t testing.TB, cfg config) *Server {
	t.Helper()
	name := "redis-server"
	if cfg.sentinelConf != "" {
		name = "redis-sentinel"
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("redistest: %s is not on PATH (%v); install it, e.g. apt-get install -y %s", name, err, name)
	}
	s := &Server{bin: bin, dir: t.TempDir(), cfg: cfg}
	t.Cleanup(s.Stop)
	if cfg.cluster {
		if s.busPort, err = proc.FreePort(); err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
	}
	// The free port can be taken by someone else before redis-server binds it: try again.
	for attempt := 1; ; attempt++ {
		if s.port, err = proc.FreePort(); err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		err = s.start()
		if err == nil {
			return s
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			t.Fatalf("redistest: %v", err)
		}
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Client returns a client of the server that is closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                     s.Addr(),
		Password:                 s.cfg.password,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// query runs f with a new client of the server, closed when f returns.
func (s *Server) query(ctx context.Context, f func(*redis.Client) error) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), Password: s.cfg.password,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer c.Close()
	return f(c)
}

// running reports whether the server runs (was not stopped or killed).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Stop kills the server (SIGKILL) and waits for it to exit. It may be called more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

// Restart stops the server if it runs and starts it again on the same port and directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart: %v", err)
	}
}

// start runs the server and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	args, err := s.args()
	if err != nil {
		return err
	}
	out := &syncBuffer{}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Do not let Wait hang on the output pipe if a forked child (an AOF rewrite) outlives
	// the killed server.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(s.Addr(), s.cfg.password)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("%s on port %d exited (%v) before answering PING; output:\n%s", filepath.Base(s.bin), s.port, cmd.ProcessState, out.tail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("%s on port %d does not answer PING after %v (%v); output:\n%s", filepath.Base(s.bin), s.port, startTimeout, err, out.tail())
		}
	}
}

// args are the server's command line.
func (s *Server) args() ([]string, error) {
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir}
	if s.cfg.sentinelConf != "" {
		// A sentinel rewrites its configuration file (the replicas and other sentinels it
		// learnt): write it once, and keep it across restarts.
		conf := filepath.Join(s.dir, "sentinel.conf")
		if _, err := os.Stat(conf); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(conf, []byte(s.cfg.sentinelConf), 0o600); err != nil {
				return nil, fmt.Errorf("write sentinel configuration: %w", err)
			}
		}
		args = append([]string{conf, "--sentinel"}, args...)
		if s.cfg.password != "" {
			args = append(args, "--requirepass", s.cfg.password)
		}
		return append(args, s.cfg.args...), nil
	}
	args = append(args, "--save", "")
	if s.cfg.persistence {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.cfg.password != "" {
		args = append(args, "--requirepass", s.cfg.password, "--masterauth", s.cfg.password)
	}
	if s.cfg.cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(s.busPort), "--cluster-node-timeout", strconv.Itoa(int(nodeTimeout.Milliseconds())))
	}
	return append(args, s.cfg.args...), nil
}

// ping sends PING (after AUTH with a password) over a fresh connection and expects +PONG.
func ping(addr, password string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if password != "" {
		if _, err := fmt.Fprintf(c, "AUTH %s\r\n", password); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+OK\r\n" {
			return fmt.Errorf("AUTH answered %q", strings.TrimSpace(line))
		}
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of exec's copying goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail returns the last 4 KiB of output.
func (b *syncBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > 4096 {
		s = "..." + s[len(s)-4096:]
	}
	return s
}
