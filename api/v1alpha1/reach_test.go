package v1alpha1

import (
	"reflect"
	"strings"
	"testing"
)

func TestExternalReach(t *testing.T) {
	port := ServicePort{Name: "failover", Port: 15443, NodePort: 32000}
	lb := func(ins ...LoadBalancerIngress) *ServiceStatus {
		return &ServiceStatus{LoadBalancer: LoadBalancerStatus{Ingress: ins}}
	}
	svc := func(typ string, ann map[string]string, st *ServiceStatus) Service {
		return Service{Metadata: ObjectMeta{Name: "failover", Namespace: "gloo-system", Annotations: ann}, Spec: ServiceSpec{Type: typ}, Status: st}
	}
	nodes := map[string]string{AnnotationNodeAddresses: "192.168.0.2,192.168.0.1"}
	tests := []struct {
		name   string
		svc    Service
		port   ServicePort
		want   []HostPort
		source string
		note   string // a substring of the notes, when some are expected
	}{
		{"load balancer ip first", svc("LoadBalancer", map[string]string{AnnotationFailoverAddress: "1.1.1.1:443", AnnotationNodeAddresses: "192.168.0.1"}, lb(LoadBalancerIngress{IP: "203.0.113.7"})), port,
			[]HostPort{{"203.0.113.7", 15443}}, ReachLoadBalancer, ""},
		{"several ingress ips", svc("LoadBalancer", nil, lb(LoadBalancerIngress{IP: "203.0.113.7"}, LoadBalancerIngress{IP: "2001:db8::1"})), port,
			[]HostPort{{"203.0.113.7", 15443}, {"2001:db8::1", 15443}}, ReachLoadBalancer, ""},
		{"hostname ingress skipped for the annotation", svc("LoadBalancer", map[string]string{AnnotationFailoverAddress: "198.51.100.1:8443, 198.51.100.2:8443"}, lb(LoadBalancerIngress{Hostname: "a.elb.example.com"})), port,
			[]HostPort{{"198.51.100.1", 8443}, {"198.51.100.2", 8443}}, ReachAnnotation, `hostname "a.elb.example.com" skipped`},
		{"annotation on a ClusterIP service", svc("ClusterIP", map[string]string{AnnotationFailoverAddress: "[2001:db8::2]:15443"}, nil), port,
			[]HostPort{{"2001:db8::2", 15443}}, ReachAnnotation, ""},
		{"bad annotation falls through to node ports", svc("LoadBalancer", map[string]string{AnnotationFailoverAddress: "gw.example.com:443", AnnotationNodeAddresses: "192.168.0.2,192.168.0.1"}, nil), port,
			[]HostPort{{"192.168.0.2", 32000}, {"192.168.0.1", 32000}}, ReachNodePort, `"gw.example.com:443" is not ip:port`},
		{"load balancer without ingress uses node ports", svc("LoadBalancer", nodes, lb()), port,
			[]HostPort{{"192.168.0.2", 32000}, {"192.168.0.1", 32000}}, ReachNodePort, ""},
		{"node port service", svc("NodePort", nodes, nil), port,
			[]HostPort{{"192.168.0.2", 32000}, {"192.168.0.1", 32000}}, ReachNodePort, ""},
		{"no nodePort on the port", svc("NodePort", nodes, nil), ServicePort{Port: 15443},
			nil, ReachEndpoints, ""},
		{"cluster ip ignores node addresses", svc("ClusterIP", nodes, nil), port,
			nil, ReachEndpoints, ""},
		{"no node addresses known", svc("LoadBalancer", nil, nil), port,
			nil, ReachEndpoints, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.svc.ExternalReach(tt.port)
			if !reflect.DeepEqual(r.Addresses, tt.want) || r.Source != tt.source {
				t.Errorf("got %v from %q, want %v from %q", r.Addresses, r.Source, tt.want, tt.source)
			}
			notes := strings.Join(r.Notes, "; ")
			if (tt.note == "") != (notes == "") || !strings.Contains(notes, tt.note) {
				t.Errorf("notes %q, want %q", notes, tt.note)
			}
		})
	}
}
