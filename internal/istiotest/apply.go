package istiotest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/kubetest"
)

// fieldOwner is the server-side apply field manager of Apply.
const fieldOwner = "istiotest"

// Apply writes the objects of a multi-document YAML manifest to env's API server with
// server-side apply, in order (a Namespace before what it holds). An object's status, when
// given, is applied to its status subresource afterwards, so that a test can give a Pod the
// IP that a kubelet would report. Any error fails the test, naming the object.
func Apply(t testing.TB, env *kubetest.Env, manifest string) {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(manifest)), 4096)
	for i := 0; ; i++ {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("istiotest: apply: decode document %d: %v", i, err)
		}
		if len(u.Object) == 0 {
			continue // an empty document
		}
		status, hasStatus := u.Object["status"]
		delete(u.Object, "status")
		what := u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
		if err := env.Client.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			t.Fatalf("istiotest: apply %s: %v", what, err)
		}
		if !hasStatus {
			continue
		}
		s := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
			"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace()},
			"status":   status,
		}}
		if err := env.Client.Status().Apply(t.Context(), client.ApplyConfigurationFromUnstructured(s), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			t.Fatalf("istiotest: apply the status of %s: %v", what, err)
		}
	}
}
