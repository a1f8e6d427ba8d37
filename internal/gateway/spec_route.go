package gateway

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// defaultRouteTimeout is Envoy's route timeout when the route action sets none.
const defaultRouteTimeout = 15 * time.Second

// routeTable is a parsed RouteConfiguration.
type routeTable struct {
	name       string
	ignorePort bool
	// vhostHeader replaces the Host header for virtual host matching when set.
	vhostHeader string
	exact       map[string]*virtualHost
	suffixes    []wildcardHost // "*.example.com", longest first
	prefixes    []wildcardHost // "example.*", longest first
	any         *virtualHost
}

type wildcardHost struct {
	part string
	vh   *virtualHost
}

type virtualHost struct {
	name   string
	routes []*route
	retry  *retryPolicy
}

type route struct {
	name  string
	match routeMatch
	// clusters to forward to; one entry with weight 1 for a single cluster.
	clusters    []weightedCluster
	totalWeight uint64
	// timeout bounds the whole upstream exchange; 0 disables it.
	timeout          time.Duration
	retry            *retryPolicy
	notFoundCode     int
	prefixRewrite    string
	hostRewrite      string
	direct           *directResponse
	matchedPrefix    string // the prefix to replace with prefixRewrite
	hasPrefixRewrite bool
}

type weightedCluster struct {
	name   string
	weight uint64
}

type directResponse struct {
	status int
	body   string
}

type pathKind int

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
)

type routeMatch struct {
	kind          pathKind
	value         string
	regex         *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
}

type headerMatcher struct {
	name           string // lower case; pseudo-headers keep their colon
	invert         bool
	missingAsEmpty bool
	present        *bool // a presence match
	str            *stringMatcher
	rangeStart     int64
	rangeEnd       int64
	isRange        bool
}

type stringMatcher struct {
	exact, prefix, suffix, contains *string
	regex                           *regexp.Regexp
	ignoreCase                      bool
}

// retryPolicy is a route's (or virtual host's) retry policy.
type retryPolicy struct {
	on5xx, gatewayError, connectFailure, reset, retriable4xx, retriableCodes bool
	codes                                                                    []int
	numRetries                                                               int
	perTryTimeout                                                            time.Duration
	backoffBase, backoffMax                                                  time.Duration
}

