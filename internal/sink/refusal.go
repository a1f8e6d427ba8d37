package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Refusal is an object of an output that the cluster refused while the rest was applied.
type Refusal struct {
	// Key is the object's key in the output snapshot.
	Key string `json:"key"`
	// Object is Kind/namespace/name.
	Object string `json:"object"`
	// Reason is the API server's answer.
	Reason string `json:"reason"`
}

// RefusedError is the error of an Apply that applied the output except for objects the API
// server refused for a reason retrying the same object does not fix (a Terminating namespace,
// an admission policy, a schema, a missing kind, RBAC). The output counts as applied: stale
// objects were pruned, the deletion guard's epoch moved, and resync retries the refused
// objects. Failures retrying may fix (the API server unreachable, a timeout) are returned as
// a plain error instead, and the output is not applied.
type RefusedError struct {
	Version  uint64
	Cluster  string
	Refusals []Refusal // sorted by object
}

func (e *RefusedError) Error() string {
	parts := make([]string, len(e.Refusals))
	for i, r := range e.Refusals {
		parts[i] = r.Reason
	}
	return fmt.Sprintf("sink: output version %d applied to cluster %s except %d refused objects: %s", e.Version, e.Cluster, len(e.Refusals), strings.Join(parts, "; "))
}

// ObjectRefusals returns output key → reason of every refused object.
func (e *RefusedError) ObjectRefusals() map[string]string {
	out := make(map[string]string, len(e.Refusals))
	for _, r := range e.Refusals {
		out[r.Key] = r.Reason
	}
	return out
}

// refused reports whether err is the API server refusing one object, as opposed to a failure
// of the API server or of the connection to it.
func refused(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsRequestEntityTooLargeError(err) ||
		apierrors.IsNotAcceptable(err) || apierrors.IsUnsupportedMediaType(err)
}

func refusalErrs(rs []Refusal) []error {
	out := make([]error, len(rs))
	for i, r := range rs {
		out[i] = errors.New(r.Reason)
	}
	return out
}

var namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// applyObject applies w with server-side apply. When its namespace does not exist, it
// creates the namespace, labelled LabelManagedBy=ManagedBy, and applies again; the sink
// never deletes a namespace.
func (k *Kube) applyObject(ctx context.Context, w *wantObject) (*unstructured.Unstructured, error) {
	ri := k.client.Resource(w.gvr).Namespace(w.id.namespace)
	opts := metav1.ApplyOptions{FieldManager: k.cfg.FieldManager, Force: true}
	got, err := ri.Apply(ctx, w.id.name, w.obj, opts)
	if !missingNamespace(err, w.id.namespace) {
		return got, err
	}
	if err := k.createNamespace(ctx, w.id.namespace); err != nil {
		return nil, err
	}
	return ri.Apply(ctx, w.id.name, w.obj, opts)
}

// missingNamespace reports whether err says that namespace ns does not exist.
func missingNamespace(err error, ns string) bool {
	var se apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &se) {
		return false
	}
	d := se.Status().Details
	return d != nil && d.Kind == "namespaces" && d.Name == ns
}

// createNamespace creates namespace ns for the output's objects.
func (k *Kube) createNamespace(ctx context.Context, ns string) error {
	o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": ns, "labels": map[string]any{LabelManagedBy: ManagedBy, LabelCluster: k.cfg.Cluster}}}}
	_, err := k.client.Resource(namespaces).Create(ctx, o, metav1.CreateOptions{FieldManager: k.cfg.FieldManager})
	switch {
	case apierrors.IsAlreadyExists(err):
		return nil // made meanwhile; the second apply says whether it takes objects
	case err != nil:
		return fmt.Errorf("namespace %s does not exist and could not be created: %w", ns, err)
	}
	k.m.writes.WithLabelValues("create-namespace").Inc()
	k.log.Info("namespace created for the output", "cluster", k.cfg.Cluster, "namespace", ns)
	return nil
}

// setRefusals records the objects the last step refused, logging those that appeared or
// cleared.
func (k *Kube) setRefusals(rs []Refusal) {
	k.statusMu.Lock()
	defer k.statusMu.Unlock()
	prev := map[string]string{}
	for _, r := range k.status.Refused {
		prev[r.Object] = r.Reason
	}
	now := map[string]bool{}
	for _, r := range rs {
		now[r.Object] = true
		if prev[r.Object] != r.Reason {
			k.log.Warn("output object refused by the cluster", "cluster", k.cfg.Cluster, "object", r.Object, "resource", r.Key, "reason", r.Reason)
		}
	}
	for o := range prev {
		if !now[o] {
			k.log.Info("output object no longer refused", "cluster", k.cfg.Cluster, "object", o)
		}
	}
	k.status.Refused = rs
}
