package agent

import (
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/changetrace"
)

// Reporter tells what the agent's own parts see wrong in its cluster: discovery that cannot
// read its source, gateways that refuse the configuration served to them. The agent sends
// it to the server on its push stream, so that the server's status and `meshrelay check`
// show it.
type Reporter interface {
	Report() Report
}

// Report is the agent's own health.
type Report struct {
	// DiscoveryError says why discovery cannot produce the cluster's input now; empty when
	// it works.
	DiscoveryError string
	// DataPlane lists the gateways whose latest xDS response was a NACK.
	DataPlane []DataPlaneProblem
	// TelemetryError says why the agent's OTLP export fails; empty when it is off or works.
	TelemetryError string
}

// DataPlaneProblem is a gateway that refused configuration.
type DataPlaneProblem struct {
	Node    string `json:"node"`
	TypeURL string `json:"typeUrl"`
	Error   string `json:"error"`
}

// Option configures an Agent.
type Option func(*Agent)

// WithReporter makes the agent send r's report to the server.
func WithReporter(r Reporter) Option { return func(a *Agent) { a.reporter = r } }

// WithTracerProvider records the agent's apply of each traced output as a span
// (changetrace.SpanAgent), a child of the server's delivery span.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(a *Agent) { a.tracer = tp.Tracer(changetrace.Name) }
}

// reportEvery is how often the agent looks at its Reporter for a change to send.
const reportEvery = time.Second

// report returns the current report as a message (nil without a Reporter).
// The agent's own state dir failing (problem) is reported among the data-plane problems,
// as the node StateDirNode with no type, like the agent's xDS server itself.
func (a *Agent) report() *relayv1.AgentReport {
	if a.reporter == nil {
		return nil
	}
	r := a.reporter.Report()
	m := &relayv1.AgentReport{DiscoveryError: r.DiscoveryError, TelemetryError: r.TelemetryError}
	for _, p := range r.DataPlane {
		m.DataPlane = append(m.DataPlane, &relayv1.DataPlaneProblem{Node: p.Node, TypeUrl: p.TypeURL, Error: p.Error})
	}
	if a.state != nil {
		if p := a.state.problem(); p != "" {
			m.DataPlane = append(m.DataPlane, &relayv1.DataPlaneProblem{Node: StateDirNode, Error: p})
		}
	}
	return m
}

// StateDirNode names the agent's state dir in its report when keeping the applied output
// there fails.
const StateDirNode = "agent state dir"

// reportChanged returns the report to send on a push stream that last sent sent (nil: none
// yet), or nil when there is nothing new. A stream's first report is sent only when it says
// something is wrong, so an agent whose cluster is healthy never sends one (servers older
// than the report refuse it).
func (a *Agent) reportChanged(sent *relayv1.AgentReport) *relayv1.AgentReport {
	cur := a.report()
	if cur == nil {
		return nil
	}
	if sent == nil {
		sent = &relayv1.AgentReport{}
	}
	if proto.Equal(cur, sent) {
		return nil
	}
	return cur
}

// reportSender sends the agent's reports on one push stream.
type reportSender struct {
	a      *Agent
	stream relayv1.RelayService_PushClient
	sent   *relayv1.AgentReport
}

// send sends the report when it changed since the last one sent on the stream.
func (r *reportSender) send() error {
	cur := r.a.reportChanged(r.sent)
	if cur == nil {
		return nil
	}
	if err := r.stream.Send(&relayv1.PushRequest{Message: &relayv1.PushRequest_Report{Report: cur}}); err != nil {
		return fmt.Errorf("push report: %w", err)
	}
	r.sent = cur
	return nil
}

// ticks returns the channel that paces send (nil, never firing, without a Reporter) and
// the function that stops it.
func (r *reportSender) ticks() (<-chan time.Time, func()) {
	if r.a.reporter == nil {
		return nil, func() {}
	}
	t := time.NewTicker(reportEvery)
	return t.C, t.Stop
}
