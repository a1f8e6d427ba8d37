package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// outcome is the result of one upstream exchange, as outlier detection sees it.
type outcome int

const (
	outcomeSuccess outcome = iota
	outcome5xx             // a 5xx response
	outcomeLocal           // connect failure, reset or timeout (counted as 5xx, Envoy's default)
)

// report feeds outlier detection: consecutive_5xx failures in a row eject the host for
// base_ejection_time × times ejected (at most max_ejection_time), unless that would eject
// max_ejection_percent or more of the cluster's hosts.
func (u *upstream) report(h *host, o outcome) {
	u.mu.Lock()
	defer u.mu.Unlock()
	od := u.spec.outlier
	if od == nil || h.removed {
		return
	}
	if o == outcomeSuccess {
		h.consec5xx = 0
		return
	}
	h.consec5xx++
	if h.ejected || od.consecutive5xx <= 0 || h.consec5xx < od.consecutive5xx {
		return
	}
	n := h.consec5xx
	h.consec5xx = 0
	if od.enforcing < 100 && rand.N(uint32(100)) >= od.enforcing {
		return
	}
	ejected, total := 0, len(u.hosts)
	for _, x := range u.hosts {
		if x.ejected {
			ejected++
		}
	}
	if float64(100*ejected)/float64(total) >= float64(od.maxEjectionPercent) && !(ejected == 0 && od.alwaysEjectOne) {
		u.log.Info("endpoint not ejected: max ejection percent reached", "cluster", u.name, "endpoint", h.addr, "ejected", ejected, "hosts", total)
		return
	}
	h.ejections++
	d := min(od.baseEjection*time.Duration(h.ejections), od.maxEjection)
	h.ejected, h.ejectedUntil = true, time.Now().Add(d)
	u.metrics.ejections.WithLabelValues(u.name).Inc()
	u.log.Info("endpoint ejected", "cluster", u.name, "endpoint", h.addr, "consecutive5xx", n, "duration", d)
	u.recomputeLocked(fmt.Sprintf("%s ejected after %d consecutive 5xx or connect failures", h.addr, n))
}

// syncOutlierSweepLocked runs the sweep task while the cluster has outlier detection.
func (u *upstream) syncOutlierSweepLocked() {
	od := u.spec.outlier
	if od == nil {
		if u.sweeping != nil {
			u.tasks.stop(u)
			u.sweeping = nil
		}
		return
	}
	if u.sweeping != nil && *u.sweeping == *od {
		return
	}
	u.sweeping = od
	u.tasks.goKeyed(u, func(ctx context.Context) {
		t := time.NewTicker(od.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				u.sweep(now)
			}
		}
	})
}

// sweep runs at every outlier detection interval: hosts whose ejection time has passed
// return, and the ejection multiplier of hosts not ejected decays by one.
func (u *upstream) sweep(now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var back []string
	for _, h := range u.hosts {
		switch {
		case h.ejected && !now.Before(h.ejectedUntil):
			h.ejected = false
			back = append(back, h.addr)
			u.log.Info("endpoint ejection ended", "cluster", u.name, "endpoint", h.addr)
		case !h.ejected && h.ejections > 0:
			h.ejections--
		}
	}
	if len(back) > 0 {
		u.recomputeLocked(fmt.Sprintf("ejection of %v ended", back))
	}
}
