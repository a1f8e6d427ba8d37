package istiotest

import (
	"fmt"
	"maps"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// IstioVersion is the ISTIO_VERSION proxies announce: the minor release of the pinned istiod,
// so that istiod gives them its current configuration rather than a compatibility one.
const IstioVersion = "1.31.0"

// Proxy is the Envoy that asks istiod for configuration: the node ID and metadata an
// istio-proxy would send. Build one with Sidecar or Router and change the fields a test
// needs.
type Proxy struct {
	// Type is "sidecar" or "router" (a gateway).
	Type string
	// IP is the proxy's address. istiod takes the labels of a Pod with this IP when there is
	// one, and Labels otherwise. Nothing ever connects to it.
	IP string
	// Name and Namespace are the pod's.
	Name, Namespace string
	// Labels are the workload's labels (metadata LABELS): what Sidecars, Gateways and
	// workloadSelectors select.
	Labels map[string]string
	// Region and Zone are the proxy's locality, sent as the Envoy node's locality; istiod
	// orders endpoints into priorities by their locality relative to it.
	Region, Zone string
	// Network is the proxy's network (metadata NETWORK).
	Network string
	// RequestedNetworkView lists the networks whose endpoints the proxy wants to see
	// (metadata REQUESTED_NETWORK_VIEW); empty means all.
	RequestedNetworkView []string
	// ClusterID is the proxy's cluster (metadata CLUSTER_ID); empty means istiod's own.
	ClusterID string
}

// Sidecar returns a sidecar proxy of pod namespace/name at a documentation address
// (203.0.113.1).
func Sidecar(namespace, name string) Proxy {
	return Proxy{Type: "sidecar", IP: "203.0.113.1", Name: name, Namespace: namespace}
}

// Router returns a gateway proxy of pod namespace/name at a documentation address
// (203.0.113.2) with these workload labels (e.g. istio=eastwestgateway, which Gateways
// select).
func Router(namespace, name string, labels map[string]string) Proxy {
	return Proxy{Type: "router", IP: "203.0.113.2", Name: name, Namespace: namespace, Labels: maps.Clone(labels)}
}

// ID is the node ID istio-proxy sends: type~ip~pod.namespace~namespace.svc.cluster.local.
func (p Proxy) ID() string {
	return fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", p.Type, p.IP, p.Name, p.Namespace, p.Namespace)
}

// String names the proxy in messages.
func (p Proxy) String() string { return p.ID() }

// node returns the Envoy node: ID, locality and the metadata istiod reads (pkg/model's
// NodeMetadata; its lists are comma-separated strings).
func (p Proxy) node(defaultCluster string) (*corev3.Node, error) {
	cluster := p.ClusterID
	if cluster == "" {
		cluster = defaultCluster
	}
	labels := map[string]any{}
	for k, v := range p.Labels {
		labels[k] = v
	}
	md := map[string]any{
		"ISTIO_VERSION": IstioVersion,
		"NAMESPACE":     p.Namespace,
		"NAME":          p.Name,
		"INSTANCE_IPS":  p.IP,
		"LABELS":        labels,
		"CLUSTER_ID":    cluster,
		"MESH_ID":       "cluster.local",
	}
	if p.Network != "" {
		md["NETWORK"] = p.Network
	}
	if len(p.RequestedNetworkView) > 0 {
		md["REQUESTED_NETWORK_VIEW"] = strings.Join(p.RequestedNetworkView, ",")
	}
	s, err := structpb.NewStruct(md)
	if err != nil {
		return nil, fmt.Errorf("node metadata of %s: %w", p.ID(), err)
	}
	n := &corev3.Node{Id: p.ID(), Cluster: p.Name + "." + p.Namespace, Metadata: s}
	if p.Region != "" || p.Zone != "" {
		n.Locality = &corev3.Locality{Region: p.Region, Zone: p.Zone}
	}
	return n, nil
}
