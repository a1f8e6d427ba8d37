package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/demoapp"
	"github.com/meshrelay/meshrelay/internal/gateway"
	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
)

// failoverSetup routes / to cluster "svc": priority 0 is the blue demo app, priority 1 the
// green one, with an active health check on /health.
type failoverSetup struct {
	*httpSetup
	blue, green         *demoapp.Server
	blueAdmin, blueAddr string
	client              *http.Client
}

func newFailoverSetup(t *testing.T, hc gt.HealthCheck) *failoverSetup {
	t.Helper()
	s := &failoverSetup{httpSetup: newHTTPSetup(t), client: gt.Client(t)}
	var green string
	s.blue, s.blueAddr, s.blueAdmin = gt.StartDemoApp(t, "blue-pod")
	s.green, green, _ = gt.StartDemoApp(t, "green-pod")
	hc.Path = "/health"
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen), gt.RouteConfig("http", gt.PrefixRoute("/", "svc")),
		gt.Cluster(t, "svc", gt.ClusterOptions{HealthCheck: &hc}),
		gt.LoadAssignment(t, "svc", []gt.Endpoint{{Addr: s.blueAddr}}, []gt.Endpoint{{Addr: green}}))
	gt.WantBody(t, s.client, s.url, "blue-pod", 10*time.Second)
	return s
}

// watchTraffic sends requests until stop is called and returns every response.
func (s *failoverSetup) watchTraffic(t *testing.T) (stop func() []string) {
	var (
		mu   sync.Mutex
		got  []string
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			code, body, err := gt.Get(s.client, s.url)
			r := fmt.Sprintf("%d %s", code, body)
			if err != nil {
				r = err.Error()
			}
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return func() []string {
		close(done)
		wg.Wait()
		return got
	}
}

func blueEndpoint(t *testing.T, s *failoverSetup) gateway.EndpointStatus {
	t.Helper()
	for _, e := range gt.ClusterStatus(t, s.gw, "svc").Endpoints {
		if e.Address == s.blueAddr {
			return e
		}
	}
	t.Fatalf("endpoint %s not in status", s.blueAddr)
	return gateway.EndpointStatus{}
}

// probesUntil counts the probes the app answered with the given health up to t.
func probesUntil(app *demoapp.Server, healthy bool, from, until time.Time) int {
	n := 0
	for _, p := range app.Probes() {
		if p.Healthy == healthy && !p.Time.Before(from) && !p.Time.After(until) {
			n++
		}
	}
	return n
}

func TestPriorityFailoverThresholds1(t *testing.T) {
	s := newFailoverSetup(t, gt.HealthCheck{Interval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond, Unhealthy: 1, Healthy: 1})
	stop := s.watchTraffic(t)

	failedAt := time.Now()
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/fail")
	gt.WantBody(t, s.client, s.url, "green-pod", 5*time.Second)
	t.Logf("failed over after %v (interval 200ms, unhealthy threshold 1)", time.Since(failedAt))
	st := gt.ClusterStatus(t, s.gw, "svc")
	if st.ActivePriority != 1 || !strings.Contains(st.Reason, "priority 0 has no healthy endpoint") || st.Since.Before(failedAt) {
		t.Errorf("status after failover: priority %d since %v reason %q", st.ActivePriority, st.Since, st.Reason)
	}
	for range 10 { // all traffic on priority 1
		if code, body, err := gt.Get(s.client, s.url); err != nil || code != 200 || body != "green-pod" {
			t.Fatalf("after failover: %d %q %v", code, body, err)
		}
	}

	okAt := time.Now()
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/ok")
	gt.WantBody(t, s.client, s.url, "blue-pod", 5*time.Second)
	t.Logf("failed back after %v", time.Since(okAt))
	st = gt.ClusterStatus(t, s.gw, "svc")
	if st.ActivePriority != 0 || !strings.Contains(st.Reason, "priority 0 has a healthy endpoint") {
		t.Errorf("status after failback: priority %d reason %q", st.ActivePriority, st.Reason)
	}
	// /health failing never broke the data path: every request succeeded.
	for _, r := range stop() {
		if r != "200 blue-pod" && r != "200 green-pod" {
			t.Errorf("request during failover: %s", r)
		}
	}
}

func TestPriorityFailoverWaitsForThresholds(t *testing.T) {
	s := newFailoverSetup(t, gt.HealthCheck{Interval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond, Unhealthy: 3, Healthy: 2})

	failedAt := time.Now()
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/fail")
	gt.WantBody(t, s.client, s.url, "green-pod", 5*time.Second)
	e := blueEndpoint(t, s)
	if e.Health != "unhealthy" {
		t.Fatalf("blue endpoint %+v", e)
	}
	// Probes are sequential: the gateway turned blue unhealthy on the third failed probe.
	if n := probesUntil(s.blue, false, failedAt, e.HealthChangedAt); n != 3 {
		t.Errorf("blue turned unhealthy after %d failed probes, want 3 (unhealthy threshold)", n)
	}
	t.Logf("failed over after %v", e.HealthChangedAt.Sub(failedAt))

	okAt := time.Now()
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/ok")
	gt.WantBody(t, s.client, s.url, "blue-pod", 5*time.Second)
	e = blueEndpoint(t, s)
	if n := probesUntil(s.blue, true, okAt, e.HealthChangedAt); n != 2 {
		t.Errorf("blue turned healthy after %d passed probes, want 2 (healthy threshold)", n)
	}
	if st := gt.ClusterStatus(t, s.gw, "svc"); st.ActivePriority != 0 || st.Changes != 3 {
		t.Errorf("status: priority %d after %d changes, want 0 after 3 (initial, failover, failback)", st.ActivePriority, st.Changes)
	}
}

// scriptedHealth answers /health by a script over the probe number and everything else
// with a text.
type scriptedHealth struct {
	mu     sync.Mutex
	times  []time.Time
	script func(n int) bool
}

func (h *scriptedHealth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/health" {
		_, _ = io.WriteString(w, "flappy\n")
		return
	}
	h.mu.Lock()
	n := len(h.times)
	h.times = append(h.times, time.Now())
	ok := h.script(n)
	h.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

func (h *scriptedHealth) served() (int, []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.times), append([]time.Time(nil), h.times...)
}

