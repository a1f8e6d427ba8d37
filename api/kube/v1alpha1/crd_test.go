package v1alpha1_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	kubev1alpha1 "github.com/meshrelay/meshrelay/api/kube/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/kubetest"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// TestCRDs runs meshrelay's CRDs on a real kube-apiserver: they install, every resource of
// the seeds and of the golden translation inputs is accepted unchanged, invalid fields are
// rejected naming the field, and the status subresource and printer columns work.
func TestCRDs(t *testing.T) {
	env := kubetest.Start(t)
	t.Run("installed", func(t *testing.T) { testInstalled(t, env) })
	t.Run("seeds", func(t *testing.T) { testSeeds(t, env) })
	t.Run("invalid", func(t *testing.T) { testInvalid(t, env) })
	t.Run("status", func(t *testing.T) { testStatus(t, env) })
	t.Run("printer columns", func(t *testing.T) { testPrinterColumns(t, env) })
}

func testInstalled(t *testing.T, env *kubetest.Env) {
	var installed []string
	for _, crd := range env.CRDs {
		if crd.Spec.Group == kubev1alpha1.GroupVersion.Group {
			installed = append(installed, crd.Spec.Names.Kind)
		}
	}
	slices.Sort(installed)
	if want := kubev1alpha1.Kinds(); !slices.Equal(installed, want) {
		t.Fatalf("CRDs installed for kinds %v, want one per kind %v", installed, want)
	}
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := env.Client.List(t.Context(), &crds); err != nil {
		t.Fatalf("list CRDs: %v", err)
	}
	for _, crd := range crds.Items {
		if crd.Spec.Group != kubev1alpha1.GroupVersion.Group {
			continue
		}
		kind := crd.Spec.Names.Kind
		if !established(crd) {
			t.Errorf("%s: CRD %s not established", kind, crd.Name)
		}
		wantScope := apiextensionsv1.NamespaceScoped
		if kind == "KubernetesCluster" {
			wantScope = apiextensionsv1.ClusterScoped
		}
		if crd.Spec.Scope != wantScope {
			t.Errorf("%s: scope %s, want %s", kind, crd.Spec.Scope, wantScope)
		}
		if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
			t.Fatalf("%s: versions %v, want v1alpha1 only", kind, crd.Spec.Versions)
		}
		v := crd.Spec.Versions[0]
		if v.Subresources == nil || v.Subresources.Status == nil {
			t.Errorf("%s: no status subresource", kind)
		}
		var cols []string
		for _, c := range v.AdditionalPrinterColumns {
			cols = append(cols, c.Name)
		}
		for _, want := range []string{"Accepted", "Age"} {
			if !slices.Contains(cols, want) {
				t.Errorf("%s: printer columns %v lack %s", kind, cols, want)
			}
		}
		if !slices.Contains(crd.Spec.Names.Categories, "meshrelay") {
			t.Errorf("%s: categories %v lack meshrelay", kind, crd.Spec.Names.Categories)
		}
	}
}

func established(crd apiextensionsv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return true
		}
	}
	return false
}

// doc is one YAML document of a test file.
type doc struct {
	file   string
	source string // file#document
	obj    map[string]any
}

// seedDocs reads the meshrelay resources of testdata/seeds.yaml and of the golden inputs of
// internal/translate/testdata.
func seedDocs(t *testing.T) []doc {
	t.Helper()
	files := []string{filepath.Join("testdata", "seeds.yaml")}
	root := filepath.Join(kubetest.RepoRoot(t), "internal", "translate", "testdata")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".golden.yaml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	var docs []doc
	for _, f := range files {
		for i, m := range readYAML(t, f) {
			kind, _ := m["kind"].(string)
			if slices.Contains(kubev1alpha1.Kinds(), kind) {
				docs = append(docs, doc{file: f, source: fmt.Sprintf("%s#%d", f, i+1), obj: m})
			}
		}
	}
	return docs
}

func readYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out []map[string]any
	for {
		b, err := r.Read()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
}

