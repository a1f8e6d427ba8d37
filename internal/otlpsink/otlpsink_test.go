package otlpsink

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrelay/meshrelay/internal/changetrace"
)

// provider exports the spans of service to the sink over real OTLP/gRPC, synchronously.
func provider(t *testing.T, s *Sink, service string) *sdktrace.TracerProvider {
	t.Helper()
	exp, err := otlptracegrpc.New(t.Context(), otlptracegrpc.WithEndpoint(s.Addr()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// A change's trace that arrives whole is found; one whose remote agent never applied is not,
// and neither is one older than since.
func TestChangeTrace(t *testing.T) {
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })

	since := time.Now()
	server, agent := provider(t, s, "meshrelay-server").Tracer(changetrace.Name), provider(t, s, "meshrelay-agent").Tracer(changetrace.Name)
	cluster := func(c string) trace.SpanStartOption {
		return trace.WithAttributes(attribute.String("meshrelay.cluster", c))
	}
	actx, apply := server.Start(t.Context(), changetrace.SpanApply)
	tctx, translate := server.Start(actx, changetrace.SpanTranslate)
	for _, c := range []string{"local", "remote"} {
		dctx, deliver := server.Start(tctx, changetrace.SpanDeliver, cluster(c))
		if c == "local" {
			_, a := agent.Start(dctx, changetrace.SpanAgent, cluster(c))
			a.End()
		}
		deliver.End()
	}
	translate.End()
	apply.End()

	id, err := s.ChangeTrace("", since, "local")
	if err != nil || id != apply.SpanContext().TraceID().String() {
		t.Errorf("ChangeTrace(local) = %q, %v; want %s", id, err, apply.SpanContext().TraceID())
	}
	if _, err := s.ChangeTrace("", since, "local", "remote"); err == nil || !strings.Contains(err.Error(), "cluster remote's agent") {
		t.Errorf("ChangeTrace(local, remote) error = %v, want remote's agent apply missing", err)
	}
	if _, err := s.ChangeTrace("", time.Now(), "local"); err == nil {
		t.Error("ChangeTrace found a trace that started before since")
	}
}
