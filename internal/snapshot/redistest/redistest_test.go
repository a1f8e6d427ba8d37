package redistest

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRestartWithPersistenceKeepsData(t *testing.T) {
	s := Start(t, WithPersistence())
	c := s.Client(t)
	if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, was %s", s.Addr(), addr)
	}
	if got, err := c.Get(t.Context(), "k").Result(); err != nil || got != "v" {
		t.Fatalf("Get after restart = %q, %v; want v", got, err)
	}
}

func TestRestartWithoutPersistenceLosesData(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop()
	s.Restart(t)
	if err := c.Get(t.Context(), "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("Get after restart without persistence = %v, want redis.Nil", err)
	}
}

// fatalTB records Fatalf and ends the goroutine like testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(f)
	}()
	<-done
	if !strings.Contains(f.msg, "apt-get install -y redis-server") {
		t.Fatalf("Start without redis-server: Fatalf(%q), want install instructions", f.msg)
	}
}

func TestStartFailureShowsOutput(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := &Server{bin: "redis-server", port: l.Addr().(*net.TCPAddr).Port, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	err = s.start()
	if err == nil || !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("start on a taken port = %v, want redis-server's output in the error", err)
	}
	if testing.Verbose() {
		t.Log(err)
	}
}
