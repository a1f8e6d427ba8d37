package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// runHealthCheck checks one host until ctx ends: a first check at once (after the initial
// jitter), then one every interval (unhealthy_interval while unhealthy) plus jitter,
// counted from the end of the previous check as Envoy does.
func (u *upstream) runHealthCheck(ctx context.Context, h *host, hc *healthCheckSpec) {
	wait := func(d time.Duration) bool {
		if d <= 0 {
			return ctx.Err() == nil
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	if hc.initialJitter > 0 && !wait(rand.N(hc.initialJitter)) {
		return
	}
	for {
		err := u.probe(ctx, h, hc)
		if ctx.Err() != nil {
			return
		}
		unhealthy := u.reportCheck(h, hc, err)
		next := hc.interval
		if unhealthy && hc.unhealthyInterval > 0 {
			next = hc.unhealthyInterval
		}
		if hc.intervalJitter > 0 {
			next += rand.N(hc.intervalJitter)
		}
		if hc.jitterPercent > 0 {
			if j := next * time.Duration(hc.jitterPercent) / 100; j > 0 {
				next += rand.N(j)
			}
		}
		if !wait(next) {
			return
		}
	}
}

// probe sends one health check request over the host's transport socket; nil means the
// host answered an expected status within the timeout.
func (u *upstream) probe(ctx context.Context, h *host, hc *healthCheckSpec) error {
	u.mu.Lock()
	t := h.hcTransport
	u.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, hc.timeout)
	defer cancel()
	path := hc.path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, hc.method, h.scheme()+"://"+h.addr+path, nil)
	if err != nil {
		return fmt.Errorf("health check request: %w", err)
	}
	req.Host = hc.host
	if req.Host == "" {
		req.Host = u.name // Envoy's default: the cluster name
	}
	req.Header.Set("User-Agent", "meshrelay-gateway/health-check")
	resp, err := t.RoundTrip(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("timeout after %v", hc.timeout)
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if !hc.expects(resp.StatusCode) {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// reportCheck applies one health check result with Envoy's thresholds: a pending host is
// decided by its first check; a healthy host turns unhealthy after unhealthy_threshold
// consecutive failures, an unhealthy one healthy after healthy_threshold consecutive
// successes. It returns whether the host is unhealthy now.
func (u *upstream) reportCheck(h *host, hc *healthCheckSpec, err error) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	// Specs are parsed anew on every cluster update: compare the check by value (a changed
	// check restarts the checkers, whose results then come with the new spec).
	if h.removed || !equalHealthCheck(u.spec.healthCheck, hc) {
		return false
	}
	ok := err == nil
	u.metrics.healthChecks.WithLabelValues(u.name, map[bool]string{true: "success", false: "failure"}[ok]).Inc()
	if ok {
		h.hcFail, h.lastCheckErr = 0, ""
		h.hcSucc++
		switch {
		case h.hc == hcPending:
			u.setHealthLocked(h, hcHealthy, "passed its first health check")
		case h.hc == hcUnhealthy && h.hcSucc >= hc.healthyThreshold:
			u.setHealthLocked(h, hcHealthy, fmt.Sprintf("passed %d consecutive health checks", h.hcSucc))
		}
	} else {
		h.hcSucc, h.lastCheckErr = 0, err.Error()
		h.hcFail++
		switch {
		case h.hc == hcPending:
			u.setHealthLocked(h, hcUnhealthy, "failed its first health check: "+err.Error())
		case h.hc == hcHealthy && h.hcFail >= hc.unhealthyThreshold:
			u.setHealthLocked(h, hcUnhealthy, fmt.Sprintf("failed %d consecutive health checks: %v", h.hcFail, err))
		}
	}
	return h.hc != hcHealthy
}

func (u *upstream) setHealthLocked(h *host, s healthState, why string) {
	h.hc, h.changedAt = s, time.Now()
	h.transitions++
	u.log.Info("endpoint health changed", "cluster", u.name, "endpoint", h.addr, "priority", h.priority, "health", s.String(), "reason", why)
	if s == hcHealthy && h.ejected && u.spec.outlier != nil && u.spec.outlier.unejectOnHealthy {
		h.ejected = false
		why += "; ejection lifted"
	}
	u.recomputeLocked(h.addr + " " + why)
}
