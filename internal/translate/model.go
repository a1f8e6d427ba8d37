package translate

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// UpstreamNamespace is where Gloo keeps discovered upstreams; references to upstreams match
// by cluster and name, and accept this namespace or the service's own.
const UpstreamNamespace = "gloo-system"

// object is a config object with the cluster it came from ("" = the management server).
type object struct {
	resource.Object
	origin string
}

func (o object) describe() string {
	if o.origin == "" {
		return o.String()
	}
	return fmt.Sprintf("%s (from cluster %s)", o.String(), o.origin)
}

// clusterModel is what one cluster's input says, parsed. It depends only on that input and
// is cached by the input's hash.
type clusterModel struct {
	services  []*serviceModel // sorted by namespace/name
	upstreams map[string]*upstreamModel
	gateways  []gatewayModel
	secrets   map[string]v1alpha1.Secret // by namespace/name and by name
	// objects are meshrelay resources created in the cluster (translated with its context).
	objects []object
	errors  []string
}

type serviceModel struct {
	svc       v1alpha1.Service
	endpoints []v1alpha1.EndpointSlice
}

// upstreamModel is a destination in one cluster.
type upstreamModel struct {
	name      string
	namespace string // of the service; UpstreamNamespace for static ones
	host      string // FQDN
	port      uint32
	labels    map[string]string // of the service, for VirtualDestination selectors
	svcName   string
	selector  map[string]string // of the service
	portName  string            // of the service port
	endpoints []Endpoint        // ready, sorted
	spec      v1alpha1.UpstreamSpec
}

type gatewayModel struct {
	gw     v1alpha1.Gateway
	origin string
	// addresses are where other clusters reach a TCP gateway, from the Service exposing it;
	// reach says how they were chosen.
	addresses []Endpoint
	reach     []string
	// selector is the selector of that Service: it selects the gateway's pods.
	selector map[string]string
}

// where locates the endpoints of one cluster.
type where struct {
	cluster, region, zone, network string
}

// whereIs locates cluster name's endpoints from its KubernetesCluster's labels. The Istio
// network is its topology.istio.io/network label, else the cluster's name.
func whereIs(name string, kc v1alpha1.KubernetesCluster) where {
	l := kc.Metadata.Labels
	return where{cluster: name, region: l[v1alpha1.LabelRegion], zone: l[v1alpha1.LabelZone], network: orString(l[v1alpha1.LabelNetwork], name)}
}

// UpstreamName is the name of the upstream discovered for a service port (seed 003:
// default-service-blue-10000).
func UpstreamName(namespace, service string, port int32) string {
	return fmt.Sprintf("%s-%s-%d", namespace, service, port)
}

// decoded is one input resource of a cluster as parseCluster decoded it. The decoded
// resources of a cluster are kept with its parsed model so that the next parse decodes only
// the resources whose key or hash changed. Decoded values are shared between the models
// (and translations) that reuse them, so nothing may modify them after decoding: the model
// and the planners only read them (they copy before sorting or appending).
type decoded struct {
	hash string
	obj  resource.Object
	// value is the typed resource for the kinds parseCluster reads (v1alpha1.Service,
	// EndpointSlice, Secret, Gateway), nil for other kinds.
	value any
	// err is why the resource could not be decoded ("" when it could); such a resource is
	// otherwise ignored.
	err string
}

// decodeInput decodes one resource of cluster name's input.
func decodeInput(name string, r snapshot.Resource) decoded {
	d := decoded{hash: r.Hash}
	o, err := resource.FromResource(r)
	if err != nil {
		d.err = fmt.Sprintf("cluster %s: %v", name, err)
		return d
	}
	d.obj = o
	into := func(v any) {
		if err := o.Into(v); err != nil {
			d.err = fmt.Sprintf("cluster %s: %s: %v", name, o, err)
		}
	}
	switch o.Kind {
	case v1alpha1.KindService:
		var s v1alpha1.Service
		into(&s)
		d.value = s
	case v1alpha1.KindEndpointSlice:
		var es v1alpha1.EndpointSlice
		into(&es)
		d.value = es
	case v1alpha1.KindSecret:
		var s v1alpha1.Secret
		into(&s)
		d.value = s
	case v1alpha1.KindGateway:
		var g v1alpha1.Gateway
		into(&g)
		d.value = g
	}
	if d.value != nil {
		// Only the typed value is read on; keep no more of the object than its name.
		d.obj = resource.Object{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, Namespace: o.Namespace}
	}
	return d
}

