// Package telemetry embeds the example configurations of meshrelay-collector, the telemetry
// gateway's and the collector agent's, so that `meshrelay demo` runs the pipeline these
// files describe rather than a copy of them.
package telemetry

import (
	"bytes"
	"embed"
	"fmt"
	"maps"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// Files are the example configurations, by file name.
//
//go:embed collector-agent.yaml telemetry-gateway.yaml
var Files embed.FS

// Example file names.
const (
	CollectorAgent   = "collector-agent.yaml"
	TelemetryGateway = "telemetry-gateway.yaml"
)

var envRef = regexp.MustCompile(`\$\{env:([A-Z0-9_]+)\}`)

// Expand returns the example file name with its ${env:NAME} references replaced by vars,
// as the collector would replace them from its environment (references in comments stay).
// A reference without a value is an error naming it.
func Expand(name string, vars map[string]string) ([]byte, error) {
	b, err := Files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", name, err)
	}
	var missing []string
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i, line := range lines {
		code, comment := line, []byte(nil)
		if j := bytes.Index(line, []byte("#")); j >= 0 {
			code, comment = line[:j], line[j:] // the examples quote no '#'
		}
		code = envRef.ReplaceAllFunc(code, func(m []byte) []byte {
			v, ok := vars[string(envRef.FindSubmatch(m)[1])]
			if !ok {
				missing = append(missing, string(m))
				return m
			}
			return []byte(v)
		})
		lines[i] = append(code, comment...)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("example %s: no value for %v", name, missing)
	}
	return bytes.Join(lines, nil), nil
}

// CollectorAgentFor returns the collector agent's example with vars, but with one OTLP
// exporter per telemetry gateway address in gateways (otlp, otlp/2, …, seed 001's shape)
// where the example has two, each exporting in every pipeline. The example's first
// exporter is the template of all of them.
func CollectorAgentFor(vars map[string]string, gateways []string) ([]byte, error) {
	if len(gateways) == 0 {
		return nil, fmt.Errorf("example %s: no telemetry gateway address", CollectorAgent)
	}
	v := maps.Clone(vars)
	// The example's exporters are rebuilt below from its first one: any address will do here.
	v["TELEMETRY_GATEWAY_1"], v["TELEMETRY_GATEWAY_2"] = gateways[0], gateways[0]
	b, err := Expand(CollectorAgent, v)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Receivers  map[string]any            `yaml:"receivers"`
		Processors map[string]any            `yaml:"processors"`
		Exporters  map[string]map[string]any `yaml:"exporters"`
		Service    struct {
			Telemetry any                       `yaml:"telemetry"`
			Pipelines map[string]map[string]any `yaml:"pipelines"`
		} `yaml:"service"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("example %s: %w", CollectorAgent, err)
	}
	tmpl, err := yaml.Marshal(cfg.Exporters["otlp"])
	if err != nil || cfg.Exporters["otlp"] == nil {
		return nil, fmt.Errorf("example %s: no otlp exporter to copy (%v)", CollectorAgent, err)
	}
	cfg.Exporters = map[string]map[string]any{}
	names := make([]string, len(gateways))
	for i, g := range gateways {
		names[i] = "otlp"
		if i > 0 {
			names[i] = fmt.Sprintf("otlp/%d", i+1)
		}
		var e map[string]any
		if err := yaml.Unmarshal(tmpl, &e); err != nil {
			return nil, fmt.Errorf("example %s: %w", CollectorAgent, err)
		}
		e["endpoint"] = g
		cfg.Exporters[names[i]] = e
	}
	for _, p := range cfg.Service.Pipelines {
		p["exporters"] = names
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", CollectorAgent, err)
	}
	return append([]byte("# examples/telemetry/"+CollectorAgent+" with one OTLP exporter per telemetry gateway address\n"), out...), nil
}
