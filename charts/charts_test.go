// Package charts_test lints and renders the Helm charts with Helm's Go SDK and checks what
// they produce: the arguments parse with the real `meshrelay` command tree (and pass the
// binary's own validation), values change what they should, the pods can start (paths on
// volumes, ports behind probes and Services), and RBAC grants exactly what the binary needs.
package charts_test

import (
	"cmp"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/meshrelay/meshrelay/charts"
	"github.com/meshrelay/meshrelay/charts/chartstest"
)

// vals builds nested values from "a.b.c" paths, as `helm --set` would.
func vals(kv ...any) map[string]any {
	out := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		keys := strings.Split(kv[i].(string), ".")
		m := out
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = kv[i+1]
	}
	return out
}

// merged returns a deep merge of b over a (both are left alone).
func merged(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		am, ok1 := out[k].(map[string]any)
		bm, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = merged(am, bm)
		} else {
			out[k] = v
		}
	}
	return out
}

func render(t *testing.T, name string, values map[string]any) *chartstest.Rendered {
	t.Helper()
	r, err := chartstest.Render(name, chartstest.Options{Values: values})
	if err != nil {
		t.Fatalf("render %s with %v: %v", name, values, err)
	}
	return r
}

// renderErr renders and returns the error, failing the test when there is none.
func renderErr(t *testing.T, name string, values map[string]any) error {
	t.Helper()
	_, err := chartstest.Render(name, chartstest.Options{Values: values})
	if err == nil {
		t.Fatalf("render %s with %v: no error, want one", name, values)
	}
	return err
}

func into[T any](t *testing.T, o chartstest.Object) *T {
	t.Helper()
	v := new(T)
	if err := o.Into(v); err != nil {
		t.Fatal(err)
	}
	return v
}

func get[T any](t *testing.T, r *chartstest.Rendered, kind, name string) *T {
	t.Helper()
	o, ok := r.Get(kind, name)
	if !ok {
		t.Fatalf("no %s %q rendered (have %s)", kind, name, inventory(r))
	}
	return into[T](t, o)
}

func inventory(r *chartstest.Rendered) string {
	var s []string
	for _, o := range r.Objects {
		s = append(s, o.Kind+"/"+o.Name)
	}
	return strings.Join(s, ", ")
}

// decodeAll decodes every rendered object into its k8s.io/api type, so that a misspelled
// field anywhere in a template fails.
func decodeAll(t *testing.T, r *chartstest.Rendered) {
	t.Helper()
	for _, o := range r.Objects {
		var v any
		switch o.Kind {
		case "Deployment":
			v = &appsv1.Deployment{}
		case "Service":
			v = &corev1.Service{}
		case "ServiceAccount":
			v = &corev1.ServiceAccount{}
		case "Secret":
			v = &corev1.Secret{}
		case "ClusterRole":
			v = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			v = &rbacv1.ClusterRoleBinding{}
		case "Role":
			v = &rbacv1.Role{}
		case "RoleBinding":
			v = &rbacv1.RoleBinding{}
		case "PodDisruptionBudget":
			v = &policyv1.PodDisruptionBudget{}
		case "NetworkPolicy":
			v = &networkingv1.NetworkPolicy{}
		default:
			t.Errorf("%s renders a %s the tests do not know; add it to decodeAll", o.Source, o.Kind)
			continue
		}
		if err := o.Into(v); err != nil {
			t.Error(err)
		}
	}
}

// deployment returns the chart's single Deployment after checking the pod spec is coherent.
func deployment(t *testing.T, r *chartstest.Rendered) *appsv1.Deployment {
	t.Helper()
	ds := r.OfKind("Deployment")
	if len(ds) != 1 {
		t.Fatalf("want 1 Deployment, have %s", inventory(r))
	}
	d := into[appsv1.Deployment](t, ds[0])
	checkPod(t, r, d)
	return d
}

var (
	envRef   = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	pathFlag = regexp.MustCompile(`^--([a-z0-9-]+)=(/.*)$`)
	// Flags whose path the process writes to; the rest are read.
	writtenPaths = map[string]bool{"data-dir": true, "state-dir": true, "output-dir": true}
)

