package translate_test

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
	"github.com/meshrelay/meshrelay/internal/translate/translatetest"
)

// ---- Worlds written as YAML, the way users and agents write them ----

func ptCluster(name, region string) string {
	labels := "{}"
	if region != "" {
		labels = "{topology.kubernetes.io/region: " + region + "}"
	}
	return "apiVersion: meshrelay.io/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: " + name + ", labels: " + labels + "}"
}

// ptService is a Service in namespace ns (label app=name) and, with addresses, its
// EndpointSlice; an address starting with "!" is not ready.
func ptService(ns, name string, port int, addrs ...string) string {
	svc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s, labels: {app: %s}}\nspec: {ports: [{name: p, port: %d}]}", name, ns, name, port)
	if len(addrs) == 0 {
		return svc
	}
	var eps []string
	for _, a := range addrs {
		ready := !strings.HasPrefix(a, "!")
		eps = append(eps, fmt.Sprintf("{addresses: [%q], conditions: {ready: %t}}", strings.TrimPrefix(a, "!"), ready))
	}
	return svc + fmt.Sprintf("\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: %s-1, namespace: %s, labels: {kubernetes.io/service-name: %s}}\naddressType: IPv4\nendpoints: [%s]\nports: [{name: p, port: %d}]",
		name, ns, name, strings.Join(eps, ", "), port)
}

// ptGateway is a TCP failover gateway forwarding by SNI and the Service exposing it at addr;
// secret, when set, is its bring-your-own serving secret (sslConfig.secretRef).
func ptGateway(addr, secret string) string {
	ssl := ""
	if secret != "" {
		ssl = "sslConfig: {secretRef: {name: " + secret + ", namespace: gloo-system}}, "
	}
	return "apiVersion: meshrelay.io/v1alpha1\nkind: Gateway\nmetadata: {name: east-west, namespace: gloo-system}\n" +
		"spec: {bindPort: 15443, tcpGateway: {tcpHosts: [{name: mesh, " + ssl + "destination: {forwardSniClusterName: {}}}]}}\n---\n" +
		ptService("gloo-system", "failover", 15443, addr)
}

// ptSecret is a kubernetes.io/tls Secret in gloo-system, with a ca.crt when ca is set.
func ptSecret(name string, ca bool) string {
	data := "tls.crt: CERT-" + name + ", tls.key: KEY-" + name
	if ca {
		data += ", ca.crt: CA-" + name
	}
	return "apiVersion: v1\nkind: Secret\nmetadata: {name: " + name + ", namespace: gloo-system}\ntype: kubernetes.io/tls\nstringData: {" + data + "}"
}

// ptPatch is an Upstream that adds an HTTP health check to the upstream name; cluster is
// its spec.cluster ("" for one in a cluster's own input).
func ptPatch(name, cluster, path string) string {
	spec := "healthChecks: [{timeout: 1s, interval: 2s, httpHealthCheck: {path: " + path + "}}]"
	if cluster != "" {
		spec += ", cluster: " + cluster
	}
	return "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: " + name + ", namespace: gloo-system}\nspec: {" + spec + "}"
}

// ptRouteTable routes host to one route per destination: "upstream", "cluster/upstream" or
// "vd:name" (a VirtualDestination's port 8080).
func ptRouteTable(name, host string, clusters []string, dests ...string) string {
	var routes []string
	for i, d := range dests {
		dest := "ref: {name: " + d + "}"
		if c, n, ok := strings.Cut(d, "/"); ok {
			dest = "ref: {name: " + n + ", cluster: " + c + "}"
		} else if n, ok := strings.CutPrefix(d, "vd:"); ok {
			dest = "ref: {name: " + n + "}, kind: VIRTUAL_DESTINATION, port: {number: 8080}"
		}
		routes = append(routes, fmt.Sprintf("{name: r%d, matchers: [{uri: {prefix: /r%d}}], forwardTo: {destinations: [{%s}]}}", i, i, dest))
	}
	cl := ""
	if len(clusters) > 0 {
		cl = ", clusters: [" + strings.Join(clusters, ", ") + "]"
	}
	return "apiVersion: meshrelay.io/v1alpha1\nkind: RouteTable\nmetadata: {name: " + name + ", namespace: default}\n" +
		"spec: {hosts: [" + host + "]" + cl + ", http: [" + strings.Join(routes, ", ") + "]}"
}

