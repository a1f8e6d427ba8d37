package changetrace_test

import (
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshrelay/meshrelay/internal/changetrace"
)

// TestOneTracePerChange follows a change from the apply to two clusters' agents: one trace,
// each span the child of the one before, the agents' from the carried trace context.
func TestOneTracePerChange(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ct := changetrace.New(tp)
	ctx := t.Context()

	// A caller's trace context in the request is continued.
	caller := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	header := http.Header{}
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(ctx, caller), propagation.HeaderCarrier(header))
	actx, apply := ct.Apply(ctx, propagation.HeaderCarrier(header), "api", 1)
	ct.Applied(actx)
	apply.End()

	tctx, translate := ct.Translation(ctx)
	ct.Published(tctx, "east", 7)
	ct.Published(tctx, "west", 3)
	translate.End()
	if _, again := ct.Translation(ctx); again.SpanContext().IsValid() {
		t.Error("a translation without a new change is traced")
	}

	for _, c := range []struct {
		cluster string
		version uint64
	}{{"east", 7}, {"west", 3}} {
		if span, tc := ct.Deliver(ctx, c.cluster, c.version+1); tc != nil || span.SpanContext().IsValid() {
			t.Errorf("%s: another version than the traced one is traced", c.cluster)
		}
		span, tc := ct.Deliver(ctx, c.cluster, c.version)
		if tc["traceparent"] == "" {
			t.Fatalf("%s: no traceparent to send: %v", c.cluster, tc)
		}
		// The agent's side.
		_, agent := tp.Tracer("agent").Start(changetrace.Remote(ctx, tc), changetrace.SpanAgent)
		agent.End()
		changetrace.Answered(span, "")
	}
	spans := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != caller.TraceID() {
			t.Errorf("span %s is in trace %s, not the caller's", s.Name(), s.SpanContext().TraceID())
		}
		spans[s.Name()] = append(spans[s.Name()], s)
	}
	parentOf := func(child, parent string) {
		t.Helper()
		for _, c := range spans[child] {
			if !func() bool {
				for _, p := range spans[parent] {
					if c.Parent().SpanID() == p.SpanContext().SpanID() {
						return true
					}
				}
				return false
			}() {
				t.Errorf("%s is not a child of %s", child, parent)
			}
		}
	}
	if len(spans[changetrace.SpanApply]) != 1 || len(spans[changetrace.SpanTranslate]) != 1 || len(spans[changetrace.SpanDeliver]) != 2 || len(spans[changetrace.SpanAgent]) != 2 {
		t.Fatalf("spans: %v", spans)
	}
	if spans[changetrace.SpanApply][0].Parent().SpanID() != caller.SpanID() {
		t.Error("the apply does not continue the caller's trace")
	}
	parentOf(changetrace.SpanTranslate, changetrace.SpanApply)
	parentOf(changetrace.SpanDeliver, changetrace.SpanTranslate)
	parentOf(changetrace.SpanAgent, changetrace.SpanDeliver)
}

// TestNilTracer: parts built without tracing call a nil *Tracer.
func TestNilTracer(t *testing.T) {
	var ct *changetrace.Tracer
	ctx, span := ct.Apply(t.Context(), propagation.MapCarrier{}, "api", 1)
	ct.Applied(ctx)
	span.End()
	ctx, span = ct.Translation(ctx)
	ct.Published(ctx, "east", 1)
	if s, tc := ct.Deliver(ctx, "east", 1); tc != nil || s.SpanContext().IsValid() {
		t.Error("a nil tracer traces")
	}
	span.End()
}
