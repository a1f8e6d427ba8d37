package resource_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/resource"
)

// parseOne parses src and requires exactly one object and no errors.
func parseOne(t *testing.T, src string) resource.Object {
	t.Helper()
	objs, errs := resource.Parse("test.yaml", []byte(src))
	if len(errs) != 0 || len(objs) != 1 {
		t.Fatalf("Parse: %d objects, errors %v; want one object", len(objs), errs)
	}
	return objs[0]
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		key       string
		namespace string
	}{
		{
			name: "meshrelay KubernetesCluster",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\nspec:\n  clusterDomain: cluster.local\n  skipWarming: true\n",
			key:  "KubernetesCluster//east",
		},
		{
			name: "seed KubernetesCluster with a namespace is cluster-scoped",
			src:  "apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata:\n  name: west\n  namespace: gloo-mesh\nspec:\n  clusterDomain: cluster.local\n",
			key:  "KubernetesCluster//west",
		},
		{
			name: "KubernetesCluster without spec",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: c1\n",
			key:  "KubernetesCluster//c1",
		},
		{
			name:      "seed Upstream",
			src:       "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata:\n  name: petstore\n  namespace: gloo-system\nspec:\n  static:\n    hosts:\n    - addr: 10.0.0.1\n      port: 8080\n",
			key:       "Upstream/gloo-system/petstore",
			namespace: "gloo-system",
		},
		{
			name:      "seed FailoverScheme",
			src:       "apiVersion: fed.solo.io/v1\nkind: FailoverScheme\nmetadata:\n  name: fs\n  namespace: gloo-fed\nspec:\n  primary:\n    clusterName: east\n    name: petstore\n    namespace: gloo-system\n  failoverGroups:\n  - priorityGroup:\n    - cluster: west\n      upstreams:\n      - name: petstore\n        namespace: gloo-system\n",
			key:       "FailoverScheme/gloo-fed/fs",
			namespace: "gloo-fed",
		},
		{
			name:      "seed Gateway",
			src:       "apiVersion: gateway.solo.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: gloo-system\nspec:\n  bindPort: 8080\n  httpGateway: {}\n",
			key:       "Gateway/gloo-system/gw",
			namespace: "gloo-system",
		},
		{
			name:      "namespaced kind defaults to default",
			src:       "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  name: rt\nspec:\n  static:\n    hosts:\n    - addr: 10.0.0.1\n      port: 80\n",
			key:       "Upstream/default/rt",
			namespace: "default",
		},
		{
			name:      "Service",
			src:       "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n    targetPort: http\n",
			key:       "Service/shop/web",
			namespace: "shop",
		},
		{
			name:      "EndpointSlice",
			src:       "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\nports:\n- port: 8080\n",
			key:       "EndpointSlice/default/web-abc",
			namespace: "default",
		},
		{
			name: "dotted name",
			src:  "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a.b-c\n  namespace: ns\n",
			key:  "Secret/ns/a.b-c", namespace: "ns",
		},
		{
			name: "JSON document",
			src:  `{"apiVersion":"meshrelay.io/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"j"}}`,
			key:  "KubernetesCluster//j",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := parseOne(t, tc.src)
			if o.Key() != tc.key {
				t.Errorf("key %q, want %q", o.Key(), tc.key)
			}
			if o.Namespace != tc.namespace {
				t.Errorf("namespace %q, want %q", o.Namespace, tc.namespace)
			}
			var m struct {
				Metadata map[string]any `json:"metadata"`
			}
			if err := o.Into(&m); err != nil {
				t.Fatal(err)
			}
			ns, has := m.Metadata["namespace"]
			if tc.namespace == "" && has {
				t.Errorf("cluster-scoped Raw keeps namespace %v: %s", ns, o.Raw)
			}
			if tc.namespace != "" && ns != tc.namespace {
				t.Errorf("Raw namespace %v, want %q: %s", ns, tc.namespace, o.Raw)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error
	}{
		{
			name: "unknown kind",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: VirtualService\nmetadata:\n  name: x\n",
			want: append([]string{`unknown kind "VirtualService"`, "known:"}, resource.Kinds()...),
		},
		{
			name: "missing kind",
			src:  "apiVersion: meshrelay.io/v1alpha1\nmetadata:\n  name: x\n",
			want: []string{"kind", "is required"},
		},
		{
			name: "wrong apiVersion",
			src:  "apiVersion: meshrelay.io/v2\nkind: KubernetesCluster\nmetadata:\n  name: x\n",
			want: []string{`KubernetesCluster "x"`, "apiVersion", `"meshrelay.io/v2"`, "meshrelay.io/v1alpha1", "admin.gloo.solo.io/v2"},
		},
		{
			name: "Service with a meshrelay apiVersion",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: Service\nmetadata:\n  name: x\n",
			want: []string{"apiVersion", "use v1"},
		},
		{
			name: "missing name",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  namespace: ns\n",
			want: []string{"Upstream", "metadata.name", "is required"},
		},
		{
			name: "missing metadata",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nspec: {}\n",
			want: []string{"metadata.name", "is required"},
		},
		{
			name: "uppercase name",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  name: Petstore\n",
			want: []string{"metadata.name", "lowercase"},
		},
		{
			name: "bad namespace",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  name: p\n  namespace: a.b\n",
			want: []string{"metadata.namespace", "DNS label"},
		},
		{
			name: "cluster name with a dot",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: a.b\n",
			want: []string{`KubernetesCluster "a.b"`, "metadata.name", "DNS label"},
		},
		{
			name: "skipWarming not a boolean",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: x\nspec:\n  skipWarming: \"yes\"\n",
			want: []string{`KubernetesCluster "x"`, "spec.skipWarming", "boolean"},
		},
		{
			name: "seed skipWarming not a boolean",
			src:  "apiVersion: admin.gloo.solo.io/v2\nkind: KubernetesCluster\nmetadata:\n  name: x\n  namespace: gloo-mesh\nspec:\n  skipWarming: \"yes\"\n",
			want: []string{`KubernetesCluster "x"`, "spec.skipWarming", "boolean"},
		},
		{
			name: "unknown spec field",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: x\nspec:\n  clusterDomian: cluster.local\n",
			want: []string{`KubernetesCluster "x"`, "clusterDomian"},
		},
		{
			name: "invalid clusterDomain",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: x\nspec:\n  clusterDomain: Cluster_Local\n",
			want: []string{`KubernetesCluster "x"`, "spec.clusterDomain", `"Cluster_Local"`},
		},
		{
			name: "spec not an object",
			src:  "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  name: u\nspec: [1]\n",
			want: []string{`Upstream "default/u"`, "spec", "object"},
		},
		{
			name: "Service port 0",
			src:  "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n  - port: 0\n",
			want: []string{`Service "default/web"`, "spec.ports[1].port", "0 is not a port number"},
		},
		{
			name: "Service first port 0",
			src:  "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 0\n",
			want: []string{"spec.ports[0].port"},
		},
		{
			name: "Service port too large",
			src:  "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 65536\n",
			want: []string{"spec.ports[0].port", "65536"},
		},
		{
			name: "Service port not a number",
			src:  "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: http\n",
			want: []string{`Service "default/web"`, "port", "integer"},
		},
		{
			name: "EndpointSlice without service-name label",
			src:  "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  labels:\n    app: web\nendpoints:\n- addresses: [10.0.0.1]\n",
			want: []string{`EndpointSlice "default/web-abc"`, "kubernetes.io/service-name"},
		},
		{
			name: "EndpointSlice port 0",
			src:  "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  labels:\n    kubernetes.io/service-name: web\nports:\n- port: 0\n",
			want: []string{"ports[0].port"},
		},
		{
			name: "not an object",
			src:  "- a\n- b\n",
			want: []string{"not an object"},
		},
		{
			name: "malformed YAML",
			src:  "apiVersion: v1\nkind: [Service\n",
			want: []string{"malformed YAML"},
		},
		{
			name: "tab indentation",
			src:  "apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n",
			want: []string{"malformed YAML"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, errs := resource.Parse("in.yaml", []byte(tc.src))
			if len(objs) != 0 || len(errs) != 1 {
				t.Fatalf("got %d objects and errors %v; want one error", len(objs), errs)
			}
			err := errs[0]
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var de *resource.DocumentError
			if !errors.As(err, &de) || de.Source != "in.yaml" || de.Document != 1 {
				t.Errorf("error %v is not a DocumentError for in.yaml document 1", err)
			}
			if !errors.Is(err, resource.ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestDecodeErrorNamesField(t *testing.T) {
	_, err := resource.Decode([]byte(`{"apiVersion":"meshrelay.io/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"x"},"spec":{"skipWarming":"yes"}}`))
	var fe *resource.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a FieldError", err)
	}
	if fe.Resource != `KubernetesCluster "x"` || fe.Field != "spec.skipWarming" || !strings.Contains(fe.Reason, "boolean") {
		t.Errorf("FieldError %+v", *fe)
	}
}

const (
	goodCluster = "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n"
	goodService = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n"
)

func TestParseMultiDocument(t *testing.T) {
	src := strings.Join([]string{
		"# clusters\napiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\n",
		"apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: BAD\n",
		"# only a comment\n  # and another\n",
		"",
		goodService,
		"--- # a separator with a comment is still a separator\n" + "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: west\n",
	}, "---\n")
	objs, errs := resource.Parse("multi.yaml", []byte(src))
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key())
	}
	want := []string{"KubernetesCluster//east", "Service/shop/web", "KubernetesCluster//west"}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("objects %v, want %v", keys, want)
	}
	if len(errs) != 1 {
		t.Fatalf("errors %v, want one", errs)
	}
	var de *resource.DocumentError
	if !errors.As(errs[0], &de) {
		t.Fatalf("error %T %v is not a DocumentError", errs[0], errs[0])
	}
	if de.Source != "multi.yaml" || de.Document != 2 {
		t.Errorf("DocumentError source %q document %d, want multi.yaml document 2", de.Source, de.Document)
	}
	if msg := errs[0].Error(); !strings.HasPrefix(msg, "multi.yaml: document 2 (line 7): ") || !strings.Contains(msg, "metadata.name") {
		t.Errorf("error text %q", msg)
	}
}

func TestParseSkipsEmptyDocuments(t *testing.T) {
	tests := []struct {
		name string
		src  string
	}{
		{"empty input", ""},
		{"only separators", "---\n---\n---\n"},
		{"comments only", "# nothing here\n# really\n"},
		{"comments and separators", "# a\n---\n  # b\n---\n"},
		{"explicit null", "null\n"},
		{"tilde", "~\n"},
		{"blank lines", "\n\n   \n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, errs := resource.Parse("e.yaml", []byte(tc.src))
			if len(objs) != 0 || len(errs) != 0 {
				t.Errorf("got %d objects, errors %v; want nothing", len(objs), errs)
			}
		})
	}
}

// A YAML syntax error in a later document names the line of the file, not of the document,
// and the document says where it starts.
func TestParseErrorLineCountsInFile(t *testing.T) {
	src := "# three documents\n" + // line 1
		strings.ReplaceAll(goodCluster, "%s", "east") + // lines 2-5
		"---\n" + strings.ReplaceAll(goodCluster, "%s", "west") + // separator line 6, lines 7-10
		"---\n" + // line 11
		"apiVersion: meshrelay.io/v1alpha1\n" + // line 12
		"kind: KubernetesCluster\n" + // line 13
		"metadata: [unclosed\n" + // line 14
		"spec: {}\n" // line 15
	if n := strings.Count(strings.ReplaceAll(goodCluster, "%s", "x"), "\n"); n != 4 {
		t.Fatalf("goodCluster has %d lines; the line numbers below assume 4", n)
	}
	objs, errs := resource.Parse("three.yaml", []byte(src))
	if len(objs) != 2 || len(errs) != 1 {
		t.Fatalf("got %d objects and errors %v; want 2 objects and one error", len(objs), errs)
	}
	var de *resource.DocumentError
	if !errors.As(errs[0], &de) || de.Document != 3 || de.Line != 12 {
		t.Fatalf("error %v: want a DocumentError for document 3 starting at line 12", errs[0])
	}
	msg := errs[0].Error()
	if !strings.HasPrefix(msg, "three.yaml: document 3 (line 12): ") || !strings.Contains(msg, "malformed YAML") {
		t.Errorf("error text %q", msg)
	}
	// The unclosed flow sequence is on line 3 of the document, line 14 of the file.
	if !strings.Contains(msg, "yaml: line 14:") {
		t.Errorf("error text %q does not name line 14 of the file", msg)
	}
	for _, o := range objs {
		if o.Source != "three.yaml" {
			t.Errorf("%s: Source %q, want three.yaml", o, o.Source)
		}
	}
}

// Documents are numbered as YAML counts them: a `---` that opens the file starts document 1.
func TestParseDocumentNumberWithLeadingSeparator(t *testing.T) {
	src := "---\n" + strings.ReplaceAll(goodCluster, "%s", "east") + "---\n" + strings.ReplaceAll(goodCluster, "%s", "BAD")
	_, errs := resource.Parse("lead.yaml", []byte(src))
	var de *resource.DocumentError
	if len(errs) != 1 || !errors.As(errs[0], &de) {
		t.Fatalf("errors %v, want one DocumentError", errs)
	}
	if de.Document != 2 {
		t.Errorf("bad document reported as document %d, want 2 (%v)", de.Document, errs[0])
	}
}

// Parse documents "A document of kind List has its items decoded" (kubectl get -o yaml
// writes one).
func TestParseList(t *testing.T) {
	src := "apiVersion: v1\nkind: List\nitems:\n- apiVersion: meshrelay.io/v1alpha1\n  kind: KubernetesCluster\n  metadata:\n    name: east\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: web\n  spec:\n    ports:\n    - port: 80\n"
	objs, errs := resource.Parse("list.yaml", []byte(src))
	if len(errs) != 0 {
		t.Fatalf("errors %v", errs)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key())
	}
	if want := []string{"KubernetesCluster//east", "Service/default/web"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("objects %v, want %v", keys, want)
	}
}

