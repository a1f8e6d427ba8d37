package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// The Istio-shaped output: Kubernetes objects of networking.istio.io/v1 whose spec is built
// with Istio's own protobuf types (istio.io/api), so that only fields Istio knows can be
// written. v1 and v1alpha3 share one schema; the v1alpha3 Go types serve both.
const (
	istioAPIVersion = "networking.istio.io/v1"

	istioKindDestinationRule = "DestinationRule"
	istioKindVirtualService  = "VirtualService"
	istioKindServiceEntry    = "ServiceEntry"
	istioKindWorkloadEntry   = "WorkloadEntry"
	istioKindGateway         = "Gateway"

	// istioDefaultNamespace is where a resource goes when its plan names no namespace.
	istioDefaultNamespace = "default"
	// istioDefaultProtocol is a ServiceEntry port's protocol when the plan names none.
	istioDefaultProtocol = "HTTP"

	istioLabelManagedBy = "app.kubernetes.io/managed-by"
	istioManagedBy      = "meshrelay"
	// istioLabelCluster names the workload cluster an object was rendered for (metadata) or
	// the cluster an endpoint is in (ServiceEntry endpoint labels).
	istioLabelCluster = "meshrelay.io/cluster"
	// istioLabelTLSMode marks an endpoint whose sidecar (or east-west gateway) speaks Istio
	// mutual TLS: istiod then gives the client's cluster a transport socket match that
	// originates ISTIO_MUTUAL towards it, with SNI outbound_.<port>_._.<host>.
	istioLabelTLSMode = "security.istio.io/tlsMode"
	istioTLSModeIstio = "istio"
	// istioLabelPriority (with the priority appended) marks the endpoints of one failover
	// priority; see istioFailoverPriority.
	istioLabelPriority = "failover.meshrelay.io/priority-"

	// istioMaxName is the longest Kubernetes object name (a DNS-1123 subdomain).
	istioMaxName = 253
	// istioHashLen is the length of the hash suffix that tells colliding names apart.
	istioHashLen = 8
)

