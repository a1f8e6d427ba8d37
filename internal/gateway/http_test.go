package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshrelay/meshrelay/internal/gateway"
	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
)

// httpSetup is a gateway with its xDS server and the address of its HTTP listener.
type httpSetup struct {
	xds    *gt.XDS
	gw     *gateway.Gateway
	node   string
	listen string
	url    string
}

func newHTTPSetup(t *testing.T) *httpSetup {
	t.Helper()
	s := &httpSetup{xds: gt.StartXDS(t, "127.0.0.1:0"), node: "gw-" + t.Name(), listen: gt.FreeAddr(t)}
	s.url = "http://" + s.listen
	s.gw = gt.StartGateway(t, gateway.Config{XDSAddress: s.xds.Addr, NodeID: s.node})
	return s
}

func TestRoutesPrefixExactRegexHeaders404(t *testing.T) {
	s := newHTTPSetup(t)
	_, blue, _ := gt.StartDemoApp(t, "blue-pod")
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	rc := gt.RouteConfig("http", gt.PrefixRoute("/blue", "blue"), routeExact("/exact", "green"), routeRegex("/re/[0-9]+", "green"),
		routeHeader("/hdr", "x-color", "green", false, "green"), routeHeader("/hdr", "x-color", "", false, "blue"),
		routeHeader("/inv", "x-color", "green", true, "blue"))
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen), rc,
		gt.Cluster(t, "blue", gt.ClusterOptions{}), gt.LoadAssignment(t, "blue", []gt.Endpoint{{Addr: blue}}),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}),
	)
	c := gt.Client(t)
	gt.WantBody(t, c, s.url+"/blue/x", "blue-pod", 10*time.Second)
	gt.WantBody(t, c, s.url+"/exact", "green-pod", 10*time.Second)
	cases := []struct {
		path, header, want string
		code               int
	}{
		{"/blue", "", "blue-pod", 200},
		{"/blue?q=1", "", "blue-pod", 200},
		{"/exact", "", "green-pod", 200},
		{"/exact?q=1", "", "green-pod", 200},
		{"/exact/more", "", "", 404},
		{"/re/123", "", "green-pod", 200},
		{"/re/12a", "", "", 404},
		{"/hdr", "green", "green-pod", 200},
		{"/hdr", "other", "blue-pod", 200},
		{"/hdr", "", "", 404},
		{"/inv", "green", "", 404},
		{"/inv", "blue", "blue-pod", 200},
		{"/inv", "", "", 404}, // Envoy: a missing header never matches an inverted value match
		{"/nothing", "", "", 404},
	}
	for _, tc := range cases {
		req := mustRequest(t, s.url+tc.path)
		if tc.header != "" {
			req.Header.Set("x-color", tc.header)
		}
		code, body := do(t, c, req)
		if code != tc.code || tc.code == 200 && body != tc.want {
			t.Errorf("GET %s (x-color %q): %d %q, want %d %q", tc.path, tc.header, code, body, tc.code, tc.want)
		}
	}
	if err := s.gw.Ready(); err != nil {
		t.Errorf("ready: %v", err)
	}
}

func TestWeightedClusters90To10(t *testing.T) {
	s := newHTTPSetup(t)
	_, blue, _ := gt.StartDemoApp(t, "blue-pod")
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen),
		gt.RouteConfig("http", gt.WeightedRoute("/", []string{"blue", "green"}, []uint32{90, 10})),
		gt.Cluster(t, "blue", gt.ClusterOptions{}), gt.LoadAssignment(t, "blue", []gt.Endpoint{{Addr: blue}}),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}),
	)
	gt.Eventually(t, 10*time.Second, func() error { _, _, err := gt.Get(gt.Client(t), s.url); return err })
	c := &http.Client{Timeout: 10 * time.Second} // keep-alive: 1000 requests quickly
	defer c.CloseIdleConnections()
	counts := map[string]int{}
	for range 1000 {
		code, body, err := gt.Get(c, s.url+"/")
		if err != nil || code != 200 {
			t.Fatalf("GET: %d %q %v", code, body, err)
		}
		counts[body]++
	}
	t.Logf("counts: %v", counts)
	if b := counts["blue-pod"]; b < 850 || b > 950 || counts["blue-pod"]+counts["green-pod"] != 1000 {
		t.Errorf("blue got %d of 1000 (green %d), want 850-950", b, counts["green-pod"])
	}
}

// backend is a loopback HTTP server whose handler can be swapped; it counts requests.
type backend struct {
	addr    string
	handler atomic.Pointer[http.HandlerFunc]
	hits    atomic.Int64
}

func startBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	b.set(h)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		(*b.handler.Load())(w, r)
	})}
	ln := listen(t)
	b.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return b
}

func (b *backend) set(h http.HandlerFunc) { b.handler.Store(&h) }

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body+"\n")
	}
}

