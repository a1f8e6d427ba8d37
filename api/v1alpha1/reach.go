package v1alpha1

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Annotations of a Service that say where other clusters reach it.
const (
	// AnnotationFailoverAddress is an explicitly configured address of a Service for other
	// clusters: "ip:port", or several separated by commas. Used when the Service's load
	// balancer has no IP (status.loadBalancer.ingress).
	AnnotationFailoverAddress = Group + "/failover-address"
	// AnnotationNodeAddresses lists the addresses of the cluster's nodes, separated by commas.
	// Kubernetes discovery sets it on NodePort and LoadBalancer Services that have neither a
	// load balancer IP nor AnnotationFailoverAddress, from the nodes' ExternalIP (else
	// InternalIP) addresses; in universal mode it is written by hand.
	AnnotationNodeAddresses = Group + "/node-addresses"
)

// Sources of a Service's address for other clusters, in the order they are used.
const (
	ReachLoadBalancer = "status.loadBalancer.ingress"
	ReachAnnotation   = "annotation " + AnnotationFailoverAddress
	ReachNodePort     = "nodePort on node addresses"
	ReachEndpoints    = "ready endpoint (pod) addresses"
)

// HostPort is an address other clusters connect to.
type HostPort struct {
	IP   string
	Port int32
}

func (h HostPort) String() string { return net.JoinHostPort(h.IP, strconv.Itoa(int(h.Port))) }

// Reach is where other clusters reach one port of a Service, and why.
type Reach struct {
	// Addresses is empty when none of the first three sources applies: other clusters then
	// use the ready endpoint (pod) addresses.
	Addresses []HostPort
	// Source is one of the Reach* constants.
	Source string
	// Notes explain sources that were skipped (a hostname ingress, a malformed annotation).
	Notes []string
}

// ExternalReach decides where other clusters reach port p of s, in this order:
//
//  1. the IPs of status.loadBalancer.ingress, with the Service port;
//  2. AnnotationFailoverAddress ("ip:port,...");
//  3. for NodePort and LoadBalancer Services with a nodePort, AnnotationNodeAddresses with
//     the nodePort;
//  4. none of these: the ready endpoint (pod) addresses (Source ReachEndpoints, no Addresses).
//
// A load balancer that only has a hostname (such as an AWS ELB) is skipped with a note: the
// gateways' endpoints are served as IP addresses. It is a pure function of s.
func (s Service) ExternalReach(p ServicePort) Reach {
	var r Reach
	if s.Status != nil {
		for _, in := range s.Status.LoadBalancer.Ingress {
			switch {
			case in.IP != "":
				if _, err := netip.ParseAddr(in.IP); err == nil {
					r.Addresses = append(r.Addresses, HostPort{IP: in.IP, Port: p.Port})
				} else {
					r.Notes = append(r.Notes, fmt.Sprintf("status.loadBalancer.ingress ip %q is not an IP address; skipped", in.IP))
				}
			case in.Hostname != "":
				r.Notes = append(r.Notes, fmt.Sprintf("status.loadBalancer.ingress hostname %q skipped: only IP addresses are used (set annotation %s to ip:port)", in.Hostname, AnnotationFailoverAddress))
			}
		}
		if len(r.Addresses) > 0 {
			r.Source = ReachLoadBalancer
			return r
		}
	}
	if v := s.Metadata.Annotations[AnnotationFailoverAddress]; v != "" {
		hps, err := parseHostPorts(v)
		if err == nil {
			r.Addresses, r.Source = hps, ReachAnnotation
			return r
		}
		r.Notes = append(r.Notes, fmt.Sprintf("annotation %s: %v; skipped", AnnotationFailoverAddress, err))
	}
	if (s.Spec.Type == "NodePort" || s.Spec.Type == "LoadBalancer") && p.NodePort != 0 {
		for _, a := range splitList(s.Metadata.Annotations[AnnotationNodeAddresses]) {
			if _, err := netip.ParseAddr(a); err != nil {
				r.Notes = append(r.Notes, fmt.Sprintf("annotation %s: %q is not an IP address; skipped", AnnotationNodeAddresses, a))
				continue
			}
			r.Addresses = append(r.Addresses, HostPort{IP: a, Port: p.NodePort})
		}
		if len(r.Addresses) > 0 {
			r.Source = ReachNodePort
			return r
		}
	}
	r.Source = ReachEndpoints
	return r
}

// parseHostPorts parses "ip:port,ip:port".
func parseHostPorts(v string) ([]HostPort, error) {
	var out []HostPort
	for _, item := range splitList(v) {
		ap, err := netip.ParseAddrPort(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not ip:port", item)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("%q: port 0", item)
		}
		out = append(out, HostPort{IP: ap.Addr().String(), Port: int32(ap.Port())})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%q names no address", v)
	}
	return out, nil
}

func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