// ptVD is a VirtualDestination on port 8080 whose services are picked by selector.
func ptVD(name, selector string) string {
	return "apiVersion: meshrelay.io/v1alpha1\nkind: VirtualDestination\nmetadata: {name: " + name + ", namespace: default, labels: {failover: \"true\"}}\n" +
		"spec: {hosts: [" + name + ".global], ports: [{number: 8080, protocol: HTTP}], services: [" + selector + "]}"
}

func ptFailoverPolicy(name, from, to string) string {
	return "apiVersion: meshrelay.io/v1alpha1\nkind: FailoverPolicy\nmetadata: {name: " + name + ", namespace: default}\n" +
		"spec: {applyToDestinations: [{kind: VIRTUAL_DESTINATION, selector: {labels: {failover: \"true\"}}}], config: {localityMappings: [{from: {region: " + from + "}, to: [{region: " + to + "}]}]}}"
}

func ptScheme(name, primary, target, upstream string) string {
	return "apiVersion: meshrelay.io/v1alpha1\nkind: FailoverScheme\nmetadata: {name: " + name + ", namespace: gloo-system}\n" +
		"spec: {primary: {clusterName: " + primary + ", name: " + upstream + "}, failoverGroups: [{priorityGroup: [{cluster: " + target + ", upstreams: [{name: " + upstream + "}]}]}]}"
}

// ptParsed caches parsed YAML documents: worlds repeat the same documents many times.
var ptParsed sync.Map // document → []resource.Object

// ptInput parses the configuration and the clusters' inputs into an Input, with mesh
// certificates for every registered cluster.
func ptInput(t testing.TB, config []string, inputs map[string][]string) translate.Input {
	t.Helper()
	parse := func(docs []string) []resource.Object {
		var out []resource.Object
		for _, d := range docs {
			objs, ok := ptParsed.Load(d)
			if !ok {
				o, errs := resource.Parse("test", []byte(d))
				if len(errs) > 0 {
					t.Fatalf("%v in\n%s", errs, d)
				}
				objs, _ = ptParsed.LoadOrStore(d, o)
			}
			out = append(out, objs.([]resource.Object)...)
		}
		return out
	}
	in := translate.Input{Config: parse(config), Inputs: map[string]*snapshot.Snapshot{}}
	in.Certs = translatetest.Certs(ptKeys(translate.Clusters(in.Config))...)
	for c, docs := range inputs {
		var rs []snapshot.Resource
		for _, o := range parse(docs) {
			rs = append(rs, o.Resource())
		}
		in.Inputs[c] = snapshot.New(1, 0, rs)
	}
	return in
}

// ptDiff describes the first difference between two results' outputs, status and errors.
func ptDiff(want, got translate.Result) string {
	if w, g := ptKeys(want.Outputs), ptKeys(got.Outputs); !slices.Equal(w, g) {
		return fmt.Sprintf("clusters %v, want %v", g, w)
	}
	for _, c := range ptKeys(want.Outputs) {
		w, g := want.Outputs[c], got.Outputs[c]
		for i := range max(len(w), len(g)) {
			switch {
			case i >= len(w):
				return fmt.Sprintf("cluster %s: extra %s", c, g[i].Key)
			case i >= len(g):
				return fmt.Sprintf("cluster %s: missing %s", c, w[i].Key)
			case w[i].Key != g[i].Key || !bytes.Equal(w[i].Body, g[i].Body):
				return fmt.Sprintf("cluster %s: %s differs:\n\twant %s %s\n\tgot  %s %s", c, w[i].Key, w[i].Key, w[i].Body, g[i].Key, g[i].Body)
			}
		}
	}
	if !reflect.DeepEqual(want.Status, got.Status) {
		return fmt.Sprintf("status:\n\twant %q\n\tgot  %q", want.Status, got.Status)
	}
	if !slices.Equal(want.Errors, got.Errors) {
		return fmt.Sprintf("errors:\n\twant %q\n\tgot  %q", want.Errors, got.Errors)
	}
	return ""
}