// checkPod checks what makes a pod start and serve: every path an argument names is on a
// mounted volume (writable when the binary writes there, from a Secret that has the key when
// the chart creates that Secret), every $(VAR) an argument uses is defined, the probes and
// Services hit the ports the binary listens on, and the container runs as non-root on a
// read-only root filesystem.
func checkPod(t *testing.T, r *chartstest.Rendered, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	// The agent chart's telemetry collector (telemetryCollector.enabled) is the one sidecar
	// allowed, after the binary's container; TestAgentTelemetryCollector checks it.
	if n := len(spec.Containers); n != 1 && (n != 2 || spec.Containers[1].Name != "telemetry-collector") {
		t.Fatalf("want one container, have %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("volumeMount %s has no volume", m.Name)
		}
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, a := range c.Args {
		for _, m := range envRef.FindAllStringSubmatch(a, -1) {
			if !env[m[1]] {
				t.Errorf("argument %q uses $(%s), which the container does not define", a, m[1])
			}
		}
		m := pathFlag.FindStringSubmatch(a)
		if m == nil {
			continue
		}
		flag, p := m[1], m[2]
		mount, ok := mountFor(c.VolumeMounts, p)
		if !ok {
			t.Errorf("--%s=%s is on no mounted volume (the root filesystem is read-only)", flag, p)
			continue
		}
		if writtenPaths[flag] && mount.ReadOnly {
			t.Errorf("--%s=%s is written by the binary but mounted read-only", flag, p)
		}
		v := volumes[mount.Name]
		if v.Secret != nil && p != mount.MountPath {
			key := strings.TrimPrefix(p, mount.MountPath+"/")
			if o, ok := r.Get("Secret", v.Secret.SecretName); ok {
				s := into[corev1.Secret](t, o)
				if _, ok := s.Data[key]; !ok {
					t.Errorf("--%s reads key %q of Secret %s, which the chart creates without it", flag, key, v.Secret.SecretName)
				}
			}
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", pr.name)
			continue
		}
		// The management server serves its admin API over HTTPS unless told otherwise; the
		// agent's is plain HTTP.
		scheme := cmp.Or(pr.probe.HTTPGet.Scheme, corev1.URISchemeHTTP)
		want := corev1.URISchemeHTTP
		if len(c.Args) > 0 && c.Args[0] == "server" && !slices.Contains(c.Args, "--admin-plaintext") {
			want = corev1.URISchemeHTTPS
		}
		if scheme != want {
			t.Errorf("%s probe scheme %s, want %s (what %s serves)", pr.name, scheme, want, c.Args[0])
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s probe path %s, want %s", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		if got := ports[pr.probe.HTTPGet.Port.String()]; got == 0 || fmt.Sprintf("--admin-address=:%d", got) != flagArg(c.Args, "admin-address") {
			t.Errorf("%s probe on port %s (%d) is not the admin address %q", pr.name, pr.probe.HTTPGet.Port.String(), got, flagArg(c.Args, "admin-address"))
		}
	}
	for _, o := range r.OfKind("Service") {
		svc := into[corev1.Service](t, o)
		if !selects(svc.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("Service %s selects %v, not the pods (%v)", svc.Name, svc.Spec.Selector, d.Spec.Template.Labels)
		}
		for _, p := range svc.Spec.Ports {
			if _, ok := ports[p.TargetPort.String()]; !ok {
				t.Errorf("Service %s targets port %s, which the container does not have", svc.Name, p.TargetPort.String())
			}
		}
	}
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("Deployment selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("want runAsNonRoot, readOnlyRootFilesystem and no privilege escalation; have pod %+v container %+v", psc, sc)
	}
	if spec.ServiceAccountName == "" {
		t.Error("no serviceAccountName")
	}
}

func mountFor(ms []corev1.VolumeMount, p string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	found := false
	for _, m := range ms {
		if (p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/")) && len(m.MountPath) > len(best.MountPath) {
			best, found = m, true
		}
	}
	return best, found
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// flagArg returns the argument that sets --name ("" when none does).
func flagArg(args []string, name string) string {
	for _, a := range args {
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return a
		}
	}
	return ""
}

// rulesOf flattens RBAC rules to "group/resource" -> sorted verbs.
func rulesOf(t *testing.T, rules []rbacv1.PolicyRule) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				k := g + "/" + res
				out[k] = append(out[k], r.Verbs...)
				slices.Sort(out[k])
				out[k] = slices.Compact(out[k])
			}
		}
	}
	return out
}

