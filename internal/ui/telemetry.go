package ui

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/internal/promtext"
)

// Telemetry reads the gateways' state, request rates and health checks from the telemetry
// gateway's merged Prometheus endpoint (the meshrelay-collector's Prometheus exporter, which
// labels every series with its source's meshrelay_cluster and service_instance_id). It
// scrapes every interval and keeps the scrapes of the last RateWindow to compute rates, as
// Prometheus' rate() would, without a Prometheus server.
type Telemetry struct {
	url      string
	interval time.Duration
	client   *http.Client
	log      *slog.Logger
	now      func() time.Time
	scrapes  prometheus.Counter
	failures prometheus.Counter

	mu      sync.Mutex // guards history, lastErr, errAt and okAt
	history []scrape   // oldest first, within RateWindow of the newest
	lastErr error
	errAt   time.Time
	okAt    time.Time
}

type scrape struct {
	at      time.Time
	samples promtext.Samples
}

// RateWindow is the span over which request rates are computed.
const RateWindow = time.Minute

// ValidateTelemetryURL checks the value of --telemetry-prometheus-url.
func ValidateTelemetryURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("--telemetry-prometheus-url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("--telemetry-prometheus-url %q: want an http:// or https:// URL with a host, e.g. http://telemetry-gateway:9091/metrics", raw)
	}
	return nil
}

// NewTelemetry returns a reader of rawURL (validated with ValidateTelemetryURL), scraping
// every interval (default 5s); its metrics are registered on reg.
func NewTelemetry(rawURL string, interval time.Duration, reg prometheus.Registerer, log *slog.Logger) *Telemetry {
	t := &Telemetry{url: rawURL, interval: cmp.Or(interval, 5*time.Second), log: log, now: time.Now,
		client: &http.Client{Timeout: 5 * time.Second},
		scrapes: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshrelay_ui_telemetry_scrapes_total",
			Help: "Scrapes of the telemetry gateway's Prometheus endpoint (--telemetry-prometheus-url) for the UI."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshrelay_ui_telemetry_scrape_failures_total",
			Help: "Scrapes of the telemetry gateway's Prometheus endpoint (--telemetry-prometheus-url) that failed."}),
	}
	reg.MustRegister(t.scrapes, t.failures)
	return t
}

// Start scrapes until ctx ends.
func (t *Telemetry) Start(ctx context.Context) error {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		t.scrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (t *Telemetry) scrapeOnce(ctx context.Context) {
	at := t.now()
	s, err := t.get(ctx)
	if ctx.Err() != nil {
		return
	}
	t.scrapes.Inc()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.failures.Inc()
		if t.lastErr == nil || t.lastErr.Error() != err.Error() {
			t.log.Warn("telemetry scrape failed", "url", t.url, "error", err)
		}
		t.lastErr, t.errAt = err, at
		return
	}
	if t.lastErr != nil {
		t.log.Info("telemetry scrape recovered", "url", t.url, "failedSince", t.errAt)
	}
	t.lastErr, t.okAt = nil, at
	t.history = append(t.history, scrape{at: at, samples: s})
	i := 0
	for i < len(t.history)-1 && at.Sub(t.history[i].at) > RateWindow {
		i++
	}
	t.history = slices.Delete(t.history, 0, i)
}

func (t *Telemetry) get(ctx context.Context) (promtext.Samples, error) {
	return promtext.Fetch(ctx, t.client, t.url)
}

// TelemetryView is what the page shows from the telemetry gateway.
type TelemetryView struct {
	// Source is the URL read; empty when --telemetry-prometheus-url is unset.
	Source string
	// Error is the last scrape's error, since ErrorSince; LastScrape the last good one.
	Error      string
	ErrorSince time.Time
	LastScrape time.Time
	Gateways   []GatewayUpstream
	Requests   []RequestRate
	Endpoints  []EndpointHealth
}

// GatewayUpstream is the priority a gateway serves an upstream from.
type GatewayUpstream struct {
	Cluster, Gateway, Upstream string
	Priority                   int
	Since                      time.Time
	Reason                     string
}

// RequestRate is the requests of a gateway's route to an upstream with one response code.
type RequestRate struct {
	Cluster, Gateway, Route, Upstream, Code string
	Total                                   float64
	// PerSecond is the rate over the scrapes of the last RateWindow; Rated is false until
	// two scrapes are that far apart.
	PerSecond float64
	Rated     bool
}