func parseRouteTable(rc *routev3.RouteConfiguration) (*routeTable, error) {
	if rc.GetVhds() != nil {
		return nil, errors.New("vhds is not supported")
	}
	t := &routeTable{name: rc.GetName(), ignorePort: rc.GetIgnorePortInHostMatching(), vhostHeader: rc.GetVhostHeader(), exact: map[string]*virtualHost{}}
	seen := map[string]bool{}
	for i, v := range rc.GetVirtualHosts() {
		vh, err := parseVirtualHost(v)
		if err != nil {
			return nil, fmt.Errorf("virtual_hosts[%d] %q: %w", i, v.GetName(), err)
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			if seen[d] {
				return nil, fmt.Errorf("virtual_hosts[%d] %q: domain %q is used twice", i, v.GetName(), d)
			}
			seen[d] = true
			switch {
			case d == "*":
				t.any = vh
			case strings.HasPrefix(d, "*"):
				t.suffixes = append(t.suffixes, wildcardHost{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				t.prefixes = append(t.prefixes, wildcardHost{d[:len(d)-1], vh})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("virtual_hosts[%d] %q: domain %q has a wildcard inside", i, v.GetName(), d)
			default:
				t.exact[d] = vh
			}
		}
	}
	longestFirst := func(a, b wildcardHost) int { return len(b.part) - len(a.part) }
	slices.SortStableFunc(t.suffixes, longestFirst)
	slices.SortStableFunc(t.prefixes, longestFirst)
	return t, nil
}

func parseVirtualHost(v *routev3.VirtualHost) (*virtualHost, error) {
	if v.GetRequireTls() != routev3.VirtualHost_NONE || v.GetMatcher() != nil {
		return nil, errors.New("require_tls and matcher are not supported")
	}
	vh := &virtualHost{name: v.GetName()}
	if rp := v.GetRetryPolicy(); rp != nil {
		p, err := parseRetryPolicy(rp)
		if err != nil {
			return nil, fmt.Errorf("retry_policy: %w", err)
		}
		vh.retry = p
	}
	for i, r := range v.GetRoutes() {
		rt, err := parseRoute(r, vh.retry)
		if err != nil {
			return nil, fmt.Errorf("routes[%d] %q: %w", i, r.GetName(), err)
		}
		vh.routes = append(vh.routes, rt)
	}
	return vh, nil
}

func parseRoute(r *routev3.Route, vhRetry *retryPolicy) (*route, error) {
	m, err := parseRouteMatch(r.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	out := &route{name: r.GetName(), match: m, retry: vhRetry}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if err := parseRouteAction(a.Route, out); err != nil {
			return nil, err
		}
	case *routev3.Route_DirectResponse:
		body, err := dataSource(a.DirectResponse.GetBody())
		if a.DirectResponse.GetBody() == nil {
			body, err = nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("direct_response.body: %w", err)
		}
		out.direct = &directResponse{status: int(a.DirectResponse.GetStatus()), body: string(body)}
	default:
		return nil, errors.New("only route and direct_response actions are supported")
	}
	return out, nil
}

func parseRouteAction(a *routev3.RouteAction, out *route) error {
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.clusters, out.totalWeight = []weightedCluster{{cs.Cluster, 1}}, 1
	case *routev3.RouteAction_WeightedClusters:
		for _, c := range cs.WeightedClusters.GetClusters() {
			if c.GetName() == "" {
				return errors.New("weighted_clusters: only named clusters are supported")
			}
			w := uint64(c.GetWeight().GetValue())
			out.clusters = append(out.clusters, weightedCluster{c.GetName(), w})
			out.totalWeight += w
		}
		if out.totalWeight == 0 {
			return errors.New("weighted_clusters: weights sum to zero")
		}
	default:
		return errors.New("only cluster and weighted_clusters are supported")
	}
	out.timeout = defaultRouteTimeout
	if a.GetTimeout() != nil {
		out.timeout = a.GetTimeout().AsDuration()
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		p, err := parseRetryPolicy(rp)
		if err != nil {
			return fmt.Errorf("retry_policy: %w", err)
		}
		out.retry = p
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		out.notFoundCode = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.notFoundCode = 500
	default:
		out.notFoundCode = 503
	}
	if a.GetRegexRewrite() != nil || a.GetPathRewritePolicy() != nil || a.GetHostRewriteHeader() != "" || a.GetHostRewritePathRegex() != nil {
		return errors.New("regex_rewrite, path_rewrite_policy and host rewrites other than host_rewrite_literal are not supported")
	}
	if a.GetPrefixRewrite() != "" {
		if out.match.kind == pathRegex {
			return errors.New("prefix_rewrite needs a prefix or path match")
		}
		out.prefixRewrite, out.matchedPrefix, out.hasPrefixRewrite = a.GetPrefixRewrite(), out.match.value, true
	}
	out.hostRewrite = a.GetHostRewriteLiteral()
	return nil
}

func parseRouteMatch(m *routev3.RouteMatch) (routeMatch, error) {
	out := routeMatch{caseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.kind, out.value = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		out.kind, out.value = pathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := fullRegex(p.SafeRegex.GetRegex(), false)
		if err != nil {
			return out, err
		}
		out.kind, out.regex = pathRegex, re
	default:
		return out, errors.New("only prefix, path and safe_regex path matches are supported")
	}
	if len(m.GetQueryParameters()) > 0 || m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 ||
		m.GetRuntimeFraction() != nil || len(m.GetCookies()) > 0 || len(m.GetFilterState()) > 0 {
		return out, errors.New("query_parameters, grpc, tls_context, dynamic_metadata, runtime_fraction, cookies and filter_state matches are not supported")
	}
	for i, h := range m.GetHeaders() {
		hm, err := parseHeaderMatcher(h)
		if err != nil {
			return out, fmt.Errorf("headers[%d] %q: %w", i, h.GetName(), err)
		}
		out.headers = append(out.headers, hm)
	}
	return out, nil
}

func parseHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	out := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch(), missingAsEmpty: h.GetTreatMissingHeaderAsEmpty()}
	if out.name == "" {
		return out, errors.New("header matcher without a name")
	}
	str := func(sm *stringMatcher, err error) (headerMatcher, error) {
		out.str = sm
		return out, err
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		t := true
		out.present = &t
	case *routev3.HeaderMatcher_PresentMatch:
		out.present = &s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		return str(&stringMatcher{exact: &s.ExactMatch}, nil)
	case *routev3.HeaderMatcher_PrefixMatch:
		return str(&stringMatcher{prefix: &s.PrefixMatch}, nil)
	case *routev3.HeaderMatcher_SuffixMatch:
		return str(&stringMatcher{suffix: &s.SuffixMatch}, nil)
	case *routev3.HeaderMatcher_ContainsMatch:
		return str(&stringMatcher{contains: &s.ContainsMatch}, nil)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := fullRegex(s.SafeRegexMatch.GetRegex(), false)
		return str(&stringMatcher{regex: re}, err)
	case *routev3.HeaderMatcher_StringMatch:
		return str(parseStringMatcher(s.StringMatch))
	case *routev3.HeaderMatcher_RangeMatch:
		out.isRange, out.rangeStart, out.rangeEnd = true, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	default:
		return out, errors.New("unsupported header match")
	}
	return out, nil
}

