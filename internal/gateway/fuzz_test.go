package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/pki/pkitest"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// The fuzz targets of this file take their seeds from the translate golden files (the
// Envoy resources meshrelay really serves its gateways), with the mesh secrets replaced by
// certificates of a real CA so that TLS handshakes get as far as they can.

// xdsGroup is the resources of one type served to one cluster's gateway in a golden case.
type xdsGroup struct {
	name    string // case/cluster
	typeURL string
	msgs    []proto.Message
}

// goldenXDS decodes the Envoy resources of every golden case, grouped by case, cluster and
// type, in file order.
func goldenXDS(tb testing.TB) []xdsGroup {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("..", "translate", "testdata", "*.golden.yaml"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("golden files: %v", err)
	}
	var out []xdsGroup
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(file), ".golden.yaml")
		for _, part := range strings.Split(string(b), "# ===== cluster ")[1:] {
			cluster, _, _ := strings.Cut(part, ":")
			byType := map[string]*xdsGroup{}
			var order []string
			for _, doc := range strings.Split(part, "\n---\n")[1:] {
				js, err := yaml.YAMLToJSON([]byte(doc))
				if err != nil {
					tb.Fatalf("%s: %v", file, err)
				}
				var h struct {
					Kind     string `json:"kind"`
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
				}
				if json.Unmarshal(js, &h) != nil || !envoyres.IsKind(h.Kind) {
					continue
				}
				kind, msg, err := envoyres.Decode(snapshot.NewResource(h.Kind+"//"+h.Metadata.Name, js))
				if err != nil {
					tb.Fatalf("%s: %v", file, err)
				}
				t := envoyres.TypeURL(kind)
				if byType[t] == nil {
					byType[t] = &xdsGroup{name: name + "/" + cluster, typeURL: t}
					order = append(order, t)
				}
				byType[t].msgs = append(byType[t].msgs, msg)
			}
			for _, t := range order {
				out = append(out, *byType[t])
			}
		}
	}
	return out
}

// meshSecrets returns the mesh identity and CA secrets the golden listeners reference, with
// a certificate from a real CA for the given names.
func meshSecrets(tb testing.TB, names ...string) []proto.Message {
	tb.Helper()
	ca := pkitest.CA(tb, "meshrelay.fuzz")
	p := pkitest.Server(tb, ca, names...)
	certPEM, keyPEM := p.CertPEM, p.KeyPEM
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return []proto.Message{
		&tlsv3.Secret{Name: "meshrelay-mesh-identity", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}}},
		&tlsv3.Secret{Name: "meshrelay-mesh-ca", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca.CertPEM)}}},
	}
}

func discoveryResponse(tb testing.TB, typeURL string, msgs []proto.Message) []byte {
	tb.Helper()
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: "1", Nonce: "n"}
	for _, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			tb.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fuzzWorld is the accepted configuration a fuzzed response is applied over: the local
// cluster's gateway of the seed003 case, with real secrets.
type fuzzWorld struct {
	lis    map[string]*listenerSpec
	routes map[string]*routeTable
	cls    map[string]*clusterSpec
	loads  map[string]*loadAssignment
	secs   map[string]*secretSpec
}

func parseWorld(tb testing.TB, groups []xdsGroup, secrets []proto.Message) fuzzWorld {
	tb.Helper()
	var w fuzzWorld
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	var err error
	for _, g := range groups {
		if g.name != "seed003/local" {
			continue
		}
		switch g.typeURL {
		case resourcev3.ListenerType:
			w.lis, err = parseEach(g.msgs, "listener", (*listenerv3.Listener).GetName, parseListener)
		case resourcev3.RouteType:
			w.routes, err = parseEach(g.msgs, "route configuration", (*routev3.RouteConfiguration).GetName, parseRouteTable)
		case resourcev3.ClusterType:
			w.cls, err = parseEach(g.msgs, "cluster", (*clusterv3.Cluster).GetName, parseCluster)
		case resourcev3.EndpointType:
			w.loads, err = parseEach(g.msgs, "cluster load assignment", (*endpointv3.ClusterLoadAssignment).GetClusterName, parseLoadAssignment)
		}
		must(err)
	}
	w.secs, err = parseEach(secrets, "secret", (*tlsv3.Secret).GetName, parseSecret)
	must(err)
	if len(w.lis) == 0 || len(w.routes) == 0 || len(w.cls) == 0 || len(w.loads) == 0 {
		tb.Fatal("seed003/local has no listeners, routes, clusters or load assignments")
	}
	// The store's clusters never health check here: no probe may leave for a fuzzed address.
	for n, c := range w.cls {
		nc := *c
		nc.healthCheck = nil
		w.cls[n] = &nc
	}
	return w
}

