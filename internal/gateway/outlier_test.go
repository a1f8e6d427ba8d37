package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/gateway"
	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
)

func endpointStatus(t *testing.T, gw *gateway.Gateway, cluster, addr string) gateway.EndpointStatus {
	t.Helper()
	for _, e := range gt.ClusterStatus(t, gw, cluster).Endpoints {
		if e.Address == addr {
			return e
		}
	}
	t.Fatalf("endpoint %s not in cluster %s", addr, cluster)
	return gateway.EndpointStatus{}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	s := newHTTPSetup(t)
	_, good, _ := gt.StartDemoApp(t, "good")
	bad := startBackend(t, status(500, "bad"))
	od := &gt.Outlier{Consecutive5xx: 3, Interval: 100 * time.Millisecond, BaseEjection: time.Second, MaxEjectionPercent: 100}
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen), gt.RouteConfig("http", gt.PrefixRoute("/", "svc")),
		gt.Cluster(t, "svc", gt.ClusterOptions{Outlier: od}),
		gt.LoadAssignment(t, "svc", []gt.Endpoint{{Addr: good}, {Addr: bad.addr}}))
	c := gt.Client(t)
	gt.WantBody(t, c, s.url, "good", 10*time.Second)

	// Round robin sends every other request to the bad endpoint: its third 5xx in a row
	// ejects it.
	fives := 0
	for i := 0; i < 20 && !endpointStatus(t, s.gw, "svc", bad.addr).Ejected; i++ {
		if code, _, _ := gt.Get(c, s.url); code == 500 {
			fives++
		}
	}
	e := endpointStatus(t, s.gw, "svc", bad.addr)
	if !e.Ejected || bad.hits.Load() != 3 || fives == 0 {
		t.Fatalf("bad endpoint after %d requests (%d 5xx seen here): %+v, want ejected after the third", bad.hits.Load(), fives, e)
	}
	if d := time.Until(e.EjectedUntil); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("ejected for %v more, want about the base ejection time (1s)", d)
	}
	hits := bad.hits.Load()
	for range 20 {
		if code, body, err := gt.Get(c, s.url); err != nil || code != 200 || body != "good" {
			t.Fatalf("while ejected: %d %q %v", code, body, err)
		}
	}
	if bad.hits.Load() != hits {
		t.Errorf("the ejected endpoint got %d requests", bad.hits.Load()-hits)
	}

	bad.set(status(200, "fixed"))
	gt.Eventually(t, 5*time.Second, func() error {
		if e := endpointStatus(t, s.gw, "svc", bad.addr); e.Ejected {
			return fmt.Errorf("still ejected until %v", e.EjectedUntil)
		}
		return nil
	})
	gt.WantBody(t, c, s.url, "fixed", 5*time.Second) // back in the rotation
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	s := newHTTPSetup(t)
	_, good, _ := gt.StartDemoApp(t, "good")
	bad1 := startBackend(t, status(500, "bad"))
	bad2 := startBackend(t, status(500, "bad"))
	// 30 % of 3 hosts: the first ejection (0 % ejected) is allowed, the second (33 %) not.
	od := &gt.Outlier{Consecutive5xx: 2, Interval: 100 * time.Millisecond, BaseEjection: time.Minute, MaxEjectionPercent: 30}
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen), gt.RouteConfig("http", gt.PrefixRoute("/", "svc")),
		gt.Cluster(t, "svc", gt.ClusterOptions{Outlier: od}),
		gt.LoadAssignment(t, "svc", []gt.Endpoint{{Addr: good}, {Addr: bad1.addr}, {Addr: bad2.addr}}))
	c := gt.Client(t)
	gt.WantBody(t, c, s.url, "good", 10*time.Second)
	fives := 0
	for range 30 {
		if code, _, _ := gt.Get(c, s.url); code == 500 {
			fives++
		}
	}
	ejected := 0
	for _, e := range gt.ClusterStatus(t, s.gw, "svc").Endpoints {
		if e.Ejected {
			ejected++
		}
	}
	if ejected != 1 || fives < 5 {
		t.Errorf("%d endpoints ejected with %d 5xx answered, want 1 ejected and the other bad one still answering", ejected, fives)
	}
}