func parseStringMatcher(m *matcherv3.StringMatcher) (*stringMatcher, error) {
	out := &stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.exact = &p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.prefix = &p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.suffix = &p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.contains = &p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := fullRegex(p.SafeRegex.GetRegex(), false)
		if err != nil {
			return nil, err
		}
		out.regex = re
	default:
		return nil, errors.New("unsupported string match")
	}
	return out, nil
}

// fullRegex compiles an RE2 expression that must match the whole input, as Envoy's
// safe_regex does.
func fullRegex(expr string, ignoreCase bool) (*regexp.Regexp, error) {
	flags := ""
	if ignoreCase {
		flags = "(?i)"
	}
	re, err := regexp.Compile(flags + "^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return re, nil
}

func parseRetryPolicy(rp *routev3.RetryPolicy) (*retryPolicy, error) {
	p := &retryPolicy{numRetries: 1, backoffBase: 25 * time.Millisecond}
	if rp.GetNumRetries() != nil {
		p.numRetries = int(rp.GetNumRetries().GetValue())
	}
	p.perTryTimeout = durOr(rp.GetPerTryTimeout(), 0)
	for _, on := range strings.Split(rp.GetRetryOn(), ",") {
		switch strings.TrimSpace(on) {
		case "5xx":
			p.on5xx = true
		case "gateway-error":
			p.gatewayError = true
		case "connect-failure":
			p.connectFailure = true
		case "reset", "reset-before-request", "refused-stream":
			p.reset = true
		case "retriable-4xx":
			p.retriable4xx = true
		case "retriable-status-codes":
			p.retriableCodes = true
		}
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.codes = append(p.codes, int(c))
	}
	if b := rp.GetRetryBackOff(); b != nil {
		p.backoffBase = b.GetBaseInterval().AsDuration()
		if p.backoffBase <= 0 {
			return nil, errors.New("retry_back_off.base_interval must be positive")
		}
	}
	p.backoffMax = 10 * p.backoffBase
	if m := rp.GetRetryBackOff().GetMaxInterval(); m != nil {
		p.backoffMax = max(m.AsDuration(), p.backoffBase)
	}
	return p, nil
}