func withRetry(r *routev3.Route, retryOn string, n uint32, perTry time.Duration) *routev3.Route {
	rp := &routev3.RetryPolicy{RetryOn: retryOn, NumRetries: wrapperspb.UInt32(n)}
	if perTry > 0 {
		rp.PerTryTimeout = durationpb.New(perTry)
	}
	r.GetRoute().RetryPolicy = rp
	return r
}

func withTimeout(r *routev3.Route, d time.Duration) *routev3.Route {
	r.GetRoute().Timeout = durationpb.New(d)
	return r
}

func TestRetriesTimeoutsAndLocalReplies(t *testing.T) {
	s := newHTTPSetup(t)
	_, good, _ := gt.StartDemoApp(t, "good")
	bad := startBackend(t, status(503, "bad"))
	slow := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "slow\n")
	})
	closed := gt.FreeAddr(t) // nothing listens: connect failures
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen),
		gt.RouteConfig("http",
			withRetry(gt.PrefixRoute("/retry-5xx", "flaky"), "5xx", 3, 0),
			gt.PrefixRoute("/no-retry-connect", "unreachable"), // before /no-retry: first match wins
			gt.PrefixRoute("/no-retry", "flaky"),
			withRetry(gt.PrefixRoute("/retry-connect", "unreachable"), "connect-failure", 2, 0),
			withRetry(gt.PrefixRoute("/per-try", "slowish"), "gateway-error", 2, 200*time.Millisecond),
			withTimeout(gt.PrefixRoute("/timeout", "slow"), 300*time.Millisecond),
			gt.PrefixRoute("/empty", "empty"),
			gt.PrefixRoute("/missing", "does-not-exist"),
		),
		gt.Cluster(t, "flaky", gt.ClusterOptions{}), gt.LoadAssignment(t, "flaky", []gt.Endpoint{{Addr: bad.addr}, {Addr: good}}),
		gt.Cluster(t, "unreachable", gt.ClusterOptions{ConnectTimeout: time.Second}), gt.LoadAssignment(t, "unreachable", []gt.Endpoint{{Addr: closed}, {Addr: good}}),
		gt.Cluster(t, "slowish", gt.ClusterOptions{}), gt.LoadAssignment(t, "slowish", []gt.Endpoint{{Addr: slow.addr}, {Addr: good}}),
		gt.Cluster(t, "slow", gt.ClusterOptions{}), gt.LoadAssignment(t, "slow", []gt.Endpoint{{Addr: slow.addr}}),
		gt.Cluster(t, "empty", gt.ClusterOptions{}), gt.LoadAssignment(t, "empty"),
	)
	c := gt.Client(t)
	gt.Eventually(t, 10*time.Second, func() error {
		if st := gt.ClusterStatus(t, s.gw, "slow"); st.ActivePriority != 0 {
			return errorf("cluster slow: active priority %d", st.ActivePriority)
		}
		_, _, err := gt.Get(c, s.url+"/retry-5xx")
		return err
	})
	for _, tc := range []struct {
		path    string
		codes   map[int]bool // acceptable codes of every request
		mustSee int          // a code at least one of the requests must get (0: none)
		body    string
	}{
		{"/retry-5xx", map[int]bool{200: true}, 0, "good"},
		{"/no-retry", map[int]bool{200: true, 503: true}, 503, ""},
		{"/retry-connect", map[int]bool{200: true}, 0, "good"},
		{"/no-retry-connect", map[int]bool{200: true, 503: true}, 503, ""},
		{"/per-try", map[int]bool{200: true}, 0, "good"},
	} {
		seen := map[int]int{}
		for range 8 {
			code, body, err := gt.Get(c, s.url+tc.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tc.path, err)
			}
			seen[code]++
			if !tc.codes[code] || code == 200 && tc.body != "" && body != tc.body {
				t.Errorf("GET %s: %d %q", tc.path, code, body)
			}
		}
		if tc.mustSee != 0 && seen[tc.mustSee] == 0 {
			t.Errorf("GET %s: codes %v, want some %d", tc.path, seen, tc.mustSee)
		}
	}
	for _, tc := range []struct {
		path, body string
		code       int
	}{
		{"/timeout", "upstream request timeout", 504},
		{"/empty", "no healthy upstream", 503},
		{"/missing", "cluster not found", 503},
	} {
		code, body, err := gt.Get(c, s.url+tc.path)
		if err != nil || code != tc.code || body != tc.body {
			t.Errorf("GET %s: %d %q %v, want %d %q", tc.path, code, body, err, tc.code, tc.body)
		}
	}
	for range 4 {
		code, body, _ := gt.Get(c, s.url+"/no-retry-connect")
		if code == 503 && !strings.Contains(body, "connection failure") || code == 200 && body != "good" {
			t.Errorf("GET /no-retry-connect: %d %q", code, body)
		}
	}
	s.xds.WaitAcked(t, s.node, resourcev3.ListenerType, gt.HTTPListener(t, "http", s.listen))
}
