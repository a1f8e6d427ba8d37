// Package redistest runs a real redis-server process for tests.
//
// The redis-server binary must be on PATH (apt-get install -y redis-server); tests that use
// this package fail, rather than skip, without it.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
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
}

// WithPersistence makes the server keep an append-only file (fsynced on every write) in its
// directory, so that data survives Stop and Restart.
func WithPersistence() Option { return func(c *config) { c.persistence = true } }

// Server is a running redis-server listening on a loopback port.
type Server struct {
	bin  string
	port int
	dir  string
	cfg  config

	mu   sync.Mutex    // guards cmd and done
	cmd  *exec.Cmd     // nil when stopped
	done chan struct{} // closed when cmd has exited
}

// Start runs redis-server on a free loopback port with its data in t.TempDir(), waits until
// it answers PING and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH (%v); install it, e.g. apt-get install -y redis-server", err)
	}
	s := &Server{bin: bin, dir: t.TempDir()}
	for _, o := range opts {
		o(&s.cfg)
	}
	t.Cleanup(s.Stop)
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
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
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
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--dir", s.dir}
	if s.cfg.persistence {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
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
		err := ping(s.Addr())
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.cmd, s.done = nil, nil
			return fmt.Errorf("redis-server on port %d exited (%v) before answering PING; output:\n%s", s.port, cmd.ProcessState, out.tail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("redis-server on port %d does not answer PING after %v (%v); output:\n%s", s.port, startTimeout, err, out.tail())
		}
	}
}

// ping sends PING over a fresh connection and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
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
