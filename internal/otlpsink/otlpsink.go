// Package otlpsink is an OTLP/gRPC destination that keeps, in memory, what arrives: which
// metric of which service arrived when, and every span. It stands in for a user's telemetry
// backend behind the telemetry gateway — in `meshrelay demo` and in the end-to-end tests —
// and checks that a configuration change's trace arrived whole.
package otlpsink

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	collmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the collectors compress OTLP with gzip

	"github.com/meshrelay/meshrelay/internal/changetrace"
)

// Sink is an OTLP/gRPC server of the metrics and trace services that records what arrives.
type Sink struct {
	lis net.Listener

	mu      sync.Mutex          // guards metrics and spans
	metrics map[string]metricAt // "service metric" → its last arrival
	spans   []Span
}

type metricAt struct {
	at     time.Time
	points int
}

// Span is a span that arrived.
type Span struct {
	Service, Name, Cluster    string // service.name, the span's name, its meshrelay.cluster
	Path                      string // its changetrace.AttrPath (the path of a change: apply, config-dir, …)
	TraceID, SpanID, ParentID string // hex
	Start                     time.Time
}

// Listen returns a Sink listening on addr (host:port; port 0 picks one). It serves once
// Serve runs.
func Listen(addr string) (*Sink, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("otlp destination: %w", err)
	}
	return &Sink{lis: lis, metrics: map[string]metricAt{}}, nil
}

// Addr is the address the sink listens on.
func (s *Sink) Addr() string { return s.lis.Addr().String() }

// Serve serves OTLP until ctx ends, then closes the listener.
func (s *Sink) Serve(ctx context.Context) error {
	gs := grpc.NewServer()
	collmetricpb.RegisterMetricsServiceServer(gs, metricsServer{Sink: s})
	colltracepb.RegisterTraceServiceServer(gs, traceServer{Sink: s})
	stop := context.AfterFunc(ctx, gs.Stop)
	defer stop()
	if err := gs.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("otlp destination on %s: %w", s.Addr(), err)
	}
	return nil
}

func attr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// metricsServer records the metrics of OTLP metrics exports.
type metricsServer struct {
	collmetricpb.UnimplementedMetricsServiceServer
	*Sink
}

func (s metricsServer) Export(_ context.Context, req *collmetricpb.ExportMetricsServiceRequest) (*collmetricpb.ExportMetricsServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		svc := attr(rm.GetResource().GetAttributes(), "service.name")
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				n := len(m.GetSum().GetDataPoints()) + len(m.GetGauge().GetDataPoints()) + len(m.GetHistogram().GetDataPoints())
				s.metrics[svc+" "+m.GetName()] = metricAt{at: time.Now(), points: n}
			}
		}
	}
	return &collmetricpb.ExportMetricsServiceResponse{}, nil
}

// traceServer records the spans of OTLP trace exports.
type traceServer struct {
	colltracepb.UnimplementedTraceServiceServer
	*Sink
}

func (t traceServer) Export(_ context.Context, req *colltracepb.ExportTraceServiceRequest) (*colltracepb.ExportTraceServiceResponse, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		svc := attr(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				t.spans = append(t.spans, Span{Service: svc, Name: sp.GetName(), Cluster: attr(sp.GetAttributes(), "meshrelay.cluster"),
					Path:    attr(sp.GetAttributes(), changetrace.AttrPath),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()), ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Start: time.Unix(0, int64(sp.GetStartTimeUnixNano()))})
			}
		}
	}
	return &colltracepb.ExportTraceServiceResponse{}, nil
}

// MetricSince reports whether metric of service arrived, with data points, after since.
func (s *Sink) MetricSince(service, metric string, since time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.metrics[service+" "+metric]
	if !ok {
		return fmt.Errorf("%s of %s never arrived (%d metrics did)", metric, service, len(s.metrics))
	}
	if !m.at.After(since) || m.points == 0 {
		return fmt.Errorf("%s of %s last arrived at %s, %d points, not after %s", metric, service, m.at.Format(time.RFC3339Nano), m.points, since.Format(time.RFC3339Nano))
	}
	return nil
}

// ChangeTrace finds the trace of the latest configuration change that took path into the
// server (apply, delete, config-dir, cr; "" for any) and started at or after since, and checks that it holds the translation and, for every cluster, the delivery (a
// child of the translation) and the agent's apply (a child of the delivery, from the
// agent's process). It returns the trace's id.
func (s *Sink) ChangeTrace(path string, since time.Time, clusters ...string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var apply *Span
	for i, sp := range s.spans {
		if sp.Name == changetrace.SpanApply && sp.Service == "meshrelay-server" && (path == "" || sp.Path == path) && !sp.Start.Before(since) {
			apply = &s.spans[i]
		}
	}
	if apply == nil {
		return "", fmt.Errorf("no %s span of path %q since %s arrived (%d spans did)", changetrace.SpanApply, path, since.Format(time.RFC3339Nano), len(s.spans))
	}
	byID := map[string]Span{}
	for _, sp := range s.spans {
		if sp.TraceID == apply.TraceID {
			byID[sp.SpanID] = sp
		}
	}
	child := func(name, cluster, service, parent string) *Span {
		for _, sp := range byID {
			if sp.Name == name && sp.ParentID == parent && (cluster == "" || sp.Cluster == cluster) && (service == "" || sp.Service == service) {
				return &sp
			}
		}
		return nil
	}
	translate := child(changetrace.SpanTranslate, "", "", apply.SpanID)
	if translate == nil {
		return "", fmt.Errorf("trace %s has no %s span under the apply: %v", apply.TraceID, changetrace.SpanTranslate, byID)
	}
	for _, c := range clusters {
		deliver := child(changetrace.SpanDeliver, c, "", translate.SpanID)
		if deliver == nil {
			return "", fmt.Errorf("trace %s has no %s span of cluster %s under the translation", apply.TraceID, changetrace.SpanDeliver, c)
		}
		if child(changetrace.SpanAgent, c, "meshrelay-agent", deliver.SpanID) == nil {
			return "", fmt.Errorf("trace %s has no %s span of cluster %s's agent under its delivery", apply.TraceID, changetrace.SpanAgent, c)
		}
	}
	return apply.TraceID, nil
}
