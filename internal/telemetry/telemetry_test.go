package telemetry

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Setenv(envEndpoint, "")
	for _, c := range []struct {
		cfg  Config
		want string // "" = valid
	}{
		{Config{}, ""},
		{Config{Endpoint: "127.0.0.1:4317", Insecure: true}, ""},
		{Config{Endpoint: "collector:4317", Insecure: true}, "--otlp-insecure needs a loopback --otlp-endpoint"},
		{Config{Endpoint: "collector"}, "--otlp-endpoint \"collector\": want host:port"},
		{Config{Insecure: true}, "need --otlp-endpoint"},
		{Config{Endpoint: "127.0.0.1:4317", Insecure: true, CAFile: "ca.crt"}, "--otlp-insecure excludes --otlp-ca-file"},
		{Config{Endpoint: "collector:4317", CAFile: "/nonexistent/ca.crt"}, "--otlp-ca-file"},
		{Config{Endpoint: "collector:4317", Interval: 1}, "--otlp-metrics-interval"},
	} {
		err := c.cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}
