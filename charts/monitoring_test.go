package charts_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/charts"
)

// The monitoring files live in the server chart (the PrometheusRule and the dashboard
// ConfigMap read them with .Files.Get); README's "Monitoring" points users to them.
const (
	rulesFile     = "meshrelay-server/files/meshrelay-rules.yaml"
	rulesTestFile = "testdata/meshrelay-rules_test.yaml"
	dashboardFile = "meshrelay-server/files/meshrelay-dashboard.json"
)

// promtool returns the path of promtool, failing the test when it is missing.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): install Debian's prometheus package (apt-get install prometheus), as .ci/run and scripts/test.sh do", err)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

// The alerting rules parse (promtool check rules) and fire when and how their unit tests
// (promtool test rules, charts/testdata/meshrelay-rules_test.yaml) say.
func TestPrometheusRules(t *testing.T) {
	runPromtool(t, "check", "rules", rulesFile)
	runPromtool(t, "test", "rules", rulesTestFile)
}

// dashboard is what the tests read of the Grafana dashboard.
type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// DashboardExprs returns every PromQL expression of the dashboard, by where it is, with
// Grafana's variables replaced by values Prometheus accepts.
func dashboardExprs(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$cluster", ".*")
	out := map[string]string{}
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no query", p.ID, p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %d %q target %s has no expression", p.ID, p.Title, tg.RefID)
			}
			out[fmt.Sprintf("panel_%d_%s", p.ID, tg.RefID)] = vars.Replace(tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := strings.CutPrefix(v.Definition, "label_values("); ok {
			metric, _, _ := strings.Cut(q, ",")
			out["variable_"+v.Name] = strings.TrimSpace(metric)
		}
	}
	return out
}

// Every expression of the Grafana dashboard parses with Prometheus's own parser: the test
// writes them as recording rules and runs promtool check rules. (test/e2e's
// TestMonitoringMetricsExported checks that the metrics they name are the ones the
// processes export.)
func TestDashboardQueriesParse(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs := dashboardExprs(t, raw)
	if len(exprs) < 20 {
		t.Fatalf("%d expressions in the dashboard, want its ~30", len(exprs))
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for at, e := range exprs {
		rules = append(rules, rule{Record: "dashboard:" + at, Expr: e})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, "check", "rules", f)
}

// The monitoring objects are off by default.
func TestMonitoringOffByDefault(t *testing.T) {
	for _, name := range []string{charts.Server, charts.Agent} {
		r := render(t, name, agentValuesIf(name))
		for _, kind := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"} {
			if objs := r.OfKind(kind); len(objs) > 0 {
				t.Errorf("%s renders a %s by default", name, kind)
			}
		}
		for _, o := range r.OfKind("ConfigMap") {
			if strings.HasSuffix(o.Name, "-dashboard") {
				t.Errorf("%s renders the dashboard ConfigMap %s by default", name, o.Name)
			}
		}
	}
}

// agentValuesIf returns the values the agent chart needs to render at all (nil for the server).
func agentValuesIf(name string) map[string]any {
	if name == charts.Agent {
		return agentValues()
	}
	return nil
}