// ptChanged lists the clusters whose output differs between two results.
func ptChanged(a, b translate.Result) []string {
	var out []string
	for _, c := range ptKeys(b.Outputs) {
		if !slices.EqualFunc(a.Outputs[c], b.Outputs[c], func(x, y snapshot.Resource) bool { return x.Key == y.Key && bytes.Equal(x.Body, y.Body) }) {
			out = append(out, c)
		}
	}
	return out
}

// ptShuffled rebuilds an Input with its Config and every snapshot's resources in random order.
func ptShuffled(r *rand.Rand, in translate.Input) translate.Input {
	out := in
	out.Config = slices.Clone(in.Config)
	r.Shuffle(len(out.Config), func(i, j int) { out.Config[i], out.Config[j] = out.Config[j], out.Config[i] })
	out.Inputs = map[string]*snapshot.Snapshot{}
	for c, s := range in.Inputs {
		rs := s.Sorted()
		r.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		out.Inputs[c] = snapshot.New(s.Version, s.Epoch, rs)
	}
	return out
}

// ---- Determinism ----

func TestDeterministic(t *testing.T) {
	for _, name := range ptCases {
		t.Run(name, func(t *testing.T) {
			in := loadCase(t, name)
			want := translate.Translate(in)
			if d := ptDiff(want, translate.Translate(in)); d != "" {
				t.Fatalf("second translation differs: %s", d)
			}
			for seed := range uint64(20) {
				if d := ptDiff(want, translate.Translate(ptShuffled(rand.New(rand.NewPCG(seed, 3)), in))); d != "" {
					t.Fatalf("seed %d: shuffled input differs: %s", seed, d)
				}
			}
		})
	}
}

// TestDeterministicWithOverlaps shuffles configurations whose objects overlap. The package
// promises the same bytes for the same inputs, whatever their order.
func TestDeterministicWithOverlaps(t *testing.T) {
	inputs := map[string][]string{
		"c1": {ptService("default", "web", 8080, "10.1.0.1")},
		"c2": {ptService("default", "web", 8080, "10.2.0.1"), ptGateway("10.2.255.1", "")},
		"c3": {ptService("default", "web", 8080, "10.3.0.1"), ptGateway("10.3.255.1", "")},
	}
	for _, tc := range []struct {
		name, bug string
		config    []string
	}{
		{"two patches of one upstream", "two Upstream patches of one upstream (same name, other namespace): the later in Input.Config wins",
			[]string{ptPatch("default-web-8080", "c1", "/a"), strings.Replace(ptPatch("default-web-8080", "c1", "/b"), "gloo-system", "other", 1)}},
		{"two schemes for one primary", "two FailoverSchemes for one primary: the later in Input.Config wins",
			[]string{ptScheme("s1", "c1", "c2", "default-web-8080"), ptScheme("s2", "c1", "c3", "default-web-8080")}},
		{"two failover policies for one destination", "two FailoverPolicies selecting one VirtualDestination: the earlier in Input.Config wins",
			[]string{ptVD("web", "{labels: {app: web}}"), ptFailoverPolicy("p1", "east", "west"), ptFailoverPolicy("p2", "east", "north")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := ptInput(t, append([]string{ptCluster("c1", "east"), ptCluster("c2", "west"), ptCluster("c3", "north")}, tc.config...), inputs)
			want := translate.Translate(in)
			for seed := range uint64(20) {
				if d := ptDiff(want, translate.Translate(ptShuffled(rand.New(rand.NewPCG(seed, 4)), in))); d != "" {
					t.Logf("seed %d: shuffled configuration changes the output: %s", seed, d)
					t.Fatalf("output depends on the order of Input.Config: %s", tc.bug)
				}
			}
		})
	}
}

// ---- Remove and re-add ----

