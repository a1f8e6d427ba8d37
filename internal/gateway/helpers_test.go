package gateway_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	gt "github.com/meshrelay/meshrelay/internal/gateway/gatewaytest"
)

func routeExact(path, cluster string) *routev3.Route {
	r := gt.PrefixRoute("/", cluster)
	r.Match.PathSpecifier = &routev3.RouteMatch_Path{Path: path}
	return r
}

func routeRegex(re, cluster string) *routev3.Route {
	r := gt.PrefixRoute("/", cluster)
	r.Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}
	return r
}

// routeHeader matches a prefix and a header: by exact value, or present when value is "".
func routeHeader(prefix, name, value string, invert bool, cluster string) *routev3.Route {
	r := gt.PrefixRoute(prefix, cluster)
	hm := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	if value == "" {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}
	}
	r.Match.Headers = append(r.Match.Headers, hm)
	return r
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", req.Method, req.URL, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
