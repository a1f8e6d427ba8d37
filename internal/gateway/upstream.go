package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

var (
	// errNoHealthyUpstream means no priority of the cluster has an available endpoint.
	errNoHealthyUpstream = errors.New("no healthy upstream")
	// errClusterNotFound means a route names a cluster the gateway does not have.
	errClusterNotFound = errors.New("cluster not found")
)

// connectError marks a failure to establish an upstream connection (TCP connect or TLS
// handshake): Envoy's connect-failure.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect error: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

type healthState int

const (
	hcPending   healthState = iota // added, not checked yet: not available
	hcHealthy                      // passed health checking
	hcUnhealthy                    // failed health checking
)

func (s healthState) String() string {
	switch s {
	case hcHealthy:
		return "healthy"
	case hcUnhealthy:
		return "unhealthy"
	}
	return "pending"
}

// host is one endpoint of a cluster with its connection pools and state.
type host struct {
	key  string
	addr string
	tls  *upstreamTLS
	// tlsConf is nil for plaintext endpoints.
	tlsConf *tls.Config

	// The fields below are guarded by the owning upstream's mu.
	connectTimeout time.Duration
	transport      *http.Transport // proxied traffic
	hcTransport    *http.Transport // health checks, on their own connections
	priority       int
	edsHealthy     bool
	removed        bool
	hc             healthState
	hcSucc, hcFail int
	lastCheckErr   string
	changedAt      time.Time
	transitions    int
	consec5xx      int
	ejected        bool
	ejectedUntil   time.Time
	ejections      int
}

func (h *host) scheme() string {
	if h.tlsConf != nil {
		return "https"
	}
	return "http"
}

// dial connects to the endpoint, with TLS when its transport socket says so.
func (h *host) dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, &connectError{err}
	}
	if h.tlsConf == nil {
		return c, nil
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc := tls.Client(c, h.tlsConf)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = c.Close()
		return nil, &connectError{fmt.Errorf("tls handshake: %w", err)}
	}
	return tc, nil
}

func (h *host) newTransport(timeout time.Duration) *http.Transport {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return h.dial(ctx, timeout) }
	t := &http.Transport{
		Proxy:               nil,
		ForceAttemptHTTP2:   false,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
	}
	if h.tlsConf != nil {
		t.DialTLSContext = dial
	} else {
		t.DialContext = dial
	}
	return t
}

// upstream is the runtime state of one cluster: its hosts by priority, their health and
// ejection, and the priority serving now.
type upstream struct {
	name    string
	log     *slog.Logger
	metrics *metrics
	secrets *secretStore
	tasks   *tasks
	retire  func(...*http.Transport)

	mu     sync.Mutex // guards every field below and the guarded fields of its hosts
	spec   *clusterSpec
	hosts  []*host // sorted by priority, then EDS order
	loaded bool    // a load assignment has been received
	// warming is true for a new cluster until its load assignment is received and every
	// endpoint has had its first health check (Envoy's cluster warming): until then no
	// priority is chosen, so that a lower priority does not serve for a moment at start.
	warming  bool
	avail    []*host // available hosts of the active priority
	rr       uint64
	active   int // -1: none
	since    time.Time
	reason   string
	changes  int
	sweeping *outlierSpec // outlier spec the sweep task runs with
}

// pick returns the next available host of the active priority, round robin.
func (u *upstream) pick() (*host, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.avail) == 0 {
		return nil, errNoHealthyUpstream
	}
	h := u.avail[u.rr%uint64(len(u.avail))]
	u.rr++
	return h, nil
}

// connectTimeout returns the cluster's connect timeout.
func (u *upstream) connectTimeout() time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.spec.connectTimeout
}

func (u *upstream) availableLocked(h *host) bool {
	if !h.edsHealthy || h.ejected {
		return false
	}
	return u.spec.healthCheck == nil || h.hc == hcHealthy
}