// fuzzStore builds a configuration store holding w (the load assignments only when
// withLoads), as if every type had been accepted, without binding any listener. Its tasks
// end with the test.
func fuzzStore(t *testing.T, w fuzzWorld, withLoads bool) *configStore {
	m := newMetrics(prometheus.NewRegistry(), func() []*upstream { return nil })
	log := slog.New(slog.DiscardHandler)
	secrets := &secretStore{}
	tk := newTasks()
	ctx, cancel := context.WithCancel(t.Context())
	tk.bind(ctx)
	cm := newClusterManager(log, m, secrets, tk)
	lm := &listenerManager{log: log, metrics: m, clusters: cm, secrets: secrets, tasks: tk, active: map[string]*activeListener{}, bindErrors: map[string]string{}}
	s := newConfigStore(cm, lm, secrets)
	s.lis, s.routes, s.cls, s.secs = maps.Clone(w.lis), maps.Clone(w.routes), maps.Clone(w.cls), maps.Clone(w.secs)
	if withLoads {
		s.loads = maps.Clone(w.loads)
	}
	s.publishRoutesLocked()
	secrets.set(s.secs)
	cm.update(s.cls, s.loads)
	for _, typ := range subscribedTypes {
		s.accepted[typ] = true
	}
	t.Cleanup(func() {
		cancel()
		cm.shutdown()
		tk.wait()
	})
	return s
}

// storeState is what identifies the store's accepted configuration: the maps are replaced,
// never modified, by an accepted update.
type storeState struct {
	maps      [6]uintptr
	clusters  *map[string]*upstream
	secrets   *map[string]*secretSpec
	published int
}

func stateOf(s *configStore) storeState {
	p := func(m any) uintptr { return reflect.ValueOf(m).Pointer() }
	return storeState{
		maps:      [6]uintptr{p(s.lis), p(s.routes), p(s.cls), p(s.loads), p(s.secs), p(s.published)},
		clusters:  s.clusters.cur.Load(),
		secrets:   s.secrets.cur.Load(),
		published: len(s.published),
	}
}

// FuzzXDSResponse decodes a DiscoveryResponse as the gateway's xDS client does and applies
// it to a store holding an accepted configuration (Listeners are parsed only: applying them
// binds sockets). Whatever the bytes: no panic; a rejected response says why (wrapping
// ErrRejected once parsed) and changes nothing; an accepted one replaces the type's
// configuration.
func FuzzXDSResponse(f *testing.F) {
	groups := goldenXDS(f)
	secrets := meshSecrets(f, "default-service-green-10000")
	world := parseWorld(f, groups, secrets)
	for _, g := range groups {
		f.Add(discoveryResponse(f, g.typeURL, g.msgs))
	}
	f.Add(discoveryResponse(f, resourcev3.SecretType, secrets))
	f.Add(discoveryResponse(f, resourcev3.ClusterType, secrets)) // resources of another type
	f.Fuzz(func(t *testing.T, b []byte) {
		var resp discoveryv3.DiscoveryResponse
		if proto.Unmarshal(b, &resp) != nil || !slices.Contains(subscribedTypes, resp.GetTypeUrl()) {
			return // the client ignores what it did not subscribe to
		}
		typ := resp.GetTypeUrl()
		msgs, err := decodeResources(typ, resp.GetResources())
		if err != nil {
			return // NACKed before anything is parsed
		}
		if typ == resourcev3.ListenerType {
			specs, err := parseEach(msgs, "listener", (*listenerv3.Listener).GetName, parseListener)
			if err != nil && !errors.Is(err, ErrRejected) {
				t.Fatalf("listener error %v does not wrap ErrRejected", err)
			}
			if err == nil && len(specs) != len(msgs) {
				t.Fatalf("%d listeners parsed into %d specs", len(msgs), len(specs))
			}
			return
		}
		s := fuzzStore(t, world, typ != resourcev3.ClusterType)
		before := stateOf(s)
		err = s.apply(typ, msgs)
		if err != nil {
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("apply error %v does not wrap ErrRejected", err)
			}
			if stateOf(s) != before {
				t.Fatalf("a rejected %s response changed the store: %v", shortType(typ), err)
			}
			return
		}
		switch typ {
		case resourcev3.RouteType:
			for n := range s.published {
				if !s.rdsNamesLocked()[n] {
					t.Fatalf("route configuration %q published while no listener asks for it", n)
				}
			}
		case resourcev3.ClusterType:
			if got := len(s.clusters.list()); got != len(msgs) {
				t.Fatalf("%d clusters accepted, %d running", len(msgs), got)
			}
		case resourcev3.SecretType:
			if len(s.secs) != len(msgs) {
				t.Fatalf("%d secrets accepted, %d stored", len(msgs), len(s.secs))
			}
		}
	})
}