// TestRemoveAndReAdd removes each configuration object and each input resource of every
// golden case in turn and puts it back, with one incremental Translator: the result without
// it equals a fresh translation, and the result with it again is the original byte for byte.
func TestRemoveAndReAdd(t *testing.T) {
	for _, name := range ptCases {
		t.Run(name, func(t *testing.T) {
			in := loadCase(t, name)
			want := dump(t, translate.Translate(in))
			tr := translate.NewTranslator()
			tr.Translate(in)
			check := func(what string, without translate.Input) {
				t.Helper()
				if d := ptDiff(translate.Translate(without), tr.Translate(without)); d != "" {
					t.Errorf("without %s: incremental differs from fresh: %s", what, d)
				}
				if got := dump(t, tr.Translate(in)); !bytes.Equal(got, want) {
					t.Errorf("re-adding %s: %s", what, translatetest.FirstDiff(string(want), string(got)))
				}
			}
			for i, o := range in.Config {
				without := in
				without.Config = slices.Delete(slices.Clone(in.Config), i, i+1)
				check("config "+o.Key(), without)
			}
			for _, c := range ptKeys(in.Inputs) {
				for _, k := range in.Inputs[c].Keys() {
					without := in
					without.Inputs = maps.Clone(in.Inputs)
					rs := slices.DeleteFunc(in.Inputs[c].Sorted(), func(r snapshot.Resource) bool { return r.Key == k })
					without.Inputs[c] = snapshot.New(2, 0, rs)
					check(c+" input "+k, without)
				}
			}
		})
	}
}

// ---- Locality of effect ----

// ptLocalityWorld is six clusters with their own services and nothing shared.
func ptLocalityWorld(t *testing.T, config []string, extra map[string][]string) translate.Input {
	inputs := map[string][]string{}
	for i := 1; i <= 6; i++ {
		c := fmt.Sprintf("c%d", i)
		config = append(config, ptCluster(c, ""))
		inputs[c] = append([]string{ptService("default", "web", 8080, fmt.Sprintf("10.%d.0.1", i)),
			ptService("default", fmt.Sprintf("own%d", i), 9090, fmt.Sprintf("10.%d.1.1", i), fmt.Sprintf("!10.%d.1.2", i))}, extra[c]...)
	}
	return ptInput(t, config, inputs)
}

func TestLocalityOfEffect(t *testing.T) {
	all := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
	base := ptLocalityWorld(t, nil, nil)
	for _, tc := range []struct {
		name   string
		config []string
		extra  map[string][]string
		want   []string
	}{
		{"route table for c3", []string{ptRouteTable("rt", "web.example.com", []string{"c3"}, "default-web-8080")}, nil, []string{"c3"}},
		{"health check patch for c2", []string{ptPatch("default-web-8080", "c2", "/healthz")}, nil, []string{"c2"}},
		{"service added to c4", nil, map[string][]string{"c4": {ptService("default", "new", 7070, "10.4.2.1")}}, []string{"c4"}},
		{"virtual destination selecting c1", []string{ptVD("web", "{cluster: c1, name: web}")}, nil, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := ptLocalityWorld(t, tc.config, tc.extra)
			before, after := translate.Translate(base), translate.Translate(in)
			if got := ptChanged(before, after); !slices.Equal(got, tc.want) {
				t.Errorf("changed clusters %v, want %v", got, tc.want)
			}
			tr := translate.NewTranslator()
			tr.Translate(base)
			res := tr.Translate(in)
			if !slices.Equal(res.Recomputed, tc.want) {
				t.Errorf("recomputed %v, want %v", res.Recomputed, tc.want)
			}
			if d := ptDiff(after, res); d != "" {
				t.Errorf("incremental differs from fresh: %s", d)
			}
		})
	}
}

// ---- Incremental equals fresh ----

