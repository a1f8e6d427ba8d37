package telemetry

import (
	"context"
	"fmt"
	"sync"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Status is the state of a process's OTLP export, for its /status and `meshrelay check`.
type Status struct {
	// Endpoint is where the process exports; empty when export is off.
	Endpoint string `json:"endpoint,omitempty"`
	// Failed counts the exports (metrics or traces) that failed since the last one that
	// succeeded, the first of them at FailingSince; 0 when the last export succeeded.
	Failed       int       `json:"failed,omitempty"`
	FailingSince time.Time `json:"failingSince,omitzero"`
	// LastError is the error of the last failed export, at LastErrorAt (kept after a
	// success, for the record).
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
	// LastSuccess is when an export last succeeded.
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
}

// Problem says why the export fails: the endpoint, since when and the last error; "" when
// export is off or the last export succeeded (a process that has exported nothing yet has
// no problem either). It changes only with the error, so that an agent reports it once.
func (s Status) Problem() string {
	if s.Endpoint == "" || s.Failed == 0 {
		return ""
	}
	return fmt.Sprintf("otlp export to %s failing since %s: %s", s.Endpoint, s.FailingSince.UTC().Format(time.RFC3339), s.LastError)
}

// exportState records the outcome of every export.
type exportState struct {
	mu sync.Mutex // guards st
	st Status
}

func (s *exportState) record(err error) {
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.st.Failed, s.st.FailingSince, s.st.LastSuccess = 0, time.Time{}, now
		return
	}
	if s.st.Failed == 0 {
		s.st.FailingSince = now
	}
	s.st.Failed++
	s.st.LastError, s.st.LastErrorAt = err.Error(), now
}

func (s *exportState) get() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// spanExporter records the outcome of each export of spans.
type spanExporter struct {
	sdktrace.SpanExporter
	state *exportState
}

func (e spanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.state.record(err)
	return err
}

// metricExporter records the outcome of each export of metrics.
type metricExporter struct {
	sdkmetric.Exporter
	state *exportState
}

func (e metricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := e.Exporter.Export(ctx, rm)
	e.state.record(err)
	return err
}
