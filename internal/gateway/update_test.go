package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
)

type result struct {
	code int
	body string
	err  error
}

// slowBackend answers "slow" to a request once release receives; started gets a value
// when a request arrives.
func slowBackend(t *testing.T) (b *backend, started, release chan struct{}) {
	started, release = make(chan struct{}, 16), make(chan struct{})
	b = startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "slow\n")
	})
	return b, started, release
}

// send starts GET url and waits until the backend has it.
func send(t *testing.T, c *http.Client, url string, started chan struct{}) chan result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		code, body, err := gt.Get(c, url)
		done <- result{code, body, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	return done
}

func TestUpdatesKeepInFlightRequests(t *testing.T) {
	s := newHTTPSetup(t)
	slow, started, release := slowBackend(t)
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	listener := gt.HTTPListener(t, "http", s.listen)
	s.xds.SetAndWait(t, s.node, listener, gt.RouteConfig("http", gt.PrefixRoute("/slow", "slow"), gt.PrefixRoute("/", "green")),
		gt.Cluster(t, "slow", gt.ClusterOptions{}), gt.LoadAssignment(t, "slow", []gt.Endpoint{{Addr: slow.addr}}),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}))
	c := gt.Client(t)
	gt.WantBody(t, c, s.url+"/", "green-pod", 10*time.Second)

	// 1. The route of the in-flight request and its cluster are removed.
	done := send(t, c, s.url+"/slow", started)
	s.xds.SetAndWait(t, s.node, listener, gt.RouteConfig("http", gt.PrefixRoute("/", "green")),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}))
	gt.WantBody(t, c, s.url+"/slow", "green-pod", 10*time.Second) // new requests take the new route
	release <- struct{}{}
	if r := <-done; r.err != nil || r.code != 200 || r.body != "slow" {
		t.Errorf("in-flight request across a route and cluster removal: %+v", r)
	}

	// 2. The listener itself is removed: it drains; the in-flight request completes and new
	// connections are refused.
	s.xds.SetAndWait(t, s.node, listener, gt.RouteConfig("http", gt.PrefixRoute("/slow", "slow")),
		gt.Cluster(t, "slow", gt.ClusterOptions{}), gt.LoadAssignment(t, "slow", []gt.Endpoint{{Addr: slow.addr}}))
	gt.Eventually(t, 10*time.Second, func() error {
		if st := gt.ClusterStatus(t, s.gw, "slow"); st.ActivePriority != 0 {
			return fmt.Errorf("slow cluster: %+v", st)
		}
		return nil
	})
	done = send(t, c, s.url+"/slow", started)
	s.xds.SetAndWait(t, s.node)
	gt.Eventually(t, 10*time.Second, func() error {
		if _, _, err := gt.Get(c, s.url+"/"); err == nil {
			return fmt.Errorf("the removed listener still accepts connections")
		}
		return nil
	})
	release <- struct{}{}
	if r := <-done; r.err != nil || r.code != 200 || r.body != "slow" {
		t.Errorf("in-flight request across the listener's removal: %+v", r)
	}
}

