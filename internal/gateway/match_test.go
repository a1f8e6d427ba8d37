package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustTable(t *testing.T, rc *routev3.RouteConfiguration) *routeTable {
	t.Helper()
	rt, err := parseRouteTable(rc)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestVirtualHostDomainOrder(t *testing.T) {
	vh := func(name string, domains ...string) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: domains}
	}
	rt := mustTable(t, &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{
		vh("exact", "api.example.com", "api.example.com:8080"),
		vh("no-port", "shop.org"),
		vh("suffix", "*.example.com"),
		vh("longer-suffix", "*.eu.example.com"),
		vh("prefix", "api.*"),
		vh("any", "*"),
	}})
	for host, want := range map[string]string{
		"api.example.com":      "exact",
		"API.example.com":      "exact",
		"api.example.com:8080": "exact",
		"api.example.com:9090": "prefix",  // with its port, "api.*" matches first
		"shop.org:9090":        "no-port", // no match with the port: tried without it
		"www.example.com":      "suffix",
		"www.eu.example.com":   "longer-suffix",
		"api.other.org":        "prefix",
		"other.org":            "any",
		"example.com":          "any", // "*.example.com" needs something before the dot
	} {
		if got := rt.virtualHost(host); got == nil || got.name != want {
			t.Errorf("host %q: %v, want %s", host, got, want)
		}
	}
	if _, err := parseRouteTable(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{vh("a", "x"), vh("b", "X")}}); err == nil {
		t.Error("a domain in two virtual hosts was accepted")
	}
	if _, err := parseRouteTable(&routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{vh("a", "a.*.b")}}); err == nil {
		t.Error("a wildcard inside a domain was accepted")
	}
}

func header(name string, spec any, invert bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	switch s := spec.(type) {
	case bool:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: s}
	case *matcherv3.StringMatcher:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: s}
	}
	return h
}

func TestRouteMatching(t *testing.T) {
	exact := func(v string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
	}
	cases := []struct {
		name   string
		match  *routev3.RouteMatch
		method string
		target string
		hdr    map[string]string
		want   bool
	}{
		{"prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"}}, "", "/api/v1", nil, true},
		{"prefix sees the query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/a?x"}}, "", "/a?x=1", nil, true},
		{"prefix is case sensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"}}, "", "/API", nil, false},
		{"prefix case insensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"}, CaseSensitive: wrapperspb.Bool(false)}, "", "/API/x", nil, true},
		{"path ignores the query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, "", "/a?b=c", nil, true},
		{"path is exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, "", "/a/", nil, false},
		{"regex is a full match", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[0-9]"}}}, "", "/v1/x", nil, false},
		{"regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[0-9]/.*"}}}, "", "/v1/x?q", nil, true},
		{"method pseudo-header", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header(":method", exact("POST"), false)}}, "POST", "/", nil, true},
		{"method pseudo-header mismatch", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header(":method", exact("POST"), false)}}, "GET", "/", nil, false},
		{"present", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header("x-a", true, false)}}, "", "/", map[string]string{"X-A": ""}, true},
		{"present missing", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header("x-a", true, false)}}, "", "/", nil, false},
		{"inverted present matches absence", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header("x-a", true, true)}}, "", "/", nil, true},
		{"inverted exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header("x-a", exact("1"), true)}}, "", "/", map[string]string{"x-a": "2"}, true},
		{"inverted exact, missing header", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header("x-a", exact("1"), true)}}, "", "/", nil, false},
		{"header regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{header("x-a", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "v[0-9]+"}}}, false)}}, "", "/", map[string]string{"x-a": "v12"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseRouteMatch(tc.match)
			if err != nil {
				t.Fatal(err)
			}
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, tc.target, nil)
			for k, v := range tc.hdr {
				r.Header.Set(k, v)
			}
			withQuery, path := requestPath(r)
			if got := m.matches(r, withQuery, path); got != tc.want {
				t.Errorf("match %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRetryPolicyConditions(t *testing.T) {
	p, err := parseRetryPolicy(&routev3.RetryPolicy{RetryOn: "gateway-error,retriable-status-codes", RetriableStatusCodes: []uint32{418}})
	if err != nil {
		t.Fatal(err)
	}
	if p.numRetries != 1 {
		t.Errorf("default num_retries %d, want 1 (Envoy's)", p.numRetries)
	}
	for code, want := range map[int]bool{500: false, 502: true, 503: true, 504: true, 418: true, 404: false} {
		if got := p.retryStatus(code); got != want {
			t.Errorf("retry %d: %v, want %v", code, got, want)
		}
	}
	if !p.retriesError(&upstreamError{reason: "connection failure"}) || !p.retriesError(&upstreamError{reason: "per try timeout"}) {
		t.Error("gateway-error retries connect failures and per-try timeouts")
	}
	only := &retryPolicy{connectFailure: true}
	if !only.retriesError(&upstreamError{reason: "connection failure"}) || only.retriesError(&upstreamError{reason: "connection termination"}) {
		t.Error("connect-failure retries connect failures only")
	}
}