// recomputeLocked finds the highest priority with an available host; a change is logged,
// counted and kept with its time and reason (hint says what happened).
func (u *upstream) recomputeLocked(hint string) {
	best := -1
	u.avail = u.avail[:0:0]
	if u.warming {
		if !u.loaded || u.spec.healthCheck != nil && slices.ContainsFunc(u.hosts, func(h *host) bool { return h.hc == hcPending }) {
			u.reason = "warming: waiting for the load assignment and the first health checks"
			return
		}
		u.warming = false
	}
	for _, h := range u.hosts {
		if best >= 0 && h.priority != best {
			break
		}
		if u.availableLocked(h) {
			best = h.priority
			u.avail = append(u.avail, h)
		}
	}
	if best == u.active {
		return
	}
	var reason string
	switch {
	case best < 0:
		reason = "no priority has a healthy endpoint: " + hint
	case u.active >= 0 && best > u.active:
		reason = fmt.Sprintf("priority %d has no healthy endpoint: %s", u.active, hint)
	default:
		reason = fmt.Sprintf("priority %d has a healthy endpoint: %s", best, hint)
	}
	u.log.Info("active priority changed", "cluster", u.name, "from", u.active, "to", best, "reason", reason)
	u.metrics.priorityTransitions.WithLabelValues(u.name, strconv.Itoa(u.active), strconv.Itoa(best)).Inc()
	u.active, u.since, u.reason = best, time.Now(), reason
	u.changes++
	u.metrics.priorityChanges.WithLabelValues(u.name).Inc()
}

// desiredHost is an endpoint of a load assignment with its TLS.
type desiredHost struct {
	endpointSpec
	tls *upstreamTLS
}

// update applies a new cluster spec and load assignment (nil: not received yet). Hosts
// keep their health, ejection and connection pools when their address and TLS settings
// are unchanged; new hosts of a health-checked cluster start pending.
func (u *upstream) update(spec *clusterSpec, la *loadAssignment) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.spec
	u.spec = spec
	if spec.static != nil {
		la = spec.static
	}
	u.loaded = la != nil
	var desired []desiredHost
	if la != nil {
		for _, e := range la.endpoints {
			desired = append(desired, desiredHost{e, spec.endpointTLS(e.match)})
		}
	}
	slices.SortStableFunc(desired, func(a, b desiredHost) int { return a.priority - b.priority })

	hcChanged := old == nil || !equalHealthCheck(old.healthCheck, spec.healthCheck)
	byKey := make(map[string]*host, len(u.hosts))
	for _, h := range u.hosts {
		byKey[h.key] = h
	}
	next := make([]*host, 0, len(desired))
	seen := map[string]bool{}
	for _, d := range desired {
		key := d.address + " " + d.tls.key()
		if seen[key] {
			continue // the same endpoint twice: keep the first (highest priority)
		}
		seen[key] = true
		h := byKey[key]
		fresh := h == nil
		if fresh {
			h = &host{key: key, addr: d.address, tls: d.tls, hc: hcPending, changedAt: time.Now()}
			if d.tls != nil {
				h.tlsConf = u.secrets.clientTLS(d.tls)
			}
		}
		delete(byKey, key)
		if fresh || h.connectTimeout != spec.connectTimeout {
			if h.transport != nil {
				u.retire(h.transport, h.hcTransport)
			}
			h.connectTimeout = spec.connectTimeout
			h.transport, h.hcTransport = h.newTransport(spec.connectTimeout), h.newTransport(spec.connectTimeout)
		}
		h.priority, h.edsHealthy = d.priority, d.edsHealthy
		if spec.healthCheck != nil && (fresh || hcChanged) {
			if old != nil && old.healthCheck == nil {
				h.hc, h.hcSucc, h.hcFail = hcPending, 0, 0
			}
			hc := spec.healthCheck
			u.tasks.goKeyed(h, func(ctx context.Context) { u.runHealthCheck(ctx, h, hc) })
		}
		if spec.healthCheck == nil {
			u.tasks.stop(h)
		}
		next = append(next, h)
	}
	for _, h := range byKey { // removed endpoints: in-flight requests finish on their pools
		h.removed = true
		u.tasks.stop(h)
		u.retire(h.transport, h.hcTransport)
	}
	u.hosts = next
	u.syncOutlierSweepLocked()
	hint := "endpoints updated"
	if !u.loaded {
		hint = "waiting for the load assignment"
	}
	u.recomputeLocked(hint)
}

// close stops the cluster's tasks and retires its pools (the cluster was removed).
func (u *upstream) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, h := range u.hosts {
		h.removed = true
		u.tasks.stop(h)
		u.retire(h.transport, h.hcTransport)
	}
	u.tasks.stop(u)
	u.sweeping = nil
}

func equalHealthCheck(a, b *healthCheckSpec) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.timeout == b.timeout && a.interval == b.interval && a.unhealthyInterval == b.unhealthyInterval &&
		a.initialJitter == b.initialJitter && a.intervalJitter == b.intervalJitter && a.jitterPercent == b.jitterPercent &&
		a.unhealthyThreshold == b.unhealthyThreshold && a.healthyThreshold == b.healthyThreshold &&
		a.path == b.path && a.host == b.host && a.method == b.method && slices.Equal(a.expected, b.expected)
}
