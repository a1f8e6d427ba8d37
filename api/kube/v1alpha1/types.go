package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1alpha1 "github.com/meshrelay/meshrelay/api/v1alpha1"
)

// KubernetesCluster registers a workload cluster with the management server.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=kc,categories=meshrelay
// +kubebuilder:printcolumn:name="Domain",type=string,JSONPath=`.spec.clusterDomain`
// +kubebuilder:printcolumn:name="Skip-Warming",type=boolean,JSONPath=`.spec.skipWarming`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type KubernetesCluster struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired cluster; it may be empty.
	//
	// +optional
	Spec apiv1alpha1.KubernetesClusterSpec `json:"spec,omitzero"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// KubernetesClusterList is a list of KubernetesClusters.
//
// +kubebuilder:object:root=true
type KubernetesClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubernetesCluster `json:"items"`
}

// Upstream is a destination in one workload cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=us,categories=meshrelay
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.kube.serviceName`
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.kube.servicePort`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Upstream struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired Upstream.
	//
	// +required
	Spec apiv1alpha1.UpstreamSpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// UpstreamList is a list of Upstreams.
//
// +kubebuilder:object:root=true
type UpstreamList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Upstream `json:"items"`
}

// FailoverScheme makes traffic to a primary Upstream fail over, in priority order, to
// Upstreams in other clusters.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fs,categories=meshrelay
// +kubebuilder:printcolumn:name="Primary-Cluster",type=string,JSONPath=`.spec.primary.clusterName`
// +kubebuilder:printcolumn:name="Primary",type=string,JSONPath=`.spec.primary.name`
// +kubebuilder:printcolumn:name="Groups",type=string,JSONPath=`.spec.failoverGroups`,priority=1
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.status.selectedClusters`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FailoverScheme struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired failover.
	//
	// +required
	Spec apiv1alpha1.FailoverSchemeSpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// FailoverSchemeList is a list of FailoverSchemes.
//
// +kubebuilder:object:root=true
type FailoverSchemeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FailoverScheme `json:"items"`
}

// Gateway is a listener of the gateways of a workload cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshrelay
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.bindPort`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Gateway struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired listener.
	//
	// +required
	Spec apiv1alpha1.GatewaySpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// GatewayList is a list of Gateways.
//
// +kubebuilder:object:root=true
type GatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Gateway `json:"items"`
}

// RouteTable holds HTTP routes for a set of hosts.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rt,categories=meshrelay
// +kubebuilder:printcolumn:name="Hosts",type=string,JSONPath=`.spec.hosts`
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.status.selectedClusters`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RouteTable struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired routing.
	//
	// +required
	Spec apiv1alpha1.RouteTableSpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// RouteTableList is a list of RouteTables.
//
// +kubebuilder:object:root=true
type RouteTableList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RouteTable `json:"items"`
}

// VirtualDestination gives one global hostname and set of ports to a service that runs in
// many clusters.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vd,categories=meshrelay
// +kubebuilder:printcolumn:name="Hosts",type=string,JSONPath=`.spec.hosts`
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.status.selectedClusters`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualDestination struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired VirtualDestination.
	//
	// +required
	Spec apiv1alpha1.VirtualDestinationSpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// VirtualDestinationList is a list of VirtualDestinations.
//
// +kubebuilder:object:root=true
type VirtualDestinationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualDestination `json:"items"`
}

// FailoverPolicy turns on locality-ordered failover for the VirtualDestinations it selects.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fp,categories=meshrelay
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.status.selectedClusters`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FailoverPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired policy.
	//
	// +required
	Spec apiv1alpha1.FailoverPolicySpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// FailoverPolicyList is a list of FailoverPolicies.
//
// +kubebuilder:object:root=true
type FailoverPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FailoverPolicy `json:"items"`
}

// OutlierDetectionPolicy ejects misbehaving endpoints of the VirtualDestinations it selects.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=odp,categories=meshrelay
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.status.selectedClusters`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type OutlierDetectionPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the desired policy.
	//
	// +required
	Spec apiv1alpha1.OutlierDetectionPolicySpec `json:"spec"`
	// Status is written by the management server.
	//
	// +optional
	Status Status `json:"status,omitzero"`
}

// OutlierDetectionPolicyList is a list of OutlierDetectionPolicies.
//
// +kubebuilder:object:root=true
type OutlierDetectionPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []OutlierDetectionPolicy `json:"items"`
}