// Enabled, the server chart's ServiceMonitor scrapes the admin Service's port over HTTPS,
// the PrometheusRule holds files/meshrelay-rules.yaml as it is, and the dashboard ConfigMap
// holds the dashboard JSON as it is, with the sidecar's label.
func TestServerMonitoringObjects(t *testing.T) {
	values := vals("metrics.serviceMonitor.enabled", true, "metrics.serviceMonitor.labels", map[string]any{"release": "kube-prometheus"},
		"metrics.prometheusRule.enabled", true, "metrics.dashboard.enabled", true)
	r := render(t, charts.Server, values)

	sm, ok := r.Get("ServiceMonitor", serverName)
	if !ok {
		t.Fatal("no ServiceMonitor")
	}
	var smObj serviceMonitor
	if err := json.Unmarshal(sm.JSON, &smObj); err != nil {
		t.Fatal(err)
	}
	if smObj.Metadata.Labels["release"] != "kube-prometheus" {
		t.Errorf("ServiceMonitor labels %v lack metrics.serviceMonitor.labels", smObj.Metadata.Labels)
	}
	adminObj, ok := r.Get("Service", serverName+"-admin")
	if !ok {
		t.Fatal("no admin Service")
	}
	var admin corev1.Service
	if err := adminObj.Into(&admin); err != nil {
		t.Fatal(err)
	}
	for k, v := range smObj.Spec.Selector.MatchLabels {
		if admin.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s; the admin Service has %v", k, v, admin.Labels)
		}
	}
	if len(smObj.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v", smObj.Spec.Endpoints)
	}
	ep := smObj.Spec.Endpoints[0]
	if !hasServicePort(admin, ep.Port) || ep.Path != "/metrics" || ep.Scheme != "https" {
		t.Errorf("ServiceMonitor endpoint %+v; admin Service ports %+v", ep, admin.Spec.Ports)
	}
	if want := map[string]any{"ca": map[string]any{"secret": map[string]any{"name": "meshrelay-relay-ca", "key": "ca.crt"}},
		"serverName": serverName + "-admin.meshrelay-system.svc"}; !reflect.DeepEqual(ep.TLSConfig, want) {
		t.Errorf("tlsConfig verifying with the relay CA Secret: %v, want %v", ep.TLSConfig, want)
	}
	for _, v := range []map[string]any{vals("relay.ca.secretName", ""), vals("admin.serverCertSecretName", "my-admin-cert")} {
		r := render(t, charts.Server, merged(values, v))
		sm, _ := r.Get("ServiceMonitor", serverName)
		var o struct {
			Spec struct {
				Endpoints []struct {
					TLSConfig map[string]any `json:"tlsConfig"`
				} `json:"endpoints"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(sm.JSON, &o); err != nil {
			t.Fatal(err)
		}
		if tc := o.Spec.Endpoints[0].TLSConfig; !reflect.DeepEqual(tc, map[string]any{"insecureSkipVerify": true}) {
			t.Errorf("with %v the relay CA does not issue the admin certificate: tlsConfig %v, want insecureSkipVerify", v, tc)
		}
	}
	own := map[string]any{"ca": map[string]any{"configMap": map[string]any{"name": "admin-ca", "key": "ca.crt"}}, "serverName": "admin.example.com"}
	r = render(t, charts.Server, merged(values, vals("metrics.serviceMonitor.tlsConfig", own)))
	sm, _ = r.Get("ServiceMonitor", serverName)
	if err := json.Unmarshal(sm.JSON, &smObj); err != nil {
		t.Fatal(err)
	}
	if tc := smObj.Spec.Endpoints[0].TLSConfig; !reflect.DeepEqual(tc, own) {
		t.Errorf("metrics.serviceMonitor.tlsConfig %v rendered as %v", own, tc)
	}

	pr, ok := r.Get("PrometheusRule", serverName)
	if !ok {
		t.Fatal("no PrometheusRule")
	}
	var prObj struct {
		Spec map[string]any `json:"spec"`
	}
	if err := json.Unmarshal(pr.JSON, &prObj); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(jsonRoundTrip(t, file), prObj.Spec) {
		t.Errorf("PrometheusRule spec differs from %s", rulesFile)
	}
	if groups, _ := prObj.Spec["groups"].([]any); len(groups) == 0 {
		t.Errorf("PrometheusRule has no groups: %v", prObj.Spec)
	}

	cmObj, ok := r.Get("ConfigMap", serverName+"-dashboard")
	if !ok {
		t.Fatal("no dashboard ConfigMap")
	}
	var cm corev1.ConfigMap
	if err := cmObj.Into(&cm); err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["meshrelay.json"] != string(dash) {
		t.Errorf("dashboard ConfigMap data differs from %s", dashboardFile)
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack the sidecar's grafana_dashboard", cm.Labels)
	}

	err = renderErr(t, charts.Server, merged(values, vals("admin.service.enabled", false)))
	if !strings.Contains(err.Error(), "metrics.serviceMonitor.enabled") || !strings.Contains(err.Error(), "admin.service.enabled") {
		t.Errorf("ServiceMonitor without the admin Service: %v, want an error naming both values", err)
	}
}

func hasServicePort(s corev1.Service, name string) bool {
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

// jsonRoundTrip turns YAML-decoded values into what JSON decoding gives (numbers, maps).
func jsonRoundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Enabled, the agent chart's PodMonitor selects the agent's pods and scrapes their admin
// port.
func TestAgentPodMonitor(t *testing.T) {
	r := render(t, charts.Agent, merged(agentValues(), vals("metrics.podMonitor.enabled", true)))
	pm, ok := r.Get("PodMonitor", agentName)
	if !ok {
		t.Fatal("no PodMonitor")
	}
	var pmObj struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port, Path string
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(pm.JSON, &pmObj); err != nil {
		t.Fatal(err)
	}
	depObj, ok := r.Get("Deployment", agentName)
	if !ok {
		t.Fatal("no Deployment")
	}
	var dep appsv1.Deployment
	if err := depObj.Into(&dep); err != nil {
		t.Fatal(err)
	}
	if len(pmObj.Spec.Selector.MatchLabels) == 0 {
		t.Fatal("PodMonitor selects every pod")
	}
	for k, v := range pmObj.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("PodMonitor selects %s=%s; the agent's pods have %v", k, v, dep.Spec.Template.Labels)
		}
	}
	ports := map[string]bool{}
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
	}
	if len(pmObj.Spec.Endpoints) != 1 || !ports[pmObj.Spec.Endpoints[0].Port] || pmObj.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("PodMonitor endpoints %+v; container ports %v", pmObj.Spec.Endpoints, ports)
	}
}

// serviceMonitor is what the tests read of a rendered ServiceMonitor.
type serviceMonitor struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port, Path, Scheme string
			TLSConfig          map[string]any `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}
