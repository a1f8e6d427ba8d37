package translate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
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

	// istioDefaultNamespace is where a resource goes when its plan names no namespace.
	istioDefaultNamespace = "default"
	// istioDefaultProtocol is a ServiceEntry port's protocol when the plan names none.
	istioDefaultProtocol = "HTTP"

	istioLabelManagedBy = "app.kubernetes.io/managed-by"
	istioManagedBy      = "meshrelay"
	// istioLabelCluster names the workload cluster an object was rendered for (metadata) or
	// the cluster an endpoint is in (ServiceEntry endpoint labels).
	istioLabelCluster = "meshrelay.io/cluster"

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
func renderIstio(p Plan) ([]snapshot.Resource, error) { return renderIstioMemo(p, nil, nil) }

// renderIstioMemo is renderIstio reusing resources rendered before from exactly the same
// plan element for the same cluster, under the same name (memo may be nil; upstreamKeys are
// the memo keys of p.Upstreams, nil without a memo).
func renderIstioMemo(p Plan, memo *renderMemo, upstreamKeys []string) ([]snapshot.Resource, error) {
	var items []istioItem
	for i, u := range p.Upstreams {
		dr, err := istioDestinationRule(u)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		if dr == nil {
			continue
		}
		src := ""
		if upstreamKeys != nil {
			src = upstreamKeys[i]
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
		items = append(items, istioItem{kind: istioKindServiceEntry, namespace: istioNamespace(se.Namespace), id: se.Name, want: se.Name, build: func() proto.Message { return istioServiceEntry(se) }, src: memo.key(se)})
	}
	// Secrets and TCP gateways: Envoy only (SDS secrets and SNI-forwarding listeners have no
	// counterpart among Istio's networking resources).

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
// DestinationRule; neither does its connect timeout (a mesh-wide setting in Istio).
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
	// Istio fails over between localities only while outlier detection is configured (its
	// validation warns otherwise); the translator pairs the two.
	if f := u.Failover; f != nil && f.From != "" {
		lb := &networking.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)}
		for _, to := range f.To {
			// Istio rejects a failover to the same region.
			if to == "" || to == f.From {
				continue
			}
			lb.Failover = append(lb.Failover, &networking.LocalityLoadBalancerSetting_Failover{From: f.From, To: to})
		}
		tp.LoadBalancer = &networking.LoadBalancerSettings{LocalityLbSetting: lb}
	}
	if tls := istioFirstTLS(u.Priorities); tls != nil {
		// Istio applies one TLS setting to the whole host. The client certificate, key and CA
		// all come from the credential secret (its ca.crt), so CASecret is not referenced.
		tp.Tls = &networking.ClientTLSSettings{
			Mode:           networking.ClientTLSSettings_MUTUAL,
			Sni:            tls.SNI,
			CredentialName: tls.CertSecret,
		}
	}
	if tp.OutlierDetection == nil && tp.LoadBalancer == nil && tp.Tls == nil {
		return nil, nil
	}
	host := u.Host
	if host == "" {
		host = u.Name
	}
	return &networking.DestinationRule{Host: host, TrafficPolicy: tp}, nil
}

// istioFirstTLS is the TLS of the first endpoint, in priority order, that has one.
func istioFirstTLS(prios [][]Endpoint) *UpstreamTLS {
	for _, eps := range prios {
		for _, ep := range eps {
			if ep.TLS != nil {
				return ep.TLS
			}
		}
	}
	return nil
}

// istioVirtualService renders one virtual host's routes in order, or nil when the virtual
// host has no domains (it could match nothing).
func istioVirtualService(vh VirtualHost) (*networking.VirtualService, error) {
	if len(vh.Domains) == 0 {
		return nil, nil
	}
	vs := &networking.VirtualService{Hosts: slices.Clone(vh.Domains)}
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

// istioServiceEntry makes hosts of other clusters resolvable here: static, mesh-internal
// endpoints sorted by address. Endpoint ports are given for the first service port only
// (an Endpoint carries a single port).
func istioServiceEntry(sp ServiceEntryPlan) *networking.ServiceEntry {
	se := &networking.ServiceEntry{
		Hosts:      slices.Clone(sp.Hosts),
		Location:   networking.ServiceEntry_MESH_INTERNAL,
		Resolution: networking.ServiceEntry_STATIC,
	}
	for _, p := range sp.Ports {
		proto := strings.ToUpper(p.Protocol)
		if proto == "" {
			proto = istioDefaultProtocol
		}
		se.Ports = append(se.Ports, &networking.ServicePort{Number: p.Number, Name: istioPortName(p.Name, proto, p.Number), Protocol: proto})
	}
	for _, ep := range sp.Endpoints {
		we := &networking.WorkloadEntry{Address: ep.Address, Locality: istioLocality(ep.Region, ep.Zone)}
		if len(se.Ports) > 0 && ep.Port > 0 {
			we.Ports = map[string]uint32{se.Ports[0].Name: ep.Port}
		}
		if ep.Cluster != "" {
			we.Labels = map[string]string{istioLabelCluster: ep.Cluster}
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