// istioObject is the Kubernetes envelope of one rendered resource. The spec is protojson
// output embedded raw; encoding/json compacts it, which removes protojson's deliberately
// unstable whitespace, so the same plan always gives the same bytes.
type istioObject struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   istioMetadata   `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

type istioMetadata struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// istioItem is one resource on its way out: its spec is built, its name not yet final.
type istioItem struct {
	kind, namespace string
	// id identifies the plan element the resource comes from; it is unique per kind and
	// namespace in a well-formed plan, and seeds the hash suffix of a colliding name.
	id string
	// want is the name before sanitising; name is the final, valid and unique name.
	want, name string
	spec       proto.Message
	// build, when spec is nil, builds it (once it is known not to be in the memo).
	build func() proto.Message
	// src is the memo key of the plan element the spec was built from ("" for none).
	src string
}

// renderIstio renders the Istio-shaped resources of a plan: a DestinationRule per upstream
// that has something Istio can express, a VirtualService per HTTP virtual host and a
// ServiceEntry per service entry. Secrets and TCP gateways exist only for Envoy and render
// nothing here. The resources are keyed KIND/NAMESPACE/NAME and sorted by key; the same plan
// always gives the same bytes. The plan is not modified.
func renderIstio(p Plan) ([]snapshot.Resource, error) { return renderIstioMemo(p, nil, nil, nil) }

// renderIstioMemo is renderIstio reusing resources rendered before from exactly the same
// plan element for the same cluster, under the same name (memo may be nil; upstreamKeys are
// the memo keys of p.Upstreams, nil without a memo; seKeys are memo keys of service entries
// by namespace/name, used instead of hashing them).
func renderIstioMemo(p Plan, memo *renderMemo, upstreamKeys []string, seKeys map[string]*builtServiceEntry) ([]snapshot.Resource, error) {
	var items []istioItem
	for i, u := range p.Upstreams {
		src := ""
		if upstreamKeys != nil {
			src = upstreamKeys[i]
		}
		for j, we := range istioWorkloadEntries(p.Cluster, u) {
			items = append(items, istioItem{kind: istioKindWorkloadEntry, namespace: istioNamespace(u.Namespace), id: fmt.Sprintf("%s\x00%d", u.Name, j),
				want: fmt.Sprintf("%s-%s-%d", u.Name, we.Labels[istioLabelCluster], j), spec: we, src: src})
		}
		if u.Remote {
			items = append(items, istioItem{kind: istioKindServiceEntry, namespace: istioNamespace(u.Namespace), id: "remote\x00" + u.Name, want: "remote-" + u.Name,
				build: func() proto.Message { return istioRemoteServiceEntry(p.Cluster, u) }, src: src})
		}
		dr, err := istioDestinationRule(u)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		if dr == nil {
			continue
		}
		items = append(items, istioItem{kind: istioKindDestinationRule, namespace: istioNamespace(u.Namespace), id: u.Name, want: u.Name, spec: dr, src: src})
	}
	for _, l := range p.HTTPListeners {
		for _, vh := range l.VirtualHosts {
			vs, err := istioVirtualService(vh)
			if err != nil {
				return nil, fmt.Errorf("http listener %s: virtual host %s: %w", l.Name, vh.Name, err)
			}
			if vs == nil {
				continue
			}
			items = append(items, istioItem{
				kind: istioKindVirtualService, namespace: istioNamespace(l.Namespace),
				id: l.Name + "\x00" + vh.Name, want: l.Name + "-" + vh.Name, spec: vs, src: memo.key(vh),
			})
		}
	}
	for _, se := range p.ServiceEntries {
		// A VirtualDestination's entry is two for the same hosts, which istiod merges (it
		// takes the endpoints of every ServiceEntry of a host in a namespace): the cluster's
		// own endpoints, which change with every pod, apart from the other clusters'
		// gateways, which do not. A pod coming or going then re-renders and re-sends a few
		// hundred bytes, not an entry with a gateway for every cluster of the mesh. The plan
		// hands it over split and keyed (seKeys); others are split and keyed here.
		others, own := se, ServiceEntryPlan{}
		var othersKey, ownKey string
		if b, ok := seKeys[se.Namespace+"/"+se.Name]; ok && memo != nil {
			others, own, othersKey, ownKey = b.others, b.own, b.othersKey, b.ownKey
		} else {
			if se.SplitOwn {
				others, own = splitOwnEndpoints(p.Cluster, se)
			}
			othersKey, ownKey = memo.key(others), memo.key(own)
		}
		items = append(items, istioItem{kind: istioKindServiceEntry, namespace: istioNamespace(se.Namespace), id: se.Name, want: se.Name,
			build: func() proto.Message { return istioServiceEntry(p.Cluster, others) }, src: othersKey})
		if len(own.Endpoints) > 0 {
			items = append(items, istioItem{kind: istioKindServiceEntry, namespace: istioNamespace(se.Namespace), id: "own\x00" + se.Name, want: se.Name + "-local",
				build: func() proto.Message { return istioServiceEntry(p.Cluster, own) }, src: ownKey})
		}
	}
	for _, tg := range p.TCPGateways {
		if gw := istioEastWestGateway(tg); gw != nil {
			items = append(items, istioItem{kind: istioKindGateway, namespace: istioNamespace(tg.Namespace), id: tg.Name,
				want: strings.TrimPrefix(tg.Name, sanitize(tg.Namespace)+"-"), spec: gw, src: memo.key(tg)})
		}
	}
	// Secrets: Envoy only. Istio sidecars and gateways use Istio's own workload identities.

	if err := istioAssignNames(items); err != nil {
		return nil, err
	}
	out := make([]snapshot.Resource, 0, len(items))
	for _, it := range items {
		if !istioDNSLabel(it.namespace) {
			return nil, fmt.Errorf("%s %s: namespace %q is not a valid DNS-1123 label", it.kind, it.want, it.namespace)
		}
		memoKey := ""
		if it.src != "" {
			memoKey = it.kind + "|" + it.namespace + "|" + it.name + "|" + p.Cluster + "|" + it.src
		}
		if rs, ok := memo.get(memoKey); ok {
			out = append(out, rs...)
			continue
		}
		if it.spec == nil {
			it.spec = it.build()
		}
		spec, err := protojson.Marshal(it.spec)
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: marshal spec: %w", it.kind, it.namespace, it.name, err)
		}
		body, err := json.Marshal(istioObject{
			APIVersion: istioAPIVersion,
			Kind:       it.kind,
			Metadata: istioMetadata{
				Name:      it.name,
				Namespace: it.namespace,
				Labels:    map[string]string{istioLabelManagedBy: istioManagedBy, istioLabelCluster: p.Cluster},
			},
			Spec: spec,
		})
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: marshal: %w", it.kind, it.namespace, it.name, err)
		}
		r := snapshot.NewResource(resource.Key(it.kind, it.namespace, it.name), body)
		memo.put(memoKey, r)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b snapshot.Resource) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// istioDestinationRule renders an upstream's traffic policy, or nil when Istio has nothing to
// say about it. Active health checks have no Istio equivalent (Istio relies on Kubernetes
// readiness and passive outlier detection), so an upstream with only health checks gets no
// DestinationRule; neither does its connect timeout (a mesh-wide setting in Istio). It sets
// no TLS: endpoints reached through a remote cluster's east-west gateway carry
// security.istio.io/tlsMode=istio, and istiod's automatic mutual TLS originates Istio
// mutual TLS towards exactly those (a transport socket match), with the SNI the gateway
// routes by.
func istioDestinationRule(u UpstreamPlan) (*networking.DestinationRule, error) {
	tp := &networking.TrafficPolicy{}
	if o := u.Outlier; o != nil {
		maxEject := o.MaxEjectionPercent
		if maxEject == 0 {
			// DESIGN §7: a failover upstream may eject every endpoint of a priority.
			maxEject = 100
		}
		if maxEject > 100 {
			return nil, fmt.Errorf("outlier max ejection percent %d is over 100", maxEject)
		}
		od := &networking.OutlierDetection{
			Interval:           istioDuration(o.Interval),
			BaseEjectionTime:   istioDuration(o.BaseEjectionTime),
			MaxEjectionPercent: int32(maxEject),
		}
		// Zero leaves Istio's default (5, as Envoy's) rather than disabling 5xx ejection.
		if o.Consecutive5xx > 0 {
			od.Consecutive_5XxErrors = wrapperspb.UInt32(o.Consecutive5xx)
		}
		tp.OutlierDetection = od
	}
	// Istio fails over between priorities only while outlier detection is configured; the
	// translator pairs the two (every failover upstream has outlier detection).
	if u.Failover != nil && len(u.Priorities) > 1 && tp.OutlierDetection != nil {
		tp.LoadBalancer = &networking.LoadBalancerSettings{LocalityLbSetting: &networking.LocalityLoadBalancerSetting{
			Enabled:          wrapperspb.Bool(true),
			FailoverPriority: istioFailoverPriority(len(u.Priorities) - 1),
		}}
	}
	if tp.OutlierDetection == nil && tp.LoadBalancer == nil {
		return nil, nil
	}
	host := u.Host
	if host == "" {
		host = u.Name
	}
	return &networking.DestinationRule{Host: host, TrafficPolicy: tp}, nil
}

// istioFailoverPriority makes istiod give every endpoint exactly the priority the plan
// gives it, whatever the regions: an endpoint of priority k > 0 carries the label
// failover.meshrelay.io/priority-k, and the DestinationRule lists the labels
// "priority-n=", …, "priority-1=" (an explicit empty value, compared with the endpoint's).
// istiod ranks an endpoint by the first label it does not match — at index n-k for
// priority k, which makes priority k — and an endpoint without any (the cluster's own
// pods) matches them all: priority 0. Istio's region-based failover alone cannot express
// a FailoverScheme's groups or two clusters in one region.
func istioFailoverPriority(n int) []string {
	out := make([]string, 0, n)
	for k := n; k >= 1; k-- {
		out = append(out, istioLabelPriority+strconv.Itoa(k)+"=")
	}
	return out
}

// istioEndpointLabels are the labels of an endpoint of cluster c's Istio config: its
// cluster, Istio mutual TLS, and its failover priority.
func istioEndpointLabels(e Endpoint) map[string]string {
	l := map[string]string{istioLabelTLSMode: istioTLSModeIstio}
	if e.Cluster != "" {
		l[istioLabelCluster] = e.Cluster
	}
	if e.Priority > 0 {
		l[istioLabelPriority+strconv.Itoa(e.Priority)] = "true"
	}
	return l
}

// istioEndpointNetwork is the Istio network of an endpoint as cluster c sees it: none for
// c's own (every proxy of c sees them), the remote cluster's for the others — so that c's
// east-west gateway, which requests a view of its own network only, never forwards to
// another cluster's gateway (no loops), while sidecars see everything.
func istioEndpointNetwork(c string, e Endpoint) string {
	if e.Cluster == c || e.Cluster == "" {
		return ""
	}
	return e.Network
}

// istioWorkloadEntries adds the endpoints of an upstream discovered from a Kubernetes
// Service that are not the Service's own pods — a FailoverScheme's remote gateways — to
// that Service: WorkloadEntries in its namespace labelled with its selector, which istiod
// selects as endpoints of the Service, each at a remote gateway's address with every port
// of the Service mapped to the gateway's port.
func istioWorkloadEntries(c string, u UpstreamPlan) []*networking.WorkloadEntry {
	if u.Service == nil || len(u.Service.Selector) == 0 {
		return nil
	}
	var out []*networking.WorkloadEntry
	for prio, eps := range u.Priorities {
		for _, e := range eps {
			if e.Cluster == c || e.TLS == nil {
				continue
			}
			e.Priority = prio
			labels := istioEndpointLabels(e)
			for k, v := range u.Service.Selector {
				labels[k] = v
			}
			we := &networking.WorkloadEntry{Address: e.Address, Labels: labels, Network: istioEndpointNetwork(c, e), Locality: istioLocality(e.Region, e.Zone)}
			if u.Service.PortName != "" {
				we.Ports = map[string]uint32{u.Service.PortName: e.Port}
			}
			out = append(out, we)
		}
	}
	return out
}

// istioRemoteServiceEntry makes the host of another cluster's upstream resolvable here
// (a RouteTable routes to it): its endpoints are that cluster's gateways.
func istioRemoteServiceEntry(c string, u UpstreamPlan) *networking.ServiceEntry {
	var eps []Endpoint
	for _, prio := range u.Priorities {
		eps = append(eps, prio...)
	}
	return istioServiceEntry(c, ServiceEntryPlan{Hosts: []string{u.Host}, Ports: []ServicePort{{Number: u.Port, Protocol: istioDefaultProtocol}}, Endpoints: eps})
}

// istioEastWestGateway renders a TCP gateway as the cluster's Istio east-west gateway: a
// Gateway selecting the gateway's pods, with a TLS server on the gateway's port in
// AUTO_PASSTHROUGH mode for the hosts other clusters' sidecars reach through it, as Istio's
// multi-network setup does (istiod routes each SNI outbound_.<port>_._.<host> to the
// host's local endpoints). nil when the gateway's pods or hosts are unknown.
func istioEastWestGateway(tg TCPGateway) *networking.Gateway {
	if len(tg.Selector) == 0 || len(tg.IstioHosts) == 0 {
		return nil
	}
	return &networking.Gateway{
		Selector: tg.Selector,
		Servers: []*networking.Server{{
			Port:  &networking.Port{Number: tg.Port, Name: fmt.Sprintf("tls-%d", tg.Port), Protocol: "TLS"},
			Hosts: slices.Clone(tg.IstioHosts),
			Tls:   &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_AUTO_PASSTHROUGH},
		}},
	}
}

// istioVirtualService renders one virtual host's routes in order for the sidecars (the mesh
// gateway), or nil when the virtual host has no domain a sidecar can match: Istio refuses
// the bare wildcard "*" for the mesh, so it is left out (the builder notes it).
func istioVirtualService(vh VirtualHost) (*networking.VirtualService, error) {
	hosts := slices.DeleteFunc(slices.Clone(vh.Domains), func(h string) bool { return h == "*" })
	if len(hosts) == 0 {
		return nil, nil
	}
	vs := &networking.VirtualService{Hosts: hosts}
	for _, r := range vh.Routes {
		hr, err := istioHTTPRoute(r)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", r.Name, err)
		}
		vs.Http = append(vs.Http, hr)
	}
	return vs, nil
}

func istioHTTPRoute(r Route) (*networking.HTTPRoute, error) {
	if len(r.Destinations) == 0 {
		return nil, fmt.Errorf("no destinations")
	}
	hr := &networking.HTTPRoute{Name: r.Name, Timeout: istioDuration(r.Timeout)}
	m, err := istioMatch(r.Match)
	if err != nil {
		return nil, err
	}
	if m != nil {
		hr.Match = []*networking.HTTPMatchRequest{m}
	}
	for _, d := range r.Destinations {
		dst := &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: d.Host}}
		if d.Port > 0 {
			dst.Destination.Port = &networking.PortSelector{Number: d.Port}
		}
		// A single destination takes all traffic; Istio wants no weight then.
		if len(r.Destinations) > 1 {
			if dst.Weight, err = istioInt32(d.Weight, "weight"); err != nil {
				return nil, err
			}
		}
		hr.Route = append(hr.Route, dst)
	}
	if rt := r.Retries; rt != nil {
		attempts, err := istioInt32(rt.Attempts, "retry attempts")
		if err != nil {
			return nil, err
		}
		hr.Retries = &networking.HTTPRetry{Attempts: attempts, PerTryTimeout: istioDuration(rt.PerTryTimeout), RetryOn: rt.RetryOn}
	}
	return hr, nil
}

// istioMatch renders a route match, or nil for a route that matches every request.
func istioMatch(rm RouteMatch) (*networking.HTTPMatchRequest, error) {
	m := &networking.HTTPMatchRequest{}
	n := 0
	if rm.Prefix != "" {
		n++
		m.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: rm.Prefix}}
	}
	if rm.Exact != "" {
		n++
		m.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: rm.Exact}}
	}
	if rm.Regex != "" {
		n++
		m.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: rm.Regex}}
	}
	if n > 1 {
		return nil, fmt.Errorf("path match sets more than one of prefix, exact and regex")
	}
	for _, h := range rm.Headers {
		// Header names are case-insensitive; Istio wants them lowercase.
		name := strings.ToLower(h.Name)
		if name == "" {
			return nil, fmt.Errorf("header match without a name")
		}
		// An empty StringMatch ({}) matches on presence.
		sm := &networking.StringMatch{}
		switch {
		case h.Value == "":
		case h.Regex:
			sm.MatchType = &networking.StringMatch_Regex{Regex: h.Value}
		default:
			sm.MatchType = &networking.StringMatch_Exact{Exact: h.Value}
		}
		target := &m.Headers
		if h.Invert {
			target = &m.WithoutHeaders
		}
		if *target == nil {
			*target = map[string]*networking.StringMatch{}
		}
		if _, dup := (*target)[name]; dup {
			return nil, fmt.Errorf("header %s matched twice", name)
		}
		(*target)[name] = sm
	}
	if rm.Method != "" {
		m.Method = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: rm.Method}}
	}
	if m.Uri == nil && m.Method == nil && m.Headers == nil && m.WithoutHeaders == nil {
		return nil, nil
	}
	return m, nil
}

// istioServiceEntry makes hosts resolvable in cluster c: static, mesh-internal endpoints
// sorted by address, every one labelled for Istio mutual TLS (AUTO_PASSTHROUGH gateways
// forward only to such endpoints, and the workloads behind a VirtualDestination are mesh
// workloads). Another cluster's endpoint (its gateway) has every port mapped to the
// gateway's port; an own endpoint has the first port mapped to its port (an Endpoint
// carries a single port).
func istioServiceEntry(c string, sp ServiceEntryPlan) *networking.ServiceEntry {
	se := &networking.ServiceEntry{
		Hosts:      slices.Clone(sp.Hosts),
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
		ExportTo:   slices.Clone(sp.ExportTo),
	}
	for _, p := range sp.Ports {
		proto := strings.ToUpper(p.Protocol)
		if proto == "" {
			proto = istioDefaultProtocol
		}
		se.Ports = append(se.Ports, &networking.ServicePort{Number: p.Number, Name: istioPortName(p.Name, proto, p.Number), Protocol: proto})
	}
	for _, ep := range sp.Endpoints {
		we := &networking.WorkloadEntry{Address: ep.Address, Locality: istioLocality(ep.Region, ep.Zone), Labels: istioEndpointLabels(ep), Network: istioEndpointNetwork(c, ep)}
		if ep.Port > 0 && len(se.Ports) > 0 {
			we.Ports = map[string]uint32{se.Ports[0].Name: ep.Port}
			if we.Network != "" {
				for _, p := range se.Ports[1:] {
					we.Ports[p.Name] = ep.Port
				}
			}
		}
		se.Endpoints = append(se.Endpoints, we)
	}
	slices.SortStableFunc(se.Endpoints, func(a, b *networking.WorkloadEntry) int {
		if c := strings.Compare(a.Address, b.Address); c != 0 {
			return c
		}
		return strings.Compare(a.Labels[istioLabelCluster], b.Labels[istioLabelCluster])
	})
	return se
}

// splitOwnEndpoints returns sp with only the endpoints of other clusters (their gateways)
// and sp with only cluster c's own endpoints.
func splitOwnEndpoints(c string, sp ServiceEntryPlan) (others, own ServiceEntryPlan) {
	others, own = sp, sp
	others.Endpoints, own.Endpoints = nil, nil
	for _, ep := range sp.Endpoints {
		if ownEndpoint(c, ep) {
			own.Endpoints = append(own.Endpoints, ep)
		} else {
			others.Endpoints = append(others.Endpoints, ep)
		}
	}
	return others, own
}

// ownEndpoint reports whether ep is one of cluster c's own endpoints (or a static one).
func ownEndpoint(c string, ep Endpoint) bool { return ep.Cluster == c || ep.Cluster == "" }

// istioLocality is Istio's "region/zone". A zone without a region cannot be written (Istio
// would read it as a region), so it is left out.
func istioLocality(region, zone string) string {
	switch {
	case region == "":
		return ""
	case zone == "":
		return region
	}
	return region + "/" + zone
}

// istioPortName is a valid port name (a DNS-1123 label, as Istio requires), derived from the
// protocol and number when the plan's name is empty or cannot be made valid.
func istioPortName(name, proto string, number uint32) string {
	if n := strings.Trim(istioSanitize(strings.ReplaceAll(name, ".", "-")), "-"); n != "" && len(n) <= 63 {
		return n
	}
	return fmt.Sprintf("%s-%d", strings.Trim(istioSanitize(strings.ReplaceAll(proto, ".", "-")), "-"), number)
}

func istioNamespace(ns string) string {
	if ns == "" {
		return istioDefaultNamespace
	}
	return ns
}

// istioDuration converts a positive duration to Istio's millisecond precision (Istio rejects
// finer durations and durations under 1ms); zero or negative means unset.
func istioDuration(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(max(d.Round(time.Millisecond), time.Millisecond))
}

func istioInt32(v uint32, what string) (int32, error) {
	if v > math.MaxInt32 {
		return 0, fmt.Errorf("%s %d is out of range", what, v)
	}
	return int32(v), nil
}

// istioAssignNames gives every item a valid Kubernetes name (a DNS-1123 subdomain) derived
// from the name it wants, unique per kind and namespace. When sanitising makes names
// collide, each colliding item gets a short hash of its identity appended — except one
// whose wanted name was already valid as is, which keeps it; the result therefore does not
// depend on the order of the plan.
func istioAssignNames(items []istioItem) error {
	ids := map[string]bool{}
	groups := map[string][]int{}
	for i := range items {
		it := &items[i]
		id := it.kind + "/" + it.namespace + "\x00" + it.id
		if ids[id] {
			return fmt.Errorf("%s %s/%s rendered twice", it.kind, it.namespace, it.want)
		}
		ids[id] = true
		it.name = istioName(it.want)
		g := resource.Key(it.kind, it.namespace, it.name)
		groups[g] = append(groups[g], i)
	}
	for _, idx := range groups {
		if len(idx) == 1 && items[idx[0]].name != "" {
			continue // unique and usable
		}
		keep := -1
		for _, i := range idx {
			if items[i].name != "" && items[i].want == items[i].name {
				if keep == -1 {
					keep = i
				} else {
					keep = -2
				}
			}
		}
		for _, i := range idx {
			if i != keep {
				items[i].name = istioHashed(items[i].name, items[i].id)
			}
		}
	}
	seen := map[string]string{}
	for _, it := range items {
		k := resource.Key(it.kind, it.namespace, it.name)
		if other, dup := seen[k]; dup {
			return fmt.Errorf("%s names %q and %q both render as %s", it.kind, other, it.want, k)
		}
		seen[k] = it.want
	}
	return nil
}

// istioName sanitises a wanted name: lowercase, anything outside [a-z0-9-.] becomes '-',
// every dot-separated part starts and ends alphanumeric, and at most 253 characters. It may
// return "" (nothing usable), which istioAssignNames replaces with a hashed name.
func istioName(want string) string {
	parts := strings.Split(istioSanitize(want), ".")
	kept := parts[:0]
	for _, p := range parts {
		if p = strings.Trim(p, "-"); p != "" {
			kept = append(kept, p)
		}
	}
	return istioTruncate(strings.Join(kept, "."), istioMaxName)
}

// istioSanitize lowercases s and replaces anything outside [a-z0-9-.] with '-'.
func istioSanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

func istioTruncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.TrimRight(s, "-.")
}

// istioHashed appends a short hash of id to name, keeping the result within 253 characters.
func istioHashed(name, id string) string {
	sum := sha256.Sum256([]byte(id))
	h := hex.EncodeToString(sum[:])[:istioHashLen]
	name = istioTruncate(name, istioMaxName-1-istioHashLen)
	if name == "" {
		return "meshrelay-" + h
	}
	return name + "-" + h
}

// istioDNSLabel reports whether s is a DNS-1123 label (a valid namespace name).
func istioDNSLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !alnum && (c != '-' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}
