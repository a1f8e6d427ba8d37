package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/gateway"
	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/promtext"
)

// scrape reads the gateway's /metrics from its admin server.
func scrape(t *testing.T, c *http.Client, gw *gateway.Gateway) promtext.Samples {
	t.Helper()
	addr, err := gw.AdminAddress(t.Context())
	if err != nil || addr == "" {
		t.Fatalf("admin address %q: %v", addr, err)
	}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	s, err := promtext.Parse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// value is the single sample of name with the selectors, 0 when absent.
func value(t *testing.T, s promtext.Samples, name string, selectors ...string) float64 {
	t.Helper()
	vs, err := s.Values(name, selectors...)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) > 1 {
		t.Fatalf("%s%v: %d series, want at most 1", name, selectors, len(vs))
	}
	if len(vs) == 0 {
		return 0
	}
	return vs[0]
}

// The request histogram counts real requests per route, cluster and code; a failover and
// its failback are counted with the priorities they moved between; build info is exported.
func TestRequestAndFailoverMetrics(t *testing.T) {
	x := gt.StartXDS(t, "127.0.0.1:0")
	node, listen := "gw-"+t.Name(), gt.FreeAddr(t)
	gw := gt.StartGateway(t, gateway.Config{XDSAddress: x.Addr, NodeID: node, AdminAddress: "127.0.0.1:0", Version: "v0.0.0-test"})
	c := gt.Client(t)
	_, blue, blueAdmin := gt.StartDemoApp(t, "blue-pod")
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	hc := gt.HealthCheck{Path: "/health", Interval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond, Unhealthy: 1, Healthy: 1}
	x.Set(t, node, gt.HTTPListener(t, "http", listen), gt.RouteConfig("http", gt.PrefixRoute("/missing", "nowhere"), gt.PrefixRoute("/", "svc")),
		gt.Cluster(t, "svc", gt.ClusterOptions{HealthCheck: &hc}),
		gt.LoadAssignment(t, "svc", []gt.Endpoint{{Addr: blue}}, []gt.Endpoint{{Addr: green}}))
	url := "http://" + listen
	gt.WantBody(t, c, url, "blue-pod", 10*time.Second)

	const (
		hist   = "meshrelay_gateway_request_duration_seconds_count"
		trans  = "meshrelay_gateway_priority_transitions_total"
		health = "meshrelay_gateway_health_checks_total"
	)
	s := scrape(t, c, gw)
	if v := value(t, s, "meshrelay_build_info", `version="v0.0.0-test"`); v != 1 {
		t.Errorf("meshrelay_build_info{version=\"v0.0.0-test\"} = %v, want 1", v)
	}
	before := value(t, s, hist, `route="/"`, `cluster="svc"`, `code="200"`)
	for range 5 {
		if code, body, err := gt.Get(c, url+"/x"); err != nil || code != 200 || body != "blue-pod" {
			t.Fatalf("GET /x: %d %q %v", code, body, err)
		}
	}
	if code, _, err := gt.Get(c, url+"/missing"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("GET /missing (cluster nowhere): %d %v, want 503", code, err)
	}
	s = scrape(t, c, gw)
	if got := value(t, s, hist, `route="/"`, `cluster="svc"`, `code="200"`) - before; got != 5 {
		t.Errorf("request histogram of route / cluster svc code 200 counted %v requests, want 5", got)
	}
	if got := value(t, s, hist, `route="/missing"`, `cluster="nowhere"`, `code="503"`); got != 1 {
		t.Errorf("request histogram of route /missing cluster nowhere code 503 = %v, want 1", got)
	}
	if got := value(t, s, "meshrelay_gateway_request_duration_seconds_sum", `route="/"`, `cluster="svc"`, `code="200"`); got <= 0 {
		t.Errorf("request duration sum %v, want > 0", got)
	}
	if got := value(t, s, trans, `cluster="svc"`, `from="0"`, `to="1"`); got != 0 {
		t.Fatalf("failovers 0→1 counted %v before any failure", got)
	}

	failed := time.Now()
	gt.Post(t, c, "http://"+blueAdmin+"/healthcheck/fail")
	gt.WantBody(t, c, url, "green-pod", 5*time.Second)
	s = scrape(t, c, gw)
	if got := value(t, s, "meshrelay_gateway_active_priority", `cluster="svc"`); got != 1 {
		t.Errorf("meshrelay_gateway_active_priority{cluster=svc} = %v after the failover, want 1", got)
	}
	// The since gauge: one series, the failover's time, its reason as a label.
	var since []promtext.Sample
	for _, x := range s {
		if x.Name == "meshrelay_gateway_active_priority_since_timestamp_seconds" && x.Labels["cluster"] == "svc" {
			since = append(since, x)
		}
	}
	if len(since) != 1 || since[0].Value < float64(failed.UnixMilli())/1e3 || since[0].Value > float64(time.Now().UnixMilli())/1e3 ||
		!strings.HasPrefix(since[0].Labels["reason"], "priority 0 has no healthy endpoint") {
		t.Errorf("active priority since after the failover at %s: %+v, want one series at the failover with its reason", failed, since)
	}
	if got := value(t, s, trans, `cluster="svc"`, `from="0"`, `to="1"`); got != 1 {
		t.Errorf("%s{from=0,to=1} = %v after the failover, want 1", trans, got)
	}
	if got := value(t, s, health, `cluster="svc"`, `result="failure"`); got < 1 {
		t.Errorf("%s{result=failure} = %v after blue failed its health check, want ≥ 1", health, got)
	}
	gt.Post(t, c, "http://"+blueAdmin+"/healthcheck/ok")
	gt.WantBody(t, c, url, "blue-pod", 5*time.Second)
	poll.Until(t, 5*time.Second, "failback 1→0 counted", func() bool {
		return value(t, scrape(t, c, gw), trans, `cluster="svc"`, `from="1"`, `to="0"`) == 1
	})
}
