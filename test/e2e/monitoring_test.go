package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/promtext"
)

// scrapeAll reads every sample of a process's /metrics.
func scrapeAll(t *testing.T, admin string) promtext.Samples {
	t.Helper()
	resp, err := adminGet(t.Context(), admin, "/metrics", 10*time.Second)
	if err != nil {
		t.Fatalf("metrics of %s: %v", admin, err)
	}
	defer resp.Body.Close()
	s, err := promtext.Parse(resp.Body)
	if err != nil {
		t.Fatalf("metrics of %s: %v", admin, err)
	}
	return s
}

// one is the single sample of name with the selectors; the test fails when there is not
// exactly one.
func one(t *testing.T, s promtext.Samples, name string, selectors ...string) float64 {
	t.Helper()
	vs, err := s.Values(name, selectors...)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, selectors, len(vs))
	}
	return vs[0]
}

// metricNameRE finds the meshrelay metric names in a PromQL expression.
var metricNameRE = regexp.MustCompile(`\bmeshrelay_[a-z0-9_]+`)

// monitoringExprs returns the PromQL expressions of the charts' alerting rules and Grafana
// dashboard.
func monitoringExprs(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	raw, err := os.ReadFile("../../charts/meshrelay-server/files/meshrelay-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = append(out["alert "+r.Alert], r.Expr)
		}
	}
	dash, err := os.ReadFile("../../charts/meshrelay-server/files/meshrelay-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	// Every "expr" and "definition" string of the dashboard, whatever panel holds it.
	for _, m := range regexp.MustCompile(`"(?:expr|definition)": "((?:[^"\\]|\\.)*)"`).FindAllSubmatch(dash, -1) {
		out["dashboard"] = append(out["dashboard"], string(m[1]))
	}
	return out
}

