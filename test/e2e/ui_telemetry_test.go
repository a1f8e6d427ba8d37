package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshrelay/meshrelay/internal/gateway"
)

// gatewayStatus reads a gateway's own /status.
func gatewayStatus(t *testing.T, admin string) gateway.Status {
	t.Helper()
	var st gateway.Status
	if err := getJSON(admin, "/status", &st); err != nil {
		t.Fatalf("gateway status: %v", err)
	}
	return st
}

// uiAttr is the attribute attr of the first element matching sel, or "" when there is none.
func uiAttr(ctx context.Context, sel, attr string) (string, error) {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? (e.getAttribute(%q) || "") : ""; })()`, sel, attr)
	return chromedp.Run(ctx, chromedp.Evaluate[string](js))
}

// The UI's gateways and traffic in a real browser, from the telemetry pipeline as real
// processes (both clusters' collector agents and a telemetry gateway, whose merged
// Prometheus endpoint the server reads with --telemetry-prometheus-url). Blue fails its
// health check: the page (never reloaded) shows local's gateway serving blue's upstream
// from priority 1 with the since and why of the gateway's own /status, the blue endpoint
// unhealthy and the upstream's request rate. The agents' certificate expiries are the
// ones their /status reports; a refused login is counted; when the telemetry gateway dies
// the page says so, and the server logs and counts it.
func TestUIGatewaysBrowser(t *testing.T) {
	h := newHarness(t)
	col := collector(t)
	certs := newTelemetryCerts(t, h)
	tgw := startTelemetryGateway(h, col, "1", certs, startOTLPDestination(t))
	collectors := startCollectorAgents(h, col, certs, tgw)
	w := newSeedWorldIn(h, append(serverOTLPFlags(tgw, certs), "--telemetry-prometheus-url", "http://"+tgw.prom+"/metrics"), nil, nil, clusterOTLPFlags(collectors))
	admin := w.server.admin
	ctx := browser(t, admin)

	// A wrong token is refused and counted; then the right one.
	if err := chromedp.Do(ctx, chromedp.Navigate("https://"+admin+"/ui/login"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token"), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("login-error"))); err != nil {
		t.Fatal(err)
	}
	if n := metric(t, admin, "meshrelay_ui_login_refused_total", `reason="wrong_token"`); n != 1 {
		t.Errorf("meshrelay_ui_login_refused_total{reason=wrong_token} = %v after one wrong token, want 1", n)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), adminToken), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("traffic"))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.uiTestMark = 1`)); err != nil {
		t.Fatal(err)
	}
	waitUI(t, ctx, "#live", "live", 10*time.Second)

	// Traffic through local's gateway for the rest of the test.
	trafficCtx, stopTraffic := context.WithCancel(t.Context())
	var traffic sync.WaitGroup
	traffic.Go(func() {
		for trafficCtx.Err() == nil {
			_, _ = answer(w.url)
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Cleanup(func() { stopTraffic(); traffic.Wait() })

	// Blue's upstream at local's gateway: the cluster with endpoints at priorities 0 and 1.
	var upstream, blueEndpoint string
	for _, c := range gatewayStatus(t, w.gwLocalAdmin).Clusters {
		for _, e := range c.Endpoints {
			if e.Priority == 1 {
				upstream = c.Name
			}
		}
		if upstream == c.Name {
			for _, e := range c.Endpoints {
				if e.Priority == 0 {
					blueEndpoint = e.Address
				}
			}
			break
		}
	}
	if upstream == "" || blueEndpoint == "" {
		t.Fatalf("local's gateway has no cluster with priorities 0 and 1: %+v", gatewayStatus(t, w.gwLocalAdmin).Clusters)
	}
	row := fmt.Sprintf(`#traffic tr.gateway-upstream[data-cluster="local"][data-gateway="local"][data-upstream=%q]`, upstream)
	waitUI(t, ctx, row+" .priority", "priority 0", 90*time.Second)

	// The agents' client certificates, as their servers saw them: what the agents report.
	for _, a := range []*agent{w.local, w.remote} {
		var st struct {
			CertNotAfter time.Time `json:"certificateNotAfter"`
		}
		if err := getJSON(a.admin, "/status", &st); err != nil || st.CertNotAfter.IsZero() {
			t.Fatalf("%s agent's certificate expiry: %v %v", a.cluster, st.CertNotAfter, err)
		}
		waitUI(t, ctx, fmt.Sprintf(`#certificates tr.cert[data-kind="agent certificate"][data-name=%q] .not-after`, a.cluster),
			st.CertNotAfter.UTC().Format(time.RFC3339), 10*time.Second)
	}

	// Blue fails its health check: the gateway moves to priority 1, and the page shows it
	// with the since and why the gateway itself reports.
	w.blue(t, "fail")
	w.expect(t, "green-pod", 30*time.Second)
	var gs gateway.ClusterStatus
	for _, c := range gatewayStatus(t, w.gwLocalAdmin).Clusters {
		if c.Name == upstream {
			gs = c
		}
	}
	if gs.ActivePriority != 1 {
		t.Fatalf("local's gateway serves %s from priority %d after blue failed, want 1", upstream, gs.ActivePriority)
	}
	waitUI(t, ctx, row+" .priority", "priority 1", 60*time.Second)
	if got, err := uiText(ctx, row+" .reason"); err != nil || got != gs.Reason {
		t.Errorf("the UI's reason %q (%v), want the gateway's %q", got, err, gs.Reason)
	}
	at, err := uiAttr(ctx, row+" .since time", "datetime")
	if err != nil {
		t.Fatal(err)
	}
	if since, err := time.Parse(time.RFC3339, at); err != nil || since.Sub(gs.Since).Abs() > time.Second {
		t.Errorf("the UI's since %q (%v), want the gateway's %s", at, err, gs.Since)
	}
	waitUI(t, ctx, fmt.Sprintf(`#traffic tr.endpoint[data-cluster="local"][data-upstream=%q][data-endpoint=%q] .health`, upstream, blueEndpoint), "unhealthy", 60*time.Second)

	// The upstream's request rate: measured over the pipeline's scrapes, more than nothing.
	rate := fmt.Sprintf(`#traffic tr.request-rate[data-cluster="local"][data-upstream=%q][data-code="200"] .rate`, upstream)
	waitUI(t, ctx, rate, "/s", 90*time.Second)
	text, err := uiText(ctx, rate)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := strconv.ParseFloat(strings.TrimSuffix(text, "/s"), 64); err != nil || v <= 0 {
		t.Errorf("request rate %q, want a positive rate with traffic flowing", text)
	}
	screenshot(t, ctx, false, "ui-gateways-failover-light.png")
	screenshot(t, ctx, true, "ui-gateways-failover-dark.png")

	// The telemetry gateway dies: the page says so; the server logs and counts it, and
	// meshrelay check fails on it.
	if out, errOut, _ := cli(t, "check", "--server", admin); !strings.Contains(out, "✓ telemetry gateway") {
		t.Errorf("meshrelay check with the telemetry gateway up: want its check passing\n%s%s", out, errOut)
	}
	tgw.p.Kill()
	waitUI(t, ctx, "#telemetry-error", "Cannot read the telemetry gateway", 30*time.Second)
	if err := logContains(t, w.server.p, "telemetry scrape failed"); err != nil {
		t.Error(err)
	}
	if n := metric(t, admin, "meshrelay_ui_telemetry_scrape_failures_total"); n < 1 {
		t.Errorf("meshrelay_ui_telemetry_scrape_failures_total = %v with the telemetry gateway down, want ≥ 1", n)
	}
	if out, errOut, err := cli(t, "check", "--server", admin); err == nil || !strings.Contains(out, "✗ telemetry gateway") {
		t.Errorf("meshrelay check with the telemetry gateway down: %v, want a failure naming it\n%s%s", err, out, errOut)
	}
	if mark, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.uiTestMark || 0`)); err != nil || mark != 1 {
		t.Fatalf("the page reloaded (mark %d, %v): the updates were not live", mark, err)
	}
	screenshot(t, ctx, false, "ui-telemetry-down.png")
}
