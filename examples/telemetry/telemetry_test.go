package telemetry

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestExpandNamesAMissingVariable(t *testing.T) {
	_, err := Expand(TelemetryGateway, map[string]string{"TELEMETRY_GATEWAY_LISTEN": "127.0.0.1:4317"})
	if err == nil || !strings.Contains(err.Error(), "${env:TELEMETRY_GATEWAY_CERT_FILE}") {
		t.Fatalf("Expand with variables missing: %v, want an error naming TELEMETRY_GATEWAY_CERT_FILE", err)
	}
}

// A collector agent gets one OTLP exporter per telemetry gateway address, each with the
// example's TLS settings, and every pipeline exports to all of them.
func TestCollectorAgentForHasOneExporterPerGateway(t *testing.T) {
	gateways := []string{"mgmt-1:4317", "mgmt-2:4317", "mgmt-3:4317"}
	b, err := CollectorAgentFor(map[string]string{"COLLECTOR_AGENT_LISTEN": "127.0.0.1:4317", "TELEMETRY_CA_FILE": "/ca.crt",
		"TELEMETRY_SERVER_NAME": "tgw.example"}, gateways)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Exporters map[string]struct {
			Endpoint string `yaml:"endpoint"`
			TLS      struct {
				CAFile     string `yaml:"ca_file"`
				ServerName string `yaml:"server_name_override"`
			} `yaml:"tls"`
		} `yaml:"exporters"`
		Service struct {
			Pipelines map[string]struct {
				Exporters []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	names := []string{"otlp", "otlp/2", "otlp/3"}
	if len(cfg.Exporters) != len(names) {
		t.Errorf("exporters %v, want %v\n%s", cfg.Exporters, names, b)
	}
	for i, n := range names {
		e := cfg.Exporters[n]
		if e.Endpoint != gateways[i] || e.TLS.CAFile != "/ca.crt" || e.TLS.ServerName != "tgw.example" {
			t.Errorf("exporter %s = %+v, want endpoint %s over TLS with /ca.crt and tgw.example", n, e, gateways[i])
		}
	}
	for _, p := range []string{"metrics", "traces"} {
		if got := strings.Join(cfg.Service.Pipelines[p].Exporters, ","); got != strings.Join(names, ",") {
			t.Errorf("pipeline %s exports to %s, want %v", p, got, names)
		}
	}
}
