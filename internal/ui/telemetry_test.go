package ui

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// exposition is what the telemetry gateway's Prometheus exporter serves for one gateway
// (node gw-east of cluster east) that failed over from priority 0 to 1 at 1000 s after
// serving from 0 since 900 s (the old since series lingers until it expires).
func exposition(requests float64) string {
	const src = `instance="gw-east",job="meshrelay-gateway",meshrelay_cluster="east",service_instance_id="gw-east",service_name="meshrelay-gateway"`
	return strings.Join([]string{
		`# TYPE meshrelay_gateway_active_priority gauge`,
		`meshrelay_gateway_active_priority{cluster="blue",` + src + `} 1`,
		`# TYPE meshrelay_gateway_active_priority_since_timestamp_seconds gauge`,
		`meshrelay_gateway_active_priority_since_timestamp_seconds{cluster="blue",reason="priority 0 has a healthy endpoint: endpoints updated",` + src + `} 900`,
		`meshrelay_gateway_active_priority_since_timestamp_seconds{cluster="blue",reason="priority 0 has no healthy endpoint: 10.0.0.1:80 failed its health check",` + src + `} 1000.5`,
		`# TYPE meshrelay_gateway_request_duration_seconds histogram`,
		`meshrelay_gateway_request_duration_seconds_bucket{cluster="blue",code="200",route="/",` + src + `,le="+Inf"} ` + fmt.Sprint(requests),
		`meshrelay_gateway_request_duration_seconds_sum{cluster="blue",code="200",route="/",` + src + `} 1`,
		`meshrelay_gateway_request_duration_seconds_count{cluster="blue",code="200",route="/",` + src + `} ` + fmt.Sprint(requests),
		`# TYPE meshrelay_gateway_upstream_healthy gauge`,
		`meshrelay_gateway_upstream_healthy{cluster="blue",endpoint="10.0.0.1:80",priority="0",` + src + `} 0`,
		`meshrelay_gateway_upstream_healthy{cluster="blue",endpoint="10.0.0.2:80",priority="1",` + src + `} 1`,
		``,
	}, "\n")
}