func TestCanonicalRaw(t *testing.T) {
	const want = `{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"app":"web","tier":"front"},"name":"web","namespace":"shop"},"spec":{"ports":[{"name":"http","port":80,"targetPort":8080}],"selector":{"app":"web"}}}`
	variants := map[string]string{
		"block style":                          "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\n    tier: front\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
		"other key order":                      "spec:\n  ports:\n  - targetPort: 8080\n    port: 80\n    name: http\n  selector: {app: web}\nmetadata:\n  labels: {tier: front, app: web}\n  namespace: shop\n  name: web\nkind: Service\napiVersion: v1\n",
		"flow style and comments":              "# svc\n{apiVersion: v1, kind: Service,   metadata: {name: web, namespace: shop, labels: {app: web, tier: front}}, spec: {ports: [{name: http, port: 80, targetPort: 8080}], selector: {app: web}}}\n",
		"JSON":                                 `{ "kind": "Service", "apiVersion": "v1", "spec": { "selector": {"app": "web"}, "ports": [ {"port": 80, "name": "http", "targetPort": 8080} ] }, "metadata": {"namespace": "shop", "name": "web", "labels": {"tier": "front", "app": "web"}} }`,
		"server-populated metadata and status": "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\n    tier: front\n  resourceVersion: \"12345\"\n  uid: 0b9c1a5e-1111-2222-3333-444455556666\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n  generation: 4\n  managedFields:\n  - manager: kubectl\n    operation: Apply\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\nstatus:\n  loadBalancer: {}\n",
		"CRLF line endings":                    strings.ReplaceAll("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    app: web\n    tier: front\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n", "\n", "\r\n"),
	}
	var hash string
	for name, src := range variants {
		t.Run(name, func(t *testing.T) {
			o := parseOne(t, src)
			if string(o.Raw) != want {
				t.Errorf("Raw\n%s\nwant\n%s", o.Raw, want)
			}
			h := o.Resource().Hash
			if hash == "" {
				hash = h
			} else if h != hash {
				t.Errorf("resource hash %s differs from another variant's %s", h, hash)
			}
		})
	}
}

