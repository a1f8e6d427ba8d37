package relay

import (
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
)

// AgentReport is the latest report of a connected agent about its own parts: discovery that
// cannot read its source, gateways that refuse the configuration the agent serves them.
type AgentReport struct {
	DiscoveryError string             `json:"discoveryError,omitempty"`
	DataPlane      []DataPlaneProblem `json:"dataPlane,omitempty"`
	// TelemetryError says why the agent's OTLP export fails (docs/adr/0019).
	TelemetryError string    `json:"telemetryError,omitempty"`
	At             time.Time `json:"at"`
}

// DataPlaneProblem is a gateway (xDS node) that refused configuration.
type DataPlaneProblem struct {
	Node    string `json:"node"`
	TypeURL string `json:"typeUrl"`
	Error   string `json:"error"`
}

// OK reports whether the report says nothing is wrong.
func (r AgentReport) OK() bool {
	return r.DiscoveryError == "" && len(r.DataPlane) == 0 && r.TelemetryError == ""
}

// reports keeps the latest report of each cluster whose agent has a push stream here, and
// exports it as metrics.
type reports struct {
	discovery *prometheus.GaugeVec
	nacks     *prometheus.GaugeVec
	telemetry *prometheus.GaugeVec

	mu   sync.Mutex // guards last
	last map[string]AgentReport
}

func newReports(reg prometheus.Registerer) *reports {
	r := &reports{
		discovery: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshrelay_relay_agent_discovery_error",
			Help: "1 while the cluster's agent reports that its discovery fails (the input it pushes may be outdated)."}, []string{"cluster"}),
		nacks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshrelay_relay_data_plane_nacks",
			Help: "1 for each gateway (xDS node) whose latest response from its cluster's agent was a NACK."}, []string{"cluster", "node"}),
		telemetry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshrelay_relay_agent_otlp_export_failing",
			Help: "1 while the cluster's agent reports that its OTLP export (--otlp-endpoint) fails."}, []string{"cluster"}),
		last: map[string]AgentReport{},
	}
	if reg != nil {
		reg.MustRegister(r.discovery, r.nacks, r.telemetry)
	}
	return r
}

// set records a cluster's new report, logging and exporting what changed; a nil message
// clears it (the agent's push stream ended).
func (r *reports) set(cluster string, m *relayv1.AgentReport, log *slog.Logger) {
	next := AgentReport{DiscoveryError: m.GetDiscoveryError(), TelemetryError: m.GetTelemetryError(), At: time.Now().UTC()}
	for _, p := range m.GetDataPlane() {
		next.DataPlane = append(next.DataPlane, DataPlaneProblem{Node: p.GetNode(), TypeURL: p.GetTypeUrl(), Error: p.GetError()})
	}
	sort.Slice(next.DataPlane, func(i, j int) bool { return next.DataPlane[i].Node < next.DataPlane[j].Node })
	r.mu.Lock()
	prev := r.last[cluster]
	if m == nil || next.OK() {
		delete(r.last, cluster)
	} else {
		r.last[cluster] = next
	}
	r.mu.Unlock()

	switch {
	case next.DiscoveryError != "" && next.DiscoveryError != prev.DiscoveryError:
		log.Warn("agent reports discovery failing", "error", next.DiscoveryError)
		r.discovery.WithLabelValues(cluster).Set(1)
	case next.DiscoveryError == "" && prev.DiscoveryError != "" && m != nil:
		log.Info("agent reports discovery working again")
	}
	if next.DiscoveryError == "" {
		r.discovery.DeleteLabelValues(cluster)
	}
	switch {
	case next.TelemetryError != "" && prev.TelemetryError == "":
		log.Warn("agent reports otlp export failing", "error", next.TelemetryError)
		r.telemetry.WithLabelValues(cluster).Set(1)
	case next.TelemetryError == "" && prev.TelemetryError != "":
		if m != nil {
			log.Info("agent reports otlp export working again")
		}
		r.telemetry.DeleteLabelValues(cluster)
	}
	was := map[string]DataPlaneProblem{}
	for _, p := range prev.DataPlane {
		was[p.Node] = p
	}
	for _, p := range next.DataPlane {
		if old, ok := was[p.Node]; !ok || old != p {
			if p.TypeURL == "" { // one of the agent's own parts: its xDS server, its state dir
				log.Warn("agent reports a problem of its own", "part", p.Node, "error", p.Error)
			} else {
				log.Warn("agent reports a gateway refusing configuration", "node", p.Node, "type", p.TypeURL, "error", p.Error)
			}
		}
		r.nacks.WithLabelValues(cluster, p.Node).Set(1)
		delete(was, p.Node)
	}
	for node := range was {
		if m != nil {
			log.Info("agent reports a gateway accepting configuration again", "node", node)
		}
		r.nacks.DeleteLabelValues(cluster, node)
	}
}

// get returns a cluster's latest report (the zero report when none says anything is wrong).
func (r *reports) get(cluster string) (AgentReport, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	x, ok := r.last[cluster]
	return x, ok
}
