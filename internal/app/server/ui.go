package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/admin"
	"github.com/meshrelay/meshrelay/internal/changelog"
	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/meshcerts"
	"github.com/meshrelay/meshrelay/internal/reconcile"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/ui"
)

// recordedConfig is the config API's backend: the reconciler, with every apply and delete
// recorded in the change log.
type recordedConfig struct {
	*reconcile.Reconciler
	changes *changelog.Log
}

func (r recordedConfig) Apply(ctx context.Context, objs []resource.Object) error {
	before, at := r.Config(), time.Now()
	if err := r.Reconciler.Apply(ctx, objs); err != nil {
		return err
	}
	r.changes.Record(at, changelog.PathApply, before, r.Config())
	return nil
}

func (r recordedConfig) Delete(ctx context.Context, key string) error {
	before, at := r.Config(), time.Now()
	if err := r.Reconciler.Delete(ctx, key); err != nil {
		return err
	}
	r.changes.Record(at, changelog.PathDelete, before, r.Config())
	return nil
}

// recordDir is the callback of the config directory or the CR source (which call it only
// with a changed set): it sets their configuration, records the change under path and
// starts its trace (with path as its meshrelay.path), which the translation it kicks
// continues.
func recordDir(ctx context.Context, rec *reconcile.Reconciler, changes *changelog.Log, traces *changetrace.Tracer, path string) func([]resource.Object) {
	return func(objs []resource.Object) {
		before, at := rec.Config(), time.Now()
		tctx, span := traces.Change(ctx, path, len(objs))
		defer span.End()
		traces.Applied(tctx) // before the kick, so that the translation it starts takes the trace in
		rec.SetDirConfig(objs)
		changes.Record(at, path, before, rec.Config())
	}
}

// observeChanges records the clusters' acknowledgements of the logged changes every second
// until ctx ends.
func observeChanges(ctx context.Context, rec *reconcile.Reconciler, changes *changelog.Log) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			changes.Observe(rec.Status(), time.Now())
		}
	}
}

// uiSources are what the UI page is made of.
type uiSources struct {
	status       func() configapi.ServerStatus
	rec          *reconcile.Reconciler
	certs        *meshcerts.Shared
	changes      *changelog.Log
	agentCertTTL time.Duration
	telemetry    *ui.Telemetry // nil without --telemetry-prometheus-url
}

func (s uiSources) view() ui.View {
	st := s.status()
	s.changes.Observe(st.Status, time.Now())
	in := ui.Inputs{Now: time.Now(), Status: st, Config: s.rec.Config(), Inputs: map[string]*snapshot.Snapshot{}, Outputs: map[string]*snapshot.Snapshot{},
		GatewayCerts: s.certs.Expiries(), AgentCertTTL: s.agentCertTTL, Changes: s.changes.Entries(), Telemetry: s.telemetry.View()}
	for _, c := range st.Clusters {
		in.Inputs[c.Name], in.Outputs[c.Name] = s.rec.Input(c.Name), s.rec.Output(c.Name)
	}
	return ui.Build(in)
}

// registerUI serves the UI at /ui behind the admin token.
func registerUI(adm *admin.Server, src uiSources, token func() (string, error), tls bool, reg prometheus.Registerer, log *slog.Logger) {
	ui.Register(adm, ui.Config{Token: token, TLS: tls, View: src.view, Metrics: reg}, log)
}