// create creates obj as `meshrelay apply` would: with apiVersion meshrelay.io/v1alpha1, in
// its namespace (created when missing), rejecting unknown fields.
func create(t *testing.T, env *kubetest.Env, obj map[string]any) (*unstructured.Unstructured, error) {
	t.Helper()
	u := &unstructured.Unstructured{Object: deepCopyJSON(t, obj)}
	u.SetAPIVersion(kubev1alpha1.GroupVersion.String())
	if u.GetKind() != "KubernetesCluster" {
		if u.GetNamespace() == "" {
			u.SetNamespace("default")
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: u.GetNamespace()}}
		if err := env.Client.Create(t.Context(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create namespace %s: %v", u.GetNamespace(), err)
		}
	}
	return u, env.Client.Create(t.Context(), u, client.FieldValidation(metav1.FieldValidationStrict))
}

func deepCopyJSON(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func testSeeds(t *testing.T, env *kubetest.Env) {
	docs := seedDocs(t)
	seen := map[string]int{}
	for i, d := range docs {
		// The files are of different clusters and cases and reuse names: each file's
		// resources are deleted before the next file's are created.
		if i > 0 && d.file != docs[i-1].file {
			deleteAll(t, env)
		}
		u, err := create(t, env, d.obj)
		if err != nil {
			t.Errorf("%s: create %s %s: %v", d.source, u.GetKind(), u.GetName(), err)
			continue
		}
		seen[u.GetKind()]++

		// The API server keeps the spec exactly as written: no field pruned or defaulted.
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(u), got); err != nil {
			t.Fatalf("%s: get: %v", d.source, err)
		}
		if want, have := jsonOf(t, d.obj["spec"]), jsonOf(t, got.Object["spec"]); !reflect.DeepEqual(want, have) {
			t.Errorf("%s: spec changed by the API server\nwrote %v\nread  %v", d.source, want, have)
		}

		// The typed custom resource converts to a resource the rest of meshrelay accepts.
		cr, err := kubev1alpha1.New(u.GetKind())
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(u), cr); err != nil {
			t.Fatalf("%s: get typed: %v", d.source, err)
		}
		obj, err := kubev1alpha1.ToObject(cr)
		if err != nil {
			t.Fatalf("%s: %v", d.source, err)
		}
		js, err := json.Marshal(obj)
		if err != nil {
			t.Fatalf("%s: marshal: %v", d.source, err)
		}
		if _, err := resource.Decode(js); err != nil {
			t.Errorf("%s: converted resource rejected: %v\n%s", d.source, err, js)
		}
	}
	for _, kind := range kubev1alpha1.Kinds() {
		if seen[kind] == 0 {
			t.Errorf("no %s among the %d seed documents", kind, len(docs))
		}
	}
	t.Logf("created %d resources: %v", len(docs), seen)
	deleteAll(t, env)
}

// deleteAll deletes every meshrelay custom resource.
func deleteAll(t *testing.T, env *kubetest.Env) {
	t.Helper()
	for _, kind := range kubev1alpha1.Kinds() {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(kubev1alpha1.GroupVersion.WithKind(kind + "List"))
		if err := env.Client.List(t.Context(), l); err != nil {
			t.Fatalf("list %s: %v", kind, err)
		}
		for _, o := range l.Items {
			if err := env.Client.Delete(t.Context(), &o); err != nil && !apierrors.IsNotFound(err) {
				t.Fatalf("delete %s %s/%s: %v", kind, o.GetNamespace(), o.GetName(), err)
			}
		}
	}
}

