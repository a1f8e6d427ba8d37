// Package changetrace traces configuration changes: one trace per change, from the change
// entering the server ("config.apply", whatever its path: the admin API's apply or delete,
// the config directory, Kubernetes custom resources; the attribute meshrelay.path names it)
// through the translation that takes it in
// ("config.translate") to every agent's answer ("relay.deliver", one span per cluster, from
// sending the output to its ACK or NACK). The agent's apply is a child of its delivery
// span ("agent.apply"): the delivery span's context travels in the output's
// SnapshotDelta.trace_context (W3C trace context), see docs/adr/0016-trace-context-on-the-relay.md.
//
// Nothing here is stored: a server that restarts between an apply and its delivery
// delivers untraced. Every method of a nil *Tracer does nothing, so parts built without
// tracing need no checks.
package changetrace

import (
	"context"
	"slices"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Name is the instrumentation scope of the spans.
const Name = "github.com/meshrelay/meshrelay/internal/changetrace"

// Span names.
const (
	SpanApply     = "config.apply"
	SpanTranslate = "config.translate"
	SpanDeliver   = "relay.deliver"
	SpanAgent     = "agent.apply"
)

var propagator = propagation.TraceContext{}

// maxPending bounds the changes waiting for a translation (a translation links them all).
const maxPending = 64

// Tracer follows configuration changes from apply to delivery on the server.
type Tracer struct {
	tr trace.Tracer

	mu      sync.Mutex                 // guards pending and outputs
	pending []trace.SpanContext        // applied changes no translation has taken in yet
	outputs map[string]publishedOutput // cluster → the change its latest output carries
}

type publishedOutput struct {
	version uint64
	sc      trace.SpanContext
}

// New returns a Tracer whose spans tp records.
func New(tp trace.TracerProvider) *Tracer {
	return &Tracer{tr: tp.Tracer(Name), outputs: map[string]publishedOutput{}}
}

// Attributes of the change's span.
const (
	// AttrPath names the path the change took into the server: changelog.PathApply,
	// PathDelete, PathConfigDir or PathCR, as the change log records it.
	AttrPath = "meshrelay.path"
	// AttrSource names what the change came from: the applied file, the deleted resource.
	AttrSource = "meshrelay.source"
)

// Apply starts the span of a change of objects from source that took path into the
// server (the admin API's apply or delete), a child of the trace context in header (a
// caller's traceparent) if any. The caller ends it; the reconciler calls Applied as it
// stores the change.
func (t *Tracer) Apply(ctx context.Context, header propagation.TextMapCarrier, path, source string, objects int) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noop.Span{}
	}
	ctx = propagator.Extract(ctx, header)
	return t.tr.Start(ctx, SpanApply, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String(AttrPath, path), attribute.String(AttrSource, source), attribute.Int("meshrelay.objects", objects)))
}

// Change starts the span of a change the server read itself, from path (the config
// directory, custom resources): a new trace holding objects resources. The caller calls
// Applied before handing the change to the reconciler (so that the translation it kicks
// takes the trace in), then ends the span.
func (t *Tracer) Change(ctx context.Context, path string, objects int) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noop.Span{}
	}
	return t.tr.Start(ctx, SpanApply, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String(AttrPath, path), attribute.Int("meshrelay.objects", objects)))
}

// Applied records that the change of ctx's span is stored, or about to be (the caller calls
// it before the write that kicks the translation, and Withdraw if the write fails): the
// next translation takes it in.
func (t *Tracer) Applied(ctx context.Context) {
	sc := trace.SpanContextFromContext(ctx)
	if t == nil || !sc.IsValid() {
		return
	}
	t.mu.Lock()
	if len(t.pending) >= maxPending { // a passive server translates nothing: keep the newest
		t.pending = t.pending[1:]
	}
	t.pending = append(t.pending, sc)
	t.mu.Unlock()
}

// Withdraw forgets the change of ctx's span when no translation took it in yet: its
// Applied was called before it was stored, and storing it failed.
func (t *Tracer) Withdraw(ctx context.Context) {
	sc := trace.SpanContextFromContext(ctx)
	if t == nil || !sc.IsValid() {
		return
	}
	t.mu.Lock()
	t.pending = slices.DeleteFunc(t.pending, func(p trace.SpanContext) bool { return p.Equal(sc) })
	t.mu.Unlock()
}

// Translation starts the span of a translation that takes in configuration changes: a
// child of the newest change applied since the last one, linked to the others (changes
// applied together are translated together). Without a pending change it returns ctx and
// a span that records nothing.
func (t *Tracer) Translation(ctx context.Context) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noop.Span{}
	}
	t.mu.Lock()
	pending := t.pending
	t.pending = nil
	t.mu.Unlock()
	if len(pending) == 0 {
		return ctx, noop.Span{}
	}
	parent := pending[len(pending)-1]
	var links []trace.Link
	for _, sc := range pending[:len(pending)-1] {
		links = append(links, trace.Link{SpanContext: sc})
	}
	return t.tr.Start(trace.ContextWithSpanContext(ctx, parent), SpanTranslate, trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("meshrelay.changes", len(pending))))
}

// Published records that the output version of cluster carries the change of ctx's span
// (a translation's); outputs published without one are not traced.
func (t *Tracer) Published(ctx context.Context, cluster string, version uint64) {
	if t == nil {
		return
	}
	sc := trace.SpanContextFromContext(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !sc.IsValid() {
		delete(t.outputs, cluster)
		return
	}
	t.outputs[cluster] = publishedOutput{version: version, sc: sc}
}

// Forget drops what is remembered of cluster (it was removed).
func (t *Tracer) Forget(cluster string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.outputs, cluster)
	t.mu.Unlock()
}

// Deliver starts the span of sending cluster's output version to its agent, when that
// output carries a traced change, and returns the trace context to send with it (nil when
// not traced). The caller ends the span with Answered.
func (t *Tracer) Deliver(ctx context.Context, cluster string, version uint64) (trace.Span, map[string]string) {
	if t == nil {
		return noop.Span{}, nil
	}
	t.mu.Lock()
	p, ok := t.outputs[cluster]
	t.mu.Unlock()
	if !ok || p.version != version {
		return noop.Span{}, nil
	}
	ctx, span := t.tr.Start(trace.ContextWithSpanContext(ctx, p.sc), SpanDeliver,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("meshrelay.cluster", cluster), attribute.Int64("meshrelay.version", int64(version))))
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	return span, carrier
}

// Answered ends a delivery span with the agent's answer: an ACK (err empty) or a NACK,
// or the stream's end before an answer.
func Answered(span trace.Span, err string) {
	if err != "" {
		span.SetStatus(codes.Error, err)
	}
	span.End()
}

// Remote returns ctx with the trace context an output carried (SnapshotDelta.trace_context),
// for the agent's apply span; ctx unchanged when it carried none.
func Remote(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(carrier))
}