func TestServerPopulatedStripped(t *testing.T) {
	src := "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: east\n  resourceVersion: \"7\"\n  uid: abc\n  generation: 2\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n  managedFields: []\nspec:\n  skipWarming: true\nstatus:\n  phase: Ready\n"
	o := parseOne(t, src)
	const want = `{"apiVersion":"meshrelay.io/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"east"},"spec":{"skipWarming":true}}`
	if string(o.Raw) != want {
		t.Errorf("Raw %s, want %s", o.Raw, want)
	}
	for _, f := range []string{"resourceVersion", "uid", "generation", "creationTimestamp", "managedFields", "status"} {
		if strings.Contains(string(o.Raw), f) {
			t.Errorf("Raw keeps %s", f)
		}
	}
}

func TestObjectResourceRoundTrip(t *testing.T) {
	o := parseOne(t, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  namespace: shop\n  labels:\n    kubernetes.io/service-name: web\nendpoints:\n- addresses: [\"10.0.0.1\"]\n")
	r := o.Resource()
	if r.Key != "EndpointSlice/shop/web-abc" {
		t.Errorf("resource key %q", r.Key)
	}
	if string(r.Body) != string(o.Raw) {
		t.Errorf("resource body %s differs from Raw %s", r.Body, o.Raw)
	}
	back, err := resource.FromResource(r)
	if err != nil {
		t.Fatal(err)
	}
	o.Source = "" // where it was read is not part of the content a resource carries
	if !reflect.DeepEqual(back, o) {
		t.Errorf("FromResource(Resource()) = %+v, want %+v", back, o)
	}
	if back.String() != `EndpointSlice "shop/web-abc"` {
		t.Errorf("String() = %s", back.String())
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// upstream is a static Upstream in namespace web whose single host is host.
func upstream(name, host string) string {
	return "apiVersion: meshrelay.io/v1alpha1\nkind: Upstream\nmetadata:\n  name: " + name + "\n  namespace: web\nspec:\n  static:\n    hosts:\n    - addr: " + host + "\n      port: 80\n"
}

// hostOf returns the first static host of an Upstream.
func hostOf(t *testing.T, o resource.Object) string {
	t.Helper()
	var u struct {
		Spec struct {
			Static struct {
				Hosts []struct {
					Addr string `json:"addr"`
				} `json:"hosts"`
			} `json:"static"`
		} `json:"spec"`
	}
	if err := o.Into(&u); err != nil || len(u.Spec.Static.Hosts) == 0 {
		t.Fatalf("%s: no static host (%v)", o, err)
	}
	return u.Spec.Static.Hosts[0].Addr
}

func TestLoadPath(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "10-clusters.yaml"), strings.ReplaceAll(goodCluster, "%s", "east")+"---\n"+strings.ReplaceAll(goodCluster, "%s", "west"))
	write(t, filepath.Join(dir, "20-upstreams.yml"), upstream("api", "first")+"---\n"+upstream("db", "db"))
	write(t, filepath.Join(dir, "nested", "deeper", "svc.json"), `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"shop"}}`)
	write(t, filepath.Join(dir, "zz", "override.yaml"), upstream("api", "second"))
	write(t, filepath.Join(dir, ".hidden", "x.yaml"), strings.ReplaceAll(goodCluster, "%s", "hidden-dir"))
	write(t, filepath.Join(dir, "nested", ".git", "y.yaml"), strings.ReplaceAll(goodCluster, "%s", "hidden-nested"))
	write(t, filepath.Join(dir, ".dotfile.yaml"), strings.ReplaceAll(goodCluster, "%s", "hidden-file"))
	write(t, filepath.Join(dir, "README.md"), "kind: nonsense\n")
	write(t, filepath.Join(dir, "notes.txt"), strings.ReplaceAll(goodCluster, "%s", "text-file"))
	write(t, filepath.Join(dir, "nested", "bad.yaml"), strings.ReplaceAll(goodCluster, "%s", "south")+"---\nkind: Nope\n")

	objs, errs := resource.LoadPath(dir)
	keys := map[string]resource.Object{}
	var order []string
	for _, o := range objs {
		keys[o.Key()] = o
		order = append(order, o.Key())
	}
	want := []string{
		"KubernetesCluster//east",
		"KubernetesCluster//south",
		"KubernetesCluster//west",
		"Service/shop/web",
		"Upstream/web/api",
		"Upstream/web/db",
	}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("loaded %v, want %v (sorted by key)", order, want)
	}
	if h := hostOf(t, keys["Upstream/web/api"]); h != "second" {
		t.Errorf("Upstream web/api host %q: the later file must win", h)
	}
	if len(errs) != 1 {
		t.Fatalf("errors %v, want one", errs)
	}
	var de *resource.DocumentError
	if !errors.As(errs[0], &de) || de.Source != filepath.Join(dir, "nested", "bad.yaml") || de.Document != 2 {
		t.Errorf("error %v, want a DocumentError for nested/bad.yaml document 2", errs[0])
	}
}

