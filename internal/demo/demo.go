// Package demo tells seed 003's story on one machine, with real processes: a management
// server, clusters `local` and `remote` with their agents and gateways, a blue app in local
// and a green app in remote, the seed's resources (health checks, FailoverScheme, failover
// gateway, a route to blue) — then real HTTP requests through local's gateway show blue,
// green after blue's health check fails, blue again after it recovers, and the same with the
// management server gone. Each step is checked; Run fails if one does not happen.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/otlpsink"
	"github.com/meshrelay/meshrelay/internal/pki"
	"github.com/meshrelay/meshrelay/internal/proc"
)

// Options configure a demo run.
type Options struct {
	// Binary is the meshrelay executable to start as children (default: this process's).
	Binary string
	// Dir is the working directory (default: a new temporary directory, removed at the end).
	Dir string
	// KeepRunning leaves everything up until ctx ends.
	KeepRunning bool
	// StepTimeout bounds each step.
	StepTimeout time.Duration
	// Telemetry runs the telemetry pipeline too: a telemetry gateway and a collector agent
	// per cluster (meshrelay-collector), which every process exports OTLP to.
	Telemetry bool
	// CollectorBinary is meshrelay-collector (default: beside Binary, else on PATH, else
	// built from the source tree the working directory is in).
	CollectorBinary string
}

type env struct {
	opts  Options
	out   io.Writer
	dir   string
	procs map[string]*proc.Process
	order []string
	ports map[string]int
	steps int // steps told so far

	collector *collector     // the collector binary, when Telemetry
	sink      *otlpsink.Sink // the telemetry gateway's OTLP destination, when Telemetry
}

// Run runs the demo and returns an error if any step does not happen.
func Run(ctx context.Context, opts Options, out io.Writer) (err error) {
	if opts.Binary == "" {
		if opts.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
	}
	if opts.CollectorBinary != "" && !opts.Telemetry {
		return errors.New("--collector-binary is the telemetry pipeline's collector: it needs --telemetry (on by default)")
	}
	if opts.StepTimeout <= 0 {
		opts.StepTimeout = 20 * time.Second
	}
	e := &env{opts: opts, out: out, procs: map[string]*proc.Process{}, ports: map[string]int{}}
	if opts.Dir == "" {
		if e.dir, err = os.MkdirTemp("", "meshrelay-demo-"); err != nil {
			return err
		}
		if !opts.KeepRunning {
			defer os.RemoveAll(e.dir)
		}
	} else {
		e.dir = opts.Dir
		if err := os.MkdirAll(e.dir, 0o755); err != nil {
			return err
		}
	}
	defer e.stopAll()
	start := time.Now()
	if opts.Telemetry {
		// The collector may have to be built: that runs while the demo starts.
		bctx, cancel := context.WithCancel(ctx)
		e.collector = findCollector(bctx, opts.CollectorBinary, opts.Binary, e.say)
		defer func() { cancel(); <-e.collector.ready }()
		select {
		case <-e.collector.ready: // found or not found: no build
			if e.collector.err != nil {
				return e.collector.err
			}
		default:
		}
		if e.sink, err = otlpsink.Listen("127.0.0.1:0"); err != nil {
			return err
		}
		sctx, stop := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() { defer close(served); _ = e.sink.Serve(sctx) }()
		defer func() { stop(); <-served }()
	}
	if err := e.story(ctx); err != nil {
		e.say("FAILED: %v", err)
		e.say("logs are in %s", e.dir)
		if opts.Dir == "" && !opts.KeepRunning {
			e.dumpLogs()
		}
		return err
	}
	e.say("demo complete in %s", time.Since(start).Round(time.Millisecond))
	if opts.KeepRunning {
		e.keepRunning(ctx)
	}
	return nil
}

func (e *env) say(format string, args ...any) { fmt.Fprintf(e.out, format+"\n", args...) }

// step tells the next numbered step.
func (e *env) step(format string, args ...any) {
	e.steps++
	e.say(strconv.Itoa(e.steps)+". "+format, args...)
}