func TestXDSServerGoneKeepsServingAndRestartIsPickedUp(t *testing.T) {
	s := newHTTPSetup(t)
	_, blue, _ := gt.StartDemoApp(t, "blue-pod")
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	listener := gt.HTTPListener(t, "http", s.listen)
	s.xds.Set(t, s.node, listener, gt.RouteConfig("http", gt.PrefixRoute("/", "blue")),
		gt.Cluster(t, "blue", gt.ClusterOptions{}), gt.LoadAssignment(t, "blue", []gt.Endpoint{{Addr: blue}}))
	c := gt.Client(t)
	gt.WantBody(t, c, s.url, "blue-pod", 10*time.Second)

	s.xds.Stop()
	gt.Eventually(t, 10*time.Second, func() error {
		if st := s.gw.Status(); st.XDS.Connected {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // a few reconnection attempts fail meanwhile
	for range 20 {
		if code, body, err := gt.Get(c, s.url); err != nil || code != 200 || body != "blue-pod" {
			t.Fatalf("without the xDS server: %d %q %v", code, body, err)
		}
	}
	if err := s.gw.Ready(); err != nil {
		t.Errorf("ready without the xDS server: %v", err)
	}

	// The server comes back on the same address with its cache and a new configuration.
	restarted := gt.StartXDSWithCache(t, s.xds.Addr, s.xds.Cache())
	restarted.Set(t, s.node, listener, gt.RouteConfig("http", gt.PrefixRoute("/", "green")),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}))
	gt.WantBody(t, c, s.url, "green-pod", 10*time.Second)
	if st := s.gw.Status(); !st.XDS.Connected || st.XDS.LastError == "" {
		t.Errorf("xds status after reconnecting: %+v", st.XDS)
	}
}

func TestRejectedUpdateKeepsPreviousConfig(t *testing.T) {
	s := newHTTPSetup(t)
	_, blue, _ := gt.StartDemoApp(t, "blue-pod")
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	listener := gt.HTTPListener(t, "http", s.listen)
	s.xds.Set(t, s.node, listener, gt.RouteConfig("http", gt.PrefixRoute("/", "blue")),
		gt.Cluster(t, "blue", gt.ClusterOptions{}), gt.LoadAssignment(t, "blue", []gt.Endpoint{{Addr: blue}}))
	c := gt.Client(t)
	gt.WantBody(t, c, s.url, "blue-pod", 10*time.Second)

	bad := routeRegex("(unclosed", "green") // RE2 refuses it: the route configuration is NACKed
	s.xds.Set(t, s.node, listener, gt.RouteConfig("http", bad, gt.PrefixRoute("/", "green")),
		gt.Cluster(t, "blue", gt.ClusterOptions{}), gt.LoadAssignment(t, "blue", []gt.Endpoint{{Addr: blue}}),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}))
	gt.Eventually(t, 10*time.Second, func() error {
		for _, n := range s.xds.Nacks() {
			if strings.Contains(n, "regex") {
				return nil
			}
		}
		return fmt.Errorf("no nack yet: %v", s.xds.Nacks())
	})
	s.xds.WaitAcked(t, s.node, resourcev3.ClusterType, gt.Cluster(t, "blue", gt.ClusterOptions{}), gt.Cluster(t, "green", gt.ClusterOptions{}))
	for range 10 {
		if code, body, err := gt.Get(c, s.url); err != nil || code != 200 || body != "blue-pod" {
			t.Fatalf("after a rejected route update: %d %q %v", code, body, err)
		}
	}
	if st := s.gw.Status(); !strings.Contains(st.XDS.LastNack, "RouteConfiguration") {
		t.Errorf("last nack %q", st.XDS.LastNack)
	}

	// A listener that cannot bind (the port is taken) is rejected too.
	taken := listen(t)
	defer taken.Close()
	s.xds.Set(t, s.node, listener, gt.HTTPListener(t, "other", taken.Addr().String()), gt.RouteConfig("http", gt.PrefixRoute("/", "green")),
		gt.Cluster(t, "green", gt.ClusterOptions{}), gt.LoadAssignment(t, "green", []gt.Endpoint{{Addr: green}}))
	gt.Eventually(t, 10*time.Second, func() error {
		if st := s.gw.Status(); !strings.Contains(st.XDS.LastNack, "Listener") {
			return fmt.Errorf("last nack %q", st.XDS.LastNack)
		}
		return nil
	})
	// The route configuration of that update was valid and is applied.
	gt.WantBody(t, c, s.url, "green-pod", 10*time.Second)
}

// TestClusterUpdateKeepsHealthChecking updates a health-checked cluster with an unchanged
// check: its endpoints keep their state and their checkers keep reporting.
func TestClusterUpdateKeepsHealthChecking(t *testing.T) {
	s := newFailoverSetup(t, gt.HealthCheck{Interval: 100 * time.Millisecond, Timeout: time.Second, Unhealthy: 1, Healthy: 1})
	hc := &gt.HealthCheck{Interval: 100 * time.Millisecond, Timeout: time.Second, Unhealthy: 1, Healthy: 1, Path: "/health"}
	_, green, _ := gt.StartDemoApp(t, "green-2")
	// Same cluster and check; the load assignment changes priority 1.
	s.xds.SetAndWait(t, s.node, gt.HTTPListener(t, "http", s.listen), gt.RouteConfig("http", gt.PrefixRoute("/", "svc")),
		gt.Cluster(t, "svc", gt.ClusterOptions{HealthCheck: hc, ConnectTimeout: 3 * time.Second}),
		gt.LoadAssignment(t, "svc", []gt.Endpoint{{Addr: s.blueAddr}}, []gt.Endpoint{{Addr: green}}))
	gt.WantBody(t, s.client, s.url, "blue-pod", 5*time.Second)
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/fail")
	gt.WantBody(t, s.client, s.url, "green-2", 5*time.Second)
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/ok")
	gt.WantBody(t, s.client, s.url, "blue-pod", 5*time.Second)
}

// A configuration larger than gRPC's default message limit (4 MiB) is received whole: a
// big cluster's endpoints come in one xDS response.
func TestConfigOverGRPCDefaultLimit(t *testing.T) {
	s := newHTTPSetup(t)
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	eps := []gt.Endpoint{{Addr: green}}
	for i := range 200_000 {
		eps = append(eps, gt.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:8080", i>>16, i>>8&255, i&255)})
	}
	cla := gt.LoadAssignment(t, "big", eps)
	if n := proto.Size(cla); n <= 4<<20 {
		t.Fatalf("the load assignment is %d bytes; the test needs more than 4 MiB", n)
	}
	s.xds.SetAndWait(t, s.node, gt.HTTPListener(t, "http", s.listen), gt.RouteConfig("http", gt.PrefixRoute("/", "big")),
		gt.Cluster(t, "big", gt.ClusterOptions{}), cla)
}
