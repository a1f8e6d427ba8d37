package istio_test

import (
	"fmt"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/istiotest"
)

// route is what a route does, independent of who wrote it: how it matches, the weights of
// its destinations in order, its timeout and retries. Cluster names differ between istiod
// (outbound|port||host) and meshrelay (upstream names) and are left out; the tests check
// the destinations' endpoints separately.
type route struct {
	match   string
	weights []uint32
	timeout time.Duration
	retries string
}

func (r route) String() string {
	return fmt.Sprintf("{%s weights %v timeout %v retries %s}", r.match, r.weights, r.timeout, r.retries)
}

func routesOf(vh *routev3.VirtualHost) []route {
	var out []route
	for _, r := range vh.GetRoutes() {
		m := r.GetMatch()
		parts := []string{"prefix=" + m.GetPrefix() + " path=" + m.GetPath()}
		for _, h := range m.GetHeaders() {
			parts = append(parts, fmt.Sprintf("header %s %s invert=%v", strings.ToLower(h.GetName()), stringMatch(h.GetStringMatch()), h.GetInvertMatch()))
		}
		slices.Sort(parts[1:])
		rt := route{match: strings.Join(parts, ", ")}
		a := r.GetRoute()
		if wc := a.GetWeightedClusters(); wc != nil {
			for _, c := range wc.GetClusters() {
				rt.weights = append(rt.weights, c.GetWeight().GetValue())
			}
		} else if a.GetCluster() != "" {
			rt.weights = []uint32{1}
		}
		if t := a.GetTimeout(); t != nil {
			rt.timeout = t.AsDuration()
		}
		if p := a.GetRetryPolicy(); p != nil && p.GetNumRetries().GetValue() > 0 {
			on := strings.Split(p.GetRetryOn(), ",")
			slices.Sort(on)
			rt.retries = fmt.Sprintf("%d per-try %v on %s", p.GetNumRetries().GetValue(), p.GetPerTryTimeout().AsDuration(), strings.Join(on, ","))
		}
		out = append(out, rt)
	}
	return out
}

func stringMatch(m *matcherv3.StringMatcher) string {
	switch {
	case m == nil:
		return "present"
	case m.GetExact() != "":
		return "exact:" + m.GetExact()
	case m.GetPrefix() != "":
		return "prefix:" + m.GetPrefix()
	case m.GetSafeRegex() != nil:
		return "regex:" + m.GetSafeRegex().GetRegex()
	}
	return m.String()
}

// virtualHost finds the virtual host serving domain in a route configuration.
func virtualHost(rc *routev3.RouteConfiguration, domain string) *routev3.VirtualHost {
	for _, vh := range rc.GetVirtualHosts() {
		if slices.Contains(vh.GetDomains(), domain) {
			return vh
		}
	}
	return nil
}

// sameRoutes checks that what istiod gives a sidecar for domain (in route configuration
// routeName) routes as the meshrelay gateway of the same cluster does: the same matches
// in the same order, the same weights, timeouts and retries. Istio's retry policy may
// retry on more conditions than asked (it adds its defaults), so retries compare the
// count, the per-try timeout and that every condition asked for is there.
func sameRoutes(cfg *istiotest.Config, c *cluster, routeName, domain string) error {
	rc, ok := cfg.Routes[routeName]
	if !ok {
		return fmt.Errorf("istiod sent no route configuration %q", routeName)
	}
	vh := virtualHost(rc, domain)
	if vh == nil {
		return fmt.Errorf("route configuration %q has no virtual host for %s", routeName, domain)
	}
	istio := routesOf(vh)
	var mesh []route
	for key, r := range c.envoy {
		if !strings.HasPrefix(key, envoyres.KindRouteConfiguration+"/") {
			continue
		}
		_, msg, err := envoyres.Decode(r)
		if err != nil {
			return err
		}
		if vh := virtualHost(msg.(*routev3.RouteConfiguration), domain); vh != nil {
			mesh = routesOf(vh)
		}
	}
	if mesh == nil {
		return fmt.Errorf("the meshrelay gateway has no virtual host for %s", domain)
	}
	if len(istio) != len(mesh) {
		return fmt.Errorf("istiod's routes for %s %v, the meshrelay gateway's %v", domain, istio, mesh)
	}
	for i := range mesh {
		got, want := istio[i], mesh[i]
		if got.match != want.match || !slices.Equal(got.weights, want.weights) || got.timeout != want.timeout || !retriesCover(got.retries, want.retries) {
			return fmt.Errorf("route %d for %s: istiod %v, meshrelay gateway %v", i, domain, got, want)
		}
	}
	return nil
}

// retriesCover says whether retry policy got (count, per-try timeout, conditions) does
// what want asks: same count and per-try timeout, at least want's conditions.
func retriesCover(got, want string) bool {
	if want == "" {
		return true // Istio retries by default; meshrelay's gateway asked for nothing
	}
	gp, wp := strings.SplitN(got, " on ", 2), strings.SplitN(want, " on ", 2)
	if len(gp) != 2 || len(wp) != 2 || gp[0] != wp[0] {
		return false
	}
	have := strings.Split(gp[1], ",")
	for _, c := range strings.Split(wp[1], ",") {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}
