package changetrace_test

import (
	"net/http"
	"slices"
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
	actx, apply := ct.Apply(ctx, propagation.HeaderCarrier(header), "apply", "api", 1)
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
	ctx, span := ct.Apply(t.Context(), propagation.MapCarrier{}, "apply", "api", 1)
	ct.Applied(ctx)
	span.End()
	ctx, span = ct.Translation(ctx)
	ct.Published(ctx, "east", 1)
	if s, tc := ct.Deliver(ctx, "east", 1); tc != nil || s.SpanContext().IsValid() {
		t.Error("a nil tracer traces")
	}
	span.End()
}

// TestChangePaths: a change the server reads itself (config directory, custom resources)
// starts a trace of its own, named by its path, that the next translation continues; an
// apply through the admin API carries its path too.
func TestChangePaths(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ct := changetrace.New(tp)
	// Started from inside another trace (a reconcile round's), it is a new root all the same.
	outer, outerSpan := tp.Tracer("test").Start(t.Context(), "outer")
	defer outerSpan.End()
	for _, path := range []string{"config-dir", "cr"} {
		ctx, span := ct.Change(outer, path, 3)
		ct.Applied(ctx)
		span.End()
		tctx, translate := ct.Translation(t.Context())
		translate.End()
		got := trace.SpanContextFromContext(tctx)
		if got.TraceID() != span.SpanContext().TraceID() || got.TraceID() == outerSpan.SpanContext().TraceID() {
			t.Errorf("%s: translation in trace %s, change in %s, outer %s", path, got.TraceID(), span.SpanContext().TraceID(), outerSpan.SpanContext().TraceID())
		}
	}
	_, apply := ct.Apply(t.Context(), propagation.MapCarrier{}, "apply", "vd.yaml", 1)
	apply.End()
	var paths []string
	for _, s := range rec.Ended() {
		if s.Name() != changetrace.SpanApply {
			continue
		}
		if s.Parent().IsValid() {
			t.Errorf("%s has a parent %s", s.Name(), s.Parent().SpanID())
		}
		for _, kv := range s.Attributes() {
			if kv.Key == changetrace.AttrPath {
				paths = append(paths, kv.Value.AsString())
			}
		}
	}
	if want := []string{"config-dir", "cr", "apply"}; !slices.Equal(paths, want) {
		t.Errorf("paths %v, want %v", paths, want)
	}
}

// TestPendingBounded: changes no translation takes in (a passive server's) are bounded;
// the newest stays the translation's parent.
func TestPendingBounded(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	ct := changetrace.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	var last trace.Span
	for range 1000 {
		ctx, span := ct.Change(t.Context(), "config-dir", 1)
		ct.Applied(ctx)
		span.End()
		last = span
	}
	_, translate := ct.Translation(t.Context())
	translate.End()
	ro := translate.(sdktrace.ReadOnlySpan)
	if ro.Parent().SpanID() != last.SpanContext().SpanID() {
		t.Error("the translation is not a child of the newest change")
	}
	if n := len(ro.Links()); n >= 1000 || n == 0 {
		t.Errorf("the translation links %d changes", n)
	}
}

// TestWithdraw: a change whose write failed after Applied is not traced by the next
// translation.
func TestWithdraw(t *testing.T) {
	ct := changetrace.New(sdktrace.NewTracerProvider())
	ctx, span := ct.Apply(t.Context(), propagation.MapCarrier{}, "apply", "vd.yaml", 1)
	ct.Applied(ctx)
	ct.Withdraw(ctx)
	span.End()
	if _, tr := ct.Translation(t.Context()); tr.SpanContext().IsValid() {
		t.Error("a withdrawn change is traced")
	}
}
