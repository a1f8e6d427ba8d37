package charts_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/charts"
)

// seedExporters is seed 001's telemetryCollector.config.exporters: one exporter per
// telemetry gateway address.
func seedExporters() map[string]any {
	exp := func(host string) map[string]any {
		return map[string]any{"endpoint": host + ":4317", "tls": map[string]any{
			"ca_file": "/etc/otel-certs/ca.crt", "server_name_override": "gloo-telemetry-gateway.gloo-mesh"}}
	}
	return map[string]any{"otlp": exp("mgmt-1.example.com"), "otlp/2": exp("mgmt-2.example.com")}
}

// TestAgentTelemetryCollector: telemetryCollector.config in the seed's shape renders a
// collector sidecar whose pipelines export to every exporter given, as given, and points the
// agent's OTLP export at it on loopback; off by default.
func TestAgentTelemetryCollector(t *testing.T) {
	off := render(t, charts.Agent, agentValues())
	if len(off.OfKind("ConfigMap")) != 0 || len(deployment(t, off).Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("the collector is rendered by default: %s", inventory(off))
	}
	noFlags(t, deployment(t, off).Spec.Template.Spec.Containers[0].Args, "otlp-endpoint")

	r := render(t, charts.Agent, agentValues("telemetryCollector.enabled", true,
		"telemetryCollector.config", map[string]any{"exporters": seedExporters()}))
	d := deployment(t, r)
	checkArgs(t, d)
	wantArgs(t, d.Spec.Template.Spec.Containers[0].Args, "--otlp-endpoint=127.0.0.1:4317", "--otlp-insecure")
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 2 || cs[1].Name != "telemetry-collector" || !slices.Contains(cs[1].Args, "--config=/etc/meshrelay-collector/config.yaml") {
		t.Fatalf("no collector sidecar: %+v", cs)
	}
	if !slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "otel-certs" && v.Secret != nil && v.Secret.SecretName == "meshrelay-otel-certs"
	}) {
		t.Error("the telemetry certificates are not mounted")
	}
	cms := r.OfKind("ConfigMap")
	if len(cms) != 1 {
		t.Fatalf("want the collector's ConfigMap, have %s", inventory(r))
	}
	var cm corev1.ConfigMap
	if err := cms[0].Into(&cm); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Exporters map[string]any `json:"exporters"`
		Receivers map[string]any `json:"receivers"`
		Service   struct {
			Pipelines map[string]struct {
				Receivers, Processors, Exporters []string
			} `json:"pipelines"`
		} `json:"service"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("config.yaml: %v\n%s", err, cm.Data["config.yaml"])
	}
	if !reflect.DeepEqual(cfg.Exporters, seedExporters()) {
		t.Errorf("exporters changed on the way:\n%v\nwant\n%v", cfg.Exporters, seedExporters())
	}
	for _, p := range []string{"metrics", "traces"} {
		pl := cfg.Service.Pipelines[p]
		if !slices.Equal(pl.Exporters, []string{"otlp", "otlp/2"}) || !slices.Equal(pl.Receivers, []string{"otlp"}) {
			t.Errorf("pipeline %s: %+v, want it to export to otlp and otlp/2", p, pl)
		}
	}
	if cfg.Receivers["otlp"] == nil {
		t.Error("no otlp receiver")
	}
}

func TestAgentTelemetryCollectorRefuses(t *testing.T) {
	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{agentValues("telemetryCollector.enabled", true), "telemetryCollector.config.exporters is required"},
		{agentValues("telemetryCollector.enabled", true, "telemetryCollector.config", map[string]any{"exporters": map[string]any{"otlp/2": map[string]any{"tls": map[string]any{}}}}),
			"telemetryCollector.config.exporters.otlp/2.endpoint is required"},
	} {
		if err := renderErr(t, charts.Agent, c.values); !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v: error %q, want it to say %q", c.values, err, c.want)
		}
	}
}
