package relaybench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	rpprof "runtime/pprof"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	serverapp "github.com/meshrelay/meshrelay/internal/app/server"
	"github.com/meshrelay/meshrelay/internal/bench"
)

// RunProfiledServer runs the management server exactly as `meshrelay server` does, plus a
// debug HTTP endpoint on debugAddr for the benchmarks: /debug/pprof/*, POST /debug/gc
// (forces a GC and answers runtime.MemStats) and POST /debug/cpu/start?path=… and
// /debug/cpu/stop (a CPU profile written to a file).
func RunProfiledServer(ctx context.Context, cfg serverapp.Config, debugAddr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", debugAddr)
	if err != nil {
		return fmt.Errorf("debug listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /debug/gc", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		bench.ServeJSON(w, &ms)
	})
	var mu sync.Mutex // guards prof
	var prof *os.File
	mux.HandleFunc("POST /debug/cpu/start", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if prof != nil {
			http.Error(w, "profile already running", http.StatusConflict)
			return
		}
		f, err := os.Create(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := rpprof.StartCPUProfile(f); err != nil {
			f.Close()
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		prof = f
		bench.ServeJSON(w, "started")
	})
	mux.HandleFunc("POST /debug/cpu/stop", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if prof == nil {
			http.Error(w, "no profile running", http.StatusConflict)
			return
		}
		rpprof.StopCPUProfile()
		err := prof.Close()
		prof = nil
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		bench.ServeJSON(w, "stopped")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error {
		err := serverapp.Run(gctx, cfg, log, nil)
		if err == nil {
			err = context.Canceled // stop the debug server too
		}
		return err
	})
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// captureProfile records a CPU profile of a profiled server until ctx ends.
func captureProfile(ctx context.Context, debugAddr, path string) error {
	if err := bench.PostJSON(ctx, "http://"+debugAddr+"/debug/cpu/start?path="+url.QueryEscape(path), nil, nil); err != nil {
		return err
	}
	<-ctx.Done()
	return bench.PostJSON(context.WithoutCancel(ctx), "http://"+debugAddr+"/debug/cpu/stop", nil, nil)
}