// total sums the values of a counter vector, of the series with the given label values
// (name, value pairs) when some are given.
func total(c *prometheus.CounterVec, labels ...string) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) != nil {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && slices.ContainsFunc(pb.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			})
		}
		if match {
			sum += pb.GetCounter().GetValue()
		}
	}
	return sum
}

// fuzzTCPListener is the golden east-west gateway listener of seed003's remote cluster
// (TLS filter chains chosen by SNI), plus a wildcard TLS chain, a plaintext chain and a
// default chain, so that every way of choosing a chain is reachable.
func fuzzTCPListener(tb testing.TB, groups []xdsGroup) *listenerSpec {
	tb.Helper()
	for _, g := range groups {
		if g.name != "seed003/remote" || g.typeURL != resourcev3.ListenerType {
			continue
		}
		for _, m := range g.msgs {
			l, err := parseListener(m.(*listenerv3.Listener))
			if err != nil {
				tb.Fatal(err)
			}
			if l.kind != kindTCP || len(l.chains) == 0 || l.chains[0].tls == nil {
				continue
			}
			tlsChain := l.chains[0]
			l.chains = append(l.chains,
				&tcpChain{name: "wildcard", serverNames: []string{"*.mesh.example", "*.example"}, transportProtocol: transportTLS, tls: tlsChain.tls, cluster: "wild", maxConnectAttempts: 1},
				&tcpChain{name: "plain", transportProtocol: transportRaw, cluster: "plain", maxConnectAttempts: 1})
			l.defaultChain = &tcpChain{name: "default", tls: tlsChain.tls, cluster: "default", maxConnectAttempts: 1}
			return l
		}
	}
	tb.Fatal("seed003/remote has no TLS listener")
	return nil
}

// clientHello returns the first flight of a TLS client for serverName.
func clientHello(tb testing.TB, serverName string) []byte {
	tb.Helper()
	c := &byteConn{r: bytes.NewReader(nil)}
	_ = tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake() // fails at EOF
	if c.w.Len() == 0 {
		tb.Fatal("no client hello written")
	}
	return c.w.Bytes()
}

// byteConn is a connection that reads fixed bytes, then EOF, and records what is written.
type byteConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *byteConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *byteConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *byteConn) Close() error                { return nil }
func (c *byteConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15443} }
func (c *byteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzTCPListener sends any first bytes to a TCP listener (the TLS ClientHello whose SNI
// chooses the filter chain, or plaintext). Whatever the bytes: no panic, and the connection
// is counted once and refused (the bytes cannot complete a handshake; the chains' clusters
// do not exist): nothing is proxied.
func FuzzTCPListener(f *testing.F) {
	groups := goldenXDS(f)
	spec := fuzzTCPListener(f, groups)
	secrets := meshSecrets(f, "default-service-green-10000")
	for _, sni := range []string{"default-service-green-10000", "outbound_.10000_._.service-blue.default.svc.cluster.local", "a.mesh.example", "DEFAULT-service-green-10000", "unknown", ""} {
		f.Add(clientHello(f, sni))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		reg := prometheus.NewRegistry()
		m := newMetrics(reg, func() []*upstream { return nil })
		log := slog.New(slog.DiscardHandler)
		ss := &secretStore{}
		specs, err := parseEach(secrets, "secret", (*tlsv3.Secret).GetName, parseSecret)
		if err != nil {
			t.Fatal(err)
		}
		ss.set(specs)
		s := &tcpServer{name: "fuzz", clusters: newClusterManager(log, m, ss, newTasks()), secrets: ss, metrics: m, log: log, conns: map[net.Conn]struct{}{}}
		s.spec.Store(spec)
		s.handle(t.Context(), &byteConn{r: bytes.NewReader(data)})
		if n := total(m.tcpConnections); n != 1 {
			t.Fatalf("connection counted %v times", n)
		}
		refused := total(m.tcpConnections, "result", "refused") + total(m.tcpConnections, "result", "cluster_not_found")
		if refused != 1 {
			t.Fatal("a connection was not refused")
		}
	})
}

// FuzzSelectChain chooses the filter chain for any server name. Whatever the name: the
// chain accepts the connection's kind (TLS or not); an exact server name wins; a chain with
// server names is chosen only when one of them matches the name (exactly, ignoring case,
// or as a "*.suffix" wildcard).
func FuzzSelectChain(f *testing.F) {
	spec := fuzzTCPListener(f, goldenXDS(f))
	for _, c := range spec.chains {
		for _, n := range c.serverNames {
			f.Add(n, true)
			f.Add(strings.ToUpper(n), false)
			f.Add("x"+strings.TrimPrefix(n, "*"), true)
		}
	}
	f.Add("", true)
	f.Add("", false)
	f.Fuzz(func(t *testing.T, sni string, isTLS bool) {
		c := spec.selectChain(sni, isTLS)
		lower := strings.ToLower(sni)
		var exact *tcpChain
		for _, x := range spec.chains {
			if exact == nil && x.accepts(isTLS) && slices.Contains(x.serverNames, lower) && lower != "" {
				exact = x
			}
		}
		if exact != nil && c != exact {
			t.Fatalf("name %q matches chain %q exactly, chose %v", sni, exact.name, c)
		}
		if c == nil {
			return
		}
		if !c.accepts(isTLS) {
			t.Fatalf("chain %q chosen for a connection it does not accept (tls %v)", c.name, isTLS)
		}
		if len(c.serverNames) == 0 {
			return
		}
		if !slices.ContainsFunc(c.serverNames, func(n string) bool {
			return n == lower || strings.HasPrefix(n, "*") && strings.HasSuffix(lower, n[1:])
		}) {
			t.Fatalf("chain %q (%v) chosen for name %q", c.name, c.serverNames, sni)
		}
	})
}

// fuzzRoutes is a route configuration using every match the gateway honours.
func fuzzRoutes() *routev3.RouteConfiguration {
	str := func(m *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: m}
	}
	to := func(c string) *routev3.Route_Route {
		return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}}
	}
	return &routev3.RouteConfiguration{Name: "fuzz", VirtualHosts: []*routev3.VirtualHost{
		{Name: "exact", Domains: []string{"api.example.com", "api.example.com:8080"}, Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}, CaseSensitive: wrapperspb.Bool(false)}, Action: to("exact")},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/items/[0-9]+"}}}, Action: to("regex")},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/h"}, Headers: []*routev3.HeaderMatcher{
				{Name: "x-version", HeaderMatchSpecifier: str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "v2"}, IgnoreCase: true})},
				{Name: "x-id", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 10, End: 20}}},
				{Name: ":method", HeaderMatchSpecifier: str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "POST"}}), InvertMatch: true},
				{Name: "x-absent", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}},
			}}, Action: to("headers")},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/direct"}}, Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 418}}},
		}},
		{Name: "suffix", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, Action: to("suffix")}}},
		{Name: "prefix", Domains: []string{"internal.*"}, Routes: []*routev3.Route{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/a"}, Headers: []*routev3.HeaderMatcher{
				{Name: "cookie", HeaderMatchSpecifier: str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*session=.*"}}})}}},
				Action: to("prefix")}}},
	}}
}