// parseStats counts the inputs parsed (in a world) and their resources decoded and reused
// from the cluster's previous parse.
type parseStats struct{ inputs, decoded, reused int }

// parseCluster parses cluster name's input. prev are the resources decoded by the
// cluster's previous parse (nil for none); a resource with the same key and hash is reused
// rather than decoded again. It returns the model and the decoded resources by key, for the
// next parse.
func parseCluster(name string, kc v1alpha1.KubernetesCluster, in *snapshot.Snapshot, prev map[string]decoded) (*clusterModel, map[string]decoded, parseStats) {
	m := &clusterModel{upstreams: map[string]*upstreamModel{}, secrets: map[string]v1alpha1.Secret{}}
	var st parseStats
	if in == nil {
		return m, nil, st
	}
	domain := kc.Spec.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	loc := whereIs(name, kc)
	slices := map[string][]v1alpha1.EndpointSlice{}
	var gws []v1alpha1.Gateway
	next := make(map[string]decoded, in.Len())
	for _, r := range in.Sorted() {
		d, ok := prev[r.Key]
		if ok && r.Hash != "" && d.hash == r.Hash {
			st.reused++
			if d.err == "" && d.value == nil {
				d.obj.Raw = r.Body // the same bytes; keep the new snapshot's, not the old one's
			}
		} else {
			d = decodeInput(name, r)
			st.decoded++
		}
		next[r.Key] = d
		if d.err != "" {
			m.errors = append(m.errors, d.err)
			continue
		}
		o := d.obj
		switch v := d.value.(type) {
		case v1alpha1.Service:
			m.services = append(m.services, &serviceModel{svc: v})
		case v1alpha1.EndpointSlice:
			k := o.Namespace + "/" + v.Metadata.Labels[v1alpha1.LabelServiceName]
			slices[k] = append(slices[k], v)
		case v1alpha1.Secret:
			m.secrets[o.Namespace+"/"+o.Name] = v
			m.secrets[o.Name] = v
		case v1alpha1.Gateway:
			gws = append(gws, v)
		default:
			m.objects = append(m.objects, object{Object: o, origin: name})
		}
	}
	for _, s := range m.services {
		s.endpoints = slices[s.svc.Metadata.Namespace+"/"+s.svc.Metadata.Name]
		for _, p := range s.svc.Spec.Ports {
			u := &upstreamModel{
				name:      UpstreamName(s.svc.Metadata.Namespace, s.svc.Metadata.Name, p.Port),
				namespace: s.svc.Metadata.Namespace,
				host:      fmt.Sprintf("%s.%s.svc.%s", s.svc.Metadata.Name, s.svc.Metadata.Namespace, domain),
				port:      uint32(p.Port),
				labels:    s.svc.Metadata.Labels,
				svcName:   s.svc.Metadata.Name,
				selector:  s.svc.Spec.Selector,
				portName:  p.Name,
				endpoints: readyEndpoints(loc, p, s.endpoints),
			}
			m.upstreams[u.name] = u
		}
	}
	for _, g := range gws {
		gm := gatewayModel{gw: g, origin: name}
		if g.Spec.TCPGateway != nil {
			gm.addresses, gm.reach, gm.selector = gatewayAddresses(loc, g, m.services)
		}
		m.gateways = append(m.gateways, gm)
	}
	sort.Strings(m.errors)
	return m, next, st
}