// jsonOf normalizes a JSON-like value (numbers as float64).
func jsonOf(t *testing.T, v any) any {
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

func testInvalid(t *testing.T, env *kubetest.Env) {
	gateway := func(spec string) string {
		return "apiVersion: meshrelay.io/v1alpha1\nkind: Gateway\nmetadata: {name: gw, namespace: invalid}\nspec:\n" + spec
	}
	tests := []struct {
		name string
		yaml string
		// want are substrings of the error: the field path and the reason.
		want []string
	}{
		{"wrong type", gateway("  bindPort: \"15443\"\n  httpGateway: {}\n"),
			[]string{"spec.bindPort", "must be of type integer"}},
		{"missing required field", `
apiVersion: meshrelay.io/v1alpha1
kind: FailoverScheme
metadata: {name: fs, namespace: invalid}
spec:
  primary: {name: default-service-blue-10000}
  failoverGroups:
  - priorityGroup:
    - cluster: remote
      upstreams: [{name: default-service-green-10000}]
`, []string{"spec.primary.clusterName", "Required value"}},
		{"missing spec", "apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: rt, namespace: invalid}\n",
			[]string{"spec", "Required value"}},
		{"port out of range", gateway("  bindPort: 70000\n  httpGateway: {}\n"),
			[]string{"spec.bindPort", "less than or equal to 65535"}},
		{"empty list", `
apiVersion: meshrelay.io/v1alpha1
kind: FailoverScheme
metadata: {name: fs, namespace: invalid}
spec:
  primary: {clusterName: local, name: default-service-blue-10000}
  failoverGroups: []
`, []string{"spec.failoverGroups", "at least 1 items"}},
		{"not a duration", `
apiVersion: meshrelay.io/v1alpha1
kind: Upstream
metadata: {name: us, namespace: invalid}
spec:
  healthChecks:
  - {timeout: 1 second, interval: 1s, httpHealthCheck: {path: /health}}
`, []string{"spec.healthChecks[0].timeout", "should match"}},
		{"not in enum", `
apiVersion: meshrelay.io/v1alpha1
kind: VirtualDestination
metadata: {name: vd, namespace: invalid}
spec:
  hosts: [reviews.global]
  ports: [{number: 9080, protocol: SMTP}]
  services: [{labels: {app: reviews}}]
`, []string{"spec.ports[0].protocol", "Unsupported value", "SMTP"}},
		{"both listener kinds", gateway("  bindPort: 8080\n  httpGateway: {}\n  tcpGateway: {tcpHosts: [{name: a, destination: {forwardSniClusterName: {}}}]}\n"),
			[]string{"spec", "exactly one of httpGateway, tcpGateway must be set"}},
		{"unknown field", gateway("  bindPort: 8080\n  httpGateway: {}\n  bindPorts: 8081\n"),
			[]string{"unknown field", "spec.bindPorts"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(tc.yaml), &m); err != nil {
				t.Fatal(err)
			}
			_, err := create(t, env, m)
			if err == nil {
				t.Fatalf("created; want it rejected with %q", tc.want)
			}
			t.Logf("rejected: %v", err)
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Errorf("error %v is not Invalid or BadRequest", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func newFailoverScheme(t *testing.T, env *kubetest.Env, name string) *kubev1alpha1.FailoverScheme {
	t.Helper()
	m := readYAML(t, filepath.Join("testdata", "seeds.yaml"))
	var fs map[string]any
	for _, d := range m {
		if d["kind"] == "FailoverScheme" {
			fs = d
		}
	}
	fs = deepCopyJSON(t, fs)
	fs["metadata"].(map[string]any)["name"] = name
	if _, err := create(t, env, fs); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := &kubev1alpha1.FailoverScheme{}
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: "gloo-fed", Name: name}, got); err != nil {
		t.Fatalf("get: %v", err)
	}
	return got
}

func testStatus(t *testing.T, env *kubetest.Env) {
	ctx := t.Context()
	fs := newFailoverScheme(t, env, "status")
	if fs.Generation != 1 {
		t.Fatalf("generation %d, want 1", fs.Generation)
	}

	// The status subresource writes the status only.
	fs.Status = kubev1alpha1.Status{ObservedGeneration: fs.Generation, SelectedClusters: []string{"local", "remote"}}
	meta.SetStatusCondition(&fs.Status.Conditions, metav1.Condition{
		Type: kubev1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: kubev1alpha1.ReasonAccepted, ObservedGeneration: fs.Generation,
	})
	fs.Spec.Primary.ClusterName = "changed-through-status"
	if err := env.Client.Status().Update(ctx, fs); err != nil {
		t.Fatalf("update status: %v", err)
	}
	got := &kubev1alpha1.FailoverScheme{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(fs), got); err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Spec.Primary.ClusterName != "local" || got.Generation != 1 {
		t.Errorf("status update changed spec or generation: primary cluster %q, generation %d", got.Spec.Primary.ClusterName, got.Generation)
	}
	if !meta.IsStatusConditionTrue(got.Status.Conditions, kubev1alpha1.ConditionAccepted) || got.Status.ObservedGeneration != 1 ||
		!slices.Equal(got.Status.SelectedClusters, []string{"local", "remote"}) {
		t.Errorf("status not stored: %+v", got.Status)
	}

	// An update of the resource leaves the status alone and bumps the generation.
	got.Spec.FailoverGroups[0].PriorityGroup[0].Cluster = "remote-2"
	got.Status = kubev1alpha1.Status{}
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got.Generation != 2 || got.Status.ObservedGeneration != 1 || len(got.Status.Conditions) != 1 {
		t.Errorf("after a spec update: generation %d (want 2), status %+v (want the old one)", got.Generation, got.Status)
	}

	// A rejected resource's status names the field.
	meta.SetStatusCondition(&got.Status.Conditions, metav1.Condition{
		Type: kubev1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: kubev1alpha1.ReasonInvalid,
		Message: "spec.failoverGroups[0].priorityGroup[0].cluster: unknown cluster \"remote-2\"", ObservedGeneration: got.Generation,
	})
	got.Status.ObservedGeneration = got.Generation
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatalf("update status: %v", err)
	}
	c := meta.FindStatusCondition(got.Status.Conditions, kubev1alpha1.ConditionAccepted)
	if c == nil || c.Status != metav1.ConditionFalse || got.Status.ObservedGeneration != 2 {
		t.Errorf("status after rejection: %+v", got.Status)
	}
}

func testPrinterColumns(t *testing.T, env *kubetest.Env) {
	fs := newFailoverScheme(t, env, "columns")
	meta.SetStatusCondition(&fs.Status.Conditions, metav1.Condition{
		Type: kubev1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: kubev1alpha1.ReasonAccepted,
	})
	fs.Status.SelectedClusters = []string{"local", "remote"}
	if err := env.Client.Status().Update(t.Context(), fs); err != nil {
		t.Fatalf("update status: %v", err)
	}

	// What `kubectl get failoverschemes` and `kubectl get failoverschemes -o wide` print.
	table := getTable(t, env, "/apis/meshrelay.io/v1alpha1/namespaces/gloo-fed/failoverschemes/columns")
	row := map[string]any{}
	var cols []string
	for i, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
		row[c.Name] = table.Rows[0].Cells[i]
	}
	wantCols := []string{"Name", "Primary-Cluster", "Primary", "Groups", "Clusters", "Accepted", "Message", "Age"}
	if !slices.Equal(cols, wantCols) {
		t.Errorf("columns %v, want %v", cols, wantCols)
	}
	want := map[string]any{
		"Name":            "columns",
		"Primary-Cluster": "local",
		"Primary":         "default-service-blue-10000",
		"Clusters":        `["local","remote"]`,
		"Accepted":        "True",
		"Groups":          `[{"priorityGroup":[{"cluster":"remote","upstreams":[{"name":"default-service-green-10000","namespace":"gloo-system"}]}]}]`,
	}
	for col, w := range want {
		if row[col] != w {
			t.Errorf("column %s = %v, want %v", col, row[col], w)
		}
	}
}

func getTable(t *testing.T, env *kubetest.Env, path string) metav1.Table {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, strings.TrimSuffix(env.Config.Host, "/")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("get %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("get %s: %s %v: %s", path, resp.Status, err, body)
	}
	var table metav1.Table
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&table); err != nil {
		t.Fatalf("decode table: %v", err)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("table has %d rows, want 1", len(table.Rows))
	}
	return table
}