// Seed 003's world (server with safe mode, two agents, two gateways) through a failover and
// back exports the new metrics with the values the events gave them, on every process; and
// every metric the alerting rules and the Grafana dashboard query is one these real
// processes export.
func TestMonitoringMetricsExported(t *testing.T) {
	w := newSeedWorld(t, nil, nil, nil)
	w.blue(t, "fail")
	w.expect(t, "green-pod", 15*time.Second)
	w.blue(t, "ok")
	w.expect(t, "blue-pod", 15*time.Second)
	poll.Eventually(t, 15*time.Second, "local and remote in sync", func() error {
		st := w.server.status(t)
		synced := 0
		for _, c := range st.Clusters {
			if c.InSync {
				synced++
			}
		}
		if synced != 2 || len(st.Clusters) != 2 {
			return fmt.Errorf("clusters %+v", st.Clusters)
		}
		return nil
	})

	// A manifest that does not decode: the local agent counts the discovery error.
	if v := mustMetric(t, w.local.admin, "meshrelay_agent_discovery_errors_total"); v != 0 {
		t.Fatalf("meshrelay_agent_discovery_errors_total = %v before any invalid manifest", v)
	}
	writeFile(t, filepath.Join(w.localDiscovery, "broken.yaml"), "kind: [not, a, manifest\n")
	poll.Eventually(t, 15*time.Second, "the discovery error counted", func() error {
		if v, err := metricOf(w.local.admin, "meshrelay_agent_discovery_errors_total"); err != nil || v != 1 {
			return fmt.Errorf("meshrelay_agent_discovery_errors_total = %v (%v), want 1", v, err)
		}
		return nil
	})

	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimPrefix(strings.SplitN(string(out), "\n", 2)[0], "meshrelay ")
	procs := map[string]string{"server": w.server.admin, "agent local": w.local.admin, "agent remote": w.remote.admin, "gateway local": w.gwLocalAdmin}
	scraped := map[string]promtext.Samples{}
	exported := map[string]bool{}
	for name, admin := range procs {
		s := scrapeAll(t, admin)
		scraped[name] = s
		for _, x := range s {
			exported[x.Name] = true
		}
		if v := one(t, s, "meshrelay_build_info", `version="`+version+`"`); v != 1 {
			t.Errorf("%s: meshrelay_build_info{version=%q} = %v, want 1", name, version, v)
		}
	}

	srv := scraped["server"]
	for _, c := range []string{"local", "remote"} {
		sel := `cluster="` + c + `"`
		if n := one(t, srv, "meshrelay_output_sync_duration_seconds_count", sel); n < 1 {
			t.Errorf("server: %s's outputs were acknowledged, yet the sync duration has %v observations", c, n)
		}
		if n := one(t, srv, "meshrelay_output_snapshot_resources", sel); n < 1 {
			t.Errorf("server: meshrelay_output_snapshot_resources{%s} = %v, want the output's resources", sel, n)
		}
		if v := one(t, srv, "meshrelay_output_snapshot_nacks_total", sel); v != 0 {
			t.Errorf("server: meshrelay_output_snapshot_nacks_total{%s} = %v, want 0", sel, v)
		}
	}
	if v := one(t, srv, "meshrelay_ha_lock_epoch"); v != 1 {
		t.Errorf("server: meshrelay_ha_lock_epoch = %v, want 1 (a single server)", v)
	}
	pemBytes, err := os.ReadFile(w.server.caFile())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatalf("no PEM in %s", w.server.caFile())
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if v := one(t, srv, "meshrelay_relay_ca_expiry_timestamp_seconds"); v != float64(ca.NotAfter.Unix()) {
		t.Errorf("server: meshrelay_relay_ca_expiry_timestamp_seconds = %v, want %d (relay-ca.crt's notAfter)", v, ca.NotAfter.Unix())
	}

	gw := scraped["gateway local"]
	if n := gw.Sum("meshrelay_gateway_request_duration_seconds_count"); n < 1 {
		t.Errorf("gateway: request duration histogram counted %v requests after traffic", n)
	}
	if codes := gw.By("meshrelay_gateway_request_duration_seconds_count", "code"); codes["200"] < 1 {
		t.Errorf("gateway: request counts by code %v, want 200s", codes)
	}
	// Blue's upstream left priority 0 and reached priority 1 (directly, or through -1 when
	// priority 1's first health check had not passed yet), then came back to 0.
	moves := map[string]float64{}
	for _, x := range gw {
		if x.Name == "meshrelay_gateway_priority_transitions_total" && strings.Contains(x.Labels["cluster"], "service-blue") {
			moves[x.Labels["from"]+"→"+x.Labels["to"]] += x.Value
		}
	}
	if moves["0→1"]+moves["0→-1"] < 1 || moves["0→1"]+moves["-1→1"] < 1 || moves["1→0"] < 1 {
		t.Errorf("gateway: priority transitions of blue's upstream %v after a failover and failback, want it to leave 0, reach 1 and come back to 0", moves)
	}

	// What this world cannot export, and the test that shows it exported.
	elsewhere := map[string]string{
		"meshrelay_safe_mode_active":                                 "a server that held translation for a cluster (TestSafeModeMetricStaysAtZero); the clusters here are registered after the server started",
		"meshrelay_gateway_xds_certificate_expiry_timestamp_seconds": "gateways with --xds-tls-cert-file only (TestXDSGatewayRefusesForeignAgent in xds_tls_test.go)",
	}
	names := 0
	for where, exprs := range monitoringExprs(t) {
		for _, e := range exprs {
			for _, n := range metricNameRE.FindAllString(e, -1) {
				names++
				if exported[n] || elsewhere[n] != "" {
					continue
				}
				t.Errorf("%s queries %s, which no process exports (expression %q)", where, n, e)
			}
		}
	}
	if names < 30 {
		t.Errorf("found %d metric references in the rules and dashboard, want the ~40 they hold", names)
	}
	var missing []string
	for n := range elsewhere {
		if exported[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%v are exported here after all: take them off the list", slices.Sorted(slices.Values(missing)))
	}
}

// A server started with a registered cluster holds translation for it: meshrelay_safe_mode_active
// is 1 until the cluster's agent sends its input, then 0 — it stays exported, so that a
// dashboard shows the end of safe mode and an alert resolves.
func TestSafeModeMetricStaysAtZero(t *testing.T) {
	h := newHarness(t)
	s := h.startServer("server", []string{"east"})
	poll.Eventually(t, 15*time.Second, "safe mode held for east", func() error {
		v, err := metricSamples(s.admin, "meshrelay_safe_mode_active", `cluster="east"`)
		if err != nil || len(v) != 1 || v[0] != 1 {
			return fmt.Errorf("meshrelay_safe_mode_active{cluster=east} = %v (%v), want 1", v, err)
		}
		return nil
	})
	h.startAgent("east", s)
	poll.Eventually(t, 30*time.Second, "safe mode ended, series at 0", func() error {
		v, err := metricSamples(s.admin, "meshrelay_safe_mode_active", `cluster="east"`)
		if err != nil || len(v) != 1 || v[0] != 0 {
			return fmt.Errorf("meshrelay_safe_mode_active{cluster=east} = %v (%v), want one series at 0", v, err)
		}
		return nil
	})
	if st := s.status(t); st.SafeMode.Active {
		t.Errorf("server status still in safe mode: %+v", st.SafeMode)
	}
}
