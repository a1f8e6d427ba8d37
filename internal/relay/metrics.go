package relay

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	pushConnected *prometheus.GaugeVec
	pullConnected *prometheus.GaugeVec
	pushWarmed    *prometheus.GaugeVec
	pushes        *prometheus.CounterVec
	pullSent      *prometheus.CounterVec
	pullResources *prometheus.CounterVec
	pullBytes     *prometheus.CounterVec
	recycled      *prometheus.CounterVec
	// epochRefusals counts outputs an agent refused, or would refuse, for a stale epoch.
	epochRefusals *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	// refused counts streams refused because another agent holds their cluster.
	refused   *prometheus.CounterVec
	redirects *prometheus.CounterVec
	// redirectsAvoided counts agents served here because their owner was unreachable.
	redirectsAvoided *prometheus.CounterVec
	// closed counts clusters whose open streams were closed, by reason (revoked,
	// deregistered, ca-rotation, ca-dropped).
	closed        *prometheus.CounterVec
	caPhase       prometheus.Gauge
	caPending     prometheus.Gauge
	registrations prometheus.Counter
	ackSeconds    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	gv := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"cluster"})
	}
	cv := func(name, help string, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	}
	m := &metrics{
		pushConnected:    gv("meshrelay_relay_push_clients_connected", "Open push (input) streams per cluster."),
		pullConnected:    gv("meshrelay_relay_pull_clients_connected", "Open pull (output) streams per cluster."),
		pushWarmed:       gv("meshrelay_relay_push_clients_warmed", "1 when the cluster's full input was received since this server started."),
		pushes:           cv("meshrelay_relay_push_snapshots_total", "Input snapshots received.", "cluster"),
		pullSent:         cv("meshrelay_relay_pull_snapshots_sent_total", "Output snapshots (deltas) sent.", "cluster"),
		pullResources:    cv("meshrelay_relay_pull_resources_sent_total", "Output resources upserted or removed in sent deltas.", "cluster"),
		pullBytes:        cv("meshrelay_relay_pull_bytes_sent_total", "Bytes of resources sent in output deltas.", "cluster"),
		recycled:         cv("meshrelay_relay_pull_streams_recycled_total", "Pull streams closed because the agent stopped acknowledging.", "cluster"),
		epochRefusals:    cv("meshrelay_relay_epoch_refusals_total", "Outputs an agent refused (or would refuse, so they were held back) because it holds a newer epoch; each distinct pair of epochs once per stream.", "cluster"),
		redirects:        cv("meshrelay_relay_redirects_total", "Agents sent to the replica that owns their cluster.", "cluster"),
		redirectsAvoided: cv("meshrelay_relay_redirects_avoided_total", "Agents served by this replica because the replica owning their cluster was unreachable.", "cluster"),
		rejected:         cv("meshrelay_relay_rejected_total", "Registrations and streams refused, by reason.", "reason"),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshrelay_relay_streams_refused_total",
			Help: "Push and pull streams refused because another agent holds their cluster (reason duplicate: a second agent of one cluster)."}, []string{"cluster", "stream", "reason"}),
		closed: cv("meshrelay_relay_streams_closed_total", "Clusters whose open streams the server closed, by reason: revoked, deregistered, ca-rotation (asked to register under the new relay CA), ca-dropped.", "reason"),
		caPhase: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshrelay_relay_ca_rotation_in_progress",
			Help: "1 while a relay CA rotation trusts both the old and the new CA."}),
		caPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshrelay_relay_ca_rotation_pending_agents",
			Help: "Connected agents still holding a certificate of the old relay CA during a rotation."}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshrelay_relay_registrations_total", Help: "Agent certificates issued."}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshrelay_relay_pull_ack_duration_seconds", Help: "Time from sending an output to its acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.pushConnected, m.pullConnected, m.pushWarmed, m.pushes, m.pullSent, m.pullResources, m.pullBytes, m.recycled, m.epochRefusals, m.rejected, m.refused, m.redirects, m.redirectsAvoided, m.closed, m.caPhase, m.caPending, m.registrations, m.ackSeconds)
	}
	return m
}