func TestFlappingEndpointFollowsThresholds(t *testing.T) {
	// Probe n answers: 0-1 pass; 2-13 fail every other one; 14-25 fail two of three;
	// 26-28 fail; 29-40 pass every other one; from 41 pass. Thresholds: 3 failures, 2 passes.
	script := func(n int) bool {
		switch {
		case n < 2:
			return true
		case n < 14:
			return n%2 == 1
		case n < 26:
			return (n-14)%3 == 2
		case n < 29:
			return false
		case n < 41:
			return (n-29)%2 == 0
		}
		return true
	}
	h := &scriptedHealth{script: script}
	flappy := startBackend(t, h.ServeHTTP)
	s := newHTTPSetup(t)
	_, green, _ := gt.StartDemoApp(t, "green-pod")
	hc := &gt.HealthCheck{Interval: 100 * time.Millisecond, Timeout: time.Second, Unhealthy: 3, Healthy: 2, Path: "/health"}
	s.xds.Set(t, s.node, gt.HTTPListener(t, "http", s.listen), gt.RouteConfig("http", gt.PrefixRoute("/", "svc")),
		gt.Cluster(t, "svc", gt.ClusterOptions{HealthCheck: hc}),
		gt.LoadAssignment(t, "svc", []gt.Endpoint{{Addr: flappy.addr}}, []gt.Endpoint{{Addr: green}}))
	ep := func() gateway.EndpointStatus {
		for _, e := range gt.ClusterStatus(t, s.gw, "svc").Endpoints {
			if e.Address == flappy.addr {
				return e
			}
		}
		return gateway.EndpointStatus{}
	}
	waitServed := func(n int) {
		gt.Eventually(t, 20*time.Second, func() error {
			if got, _ := h.served(); got < n {
				return fmt.Errorf("%d probes served, waiting for %d", got, n)
			}
			return nil
		})
	}
	c := gt.Client(t)

	waitServed(27) // probes 0-25 decided: never three failures in a row
	if e := ep(); e.Health != "healthy" || e.HealthTransitions != 1 {
		t.Fatalf("after flapping below the unhealthy threshold: %+v", e)
	}
	if code, body, _ := gt.Get(c, s.url); body != "flappy" {
		t.Errorf("traffic while flapping below threshold: %d %q", code, body)
	}
	gt.Eventually(t, 10*time.Second, func() error {
		if e := ep(); e.Health != "unhealthy" {
			return fmt.Errorf("endpoint %s", e.Health)
		}
		return nil
	})
	e := ep()
	if _, times := h.served(); countBefore(times, e.HealthChangedAt) != 29 {
		t.Errorf("turned unhealthy after %d probes, want 29 (the third failure in a row)", countBefore(times, e.HealthChangedAt))
	}
	gt.WantBody(t, c, s.url, "green-pod", 5*time.Second)

	waitServed(42) // probes 29-40 decided: never two passes in a row
	if e := ep(); e.Health != "unhealthy" || e.HealthTransitions != 2 {
		t.Fatalf("after flapping below the healthy threshold: %+v", e)
	}
	gt.Eventually(t, 10*time.Second, func() error {
		if e := ep(); e.Health != "healthy" {
			return fmt.Errorf("endpoint %s", e.Health)
		}
		return nil
	})
	e = ep()
	if _, times := h.served(); countBefore(times, e.HealthChangedAt) != 43 || e.HealthTransitions != 3 {
		t.Errorf("turned healthy after %d probes and %d transitions, want 43 and 3", countBefore(times, e.HealthChangedAt), e.HealthTransitions)
	}
	gt.WantBody(t, c, s.url, "flappy", 5*time.Second)
	if st := gt.ClusterStatus(t, s.gw, "svc"); st.Changes != 3 {
		t.Errorf("active priority changed %d times, want 3", st.Changes)
	}
}

func countBefore(times []time.Time, t time.Time) int {
	n := 0
	for _, x := range times {
		if !x.After(t) {
			n++
		}
	}
	return n
}

func TestNoHealthyPriorityIs503(t *testing.T) {
	s := newFailoverSetup(t, gt.HealthCheck{Interval: 200 * time.Millisecond, Timeout: 500 * time.Millisecond, Unhealthy: 1, Healthy: 1})
	gt.Post(t, s.client, "http://"+s.blueAdmin+"/healthcheck/fail")
	s.green.SetHealthy(false)
	gt.Eventually(t, 5*time.Second, func() error {
		code, body, err := gt.Get(s.client, s.url)
		if err != nil || code != 503 || body != "no healthy upstream" {
			return fmt.Errorf("%d %q %v", code, body, err)
		}
		return nil
	})
	if st := gt.ClusterStatus(t, s.gw, "svc"); st.ActivePriority != -1 || !strings.HasPrefix(st.Reason, "no priority has a healthy endpoint") {
		t.Errorf("status: priority %d reason %q", st.ActivePriority, st.Reason)
	}
	s.green.SetHealthy(true)
	gt.WantBody(t, s.client, s.url, "green-pod", 5*time.Second)
}
