package runner_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/runner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// blocking runs until ctx ends, counting how many are running.
func blocking(running *atomic.Int32) runner.Runnable {
	return runner.Func(func(ctx context.Context) error {
		running.Add(1)
		defer running.Add(-1)
		<-ctx.Done()
		return nil
	})
}

func runningN(t *testing.T, running *atomic.Int32, n int32) {
	t.Helper()
	poll.Eventually(t, 5*time.Second, "components running", func() error {
		if got := running.Load(); got != n {
			return fmt.Errorf("%d running, want %d", got, n)
		}
		return nil
	})
}

func TestFirstErrorCancelsTheOthers(t *testing.T) {
	errBoom := errors.New("boom")
	var running atomic.Int32
	r := runner.New(quiet())
	r.Add("a", blocking(&running))
	r.Add("b", blocking(&running))
	fail := make(chan struct{})
	r.Add("failing", runner.Func(func(ctx context.Context) error {
		<-fail
		return errBoom
	}))
	r.Add("c", blocking(&running))
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	runningN(t, &running, 3)
	close(fail)
	err := <-done
	if !errors.Is(err, errBoom) || err.Error() != "failing: boom" {
		t.Fatalf("Run = %v, want failing: boom", err)
	}
	if n := running.Load(); n != 0 {
		t.Fatalf("%d components still running after Run returned", n)
	}
}

func TestContextEndStopsAll(t *testing.T) {
	var running atomic.Int32
	r := runner.New(quiet())
	for _, n := range []string{"a", "b", "c"} {
		r.Add(n, blocking(&running))
	}
	started := make(chan struct{})
	r.OnStarted(func() { close(started) })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-started
	runningN(t, &running, 3)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after ctx ended", err)
	}
	if n := running.Load(); n != 0 {
		t.Fatalf("%d components still running after Run returned", n)
	}
}

// A component that returns nil early stops nothing else, as errgroup's Go did.
func TestEarlyNilReturnKeepsOthersRunning(t *testing.T) {
	var running atomic.Int32
	r := runner.New(quiet())
	r.Add("once", runner.Func(func(context.Context) error { return nil }))
	r.Add("long", blocking(&running))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	runningN(t, &running, 1)
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a component still ran", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestLeaderOnlyIsReportedAndStillRuns(t *testing.T) {
	var buf bytes.Buffer
	r := runner.New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	var ran atomic.Int32
	count := runner.Func(func(context.Context) error { ran.Add(1); return nil })
	r.Add("everywhere", count)
	r.Add("status-writer", runner.MarkLeaderOnly(count))
	if err := r.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ran.Load() != 2 {
		t.Fatalf("%d components ran, want 2: marking one leader-only must not change when it runs", ran.Load())
	}
	for _, line := range []string{"name=everywhere leaderOnly=false", "name=status-writer leaderOnly=true"} {
		if !strings.Contains(buf.String(), line) {
			t.Errorf("log lacks %q:\n%s", line, buf.String())
		}
	}
}

// A nested Runner's error names the innermost component once, and still unwraps.
func TestNestedErrorNamesInnermostComponent(t *testing.T) {
	errBoom := errors.New("boom")
	inner := runner.New(quiet())
	inner.Add("agent", runner.Func(func(context.Context) error { return errBoom }))
	outer := runner.New(quiet())
	outer.Add("leading", runner.Func(inner.Run))
	err := outer.Run(t.Context())
	var ce *runner.Error
	if !errors.As(err, &ce) || ce.Component != "agent" || err.Error() != "agent: boom" || !errors.Is(err, errBoom) {
		t.Fatalf("Run = %v, want agent: boom", err)
	}
}
