// Package translate turns the management configuration and every cluster's input snapshot
// into each cluster's output snapshot. It is a pure, deterministic function: no I/O, no
// clock, no map-order effects — the same inputs always give the same bytes.
package translate

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Result is what one translation produced.
type Result struct {
	// Outputs holds the resources of every registered cluster, sorted by key.
	Outputs map[string][]snapshot.Resource
	// Errors are problems found while translating (for example an input object that does
	// not decode); they never stop the translation of unrelated resources.
	Errors []string
}

// Clusters returns the registered clusters of a configuration by name.
func Clusters(config []resource.Object) map[string]v1alpha1.KubernetesCluster {
	out := map[string]v1alpha1.KubernetesCluster{}
	for _, o := range config {
		if o.Kind != v1alpha1.KindKubernetesCluster {
			continue
		}
		var kc v1alpha1.KubernetesCluster
		if err := o.Into(&kc); err == nil {
			out[o.Name] = kc
		}
	}
	return out
}

// Translate computes the output of every cluster registered in config from the inputs.
// Inputs of clusters that are not registered are ignored.
func Translate(config []resource.Object, inputs map[string]*snapshot.Snapshot) Result {
	clusters := Clusters(config)
	names := sortedKeys(clusters)
	res := Result{Outputs: make(map[string][]snapshot.Resource, len(names))}

	// Services of each cluster, with their ready endpoints.
	services := map[string][]discovered{}
	for _, c := range names {
		svcs, errs := discoveredServices(c, inputs[c])
		services[c] = svcs
		res.Errors = append(res.Errors, errs...)
	}
	for _, c := range names {
		var out []snapshot.Resource
		for _, other := range names {
			if other == c {
				continue
			}
			for _, d := range services[other] {
				r, err := serviceEntry(other, d)
				if err != nil {
					res.Errors = append(res.Errors, err.Error())
					continue
				}
				out = append(out, r)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
		res.Outputs[c] = out
	}
	sort.Strings(res.Errors)
	return res
}

type discovered struct {
	svc       v1alpha1.Service
	endpoints []v1alpha1.EndpointSlice
}

func discoveredServices(cluster string, in *snapshot.Snapshot) ([]discovered, []string) {
	if in == nil {
		return nil, nil
	}
	var errs []string
	var svcs []discovered
	slices := map[string][]v1alpha1.EndpointSlice{}
	for _, r := range in.Sorted() {
		o, err := resource.FromResource(r)
		if err != nil {
			errs = append(errs, fmt.Sprintf("cluster %s: %v", cluster, err))
			continue
		}
		switch o.Kind {
		case v1alpha1.KindService:
			var s v1alpha1.Service
			if err := o.Into(&s); err != nil {
				errs = append(errs, fmt.Sprintf("cluster %s: %s: %v", cluster, o, err))
				continue
			}
			svcs = append(svcs, discovered{svc: s})
		case v1alpha1.KindEndpointSlice:
			var es v1alpha1.EndpointSlice
			if err := o.Into(&es); err != nil {
				errs = append(errs, fmt.Sprintf("cluster %s: %s: %v", cluster, o, err))
				continue
			}
			k := o.Namespace + "/" + es.Metadata.Labels[v1alpha1.LabelServiceName]
			slices[k] = append(slices[k], es)
		}
	}
	for i := range svcs {
		svcs[i].endpoints = slices[svcs[i].svc.Metadata.Namespace+"/"+svcs[i].svc.Metadata.Name]
	}
	return svcs, errs
}

// LabelSourceCluster marks output resources with the cluster they describe.
const LabelSourceCluster = "meshrelay.io/source-cluster"

// RemoteHost is the hostname under which a service of another cluster is reachable.
func RemoteHost(cluster, namespace, service string) string {
	return fmt.Sprintf("%s.%s.svc.%s.global", service, namespace, cluster)
}

func serviceEntry(cluster string, d discovered) (snapshot.Resource, error) {
	s := d.svc
	ports := make([]map[string]any, 0, len(s.Spec.Ports))
	for _, p := range s.Spec.Ports {
		name := p.Name
		if name == "" {
			name = fmt.Sprintf("port-%d", p.Port)
		}
		proto := p.Protocol
		if proto == "" || proto == "TCP" {
			proto = "TCP"
		}
		ports = append(ports, map[string]any{"number": p.Port, "name": name, "protocol": proto})
	}
	var eps []map[string]any
	for _, es := range d.endpoints {
		portMap := map[string]any{}
		for _, p := range es.Ports {
			if p.Name != "" {
				portMap[p.Name] = p.Port
			}
		}
		for _, ep := range es.Endpoints {
			if !ep.IsReady() {
				continue
			}
			for _, addr := range ep.Addresses {
				e := map[string]any{"address": addr, "labels": map[string]string{LabelSourceCluster: cluster}}
				if len(portMap) > 0 {
					e["ports"] = portMap
				}
				if ep.Zone != "" {
					e["locality"] = ep.Zone
				}
				eps = append(eps, e)
			}
		}
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i]["address"].(string) < eps[j]["address"].(string) })
	name := fmt.Sprintf("%s-%s-%s", cluster, s.Metadata.Namespace, s.Metadata.Name)
	spec := map[string]any{
		"hosts":      []string{RemoteHost(cluster, s.Metadata.Namespace, s.Metadata.Name)},
		"location":   "MESH_INTERNAL",
		"resolution": "STATIC",
		"ports":      ports,
	}
	if len(eps) > 0 {
		spec["endpoints"] = eps
	}
	obj := map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "ServiceEntry",
		"metadata": map[string]any{
			"name":      name,
			"namespace": s.Metadata.Namespace,
			"labels":    map[string]string{LabelSourceCluster: cluster, "app.kubernetes.io/managed-by": "meshrelay"},
		},
		"spec": spec,
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return snapshot.Resource{}, fmt.Errorf("cluster %s: ServiceEntry %s: %w", cluster, name, err)
	}
	return snapshot.NewResource(resource.Key("ServiceEntry", s.Metadata.Namespace, name), body), nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