// The UI's telemetry reader, against a real HTTP endpoint: the newest since series is the
// gateway's state, the request rate is the counter's increase over the scrapes' span, and a
// failing endpoint is shown, logged once and counted.
func TestTelemetryView(t *testing.T) {
	var mu sync.Mutex
	requests, fail := 100.0, false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			http.Error(w, "telemetry gateway down", http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, exposition(requests))
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	var logs strings.Builder
	tel := NewTelemetry(srv.URL+"/metrics", time.Second, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	now := time.Unix(2000, 0)
	tel.now = func() time.Time { return now }

	if v := (*Telemetry)(nil).View(); v.Source != "" || v.Error != "" {
		t.Fatalf("no URL: %+v", v)
	}
	tel.scrapeOnce(t.Context())
	v := tel.View()
	if len(v.Gateways) != 1 {
		t.Fatalf("gateways: %+v", v.Gateways)
	}
	g := v.Gateways[0]
	if g.Cluster != "east" || g.Gateway != "gw-east" || g.Upstream != "blue" || g.Priority != 1 ||
		!g.Since.Equal(time.UnixMilli(1000500)) || !strings.HasPrefix(g.Reason, "priority 0 has no healthy endpoint") {
		t.Errorf("gateway state %+v: want east/gw-east/blue at priority 1 since 1000.5 for the failover's reason", g)
	}
	if len(v.Requests) != 1 || v.Requests[0].Rated || v.Requests[0].Total != 100 {
		t.Errorf("one scrape: %+v, want the total and no rate yet", v.Requests)
	}
	if len(v.Endpoints) != 2 || v.Endpoints[0].Healthy || !v.Endpoints[1].Healthy {
		t.Errorf("endpoints %+v: want priority 0 unhealthy, priority 1 healthy", v.Endpoints)
	}

	mu.Lock()
	requests = 160
	mu.Unlock()
	now = now.Add(RateWindow / 2)
	tel.scrapeOnce(t.Context())
	if r := tel.View().Requests; len(r) != 1 || !r[0].Rated || r[0].PerSecond != 2 || r[0].Code != "200" || r[0].Route != "/" {
		t.Errorf("60 requests in 30 s: %+v, want 2/s", r)
	}

	mu.Lock()
	fail = true
	mu.Unlock()
	now = now.Add(time.Second)
	tel.scrapeOnce(t.Context())
	tel.scrapeOnce(t.Context())
	v = tel.View()
	if !strings.Contains(v.Error, "HTTP 502") || !v.ErrorSince.Equal(now) || len(v.Gateways) != 1 {
		t.Errorf("endpoint down: %+v, want its error and the last state kept", v)
	}
	if n := counter(t, reg, "meshrelay_ui_telemetry_scrape_failures_total", ""); n != 2 {
		t.Errorf("meshrelay_ui_telemetry_scrape_failures_total = %v, want 2", n)
	}
	if n := strings.Count(logs.String(), "telemetry scrape failed"); n != 1 {
		t.Errorf("%d failure log lines, want 1 for the same error:\n%s", n, logs.String())
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	tel.scrapeOnce(t.Context())
	if v := tel.View(); v.Error != "" || !strings.Contains(logs.String(), "telemetry scrape recovered") {
		t.Errorf("recovered: %+v\n%s", v, logs.String())
	}
	for _, bad := range []string{"127.0.0.1:9091", "ftp://x/metrics", "http:///metrics"} {
		if err := ValidateTelemetryURL(bad); err == nil || !strings.Contains(err.Error(), "--telemetry-prometheus-url") {
			t.Errorf("ValidateTelemetryURL(%q) = %v, want an error naming the flag", bad, err)
		}
	}
}

// counter is the value of the counter name (with label reason, when given) in reg.
func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == "reason" && l.GetValue() == reason
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{reason=%q} in the registry", name, reason)
	return 0
}

// The page says where the gateways' state would come from when no telemetry source is set,
// shows the source's error when it cannot be read, and the gateways' state when it can.
func TestPageTelemetry(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, exposition(5)) }))
	defer srv.Close()
	tel := NewTelemetry(srv.URL, time.Second, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	tel.scrapeOnce(t.Context())
	down := NewTelemetry("http://127.0.0.1:1/metrics", time.Second, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	down.scrapeOnce(t.Context())
	for _, tc := range []struct {
		name string
		tel  *Telemetry
		want []string
	}{
		{"unset", nil, []string{"No telemetry source", "--telemetry-prometheus-url"}},
		{"down", down, []string{`id="telemetry-error"`, "Cannot read the telemetry gateway", "127.0.0.1:1"}},
		{"up", tel, []string{`data-upstream="blue"`, "priority 1</span>", "priority 0 has no healthy endpoint: 10.0.0.1:80 failed its health check", "measuring…", "unhealthy"}},
	} {
		var b strings.Builder
		s := &server{tmpl: parseTemplates()}
		if err := s.tmpl.ExecuteTemplate(&b, "body", Build(Inputs{Now: time.Unix(2000, 0), Telemetry: tc.tel.View()})); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: the page lacks %q", tc.name, w)
			}
		}
	}
}

// A refused login is counted by reason.
func TestLoginRefusedCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	mux := http.NewServeMux()
	Register(mux, Config{Token: func() (string, error) { return "s3cret", nil }, View: func() View { return View{} }, Metrics: reg}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := noRedirect(srv.Client())
	for _, tok := range []string{"wrong", "", "also-wrong", "s3cret"} {
		resp, err := c.PostForm(srv.URL+"/ui/login", map[string][]string{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if n := counter(t, reg, "meshrelay_ui_login_refused_total", "wrong_token"); n != 2 {
		t.Errorf("wrong_token refusals %v, want 2", n)
	}
	if n := counter(t, reg, "meshrelay_ui_login_refused_total", "no_token"); n != 1 {
		t.Errorf("no_token refusals %v, want 1", n)
	}
}