// FuzzHTTPRequest reads any bytes as an HTTP/1 request (as the listener's net/http server
// does) and routes it through an HTTP listener's handler with the golden route
// configurations and one using every honoured match. The clusters do not exist, so nothing
// leaves the process. Whatever the bytes: no panic; the answer is a 404 (no route), the
// route's cluster-not-found code or a direct response, counted once.
func FuzzHTTPRequest(f *testing.F) {
	var tables []*routeTable
	codes := map[int]bool{http.StatusNotFound: true, http.StatusServiceUnavailable: true, 418: true}
	for _, g := range goldenXDS(f) {
		if g.typeURL != resourcev3.RouteType {
			continue
		}
		for _, m := range g.msgs {
			rt, err := parseRouteTable(m.(*routev3.RouteConfiguration))
			if err != nil {
				f.Fatal(err)
			}
			tables = append(tables, rt)
		}
	}
	rt, err := parseRouteTable(fuzzRoutes())
	if err != nil {
		f.Fatal(err)
	}
	tables = append(tables, rt)
	for _, r := range []string{
		"GET /exact HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"GET /EXACT?q=1 HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n",
		"GET /items/42 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"PUT /h HTTP/1.1\r\nHost: api.example.com\r\nX-Version: V2.1\r\nX-Id: 15\r\nContent-Length: 0\r\n\r\n",
		"GET /direct HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: internal.x\r\nCookie: session=1\r\n\r\n",
		"GET http://reviews.default.svc.cluster.local/ HTTP/1.1\r\nHost: reviews.default.svc.cluster.local\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(r))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		req = req.WithContext(t.Context())
		m := newMetrics(prometheus.NewRegistry(), func() []*upstream { return nil })
		log := slog.New(slog.DiscardHandler)
		p := newHTTPProxy(newClusterManager(log, m, &secretStore{}, newTasks()), func(string) *routeTable { return nil }, m, log)
		for _, table := range tables {
			h := &httpHandler{p: p}
			h.spec.Store(&listenerSpec{name: "fuzz", kind: kindHTTP, inlineRoutes: table})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if !codes[w.Code] {
				t.Fatalf("route configuration %q answered %d", table.name, w.Code)
			}
			_, _ = io.Copy(io.Discard, req.Body)
		}
		if n := total(m.requests); n != float64(len(tables)) {
			t.Fatalf("%v requests counted for %d requests", n, len(tables))
		}
	})
}
