package charts_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/charts"
	"github.com/meshrelay/meshrelay/charts/chartstest"
)

// telemetryGatewayExample is the configuration the chart's telemetry gateway runs: the
// chart's files/telemetry-gateway.yaml links to it.
const telemetryGatewayExample = "../examples/telemetry/telemetry-gateway.yaml"

// TestServerTelemetryGateway: telemetryGateway.enabled renders meshrelay-collector with the
// example telemetry gateway configuration as it is, every ${env:NAME} it references set from
// the values, the BYO certificate mounted where the variables point, the OTLP and metrics
// ports on the pods and the Service, and a ServiceMonitor of the merged metrics when
// monitoring is on; none of it selects the server's pods, nor the server's objects the
// gateway's. Off by default.
func TestServerTelemetryGateway(t *testing.T) {
	const name = serverName + "-telemetry-gateway"
	if r := render(t, charts.Server, nil); slices.ContainsFunc(r.Objects, func(o chartstest.Object) bool { return strings.Contains(o.Name, "telemetry-gateway") }) {
		t.Fatalf("the telemetry gateway is rendered by default: %s", inventory(r))
	}
	values := vals("telemetryGateway.enabled", true, "telemetryGateway.backend.endpoint", "otlp.backend.example.com:4317",
		"telemetryGateway.certsSecret", "gw-tls", "telemetryGateway.image.tag", "0.9.1", "telemetryGateway.otlpPort", 14317, "telemetryGateway.prometheusPort", 19091,
		"metrics.serviceMonitor.enabled", true, "metrics.serviceMonitor.labels", map[string]any{"release": "kube-prometheus"})
	r := render(t, charts.Server, values) // get decodes with unknown fields refused

	cm := get[corev1.ConfigMap](t, r, "ConfigMap", name)
	example, err := os.ReadFile(telemetryGatewayExample)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["config.yaml"] != string(example) {
		t.Errorf("the gateway's configuration differs from %s:\n%s", telemetryGatewayExample, cm.Data["config.yaml"])
	}

	d := get[appsv1.Deployment](t, r, "Deployment", name)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("containers %+v", pod.Containers)
	}
	c := pod.Containers[0]
	if c.Image != "ghcr.io/meshrelay/meshrelay-collector:0.9.1" {
		t.Errorf("image %s", c.Image)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	refs := 0
	for _, line := range strings.Split(string(example), "\n") {
		code, _, _ := strings.Cut(line, "#") // references in comments are not expanded
		for _, m := range regexp.MustCompile(`\$\{env:([A-Z0-9_]+)\}`).FindAllStringSubmatch(code, -1) {
			refs++
			if env[m[1]] == "" {
				t.Errorf("the configuration references ${env:%s}; the container does not set it (env %v)", m[1], env)
			}
		}
	}
	if refs == 0 {
		t.Errorf("%s references no ${env:NAME}: the chart sets variables nothing reads", telemetryGatewayExample)
	}
	if env["TELEMETRY_BACKEND_ENDPOINT"] != "otlp.backend.example.com:4317" || env["TELEMETRY_BACKEND_INSECURE"] != "false" {
		t.Errorf("backend env %v", env)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for envName, port := range map[string]string{"TELEMETRY_GATEWAY_LISTEN": "otlp-grpc", "TELEMETRY_GATEWAY_PROMETHEUS": "metrics"} {
		if !strings.HasSuffix(env[envName], ":"+strconv.Itoa(int(ports[port]))) || ports[port] == 0 {
			t.Errorf("%s=%s, container port %s=%d", envName, env[envName], port, ports[port])
		}
	}
	if ports["otlp-grpc"] != 14317 || ports["metrics"] != 19091 {
		t.Errorf("ports %v, want the values' 14317 and 19091", ports)
	}
	// The files the configuration and the arguments name are on the volumes they need.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	onVolume := func(path string) (corev1.Volume, string) {
		m, ok := mountFor(c.VolumeMounts, path)
		if !ok {
			t.Errorf("%s is on no volume", path)
			return corev1.Volume{}, ""
		}
		return volumes[m.Name], strings.TrimPrefix(path, m.MountPath+"/")
	}
	for _, f := range []string{env["TELEMETRY_GATEWAY_CERT_FILE"], env["TELEMETRY_GATEWAY_KEY_FILE"]} {
		if v, key := onVolume(f); v.Secret == nil || v.Secret.SecretName != "gw-tls" || (key != "tls.crt" && key != "tls.key") {
			t.Errorf("%s: volume %+v, key %s; want Secret gw-tls's tls.crt or tls.key", f, v, key)
		}
	}
	if len(c.Args) != 1 || !strings.HasPrefix(c.Args[0], "--config=") {
		t.Fatalf("args %v", c.Args)
	}
	if v, key := onVolume(strings.TrimPrefix(c.Args[0], "--config=")); v.ConfigMap == nil || v.ConfigMap.Name != name || key != "config.yaml" {
		t.Errorf("--config: volume %+v, key %s", v, key)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the gateway's root filesystem is writable")
	}

	// Its Service selects its pods only, with both ports; the server's Service does not
	// select them.
	svc := get[corev1.Service](t, r, "Service", name)
	labels := d.Spec.Template.Labels
	if !selects(svc.Spec.Selector, labels) || !selects(d.Spec.Selector.MatchLabels, labels) {
		t.Errorf("Service selector %v, Deployment selector %v, pod labels %v", svc.Spec.Selector, d.Spec.Selector.MatchLabels, labels)
	}
	if !hasServicePort(*svc, "otlp-grpc") || !hasServicePort(*svc, "metrics") {
		t.Errorf("Service ports %+v", svc.Spec.Ports)
	}
	server := get[appsv1.Deployment](t, r, "Deployment", serverName)
	// The server reads the gateway's merged metrics for its UI, through this Service.
	checkArgs(t, server)
	url := ""
	for _, a := range server.Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--telemetry-prometheus-url="); ok {
			url = v
		}
	}
	if !strings.HasPrefix(url, "http://"+name+".") || !strings.HasSuffix(url, ".svc:19091/metrics") {
		t.Errorf("the server's --telemetry-prometheus-url is %q, want the gateway's Service %s on port 19091", url, name)
	}
	for _, o := range r.Objects {
		if o.Kind != "Service" || o.Name == name {
			continue
		}
		var s corev1.Service
		if err := o.Into(&s); err != nil {
			t.Fatal(err)
		}
		if selects(s.Spec.Selector, labels) {
			t.Errorf("the server's Service %s selects the telemetry gateway's pods", s.Name)
		}
	}
	if selects(svc.Spec.Selector, server.Spec.Template.Labels) {
		t.Error("the telemetry gateway's Service selects the server's pods")
	}

	// The ServiceMonitors: the gateway's scrapes its metrics port, the server's does not
	// select the gateway's Service.
	monitor := func(n string) serviceMonitor {
		t.Helper()
		o, ok := r.Get("ServiceMonitor", n)
		if !ok {
			t.Fatalf("no ServiceMonitor %s (have %s)", n, inventory(r))
		}
		var sm serviceMonitor
		if err := json.Unmarshal(o.JSON, &sm); err != nil {
			t.Fatal(err)
		}
		return sm
	}
	sm := monitor(name)
	if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) || sm.Metadata.Labels["release"] != "kube-prometheus" {
		t.Errorf("ServiceMonitor %+v; Service labels %v", sm, svc.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || !hasServicePort(*svc, sm.Spec.Endpoints[0].Port) || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Scheme != "http" {
		t.Errorf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
	}
	if selects(monitor(serverName).Spec.Selector.MatchLabels, svc.Labels) {
		t.Error("the server's ServiceMonitor selects the telemetry gateway's Service")
	}
	if _, ok := render(t, charts.Server, merged(values, vals("metrics.serviceMonitor.enabled", false))).Get("ServiceMonitor", name); ok {
		t.Error("a ServiceMonitor of the gateway with monitoring off")
	}

	for _, c := range []struct {
		values map[string]any
		want   string
	}{
		{vals("telemetryGateway.enabled", true), "telemetryGateway.backend.endpoint is required"},
		{vals("telemetryGateway.enabled", true, "telemetryGateway.backend.endpoint", "b:4317", "telemetryGateway.certsSecret", ""), "telemetryGateway.certsSecret is required"},
	} {
		if err := renderErr(t, charts.Server, c.values); !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v: error %q, want it to say %q", c.values, err, c.want)
		}
	}
}
