package ui

import (
	"sort"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
)

// maxServices bounds the graph: beyond it the page says how many were left out.
const maxServices = 40

// Topology is the graph of clusters and the virtual destinations (services) they export
// (a selected Service in the cluster's input) and import (the destination's ServiceEntry in
// the cluster's output), laid out for the SVG: clusters on the left, services on the right.
type Topology struct {
	Width, Height int
	Clusters      []Node
	Services      []Node
	Edges         []Edge
	Omitted       int
}

// Node is a box of the graph.
type Node struct {
	Name string
	X, Y int
	Up   bool // clusters: connected
}

// Edge joins a cluster to a service: Export (solid) or import (dashed).
type Edge struct {
	Cluster, Service string
	X1, Y1, X2, Y2   int
	Export           bool
}

const (
	rowHeight = 44
	nodeWidth = 200
	graphW    = 640
)

func topology(in Inputs) Topology {
	var t Topology
	up := map[string]bool{}
	var names []string
	for _, c := range clusters(in) {
		names = append(names, c.Name)
		up[c.Name] = c.Conn == "connected"
	}
	type vd struct {
		name, ns string
		spec     v1alpha1.VirtualDestinationSpec
	}
	var vds []vd
	for _, o := range in.Config {
		if o.Kind != "VirtualDestination" {
			continue
		}
		var v v1alpha1.VirtualDestination
		if o.Into(&v) != nil {
			continue
		}
		vds = append(vds, vd{o.Name, o.Namespace, v.Spec})
	}
	services := map[string]map[string]bool{} // cluster → exported VD names
	for _, c := range names {
		services[c] = map[string]bool{}
		for _, r := range in.Inputs[c].Sorted() {
			o, err := resource.FromResource(r)
			if err != nil || o.Kind != "Service" {
				continue
			}
			for _, v := range vds {
				if selects(v.spec.Services, c, o) {
					services[c][v.ns+"/"+v.name] = true
				}
			}
		}
	}
	var used []string
	usedSet := map[string]bool{}
	var edges []Edge
	for _, v := range vds {
		id := v.ns + "/" + v.name
		key := "ServiceEntry/" + v.ns + "/vd-" + v.name
		for _, c := range names {
			exp := services[c][id]
			imp := false
			for _, k := range in.Outputs[c].Keys() {
				if k == key {
					imp = true
					break
				}
			}
			if !exp && !imp {
				continue
			}
			if !usedSet[id] {
				usedSet[id] = true
				used = append(used, id)
			}
			// A cluster that exports a service also receives it: draw the export only.
			edges = append(edges, Edge{Cluster: c, Service: id, Export: exp})
		}
	}
	sort.Strings(used)
	if len(used) > maxServices {
		t.Omitted = len(used) - maxServices
		used = used[:maxServices]
	}
	row := map[string]int{}
	for i, c := range names {
		t.Clusters = append(t.Clusters, Node{Name: c, X: 10, Y: 10 + i*rowHeight, Up: up[c]})
		row[c] = i
	}
	srow := map[string]int{}
	for i, s := range used {
		t.Services = append(t.Services, Node{Name: s, X: graphW - nodeWidth - 10, Y: 10 + i*rowHeight})
		srow[s] = i
	}
	for _, e := range edges {
		si, ok := srow[e.Service]
		if !ok {
			continue
		}
		e.X1, e.Y1 = 10+nodeWidth, 10+row[e.Cluster]*rowHeight+16
		e.X2, e.Y2 = graphW-nodeWidth-10, 10+si*rowHeight+16
		t.Edges = append(t.Edges, e)
	}
	t.Width = graphW
	t.Height = 20 + max(len(t.Clusters), len(t.Services), 1)*rowHeight
	return t
}

// selects reports whether a Service object in cluster matches any of the selectors (name,
// namespace, cluster and labels, each when set).
func selects(sels []v1alpha1.ServiceSelector, cluster string, o resource.Object) bool {
	for _, s := range sels {
		if s.Name != "" && s.Name != o.Name || s.Namespace != "" && s.Namespace != o.Namespace || s.Cluster != "" && s.Cluster != cluster {
			continue
		}
		ok := true
		for k, v := range s.Labels {
			if o.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
