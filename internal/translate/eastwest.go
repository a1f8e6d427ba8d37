package translate

import (
	"fmt"
	"slices"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

// eastWest is what a cluster's failover gateway serves to Istio sidecars of other
// clusters. A sidecar reaches a remote endpoint through that cluster's gateway with Istio
// mutual TLS whose SNI is outbound_.<port>_._.<host> — <host> and <port> being what the
// sidecar called — so the gateway must know, for each such SNI, where it leads:
//   - a VirtualDestination backed here: its hosts, to the local backing upstream;
//   - a FailoverScheme primary of another cluster that fails over to an upstream here: the
//     primary's host, to that upstream (an alias ServiceEntry, seen by the gateway alone);
//   - a RouteTable destination naming an upstream here: that upstream's own host.
type eastWest struct {
	// hosts are the Istio Gateway's server hosts, sorted.
	hosts []string
	// sni maps each SNI to the local upstream (Envoy cluster name) it leads to.
	sni map[string]string
	// aliases are the ServiceEntries that give the gateway the primaries' hosts; their
	// namespace is set by the caller (the gateway's).
	aliases []ServiceEntryPlan
}

// istioSNI is the SNI an Istio sidecar sends for a service port over Istio mutual TLS
// (model.BuildDNSSrvSubsetKey of the outbound cluster, without a subset).
func istioSNI(port uint32, host string) string {
	return fmt.Sprintf("outbound_.%d_._.%s", port, host)
}

// eastWest computes what cluster c's gateway serves to other clusters' sidecars.
func (w *world) eastWest(c string) eastWest {
	ew := eastWest{sni: map[string]string{}}
	add := func(host string, port uint32, upstream string) bool {
		sni := istioSNI(port, host)
		if have, ok := ew.sni[sni]; ok {
			return have == upstream
		}
		ew.sni[sni] = upstream
		if !slices.Contains(ew.hosts, host) {
			ew.hosts = append(ew.hosts, host)
		}
		return true
	}
	for _, vd := range w.vds {
		for _, port := range vd.v.Spec.Ports {
			for _, b := range backingsIn(w.vdBackings(vd, port), c) {
				for _, h := range vd.v.Spec.Hosts {
					add(h, uint32(port.Number), b.u.name) // the first local backing serves it
				}
			}
		}
	}
	for _, s := range w.schemes {
		sp := s.v.Spec
		if _, ok := w.clusters[sp.Primary.ClusterName]; !ok || sp.Primary.ClusterName == c {
			continue
		}
		primary := w.findUpstream(sp.Primary.ClusterName, sp.Primary.Name, sp.Primary.Namespace)
		if primary == nil {
			continue // reported by the primary's cluster
		}
		for gi, g := range sp.FailoverGroups {
			for ti, t := range g.PriorityGroup {
				if t.Cluster != c {
					continue
				}
				for ui, ref := range t.Upstreams {
					u := w.findUpstream(c, ref.Name, ref.Namespace)
					if u == nil {
						continue // reported by applySchemes
					}
					if !add(primary.host, primary.port, u.name) {
						w.status.add(s.obj, "spec.failoverGroups[%d].priorityGroup[%d].upstreams[%d]: cluster %s already serves %s port %d to Istio sidecars with upstream %s; only one upstream of a cluster can stand in for a primary's host",
							gi, ti, ui, c, primary.host, primary.port, ew.sni[istioSNI(primary.port, primary.host)])
						continue
					}
					eps := slices.Clone(u.endpoints)
					ew.aliases = append(ew.aliases, ServiceEntryPlan{
						Name:      sanitize(fmt.Sprintf("failover-%s-%d", primary.host, primary.port)),
						Hosts:     []string{primary.host},
						Ports:     []ServicePort{{Number: primary.port, Name: fmt.Sprintf("tcp-%d", primary.port), Protocol: v1alpha1.ProtocolTCP}},
						Endpoints: eps,
						Upstream:  u.name,
						ExportTo:  []string{"."},
					})
				}
			}
		}
	}
	for _, rt := range w.routeTables {
		for _, r := range rt.v.Spec.HTTP {
			for _, d := range r.ForwardTo.Destinations {
				if d.Ref.Cluster != c || d.Kind == v1alpha1.DestinationKindVirtualDestination {
					continue
				}
				if u := w.findUpstream(c, d.Ref.Name, d.Ref.Namespace); u != nil {
					add(u.host, u.port, u.name)
				}
			}
		}
	}
	slices.Sort(ew.hosts)
	return ew
}
