package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connected     prometheus.Gauge
	reconnects    prometheus.Counter
	inputVersion  prometheus.Gauge
	outputVersion prometheus.Gauge
	applied       prometheus.Counter
	nacks         *prometheus.CounterVec // by reason
	objRefused    prometheus.Gauge
	registrations prometheus.Counter
	certExpiry    prometheus.Gauge
	refused       prometheus.Gauge
	refusals      prometheus.Counter
	inputTooLarge prometheus.Counter

	stateLogBytes           prometheus.Gauge
	stateCompactions        prometheus.Counter
	stateCompactionFailures prometheus.Counter
	stateSyncFailures       prometheus.Counter
	stateRepairs            prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		connected:     g("meshrelay_agent_connected", "1 while both relay streams are open."),
		reconnects:    c("meshrelay_agent_reconnects_total", "Relay sessions that ended and were retried."),
		inputVersion:  g("meshrelay_agent_input_version", "Version of the last input snapshot the server acknowledged."),
		outputVersion: g("meshrelay_agent_output_version", "Version of the applied output snapshot."),
		applied:       c("meshrelay_agent_outputs_applied_total", "Output snapshots applied."),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_agent_outputs_refused_total",
			Help: "Output snapshots refused (NACK), by reason: stale_epoch, stale_version, delta_base, invalid, apply, persist."}, []string{"reason"}),
		objRefused:    g("meshrelay_agent_objects_refused", "Objects of the applied output the cluster refused while the rest was applied (shown in /status refusedObjects)."),
		registrations: c("meshrelay_agent_registrations_total", "Certificates obtained from the server."),
		certExpiry:    g("meshrelay_agent_certificate_expiry_timestamp_seconds", "When the agent's client certificate expires (Unix seconds)."),
		refused:       g("meshrelay_agent_session_refused", "1 while the server refuses this agent's session because another agent of its cluster holds it."),
		refusals:      c("meshrelay_agent_sessions_refused_total", "Sessions the server refused because another agent of the cluster held it."),
		inputTooLarge: c("meshrelay_agent_input_too_large_total", "Input snapshots not sent because they are over the relay's message or resource limit."),

		stateLogBytes:           g("meshrelay_agent_state_log_bytes", "Size of the state dir's delta log of applied outputs (compacted into the base once it outweighs it)."),
		stateCompactions:        c("meshrelay_agent_state_compactions_total", "Times the applied output was written as the state dir's base and a new delta log started."),
		stateCompactionFailures: c("meshrelay_agent_state_compaction_failures_total", "Background compactions of the state dir's delta log that failed (the log keeps growing until one succeeds)."),
		stateSyncFailures:       c("meshrelay_agent_state_sync_failures_total", "Background fsyncs of the state dir's delta log that failed (appended outputs may not survive a power loss)."),
		stateRepairs:            c("meshrelay_agent_state_repairs_total", "Starts that found the state dir's delta log damaged (a write cut by a crash) and started from the last consistent state."),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.inputVersion, m.outputVersion, m.applied, m.nacks, m.objRefused, m.registrations, m.certExpiry, m.refused, m.refusals, m.inputTooLarge,
			m.stateLogBytes, m.stateCompactions, m.stateCompactionFailures, m.stateSyncFailures, m.stateRepairs)
	}
	return m
}
