// Package translate turns the management configuration and every cluster's input snapshot
// into each cluster's output snapshot: Envoy xDS resources (go-control-plane types) and
// Istio-shaped resources (Istio's own types). It is pure and deterministic — no I/O, no
// clock, no map-order effects: the same inputs always give the same bytes.
//
// Translation happens in two steps: a Plan per cluster (build.go, vd.go: what the cluster
// needs, as plain Go values), then rendering (render_envoy.go, which wraps each message with
// internal/envoyres, and render_istio.go). The Translator keeps the previous results and
// recomputes only the clusters whose inputs — captured in a digest of everything their plan
// can read — changed; within a recomputed cluster, it reuses the VirtualDestination
// upstreams whose own inputs did not change (vdmemo.go), and every rendered element whose
// memo key did not (memo.go). Result.Work counts what was planned anew.
package translate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"runtime"
	"slices"
	"sort"

	"golang.org/x/sync/errgroup"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// ClusterCert is the mesh identity the management server issued to a cluster: its
// certificate and key, and the CA bundle that verifies every cluster's certificate.
type ClusterCert struct {
	CertPEM, KeyPEM, CAPEM []byte
	// Istio is the cluster's Istio workload CA, rendered as Istio's `cacerts` Secret
	// (nil: none).
	Istio *IstioCA
}

// Input is everything a translation reads.
type Input struct {
	// Config is the management server's configuration.
	Config []resource.Object
	// Inputs are the clusters' input snapshots by cluster name.
	Inputs map[string]*snapshot.Snapshot
	// Certs are the mesh identities by cluster name (optional).
	Certs map[string]ClusterCert
}

// Result is what one translation produced.
type Result struct {
	// Outputs holds the resources of every registered cluster, sorted by key.
	Outputs map[string][]snapshot.Resource
	// Status lists problems by resource (`FailoverScheme "gloo-fed/failover-scheme"`):
	// references to things that do not exist, unsupported combinations. They never stop the
	// translation of unrelated resources. Messages starting with NotePrefix are notes, not
	// problems (IsNote).
	Status map[string][]string
	// Errors are problems that belong to no resource (undecodable inputs, render failures).
	Errors []string
	// Recomputed lists the clusters whose output was computed anew (the others were reused).
	Recomputed []string
	// Work counts what the translation planned anew and what it reused.
	Work Work
}

