package agent

import (
	"slices"
	"sync"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// ServiceReach is where other clusters reach one port of a Service of this cluster that is
// exposed outside it (a LoadBalancer or NodePort Service, or one with the
// meshrelay.io/failover-address annotation), as the management server decides it for a
// failover gateway (v1alpha1.Service.ExternalReach).
type ServiceReach struct {
	Service   string   `json:"service"` // namespace/name
	Port      int32    `json:"port"`
	Addresses []string `json:"addresses,omitempty"`
	// Source is why: status.loadBalancer.ingress, the annotation, node ports, or the ready
	// endpoint (pod) addresses.
	Source string   `json:"source"`
	Notes  []string `json:"notes,omitempty"`
}

// externalReach lists the ServiceReach of every exposed Service port of an input snapshot.
func externalReach(in *snapshot.Snapshot) []ServiceReach {
	if in == nil {
		return nil
	}
	var out []ServiceReach
	for _, r := range in.Sorted() {
		o, err := resource.FromResource(r)
		if err != nil || o.Kind != v1alpha1.KindService {
			continue
		}
		var s v1alpha1.Service
		if o.Into(&s) != nil {
			continue
		}
		if s.Spec.Type != "LoadBalancer" && s.Spec.Type != "NodePort" && s.Metadata.Annotations[v1alpha1.AnnotationFailoverAddress] == "" {
			continue
		}
		for _, p := range s.Spec.Ports {
			rc := s.ExternalReach(p)
			sr := ServiceReach{Service: o.Namespace + "/" + o.Name, Port: p.Port, Source: rc.Source, Notes: rc.Notes}
			for _, a := range rc.Addresses {
				sr.Addresses = append(sr.Addresses, a.String())
			}
			out = append(out, sr)
		}
	}
	return out
}

// reachCache keeps the externalReach of the input snapshot last asked about: /status is read
// far more often than the input changes, and computing it decodes every input object.
type reachCache struct {
	mu   sync.Mutex // guards hash and out
	hash string     // content hash of the input out was computed from ("" for none)
	out  []ServiceReach
}

// of returns externalReach(in), computed again only when in's content changed.
func (c *reachCache) of(in *snapshot.Snapshot) []ServiceReach {
	hash := ""
	if in != nil {
		hash = in.Hash
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if hash != c.hash {
		c.hash, c.out = hash, externalReach(in) // snapshots are immutable: no agent lock needed
	}
	return slices.Clone(c.out)
}