// ptModel is a world of four clusters that random changes edit. c1 and c2 have a TCP
// failover gateway; services are web, api and db on port 8080 in namespace default. The
// route table routes to the local web, to c2's api and to the virtual destination.
type ptModel struct {
	region []string              // per cluster: region label, "" for none
	svcs   []map[string][]string // per cluster: service → addresses ("!" = not ready)
	vd     bool                  // VirtualDestination of app=web with a FailoverPolicy
	scheme bool                  // FailoverScheme c1 web → c2 web
	rt     string                // cluster of the RouteTable, "" none
	patch  string                // spec.cluster of a health-check patch of web, "" none
	ipatch []bool                // per cluster: a health-check patch of api in its own input
	secret []bool                // per cluster: a failover-upstream client Secret (with ca.crt)
}

var ptServiceNames = []string{"web", "api", "db"}

func ptNewModel() *ptModel {
	m := &ptModel{region: make([]string, 4), ipatch: make([]bool, 4), secret: make([]bool, 4)}
	for i := range 4 {
		m.svcs = append(m.svcs, map[string][]string{"web": {fmt.Sprintf("10.%d.0.1", i+1)}, "api": {fmt.Sprintf("10.%d.1.1", i+1)}})
	}
	return m
}

func (m *ptModel) input(t testing.TB) translate.Input {
	var config []string
	inputs := map[string][]string{}
	for i := range 4 {
		c := fmt.Sprintf("c%d", i+1)
		config = append(config, ptCluster(c, m.region[i]))
		for _, s := range ptKeys(m.svcs[i]) {
			inputs[c] = append(inputs[c], ptService("default", s, 8080, m.svcs[i][s]...))
		}
		if i < 2 {
			inputs[c] = append(inputs[c], ptGateway(fmt.Sprintf("10.%d.255.1", i+1), ""))
		}
		if m.ipatch[i] {
			inputs[c] = append(inputs[c], ptPatch("default-api-8080", "", "/ready"))
		}
		if m.secret[i] {
			inputs[c] = append(inputs[c], ptSecret(translate.FailoverUpstreamSecret, true))
		}
	}
	if m.vd {
		config = append(config, ptVD("web", "{labels: {app: web}}"), ptFailoverPolicy("locality", "east", "west"))
	}
	if m.scheme {
		config = append(config, ptScheme("web", "c1", "c2", "default-web-8080"))
	}
	if m.rt != "" {
		config = append(config, ptRouteTable("rt", "web.example.com", []string{m.rt}, "default-web-8080", "c2/default-api-8080", "vd:web"))
	}
	if m.patch != "" {
		config = append(config, ptPatch("default-web-8080", m.patch, "/healthz"))
	}
	return ptInput(t, config, inputs)
}