// EndpointHealth is a gateway's current health-check result of one endpoint.
type EndpointHealth struct {
	Cluster, Gateway, Upstream, Endpoint, Priority string
	Healthy                                        bool
}

// Status is the source, its last good read and its error, for the server's /status.
func (t *Telemetry) Status() (source string, lastRead time.Time, err string, errSince time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lastErr != nil {
		err, errSince = t.lastErr.Error(), t.errAt
	}
	return t.url, t.okAt, err, errSince
}

// View returns what the page shows now (nil t: the URL is unset).
func (t *Telemetry) View() TelemetryView {
	if t == nil {
		return TelemetryView{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	v := TelemetryView{Source: t.url, LastScrape: t.okAt}
	if t.lastErr != nil {
		v.Error, v.ErrorSince = t.lastErr.Error(), t.errAt
	}
	if len(t.history) == 0 {
		return v
	}
	first, last := t.history[0], t.history[len(t.history)-1]
	src := func(s promtext.Sample) (string, string) {
		return s.Labels["meshrelay_cluster"], cmp.Or(s.Labels["service_instance_id"], s.Labels["instance"])
	}
	type gwKey struct{ cluster, gateway, upstream string }
	priority := map[gwKey]int{}
	since := map[gwKey]GatewayUpstream{}
	prior := map[string]float64{} // series key → value in the first scrape
	for _, s := range first.samples {
		if s.Name == "meshrelay_gateway_request_duration_seconds_count" {
			prior[seriesKey(s)] = s.Value
		}
	}
	span := last.at.Sub(first.at)
	for _, s := range last.samples {
		c, g := src(s)
		k := gwKey{c, g, s.Labels["cluster"]}
		switch s.Name {
		case "meshrelay_gateway_active_priority":
			priority[k] = int(s.Value)
		case "meshrelay_gateway_active_priority_since_timestamp_seconds":
			// A changed reason is a new series; the old one lingers in the telemetry
			// gateway until it expires, so the newest one is the current state.
			if at := time.UnixMilli(int64(s.Value * 1e3)).UTC(); at.After(since[k].Since) {
				since[k] = GatewayUpstream{Since: at, Reason: s.Labels["reason"]}
			}
		case "meshrelay_gateway_request_duration_seconds_count":
			r := RequestRate{Cluster: c, Gateway: g, Route: s.Labels["route"], Upstream: k.upstream, Code: s.Labels["code"], Total: s.Value}
			if p, ok := prior[seriesKey(s)]; ok && span >= RateWindow/2 && s.Value >= p {
				r.PerSecond, r.Rated = (s.Value-p)/span.Seconds(), true
			}
			v.Requests = append(v.Requests, r)
		case "meshrelay_gateway_upstream_healthy":
			v.Endpoints = append(v.Endpoints, EndpointHealth{Cluster: c, Gateway: g, Upstream: k.upstream,
				Endpoint: s.Labels["endpoint"], Priority: s.Labels["priority"], Healthy: s.Value == 1})
		}
	}
	for k, p := range priority {
		v.Gateways = append(v.Gateways, GatewayUpstream{Cluster: k.cluster, Gateway: k.gateway, Upstream: k.upstream, Priority: p,
			Since: since[k].Since, Reason: since[k].Reason})
	}
	slices.SortFunc(v.Gateways, func(a, b GatewayUpstream) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Upstream, b.Upstream))
	})
	slices.SortFunc(v.Requests, func(a, b RequestRate) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Route, b.Route),
			cmp.Compare(a.Upstream, b.Upstream), cmp.Compare(a.Code, b.Code))
	})
	slices.SortFunc(v.Endpoints, func(a, b EndpointHealth) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Gateway, b.Gateway), cmp.Compare(a.Upstream, b.Upstream),
			cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Endpoint, b.Endpoint))
	})
	return v
}

// seriesKey identifies a series by its name and labels.
func seriesKey(s promtext.Sample) string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(s.Name)
	for _, k := range keys {
		fmt.Fprintf(&b, ",%s=%q", k, s.Labels[k])
	}
	return b.String()
}