// TestLint runs Helm's linter (what `helm lint --strict` runs) on both charts with their
// defaults and with the non-default values the other tests use.
func TestLint(t *testing.T) {
	agentMin := vals("cluster", "east", "relay.address", "mgmt.example.com:9900")
	cases := []struct {
		chart  string
		values map[string]any
	}{
		{charts.Server, nil},
		{charts.Server, serverHAValues()},
		{charts.Server, vals("kubernetes.enabled", true, "networkPolicy.enabled", true,
			"networkPolicy.adminFrom", []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "prometheus"}}}})},
		{charts.Server, vals("telemetryGateway.enabled", true, "telemetryGateway.backend.endpoint", "otlp.example.com:4317", "metrics.serviceMonitor.enabled", true)},
		{charts.Agent, nil}, // lint mode lets the required values pass
		{charts.Agent, agentMin},
		{charts.Agent, agentKubeValues()},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.chart, i), func(t *testing.T) {
			res := lint.RunAll(c.chart, c.values, "meshrelay-system")
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m.Error())
				} else {
					t.Logf("lint: %s", m.Error())
				}
			}
		})
	}
}

// TestValuesDocumented checks that every value in values.yaml has a comment above it (the
// free-form Kubernetes blocks are documented as a whole).
func TestValuesDocumented(t *testing.T) {
	freeForm := map[string]bool{"resources": true, "podSecurityContext": true, "securityContext": true}
	for _, name := range []string{charts.Server, charts.Agent} {
		data, err := os.ReadFile(filepath.Join(name, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		var walk func(n *yaml.Node, prefix string, first bool)
		walk = func(n *yaml.Node, prefix string, first bool) {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := path.Join(prefix, k.Value)
				// The first key's comment of the file is the document's head comment.
				if k.HeadComment == "" && !(first && i == 0 && doc.HeadComment != "") {
					t.Errorf("%s/values.yaml: %s has no comment", name, strings.ReplaceAll(p, "/", "."))
				}
				if v.Kind == yaml.MappingNode && !freeForm[k.Value] {
					walk(v, p, false)
				}
			}
		}
		walk(doc.Content[0], "", true)
	}
}

// TestRenderedObjectsDecode decodes every object of many renders into its k8s.io/api type
// with unknown fields refused.
func TestRenderedObjectsDecode(t *testing.T) {
	for _, c := range []struct {
		chart  string
		values map[string]any
	}{
		{charts.Server, nil},
		{charts.Server, serverHAValues()},
		{charts.Server, serverEverythingValues()},
		{charts.Agent, agentKubeValues()},
		{charts.Agent, agentEverythingValues()},
	} {
		r := render(t, c.chart, c.values)
		decodeAll(t, r)
		deployment(t, r)
		if strings.TrimSpace(r.Notes) == "" {
			t.Errorf("%s renders no NOTES.txt", c.chart)
		}
	}
}

// TestRenderHelper checks the package's own helper: unknown charts are refused and names
// default to the chart's.
func TestRenderHelper(t *testing.T) {
	if _, err := chartstest.Render("nope", chartstest.Options{}); err == nil {
		t.Error("Render of an unknown chart: no error")
	}
	r := render(t, charts.Server, nil)
	if _, ok := r.Get("Deployment", "meshrelay-server"); !ok {
		t.Errorf("want Deployment meshrelay-server, have %s", inventory(r))
	}
	for _, o := range r.Objects {
		if o.Namespace != "" && o.Namespace != "meshrelay-system" {
			t.Errorf("%s/%s in namespace %q", o.Kind, o.Name, o.Namespace)
		}
	}
}