// change applies one random change and describes it.
func (m *ptModel) change(r *rand.Rand) string {
	ci := r.IntN(4)
	c := fmt.Sprintf("c%d", ci+1)
	switch r.IntN(11) {
	case 0, 1, 2: // add a service, or change its endpoints
		s := ptServiceNames[r.IntN(len(ptServiceNames))]
		var addrs []string
		for k := range r.IntN(3) {
			a := fmt.Sprintf("10.%d.%d.%d", ci+1, slices.Index(ptServiceNames, s), k+1+r.IntN(3))
			if r.IntN(4) == 0 {
				a = "!" + a
			}
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
		m.svcs[ci][s] = addrs
		return fmt.Sprintf("set %s/%s endpoints %v", c, s, addrs)
	case 3:
		s := ptServiceNames[r.IntN(len(ptServiceNames))]
		delete(m.svcs[ci], s)
		return fmt.Sprintf("remove %s/%s", c, s)
	case 4:
		m.vd = !m.vd
		return fmt.Sprintf("virtual destination %t", m.vd)
	case 5:
		m.scheme = !m.scheme
		return fmt.Sprintf("failover scheme %t", m.scheme)
	case 6:
		m.rt = []string{"", c}[r.IntN(2)]
		return fmt.Sprintf("route table in %q", m.rt)
	case 7:
		m.patch = []string{"", c}[r.IntN(2)]
		return fmt.Sprintf("config health-check patch for %q", m.patch)
	case 8:
		m.ipatch[ci] = !m.ipatch[ci]
		return fmt.Sprintf("input health-check patch in %s %t", c, m.ipatch[ci])
	case 9:
		m.secret[ci] = !m.secret[ci]
		return fmt.Sprintf("failover-upstream secret in %s %t", c, m.secret[ci])
	default:
		m.region[ci] = []string{"", "east", "west"}[r.IntN(3)]
		return fmt.Sprintf("region of %s %q", c, m.region[ci])
	}
}

func TestIncrementalEqualsFresh(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(seed, 60))
			m := ptNewModel()
			tr := translate.NewTranslator()
			var history []string
			for step := range 60 {
				history = append(history, fmt.Sprintf("%d: %s", step, m.change(r)))
				in := m.input(t)
				inc, fresh := tr.Translate(in), translate.Translate(in)
				if d := ptDiff(fresh, inc); d != "" {
					t.Fatalf("after\n%s\nincremental differs from fresh: %s", strings.Join(history, "\n"), d)
				}
				for _, c := range inc.Recomputed {
					if _, ok := inc.Outputs[c]; !ok {
						t.Fatalf("step %d: recomputed %q is not a cluster", step, c)
					}
				}
				if again := tr.Translate(m.input(t)); len(again.Recomputed) > 0 || ptDiff(fresh, again) != "" {
					t.Fatalf("step %d: unchanged input recomputed %v (diff: %s)", step, again.Recomputed, ptDiff(fresh, again))
				}
				for _, c := range inc.Recomputed {
					if err := vtCheckOutput(inc.Outputs[c]); err != nil {
						t.Fatalf("after\n%s\ncluster %s: %v", strings.Join(history, "\n"), c, err)
					}
				}
			}
		})
	}
}

// TestRecomputedOnlyChangedCluster: in a world with a failover scheme, a virtual destination
// and a route table that reach across clusters, a health-check patch in c2's own input
// recomputes c2 alone.
func TestRecomputedOnlyChangedCluster(t *testing.T) {
	m := ptNewModel()
	m.vd, m.scheme, m.rt = true, true, "c3"
	tr := translate.NewTranslator()
	if res := tr.Translate(m.input(t)); len(res.Recomputed) != 4 {
		t.Fatalf("warm-up recomputed %v, want every cluster", res.Recomputed)
	}
	m.ipatch[1] = true
	in := m.input(t)
	res := tr.Translate(in)
	if !slices.Equal(res.Recomputed, []string{"c2"}) {
		t.Errorf("recomputed %v, want [c2]", res.Recomputed)
	}
	if d := ptDiff(translate.Translate(in), res); d != "" {
		t.Errorf("incremental differs from fresh: %s", d)
	}
}

// TestParallelEqualsSequential: clusters planned and rendered on many goroutines give the
// same outputs, statuses and errors as on one, fresh and incrementally (the world's caches
// and the render memo are shared between the goroutines).
func TestParallelEqualsSequential(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	fresh := map[string]translate.Result{}
	for _, name := range ptCases {
		fresh[name] = translate.Translate(loadCase(t, name))
	}
	r := rand.New(rand.NewPCG(7, 61))
	m := ptNewModel()
	tr := translate.NewTranslator()
	var ins []translate.Input
	var incs []translate.Result
	for range 40 {
		m.change(r)
		in := m.input(t)
		ins, incs = append(ins, in), append(incs, tr.Translate(in))
	}

	runtime.GOMAXPROCS(8)
	for _, name := range ptCases {
		if d := ptDiff(fresh[name], translate.Translate(loadCase(t, name))); d != "" {
			t.Errorf("%s: parallel translation differs from sequential: %s", name, d)
		}
	}
	tr = translate.NewTranslator()
	for i, in := range ins {
		got := tr.Translate(in)
		if d := ptDiff(incs[i], got); d != "" {
			t.Fatalf("step %d: parallel incremental translation differs from sequential: %s", i, d)
		}
		if !slices.Equal(incs[i].Recomputed, got.Recomputed) {
			t.Fatalf("step %d: recomputed %v in parallel, %v sequentially", i, got.Recomputed, incs[i].Recomputed)
		}
	}
}