// sameStep tells more of the step just told, under its number.
func (e *env) sameStep(format string, args ...any) {
	e.say(strconv.Itoa(e.steps)+". "+format, args...)
}

// stopAll stops the processes in the reverse order of their start, with two exceptions:
// local's gateway first, as remote's failover gateway drains its connections (up to its
// --drain-timeout) before it exits; and the telemetry pipeline last, as the others flush
// their telemetry to it when they stop.
func (e *env) stopAll() {
	if p := e.procs["gateway-local"]; p != nil {
		_ = p.Stop(5 * time.Second)
	}
	for _, pipeline := range []bool{false, true} {
		for i := len(e.order) - 1; i >= 0; i-- {
			if p := e.procs[e.order[i]]; p != nil && pipelineProcs[e.order[i]] == pipeline {
				_ = p.Stop(5 * time.Second)
			}
		}
	}
}

func (e *env) dumpLogs() {
	for _, name := range e.order {
		b, _ := os.ReadFile(e.procs[name].LogPath)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		fmt.Fprintf(e.out, "----- %s (tail) -----\n%s\n", name, b)
	}
}

func (e *env) start(name string, args ...string) error {
	return e.startBin(name, e.opts.Binary, args...)
}

func (e *env) startBin(name, bin string, args ...string) error {
	p, err := proc.Start(name, bin, filepath.Join(e.dir, name+".log"), args...)
	if err != nil {
		return err
	}
	if _, seen := e.procs[name]; !seen {
		e.order = append(e.order, name)
	}
	e.procs[name] = p
	return nil
}

func (e *env) port(name string) (int, error) {
	if p, ok := e.ports[name]; ok {
		return p, nil
	}
	p, err := proc.FreePort()
	if err != nil {
		return 0, err
	}
	e.ports[name] = p
	return p, nil
}

func (e *env) addr(name string) string { return "127.0.0.1:" + strconv.Itoa(e.ports[name]) }

func (e *env) write(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

// adminClient is a client of the management server's admin API (HTTPS), verifying it with
// the relay CA the server generated into its data directory.
func (e *env) adminClient() (*configapi.Client, error) {
	return configapi.NewClient(e.addr("admin"), "", filepath.Join(e.serverDataDir(), pki.CACertName))
}

// waitServerReady polls the server's /readyz; the client is made at every attempt, as a
// server started the first time writes its CA a moment after it starts.
func (e *env) waitServerReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.StepTimeout)
	defer cancel()
	for {
		c, err := e.adminClient()
		if err == nil {
			if err = c.Ready(ctx); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("management server not ready: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitInSync polls the server's /status until every named cluster is connected and in sync;
// it returns how long that took.
func (e *env) waitInSync(ctx context.Context, clusters ...string) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.opts.StepTimeout)
	defer cancel()
	var last string
	for {
		var st struct {
			Clusters []struct {
				Name   string `json:"name"`
				InSync bool   `json:"inSync"`
			} `json:"clusters"`
			Connections map[string]json.RawMessage `json:"connections"`
		}
		c, err := e.adminClient()
		if err == nil {
			err = c.Status(ctx, &st)
		}
		waiting := []string{}
		if err == nil {
			for _, c := range clusters {
				inSync := false
				for _, got := range st.Clusters {
					inSync = inSync || (got.Name == c && got.InSync)
				}
				if _, connected := st.Connections[c]; !inSync || !connected {
					waiting = append(waiting, c)
				}
			}
			if len(waiting) == 0 {
				return time.Since(start), nil
			}
			last = "waiting for " + strings.Join(waiting, ", ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("agents not back in sync with the management server: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// get fetches the gateway's answer (the app's text, trimmed) or an error description.
func get(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

// waitAnswer polls url until it answers want; it returns how long that took.
func (e *env) waitAnswer(ctx context.Context, url, want string) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(e.opts.StepTimeout)
	last := ""
	for time.Now().Before(deadline) {
		got, err := get(url)
		if err == nil && got == want {
			return time.Since(start), nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = got
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("%s did not answer %q within %s (last answer: %s)", url, want, e.opts.StepTimeout, last)
}

func post(url string) error {
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return nil
}
