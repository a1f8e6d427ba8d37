package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Status is the observed state of a meshrelay custom resource. The management server writes
// it through the status subresource; users never do.
type Status struct {
	// ObservedGeneration is the metadata.generation the status describes.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions are the resource's conditions; ConditionAccepted says whether the
	// management server accepted the resource and, when it did not, which field is wrong
	// and why.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// SelectedClusters are the workload clusters the resource applies to, sorted.
	//
	// +optional
	// +listType=set
	SelectedClusters []string `json:"selectedClusters,omitempty"`
}

// ConditionAccepted is the condition type that says whether the management server accepted
// a resource: True when it translates it, False with ReasonInvalid (or another reason) and a
// message naming the field when it does not.
const ConditionAccepted = "Accepted"

// Reasons of ConditionAccepted.
const (
	// ReasonAccepted is the reason of an Accepted=True condition.
	ReasonAccepted = "Accepted"
	// ReasonInvalid is the reason of an Accepted=False condition for a resource that failed
	// validation; the message names the field and why.
	ReasonInvalid = "Invalid"
)
