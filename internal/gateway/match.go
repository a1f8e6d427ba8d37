package gateway

import (
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// virtualHost returns the virtual host for a Host header: an exact domain, then the longest
// suffix wildcard, then the longest prefix wildcard, then "*" (Envoy's order). A host that
// matches nothing with its port is tried again without it.
func (t *routeTable) virtualHost(host string) *virtualHost {
	host = strings.ToLower(host)
	if t.ignorePort {
		host = stripPort(host)
	}
	if vh := t.lookup(host); vh != nil {
		return vh
	}
	if h := stripPort(host); h != host {
		if vh := t.lookup(h); vh != nil {
			return vh
		}
	}
	return t.any
}

func (t *routeTable) lookup(host string) *virtualHost {
	if vh := t.exact[host]; vh != nil {
		return vh
	}
	for _, w := range t.suffixes {
		if len(host) > len(w.part) && strings.HasSuffix(host, w.part) {
			return w.vh
		}
	}
	for _, w := range t.prefixes {
		if len(host) > len(w.part) && strings.HasPrefix(host, w.part) {
			return w.vh
		}
	}
	return nil
}

func stripPort(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return host
}

// requestPath returns the request's :path (with query) and its path without the query.
func requestPath(r *http.Request) (withQuery, path string) {
	withQuery = r.RequestURI
	if withQuery == "" || !strings.HasPrefix(withQuery, "/") {
		withQuery = r.URL.RequestURI()
	}
	path, _, _ = strings.Cut(withQuery, "?")
	return withQuery, path
}

// route returns the first route of the virtual host that matches r, or nil.
func (vh *virtualHost) route(r *http.Request) *route {
	withQuery, path := requestPath(r)
	for _, rt := range vh.routes {
		if rt.match.matches(r, withQuery, path) {
			return rt
		}
	}
	return nil
}

func (m *routeMatch) matches(r *http.Request, withQuery, path string) bool {
	switch m.kind {
	case pathPrefix:
		if m.caseSensitive {
			if !strings.HasPrefix(withQuery, m.value) {
				return false
			}
		} else if len(withQuery) < len(m.value) || !strings.EqualFold(withQuery[:len(m.value)], m.value) {
			return false
		}
	case pathExact:
		if m.caseSensitive && path != m.value || !m.caseSensitive && !strings.EqualFold(path, m.value) {
			return false
		}
	case pathRegex:
		if !m.regex.MatchString(path) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matches(r, withQuery) {
			return false
		}
	}
	return true
}

// headerValue returns a header's value (several values joined by ","), with the
// pseudo-headers :method, :path, :authority and :scheme.
func headerValue(r *http.Request, name, withQuery string) (string, bool) {
	switch name {
	case ":method":
		return r.Method, true
	case ":path":
		return withQuery, true
	case ":authority", "host":
		return r.Host, r.Host != ""
	case ":scheme":
		if r.TLS != nil {
			return "https", true
		}
		return "http", true
	}
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return "", false
	}
	return strings.Join(vs, ","), true
}

// matches follows Envoy's HeaderUtility::matchHeaders: a missing header matches only a
// presence matcher expecting absence (or, inverted, expecting presence).
func (h *headerMatcher) matches(r *http.Request, withQuery string) bool {
	v, ok := headerValue(r, h.name, withQuery)
	if !ok && !h.missingAsEmpty {
		if h.present == nil {
			return false
		}
		return *h.present == h.invert
	}
	var res bool
	switch {
	case h.present != nil:
		res = *h.present
	case h.isRange:
		n, err := strconv.ParseInt(v, 10, 64)
		res = err == nil && n >= h.rangeStart && n < h.rangeEnd
	default:
		res = h.str.matches(v)
	}
	return res != h.invert
}

func (s *stringMatcher) matches(v string) bool {
	fold := func(x string) string {
		if s.ignoreCase {
			return strings.ToLower(x)
		}
		return x
	}
	switch {
	case s.exact != nil:
		return fold(v) == fold(*s.exact)
	case s.prefix != nil:
		return strings.HasPrefix(fold(v), fold(*s.prefix))
	case s.suffix != nil:
		return strings.HasSuffix(fold(v), fold(*s.suffix))
	case s.contains != nil:
		return strings.Contains(fold(v), fold(*s.contains))
	case s.regex != nil:
		return s.regex.MatchString(v)
	}
	return false
}

// pickCluster chooses one of the route's clusters by weight.
func (rt *route) pickCluster() string {
	if len(rt.clusters) == 1 {
		return rt.clusters[0].name
	}
	n := rand.Uint64N(rt.totalWeight)
	for _, c := range rt.clusters {
		if n < c.weight {
			return c.name
		}
		n -= c.weight
	}
	return rt.clusters[len(rt.clusters)-1].name
}

// retryStatus says whether a response code is retried under the policy.
func (p *retryPolicy) retryStatus(code int) bool {
	switch {
	case p.on5xx && code >= 500:
		return true
	case p.gatewayError && (code == 502 || code == 503 || code == 504):
		return true
	case p.retriable4xx && code == 409:
		return true
	case p.retriableCodes:
		for _, c := range p.codes {
			if c == code {
				return true
			}
		}
	}
	return false
}