func TestLoadPathSingleFileAndMissing(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "one.yaml")
	write(t, f, upstream("api", "a")+"---\n"+upstream("api", "b"))
	objs, errs := resource.LoadPath(f)
	if len(errs) != 0 || len(objs) != 1 {
		t.Fatalf("got %d objects, errors %v; want one object", len(objs), errs)
	}
	if h := hostOf(t, objs[0]); h != "b" {
		t.Errorf("the later document of a file must win: host %q", h)
	}
	objs, errs = resource.LoadPath(filepath.Join(dir, "missing"))
	if len(objs) != 0 || len(errs) != 1 || !errors.Is(errs[0], os.ErrNotExist) {
		t.Errorf("missing path: %d objects, errors %v; want one ErrNotExist", len(objs), errs)
	}
}

func TestIsManifest(t *testing.T) {
	tests := map[string]bool{
		"a.yaml": true, "a.YML": true, "dir/a.json": true, "a.yaml.bak": false,
		".a.yaml": false, "dir/.a.yaml": false, "a.txt": false, "yaml": false,
	}
	for name, want := range tests {
		if got := resource.IsManifest(name); got != want {
			t.Errorf("IsManifest(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestCanonicalKind(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"kubernetesclusters", "KubernetesCluster", true},
		{"KubernetesCluster", "KubernetesCluster", true},
		{"KUBERNETESCLUSTER", "KubernetesCluster", true},
		{"Upstreams", "Upstream", true},
		{"upstream", "Upstream", true},
		{"gateways", "Gateway", true},
		{"services", "Service", true},
		{"endpointslices", "EndpointSlice", true},
		{"routetables", "RouteTable", true},
		{"failoverpolicy", "FailoverPolicy", true},
		{"virtualservice", "", false},
		{"", "", false},
		{"upstreamss", "", false},
	}
	for _, tc := range tests {
		got, ok := resource.CanonicalKind(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CanonicalKind(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// Kinds ending in "y" have plurals in "ies", as kubectl spells them.
func TestCanonicalKindPluralY(t *testing.T) {
	for in, want := range map[string]string{"failoverpolicies": "FailoverPolicy", "OutlierDetectionPolicies": "OutlierDetectionPolicy"} {
		if got, ok := resource.CanonicalKind(in); got != want || !ok {
			t.Errorf("CanonicalKind(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		kind, ns, name string
	}{
		{"KubernetesCluster", "", "east"},
		{"Upstream", "web", "api"},
		{"Service", "default", "a.b-c"},
	}
	for _, tc := range tests {
		key := resource.Key(tc.kind, tc.ns, tc.name)
		k, ns, n, err := resource.ParseKey(key)
		if err != nil || k != tc.kind || ns != tc.ns || n != tc.name {
			t.Errorf("ParseKey(%q) = %q %q %q %v; want %q %q %q", key, k, ns, n, err, tc.kind, tc.ns, tc.name)
		}
	}
	for _, bad := range []string{"", "Upstream", "Upstream/web", "/web/api", "Upstream/web/", "KubernetesCluster//"} {
		if _, _, _, err := resource.ParseKey(bad); err == nil || !strings.Contains(err.Error(), "invalid resource key") {
			t.Errorf("ParseKey(%q) error %v, want invalid resource key", bad, err)
		}
	}
	// Keys of parsed objects round-trip too.
	o := parseOne(t, strings.ReplaceAll(goodCluster, "%s", "east"))
	if k, ns, n, err := resource.ParseKey(o.Key()); err != nil || k != o.Kind || ns != o.Namespace || n != o.Name {
		t.Errorf("ParseKey(%q) = %q %q %q %v", o.Key(), k, ns, n, err)
	}
}

func TestDedupeKeepsLast(t *testing.T) {
	a1 := parseOne(t, upstream("a", "one"))
	a2 := parseOne(t, upstream("a", "two"))
	b := parseOne(t, upstream("b", "one"))
	got := resource.Dedupe([]resource.Object{b, a1, a2})
	if len(got) != 2 || got[0].Key() != "Upstream/web/a" || got[1].Key() != "Upstream/web/b" || string(got[0].Raw) != string(a2.Raw) {
		t.Errorf("Dedupe = %v", got)
	}
}

// TestServiceLoadBalancerStatusKept: of a Service's status only the load balancer's ingress
// IPs and hostnames are kept (where other clusters reach it, in universal mode as in
// Kubernetes mode).
func TestServiceLoadBalancerStatusKept(t *testing.T) {
	src := "apiVersion: v1\nkind: Service\nmetadata:\n  name: failover\n  namespace: gloo-system\nspec:\n  type: LoadBalancer\n  ports:\n  - {name: tls, port: 15443, nodePort: 32000}\nstatus:\n  conditions: [{type: Ready, status: \"True\"}]\n  loadBalancer:\n    ingress:\n    - {ip: 203.0.113.7, ipMode: VIP, ports: [{port: 15443, protocol: TCP}]}\n    - {hostname: lb.example.com}\n    - {ipMode: Proxy}\n"
	o := parseOne(t, src)
	const want = `{"apiVersion":"v1","kind":"Service","metadata":{"name":"failover","namespace":"gloo-system"},"spec":{"ports":[{"name":"tls","nodePort":32000,"port":15443}],"type":"LoadBalancer"},"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"},{"hostname":"lb.example.com"}]}}}`
	if string(o.Raw) != want {
		t.Errorf("Raw %s\nwant %s", o.Raw, want)
	}
}
