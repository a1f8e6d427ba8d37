// Package v1alpha1 holds the Kubernetes custom resources of meshrelay (group meshrelay.io,
// version v1alpha1): one type per resource kind, embedding metav1.TypeMeta and
// metav1.ObjectMeta, with the spec types of api/v1alpha1 (the single source of truth for
// the fields) and a Status the management server writes (observedGeneration, conditions,
// the clusters a resource selects).
//
// controller-gen (scripts/generate.sh) generates the deep copies in zz_generated.deepcopy.go
// and the CRDs in charts/meshrelay-server/crds from these types and their markers. ToObject
// and FromObject convert between a custom resource and the api/v1alpha1 type the rest of
// meshrelay works with.
//
// +kubebuilder:object:generate=true
// +groupName=meshrelay.io
package v1alpha1