// Work counts what one translation did, to show (and test) that it is proportional to what
// changed.
type Work struct {
	// VirtualDestinationsPlanned counts the upstreams of VirtualDestination ports built for
	// the recomputed clusters; VirtualDestinationsReused those taken unchanged from the
	// cluster's previous translation (their inputs, vdPortKey, were the same).
	VirtualDestinationsPlanned int
	VirtualDestinationsReused  int
	// VirtualDestinationsAssembled counts, of the planned ones, those assembled from the
	// cluster's own endpoints and the others' part remembered from its previous
	// translation (vdsplit.go): the work of an own-endpoint change, O(own endpoints).
	VirtualDestinationsAssembled int
	// InputsParsed counts the clusters whose input snapshot was parsed (not taken parsed
	// from the previous translations).
	InputsParsed int
	// InputsDecoded counts the cluster input resources decoded because their key or hash
	// changed; InputsReused those of changed inputs taken decoded from the cluster's
	// previous parse. Unchanged inputs are not parsed at all and count in neither.
	InputsDecoded int
	InputsReused  int
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

type decodedCluster struct {
	raw string
	kc  v1alpha1.KubernetesCluster
}

// clusters is Clusters, decoding only the KubernetesClusters whose object changed since the
// last translation.
func (t *Translator) clusters(config []resource.Object) map[string]v1alpha1.KubernetesCluster {
	out := map[string]v1alpha1.KubernetesCluster{}
	kcs := make(map[string]decodedCluster, len(t.kcs))
	for _, o := range config {
		if o.Kind != v1alpha1.KindKubernetesCluster {
			continue
		}
		d, ok := t.kcs[o.Name]
		if !ok || d.raw != string(o.Raw) {
			d = decodedCluster{raw: string(o.Raw)}
			if err := o.Into(&d.kc); err != nil {
				continue
			}
		}
		kcs[o.Name], out[o.Name] = d, d.kc
	}
	t.kcs = kcs
	return out
}

// Translate computes every registered cluster's output from scratch.
func Translate(in Input) Result { return NewTranslator().Translate(in) }

// Translator translates incrementally: it reuses the output of every cluster whose digest
// (a hash of everything its plan reads) is unchanged. Not safe for concurrent use.
type Translator struct {
	models map[string]cachedModel
	// prevModels are the models translations replaced, the latest per cluster: a
	// translation abandoned for a configuration change is followed by one of that change
	// with the inputs before it, then by the newer inputs again (internal/reconcile), and
	// neither parses them anew.
	prevModels map[string]cachedModel
	outputs    map[string]cachedOutput
	// kcs are the decoded KubernetesClusters by name, with the raw object they were
	// decoded from (every translation reads all of them).
	kcs        map[string]decodedCluster
	memo       *renderMemo
	selections *selectionMemo
}

type cachedModel struct {
	hash  string
	model *clusterModel
	// decoded are the cluster's input resources by key, decoded, for its next parse to
	// reuse (parseCluster); they go with the cluster.
	decoded map[string]decoded
}

type cachedOutput struct {
	digest    string
	resources []snapshot.Resource
	status    map[string][]string
	errors    []string
	// vdPlans are the VirtualDestination upstreams of the cluster's plan by vdPortKey, for
	// the next translation of the cluster to reuse.
	vdPlans vdPlans
	work    Work
	// istioCA is the Istio CA the output's `cacerts` Secret (istioSecret) was rendered from,
	// so that the next translation of the cluster renders it again only when it changed.
	istioCA     *IstioCA
	istioSecret snapshot.Resource
}

// NewTranslator returns a Translator with empty caches.
func NewTranslator() *Translator {
	return &Translator{models: map[string]cachedModel{}, outputs: map[string]cachedOutput{}, memo: newRenderMemo(), selections: newSelectionMemo()}
}

// Translate computes every registered cluster's output, reusing unchanged ones.
func (t *Translator) Translate(in Input) Result {
	res, _ := t.translate(in, nil)
	return res
}

// TranslateContext is Translate that gives up when ctx ends (the caller has newer inputs
// to translate): it returns ctx's error and no result, and the Translator reuses next time
// only what it had before (plus parsed inputs, cached by hash).
func (t *Translator) TranslateContext(ctx context.Context, in Input) (Result, error) {
	if res, ok := t.translate(in, ctx.Done()); ok {
		return res, nil
	}
	return Result{}, fmt.Errorf("translation abandoned: %w", context.Cause(ctx))
}

// translate is Translate, abandoned (false) once done is closed.
func (t *Translator) translate(in Input, done <-chan struct{}) (Result, bool) {
	abandoned := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	w := t.world(in)
	res := Result{Outputs: make(map[string][]snapshot.Resource, len(w.names)), Work: Work{InputsParsed: w.parsed.inputs}}
	for _, c := range w.names {
		res.Errors = append(res.Errors, w.models[c].errors...)
	}
	global := w.status // problems found while reading the configuration
	digests := w.digests(in)
	outs := make([]cachedOutput, len(w.names))
	var stale []int // indexes into w.names of the clusters to recompute
	for i, c := range w.names {
		out, ok := t.outputs[c]
		if !ok || out.digest != digests[c] {
			stale = append(stale, i)
			res.Recomputed = append(res.Recomputed, c)
			continue
		}
		outs[i] = out
	}
	// Clusters are planned and rendered in parallel: each plan reads the shared world (its
	// caches and the render memo are safe for concurrent use) and writes only its own output.
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, i := range stale {
		g.Go(func() error {
			if abandoned() {
				return nil
			}
			c := w.names[i]
			cw := w.forPlan(t.outputs[c].vdPlans)
			rs, errs := render(cw.plan(c), t.memo, cw.vd.render)
			var secret snapshot.Resource
			cert := in.Certs[c]
			if cert.Istio != nil {
				prev := t.outputs[c]
				if secret = prev.istioSecret; prev.istioCA == nil || !prev.istioCA.equal(cert.Istio) {
					secret = istioCASecret(*cert.Istio)
				}
				rs = append(rs, secret)
				sort.Slice(rs, func(i, j int) bool { return rs[i].Key < rs[j].Key })
			}
			outs[i] = cachedOutput{digest: digests[c], resources: rs, status: cw.status.m, errors: errs, vdPlans: cw.vd.plans(),
				work:    Work{VirtualDestinationsPlanned: cw.vd.planned, VirtualDestinationsReused: cw.vd.reused, VirtualDestinationsAssembled: cw.vd.assembled},
				istioCA: cert.Istio, istioSecret: secret}
			return nil
		})
	}
	_ = g.Wait() // the workers report problems in their outputs, never as errors
	if abandoned() {
		return Result{}, false // t.outputs and the memo's generation stay as they were
	}
	next := make(map[string]cachedOutput, len(w.names))
	res.Work.InputsDecoded, res.Work.InputsReused = w.parsed.decoded, w.parsed.reused
	for _, i := range stale {
		res.Work.VirtualDestinationsPlanned += outs[i].work.VirtualDestinationsPlanned
		res.Work.VirtualDestinationsReused += outs[i].work.VirtualDestinationsReused
		res.Work.VirtualDestinationsAssembled += outs[i].work.VirtualDestinationsAssembled
	}
	var status statusSet // every cluster's messages, each once per resource
	for i, c := range w.names {
		out := outs[i]
		next[c] = out
		res.Outputs[c] = out.resources
		res.Errors = append(res.Errors, out.errors...)
		status.merge(out.status)
	}
	status.merge(global.m)
	res.Status = status.sorted()
	t.outputs = next
	t.selections.rotate()
	if len(res.Recomputed) > 0 {
		inUse := 0 // at most one memo entry per output resource
		for _, rs := range res.Outputs {
			inUse += len(rs)
		}
		t.memo.rotate(inUse)
	}
	sort.Strings(res.Errors)
	res.Errors = uniq(res.Errors)
	return res, true
}

func uniq(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// render turns a plan into resources; a renderer failure is reported and leaves that
// renderer's part of the output out rather than publishing half of it.
func render(p Plan, memo *renderMemo, keys planKeys) ([]snapshot.Resource, []string) {
	var out []snapshot.Resource
	var errs []string
	var upstreamKeys []string
	if memo != nil {
		// An upstream's rendering depends on it and on which secrets exist (a reference to
		// a missing one fails it).
		secrets := make([]string, len(p.Secrets))
		for i, s := range p.Secrets {
			secrets[i] = s.Name
		}
		slices.Sort(secrets)
		secretsKey := memo.key(secrets)
		upstreamKeys = make([]string, len(p.Upstreams))
		for i, u := range p.Upstreams {
			k, ok := keys.upstreams[u.Name] // built from digests, no need to hash u
			if !ok {
				k = memo.key(u)
			}
			if k != "" && secretsKey != "" {
				upstreamKeys[i] = k + "|" + secretsKey
			}
		}
	}
	env, err := renderEnvoyMemo(p, memo, upstreamKeys, keys.splits)
	if err != nil {
		errs = append(errs, fmt.Sprintf("cluster %s: envoy: %v", p.Cluster, err))
	} else {
		out = append(out, env...)
	}
	ist, err := renderIstioMemo(p, memo, upstreamKeys, keys.serviceEntries)
	if err != nil {
		errs = append(errs, fmt.Sprintf("cluster %s: istio: %v", p.Cluster, err))
	} else {
		out = append(out, ist...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, errs
}

// world parses the configuration and the inputs (reusing parsed inputs by hash and, in a
// changed input, the resources decoded before by key and hash).
func (t *Translator) world(in Input) *world {
	w := &world{clusters: t.clusters(in.Config), models: map[string]*clusterModel{}, certs: in.Certs, status: &statusSet{},
		localCache: newCache[string, map[string]*upstreamModel](), backingCache: newCache[string, []backing](),
		gatewayEndpointsCache: newCache[string, []Endpoint](), tlsCache: newCache[[2]string, *UpstreamTLS](),
		vdKeyCache: newCache[string, string](), vd: newVDState(vdPlans{}), selections: t.selections, refs: &referenceIndex{}}
	w.names = sortedNames(w.clusters)
	models := make(map[string]cachedModel, len(w.names))
	var objs []object
	for _, o := range in.Config {
		objs = append(objs, object{Object: o})
	}
	// The model depends on the cluster's KubernetesCluster too (domain, locality).
	kcRaw := make(map[string]string, len(w.names))
	for _, o := range in.Config {
		if o.Kind == v1alpha1.KindKubernetesCluster {
			kcRaw[o.Name] = string(o.Raw)
		}
	}
	for _, c := range w.names {
		h := ""
		if s := in.Inputs[c]; s != nil {
			h = s.Hash
		}
		key := h + "|" + kcRaw[c]
		cm, ok := t.models[c]
		if !ok || cm.hash != key {
			if p, pok := t.prevModels[c]; pok && p.hash == key {
				cm = p
			} else {
				m, dec, st := parseCluster(c, w.clusters[c], in.Inputs[c], cm.decoded)
				cm = cachedModel{hash: key, model: m, decoded: dec}
				w.parsed.inputs++
				w.parsed.decoded += st.decoded
				w.parsed.reused += st.reused
			}
		}
		models[c] = cm
		w.models[c] = cm.model
		objs = append(objs, cm.model.objects...)
	}
	prev := map[string]cachedModel{}
	for c, cur := range models {
		if old, ok := t.models[c]; ok && old.hash != cur.hash {
			prev[c] = old
		} else if p, ok := t.prevModels[c]; ok && p.hash != cur.hash {
			prev[c] = p
		}
	}
	t.models, t.prevModels = models, prev
	// A stable order (by key, then origin) so that overlapping objects resolve the same way
	// whatever order the configuration came in.
	sort.SliceStable(objs, func(i, j int) bool {
		if ki, kj := objs[i].Key(), objs[j].Key(); ki != kj {
			return ki < kj
		}
		return objs[i].origin < objs[j].origin
	})
	decodeInto(objs, v1alpha1.KindUpstream, w, &w.upstreamDecls)
	decodeInto(objs, v1alpha1.KindGateway, w, &w.gatewayDecls)
	decodeInto(objs, v1alpha1.KindFailoverScheme, w, &w.schemes)
	decodeInto(objs, v1alpha1.KindRouteTable, w, &w.routeTables)
	decodeInto(objs, v1alpha1.KindVirtualDestination, w, &w.vds)
	decodeInto(objs, v1alpha1.KindFailoverPolicy, w, &w.fpolicies)
	decodeInto(objs, v1alpha1.KindOutlierDetectionPolicy, w, &w.opolicies)
	return w
}

// digests computes, per cluster, a hash of everything its plan can read: its own input
// and KubernetesCluster, the configuration objects that can apply to it, the mesh
// certificates, and what every other cluster exports (gateway addresses and the upstreams
// that failover schemes, route tables and virtual destinations can reach).
func (w *world) digests(in Input) map[string]string {
	var clusterObjs []string
	for _, o := range in.Config {
		if o.Kind == v1alpha1.KindKubernetesCluster {
			clusterObjs = append(clusterObjs, string(o.Raw))
		}
	}
	sort.Strings(clusterObjs)
	// What every cluster's output may depend on is hashed once (O(N)), not once per
	// cluster: the registered clusters and what each of them exports, and the objects that
	// apply to every cluster. A cluster's own exports are in it too; they come from its
	// input, which its digest covers anyway.
	shared := sha256.New()
	writeTo := func(h hash.Hash, b []byte) { h.Write(b); h.Write([]byte{0}) }
	for _, s := range clusterObjs {
		writeTo(shared, []byte(s))
	}
	for _, c := range w.names {
		writeTo(shared, []byte(c))
		writeTo(shared, []byte(w.exportDigest(c)))
	}
	var forAll []relevantObject
	forCluster := map[string][]relevantObject{}
	for _, r := range w.relevantObjects() {
		if r.all {
			forAll = append(forAll, r)
			continue
		}
		for _, c := range uniqStrings(r.clusters) {
			forCluster[c] = append(forCluster[c], r)
		}
	}
	// The objects that apply to every cluster are hashed once too.
	writeObjects := func(h hash.Hash, rs []relevantObject) {
		for _, r := range rs {
			writeTo(h, []byte(r.origin))
			writeTo(h, r.raw)
		}
	}
	writeObjects(shared, forAll)
	sharedSum := shared.Sum(nil)
	out := make(map[string]string, len(w.names))
	for _, c := range w.names {
		h := sha256.New()
		writeTo(h, []byte(c))
		writeTo(h, sharedSum)
		if s := in.Inputs[c]; s != nil {
			writeTo(h, []byte(s.Hash))
		}
		if cert, ok := in.Certs[c]; ok {
			writeTo(h, cert.CertPEM)
			writeTo(h, cert.KeyPEM)
			writeTo(h, cert.CAPEM)
			if ist := cert.Istio; ist != nil {
				for _, b := range [][]byte{ist.CertPEM, ist.KeyPEM, ist.RootPEM, ist.ChainPEM} {
					writeTo(h, b)
				}
			}
		}
		writeObjects(h, forCluster[c])
		out[c] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

func uniqStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

type relevantObject struct {
	origin   string
	raw      []byte
	all      bool
	clusters []string
}

// relevantObjects says which clusters each configuration object can affect.
func (w *world) relevantObjects() []relevantObject {
	var out []relevantObject
	add := func(o object, all bool, clusters ...string) {
		out = append(out, relevantObject{origin: o.origin, raw: o.Raw, all: all, clusters: clusters})
	}
	for _, d := range w.upstreamDecls {
		target := orString(d.origin, d.v.Spec.Cluster)
		add(d.obj, target == "", target)
	}
	for _, d := range w.gatewayDecls {
		add(d.obj, false, d.v.Spec.Cluster)
	}
	for _, s := range w.schemes {
		cl := []string{s.v.Spec.Primary.ClusterName}
		for _, g := range s.v.Spec.FailoverGroups {
			for _, t := range g.PriorityGroup {
				cl = append(cl, t.Cluster)
			}
		}
		add(s.obj, false, cl...)
	}
	for _, rt := range w.routeTables {
		cl := rt.v.Spec.Clusters
		switch {
		case len(cl) > 0:
		case rt.origin != "":
			cl = []string{rt.origin}
		}
		// Remote destinations make the target cluster's gateway serve the upstream.
		for _, r := range rt.v.Spec.HTTP {
			for _, d := range r.ForwardTo.Destinations {
				if d.Ref.Cluster != "" {
					cl = append(cl, d.Ref.Cluster)
				}
			}
		}
		add(rt.obj, len(rt.v.Spec.Clusters) == 0 && rt.origin == "", cl...)
	}
	for _, v := range w.vds {
		add(v.obj, true)
	}
	for _, p := range w.fpolicies {
		add(p.obj, true)
	}
	for _, p := range w.opolicies {
		add(p.obj, true)
	}
	return out
}

// exportDigest hashes what other clusters can read of cluster c: its gateway addresses and
// the upstreams that schemes, route tables and virtual destinations can reach. Of those
// upstreams, other clusters read the endpoints only of virtual destination backings in a
// cluster without a gateway (flat network, vd.go); behind a gateway they read the
// gateway's addresses instead, so an endpoint change there recomputes c alone.
func (w *world) exportDigest(c string) string {
	h := sha256.New()
	gw := w.gatewayEndpoints(c)
	for _, e := range gw {
		fmt.Fprintf(h, "gw %s %d %s %s %s %s\n", e.Address, e.Port, e.Cluster, e.Region, e.Zone, e.Network)
	}
	withEndpoints := map[string]bool{} // the upstreams other clusters read the endpoints of
	local := w.localUpstreams(c)
	exported := map[string]bool{}
	for name := range w.referencedIn()[c] {
		exported[name] = true
	}
	for _, vd := range w.vds {
		for _, u := range w.selectedIn(c, vd) {
			if _, ok := local[u.name]; ok {
				exported[u.name] = true
				withEndpoints[u.name] = len(gw) == 0
			}
		}
	}
	for _, name := range sortedNames(exported) {
		u, ok := local[name]
		if !ok {
			fmt.Fprintf(h, "missing %s\n", name)
			continue
		}
		fmt.Fprintf(h, "up %s %s %s %s %d %v\n", u.name, u.namespace, u.svcName, u.host, u.port, sortedLabels(u.labels))
		if withEndpoints[name] {
			fmt.Fprintf(h, "ep %s\n", endpointsDigest(u.endpoints))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// referencedIn indexes, once per world, the upstreams that failover schemes and route tables
// name in each cluster: what other clusters' gateways must serve of it (exportDigest asks for
// every cluster, and walking every scheme and route table for each was O(clusters²)).
func (w *world) referencedIn() map[string]map[string]bool {
	r := w.refs
	r.once.Do(func() {
		r.m = map[string]map[string]bool{}
		add := func(c, name string) {
			if r.m[c] == nil {
				r.m[c] = map[string]bool{}
			}
			r.m[c][name] = true
		}
		for _, s := range w.schemes {
			// A primary's host and port are the host other clusters' gateways serve for it.
			add(s.v.Spec.Primary.ClusterName, s.v.Spec.Primary.Name)
			for _, g := range s.v.Spec.FailoverGroups {
				for _, t := range g.PriorityGroup {
					for _, u := range t.Upstreams {
						add(t.Cluster, u.Name)
					}
				}
			}
		}
		for _, rt := range w.routeTables {
			for _, r := range rt.v.Spec.HTTP {
				for _, d := range r.ForwardTo.Destinations {
					add(d.Ref.Cluster, d.Ref.Name)
				}
			}
		}
	})
	return r.m
}

func sortedLabels(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
