package discovery

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestServiceFromKube(t *testing.T) {
	tests := []struct {
		name  string
		svc   corev1.Service
		nodes string // the cluster's node addresses
		want  string
	}{{
		name: "defaults filled by the API server, extras dropped, load balancer ingress kept",
		svc: corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "blue", Namespace: "web", Labels: map[string]string{"app": "blue"},
				Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}, ResourceVersion: "7", UID: "u"},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.5", ClusterIPs: []string{"10.0.0.5"},
				Selector: map[string]string{"app": "blue"}, SessionAffinity: corev1.ServiceAffinityNone,
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "1.2.3.4", IPMode: ptrTo(corev1.LoadBalancerIPModeVIP)}}},
				Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}},
		},
		nodes: "192.168.0.1",
		want:  `{"apiVersion":"v1","kind":"Service","metadata":{"labels":{"app":"blue"},"name":"blue","namespace":"web"},"spec":{"clusterIP":"10.0.0.5","ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app":"blue"},"type":"ClusterIP"},"status":{"loadBalancer":{"ingress":[{"ip":"1.2.3.4"}]}}}`,
	}, {
		name: "load balancer without ingress takes the node addresses",
		svc: corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "gloo-system", Annotations: map[string]string{"other": "x"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.0.0.9",
				Ports: []corev1.ServicePort{{Name: "tls", Protocol: corev1.ProtocolTCP, Port: 15443, TargetPort: intstr.FromInt32(15443), NodePort: 32000}}},
		},
		nodes: "192.168.0.1,192.168.0.2",
		want:  `{"apiVersion":"v1","kind":"Service","metadata":{"annotations":{"meshrelay.io/node-addresses":"192.168.0.1,192.168.0.2"},"name":"gw","namespace":"gloo-system"},"spec":{"clusterIP":"10.0.0.9","ports":[{"name":"tls","nodePort":32000,"port":15443,"protocol":"TCP","targetPort":15443}],"type":"LoadBalancer"}}`,
	}, {
		name: "a configured address: no node addresses",
		svc: corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "gloo-system", Annotations: map[string]string{"meshrelay.io/failover-address": "203.0.113.1:443"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.0.0.9",
				Ports: []corev1.ServicePort{{Name: "tls", Protocol: corev1.ProtocolTCP, Port: 15443, TargetPort: intstr.FromInt32(15443), NodePort: 32000}}},
		},
		nodes: "192.168.0.1",
		want:  `{"apiVersion":"v1","kind":"Service","metadata":{"annotations":{"meshrelay.io/failover-address":"203.0.113.1:443"},"name":"gw","namespace":"gloo-system"},"spec":{"clusterIP":"10.0.0.9","ports":[{"name":"tls","nodePort":32000,"port":15443,"protocol":"TCP","targetPort":15443}],"type":"NodePort"}}`,
	}, {
		name: "named target port and node port",
		svc: corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: "gloo-system"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.0.0.9",
				Ports: []corev1.ServicePort{{Name: "tls", Protocol: corev1.ProtocolTCP, Port: 15443, TargetPort: intstr.FromString("tls"), NodePort: 32000}}},
		},
		want: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"gw","namespace":"gloo-system"},"spec":{"clusterIP":"10.0.0.9","ports":[{"name":"tls","nodePort":32000,"port":15443,"protocol":"TCP","targetPort":"tls"}],"type":"LoadBalancer"}}`,
	}, {
		name: "headless without ports",
		svc: corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "data"},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone},
		},
		want: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"db","namespace":"data"},"spec":{"clusterIP":"None","type":"ClusterIP"}}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := decode("svc", ServiceFromKube(&tt.svc, tt.nodes))
			if err != nil {
				t.Fatal(err)
			}
			if string(o.Raw) != tt.want {
				t.Errorf("got  %s\nwant %s", o.Raw, tt.want)
			}
		})
	}
}

func TestEndpointSliceFromKube(t *testing.T) {
	zones := map[string]string{"node-a": "zone-a"}
	zoneOf := func(n string) string { return zones[n] }
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "blue-x1", Namespace: "web", ResourceVersion: "9",
			Labels: map[string]string{"kubernetes.io/service-name": "blue", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node-a"),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "blue-1"}},
			{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)},
				Zone: ptr.To("zone-b"), NodeName: ptr.To("node-a"), Hostname: ptr.To("blue-2")},
			{Addresses: []string{"10.1.0.3"}, NodeName: ptr.To("node-unknown")},
		},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP), AppProtocol: ptr.To("http")},
			{Name: ptr.To("all")}, // no number: "all ports", left out
		},
	}
	o, err := decode("slice", EndpointSliceFromKube(es, zoneOf))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","endpoints":[` +
		`{"addresses":["10.1.0.1"],"conditions":{"ready":true},"nodeName":"node-a","zone":"zone-a"},` +
		`{"addresses":["10.1.0.2"],"conditions":{"ready":false,"serving":true,"terminating":true},"hostname":"blue-2","nodeName":"node-a","zone":"zone-b"},` +
		`{"addresses":["10.1.0.3"],"conditions":{},"nodeName":"node-unknown"}],` +
		`"kind":"EndpointSlice","metadata":{"labels":{"endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io","kubernetes.io/service-name":"blue"},"name":"blue-x1","namespace":"web"},` +
		`"ports":[{"appProtocol":"http","name":"http","port":8080,"protocol":"TCP"}]}`
	if string(o.Raw) != want {
		t.Errorf("got  %s\nwant %s", o.Raw, want)
	}
}

func TestEndpointSliceWithoutServiceIsRejectedByDecode(t *testing.T) {
	// build() skips such slices before decoding; decode itself would reject them.
	_, err := decode("slice", EndpointSliceFromKube(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "web"}}, nil))
	if err == nil || !strings.Contains(err.Error(), "kubernetes.io/service-name") {
		t.Fatalf("err = %v, want the missing service-name label", err)
	}
}

func TestTrimObject(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"topology.kubernetes.io/zone": "z"}, Annotations: map[string]string{"a": "b"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec:   corev1.NodeSpec{PodCIDR: "10.0.0.0/24"},
		Status: corev1.NodeStatus{Phase: corev1.NodeRunning},
	}
	got, err := trimObject(n)
	if err != nil {
		t.Fatal(err)
	}
	tn := got.(*corev1.Node)
	if tn.Annotations != nil || tn.ManagedFields != nil || tn.Spec.PodCIDR != "" || tn.Status.Phase != "" || tn.Labels["topology.kubernetes.io/zone"] != "z" {
		t.Errorf("trimmed node = %+v", tn)
	}
	if nodeZone(got) != "z" {
		t.Errorf("zone = %q", nodeZone(got))
	}
}

func TestKubeConfigValidate(t *testing.T) {
	for _, c := range []KubeConfig{{Namespaces: []string{""}}, {Namespaces: []string{"a", "a"}}, {Debounce: -1}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := NewKube(nil, KubeConfig{}, nil); err == nil {
		t.Error("nil client accepted")
	}
}
