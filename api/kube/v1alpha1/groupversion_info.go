package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	apiv1alpha1 "github.com/meshrelay/meshrelay/api/v1alpha1"
)

// GroupVersion is the group and version of meshrelay's custom resources.
var GroupVersion = schema.GroupVersion{Group: apiv1alpha1.Group, Version: "v1alpha1"}

var (
	// SchemeBuilder registers the custom resources of this package with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the custom resources of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&KubernetesCluster{}, &KubernetesClusterList{},
		&Upstream{}, &UpstreamList{},
		&FailoverScheme{}, &FailoverSchemeList{},
		&Gateway{}, &GatewayList{},
		&RouteTable{}, &RouteTableList{},
		&VirtualDestination{}, &VirtualDestinationList{},
		&FailoverPolicy{}, &FailoverPolicyList{},
		&OutlierDetectionPolicy{}, &OutlierDetectionPolicyList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
