package gateway

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

const metricPrefix = "meshrelay_gateway_"

// metrics are the gateway's Prometheus metrics. Counters are updated as things happen;
// endpoint health and active priorities are read from the clusters at scrape time.
type metrics struct {
	requests *prometheus.CounterVec
	// requestSeconds is the time to the response headers by route, cluster and code.
	requestSeconds *prometheus.HistogramVec
	// priorityTransitions counts changes of the serving priority by from and to.
	priorityTransitions *prometheus.CounterVec
	tcpConnections      *prometheus.CounterVec
	healthChecks        *prometheus.CounterVec
	ejections           *prometheus.CounterVec
	priorityChanges     *prometheus.CounterVec
	xdsResponses        *prometheus.CounterVec
	xdsConnected        prometheus.Gauge
	// xdsServerRefused counts xDS servers refused by the mutual TLS, by reason.
	xdsServerRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, clusters func() []*upstream) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "requests_total", Help: "HTTP requests by cluster and response code (cluster is empty when no route matched).",
		}, []string{"cluster", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricPrefix + "request_duration_seconds",
			Help:    "Time from receiving an HTTP request to sending its response headers, by route (the route's name in the route configuration; empty when no route matched or it has no name), cluster (the upstream; empty for no route or a direct response) and response code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "cluster", "code"}),
		priorityTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "priority_transitions_total", Help: "Changes of the priority serving a cluster, by the priority before (from) and after (to); -1 is no priority with a healthy endpoint.",
		}, []string{"cluster", "from", "to"}),
		tcpConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "tcp_connections_total", Help: "TCP listener connections by listener, cluster and result (proxied, refused, no_healthy_upstream, upstream_connect_error).",
		}, []string{"listener", "cluster", "result"}),
		healthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "health_checks_total", Help: "Active health checks by cluster and result.",
		}, []string{"cluster", "result"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "outlier_ejections_total", Help: "Endpoints ejected by outlier detection, by cluster.",
		}, []string{"cluster"}),
		priorityChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "active_priority_changes_total", Help: "Changes of the priority serving a cluster (failovers and failbacks).",
		}, []string{"cluster"}),
		xdsResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "xds_responses_total", Help: "xDS responses by type and result (ack or nack).",
		}, []string{"type", "result"}),
		xdsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricPrefix + "xds_connected", Help: "1 while the ADS stream is established.",
		}),
		xdsServerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPrefix + "xds_server_refused_total", Help: "TLS handshakes with an xDS server the gateway refused, by reason (untrusted, not_agent, foreign_cluster).",
		}, []string{"reason"}),
	}
	for _, r := range []string{serverUntrusted, serverNotAgent, serverForeignCluster} {
		m.xdsServerRefused.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.requestSeconds, m.priorityTransitions, m.tcpConnections, m.healthChecks, m.ejections, m.priorityChanges, m.xdsResponses, m.xdsConnected,
		m.xdsServerRefused, &stateCollector{clusters: clusters})
	return m
}

// forgetCluster drops the label values of a removed cluster.
func (m *metrics) forgetCluster(name string) {
	l := prometheus.Labels{"cluster": name}
	m.requests.DeletePartialMatch(l)
	m.requestSeconds.DeletePartialMatch(l)
	m.priorityTransitions.DeletePartialMatch(l)
	m.tcpConnections.DeletePartialMatch(l)
	m.healthChecks.DeletePartialMatch(l)
	m.ejections.DeletePartialMatch(l)
	m.priorityChanges.DeletePartialMatch(l)
}

var (
	descHealthy = prometheus.NewDesc(metricPrefix+"upstream_healthy",
		"1 when the endpoint passes health checking (always 1 without health checks), 0 when it fails or is pending.",
		[]string{"cluster", "endpoint", "priority"}, nil)
	descEjected = prometheus.NewDesc(metricPrefix+"upstream_ejected",
		"1 while the endpoint is ejected by outlier detection.",
		[]string{"cluster", "endpoint", "priority"}, nil)
	descActive = prometheus.NewDesc(metricPrefix+"active_priority",
		"The priority serving the cluster's traffic; -1 when no priority has a healthy endpoint.",
		[]string{"cluster"}, nil)
	descActiveSince = prometheus.NewDesc(metricPrefix+"active_priority_since_timestamp_seconds",
		"When the priority serving the cluster last changed (Unix seconds), with the reason of that change; one series per cluster, absent while the cluster warms up.",
		[]string{"cluster", "reason"}, nil)
)

type stateCollector struct {
	clusters func() []*upstream
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHealthy
	ch <- descEjected
	ch <- descActive
	ch <- descActiveSince
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, u := range c.clusters() {
		st := u.status()
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.ActivePriority), st.Name)
		if !st.Since.IsZero() {
			ch <- prometheus.MustNewConstMetric(descActiveSince, prometheus.GaugeValue, float64(st.Since.UnixMilli())/1e3, st.Name, st.Reason)
		}
		for _, e := range st.Endpoints {
			p := strconv.Itoa(e.Priority)
			ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, b(e.Health == "healthy"), st.Name, e.Address, p)
			ch <- prometheus.MustNewConstMetric(descEjected, prometheus.GaugeValue, b(e.Ejected), st.Name, e.Address, p)
		}
	}
}