// readyEndpoints lists the ready addresses of a service port, with the endpoint port that
// matches it by name (or the target port, or the port).
func readyEndpoints(loc where, p v1alpha1.ServicePort, slices []v1alpha1.EndpointSlice) []Endpoint {
	var out []Endpoint
	for _, es := range slices {
		port := uint32(0)
		for _, ep := range es.Ports {
			if ep.Name == p.Name || len(es.Ports) == 1 {
				port = uint32(ep.Port)
			}
		}
		if port == 0 {
			port = targetPort(p)
		}
		for _, e := range es.Endpoints {
			if !e.IsReady() {
				continue
			}
			z := e.Zone
			if z == "" {
				z = loc.zone
			}
			for _, a := range e.Addresses {
				out = append(out, Endpoint{Address: a, Port: port, Cluster: loc.cluster, Region: loc.region, Zone: z, Network: loc.network})
			}
		}
	}
	sortEndpoints(out)
	return dedupeEndpoints(out)
}

func targetPort(p v1alpha1.ServicePort) uint32 {
	switch t := p.TargetPort.(type) {
	case float64:
		return uint32(t)
	case int:
		return uint32(t)
	}
	return uint32(p.Port)
}

func sortEndpoints(eps []Endpoint) {
	slices.SortFunc(eps, func(a, b Endpoint) int {
		if c := strings.Compare(a.Address, b.Address); c != 0 {
			return c
		}
		return cmp.Compare(a.Port, b.Port)
	})
}

func dedupeEndpoints(eps []Endpoint) []Endpoint {
	out := eps[:0]
	for i, e := range eps {
		if i > 0 && e.Address == eps[i-1].Address && e.Port == eps[i-1].Port {
			continue
		}
		out = append(out, e)
	}
	return out
}

// gatewayAddresses finds where other clusters reach a TCP gateway: the Service in the
// gateway's namespace that exposes its bind port and has ready endpoints (seed 003's
// `failover` Service on 15443), at the address v1alpha1.Service.ExternalReach chooses (its
// load balancer's IPs, the failover-address annotation, node ports, else the ready endpoint
// addresses). It also returns how the address was chosen, for the gateway's status, and the
// Service's selector (the gateway's pods).
func gatewayAddresses(loc where, g v1alpha1.Gateway, services []*serviceModel) ([]Endpoint, []string, map[string]string) {
	for _, s := range services {
		if s.svc.Metadata.Namespace != g.Metadata.Namespace {
			continue
		}
		for _, p := range s.svc.Spec.Ports {
			if int(p.Port) != g.Spec.BindPort && int(targetPort(p)) != g.Spec.BindPort {
				continue
			}
			eps := readyEndpoints(loc, p, s.endpoints)
			if len(eps) == 0 {
				continue // no gateway runs behind it
			}
			r := s.svc.ExternalReach(p)
			if len(r.Addresses) > 0 {
				eps = make([]Endpoint, 0, len(r.Addresses))
				for _, a := range r.Addresses {
					eps = append(eps, Endpoint{Address: a.IP, Port: uint32(a.Port), Cluster: loc.cluster, Region: loc.region, Zone: loc.zone, Network: loc.network})
				}
				sortEndpoints(eps)
				eps = dedupeEndpoints(eps)
			}
			addrs := make([]string, len(eps))
			for i, e := range eps {
				addrs[i] = net.JoinHostPort(e.Address, strconv.Itoa(int(e.Port)))
			}
			why := append([]string{fmt.Sprintf("other clusters reach it at %s: %s of Service %s/%s port %d",
				strings.Join(addrs, ", "), r.Source, s.svc.Metadata.Namespace, s.svc.Metadata.Name, p.Port)}, r.Notes...)
			return eps, why, s.svc.Spec.Selector
		}
	}
	return nil, nil, nil
}

// matchesRef reports whether an upstream reference (name, namespace) names u.
func (u *upstreamModel) matchesRef(name, namespace string) bool {
	return u.name == name && (namespace == "" || namespace == UpstreamNamespace || namespace == u.namespace)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sanitize makes a DNS-label-like name from s.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}
