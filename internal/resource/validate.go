package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/meshrelay/meshrelay/api/v1alpha1"
)

// This file validates meshrelay's own kinds. Each validator decodes the object with
// decodeStrict (unknown fields and wrong types are errors: they are usually typos) and then
// checks the meaning of the fields, collecting every problem as a *FieldError joined with
// errors.Join. Decode fills in the Resource of each one.

// checker collects the FieldErrors of one resource.
type checker struct{ errs []error }

func (c *checker) add(field, reason string) {
	c.errs = append(c.errs, &FieldError{Field: field, Reason: reason})
}

func (c *checker) addf(field, format string, args ...any) { c.add(field, fmt.Sprintf(format, args...)) }

// err returns nil, the only error, or every error joined.
func (c *checker) err() error {
	switch len(c.errs) {
	case 0:
		return nil
	case 1:
		return c.errs[0]
	}
	return errors.Join(c.errs...)
}

// fillResource names res on every FieldError of err (a single error, a wrapped one or an
// errors.Join tree) that does not name a resource yet.
func fillResource(err error, res string) {
	switch e := err.(type) {
	case *FieldError:
		if e.Resource == "" {
			e.Resource = res
		}
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			fillResource(x, res)
		}
	case interface{ Unwrap() error }:
		fillResource(e.Unwrap(), res)
	}
}

// decodeStrict decodes o into v with strict(). The JSON is first walked alongside v's type
// (checkShape) so that unknown fields, values of the wrong type and bad durations are all
// reported together, each with its full path ("spec.healthChecks[0].timeout"); strict()
// stays as the backstop and does the decoding. Every duration written out must be positive:
// a zero Duration in a validated object always means "unset".
func decodeStrict(o Object, v any) error {
	var generic any
	if err := json.Unmarshal(o.Raw, &generic); err != nil {
		return &FieldError{Reason: jsonReason(err)}
	}
	var c checker
	checkShape(&c, reflect.TypeOf(v), generic, "")
	if err := c.err(); err != nil {
		return err
	}
	return strict(o, v)
}

var durationType = reflect.TypeFor[v1alpha1.Duration]()

// checkShape walks the JSON value v alongside the Go type t the way encoding/json decodes
// it, and reports unknown fields, values of the wrong JSON type and values meant for a
// v1alpha1.Duration that are not a positive Go duration string.
func checkShape(c *checker, t reflect.Type, v any, path string) {
	if v == nil {
		return // null leaves the Go value alone
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		s, ok := v.(string)
		if !ok {
			c.addf(path, "must be a duration string such as \"1s\", \"250ms\", \"1.5s\" or \"2m\", not %s", jsonKind(v))
			return
		}
		d, err := v1alpha1.ParseDuration(s)
		if err != nil {
			c.add(path, err.Error())
			return
		}
		if d.Duration <= 0 {
			c.addf(path, "must be greater than 0, got %q", s)
		}
		return
	}
	wrong := func(want string) { c.addf(path, "must be %s, not %s", want, jsonKind(v)) }
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			wrong("an object")
			return
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(m) {
			f, ok := lookupField(fields, k)
			if !ok {
				names := make([]string, len(fields))
				for i, f := range fields {
					names[i] = f.name
				}
				c.addf(joinPath(path, k), "unknown field (known here: %s)", strings.Join(names, ", "))
				continue
			}
			checkShape(c, f.typ, m[k], joinPath(path, f.name))
		}
	case reflect.Slice, reflect.Array:
		l, ok := v.([]any)
		if !ok {
			wrong("a list")
			return
		}
		for i, e := range l {
			checkShape(c, t.Elem(), e, fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			wrong("an object")
			return
		}
		for _, k := range sortedKeys(m) {
			checkShape(c, t.Elem(), m[k], fmt.Sprintf("%s[%s]", path, k))
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			wrong("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			wrong("a boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f, ok := v.(float64); !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			wrong("an integer")
		}
	}
}

// jsonField is a field of a struct as encoding/json sees it.
type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists the JSON fields of struct type t in order, with the fields of embedded
// structs promoted (TypeMeta).
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case !f.IsExported() || name == "-":
		case f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct:
			out = append(out, jsonFields(f.Type)...)
		case name == "":
			out = append(out, jsonField{f.Name, f.Type})
		default:
			out = append(out, jsonField{name, f.Type})
		}
	}
	return out
}

// lookupField finds the field a JSON key decodes into: the exact name, or else the name
// matched case-insensitively, as encoding/json does.
func lookupField(fields []jsonField, key string) (jsonField, bool) {
	for _, f := range fields {
		if f.name == key {
			return f, true
		}
	}
	for _, f := range fields {
		if strings.EqualFold(f.name, key) {
			return f, true
		}
	}
	return jsonField{}, false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64, json.Number:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// Field checks shared by the kinds.

// required reports an empty s and says whether it is set.
func (c *checker) required(field, s string) bool {
	if s == "" {
		c.add(field, "is required")
		return false
	}
	return true
}

// name checks a required resource name.
func (c *checker) name(field, s string) {
	if c.required(field, s) {
		c.optionalName(field, s)
	}
}

// optionalName checks a resource name that may be empty.
func (c *checker) optionalName(field, s string) {
	if s != "" && (len(s) > 253 || !dnsSubdomain.MatchString(s)) {
		c.addf(field, "%q must be a lowercase DNS name (a-z, 0-9, '-', '.')", s)
	}
}

// namespace checks a namespace that may be empty.
func (c *checker) namespace(field, s string) {
	if s != "" && (len(s) > 63 || !dns1123.MatchString(s)) {
		c.addf(field, "%q must be a lowercase DNS label (a-z, 0-9, '-', at most 63 characters)", s)
	}
}

// cluster checks a workload cluster name that may be empty.
func (c *checker) cluster(field, s string) {
	if s != "" && (len(s) > 63 || !dns1123.MatchString(s)) {
		c.addf(field, "%q is not a cluster name: it must be a DNS label (lowercase a-z, 0-9, '-', at most 63 characters)", s)
	}
}

// requiredCluster checks a required workload cluster name.
func (c *checker) requiredCluster(field, s string) {
	if c.required(field, s) {
		c.cluster(field, s)
	}
}

// ref checks a reference with a required name.
func (c *checker) ref(field string, r v1alpha1.ObjectRef) {
	c.name(field+".name", r.Name)
	c.namespace(field+".namespace", r.Namespace)
}

// port checks a required port number.
func (c *checker) port(field string, n int) {
	switch {
	case n == 0:
		c.add(field, "is required: a port number between 1 and 65535")
	case n < 1 || n > 65535:
		c.addf(field, "must be a port number between 1 and 65535, got %d", n)
	}
}

// atLeastOne checks a count whose zero means "unset, use def".
func (c *checker) atLeastOne(field string, n, def int) {
	if n < 0 {
		c.addf(field, "must be at least 1, got %d (omit it for the default, %d)", n, def)
	}
}

// percent checks an optional percentage.
func (c *checker) percent(field string, p *int) {
	if p != nil && (*p < 0 || *p > 100) {
		c.addf(field, "must be a percentage between 0 and 100, got %d", *p)
	}
}

// oneOf checks that s is empty (unset: the field's default applies) or one of allowed.
func (c *checker) oneOf(field, s string, allowed ...string) {
	if s != "" && !slices.Contains(allowed, s) {
		c.addf(field, "must be one of %s, got %q", strings.Join(allowed, ", "), s)
	}
}

// atLeast reports an empty list.
func (c *checker) atLeast(field string, n int, what string) {
	if n == 0 {
		c.addf(field, "at least one %s is required", what)
	}
}

// dedupe reports a value already seen at another path; empty values are ignored.
type dedupe map[string]string

func (d dedupe) check(c *checker, field, value, what string) {
	if value == "" {
		return
	}
	if prev, ok := d[value]; ok {
		c.addf(field, "duplicate %s %q (already at %s)", what, value, prev)
		return
	}
	d[value] = field
}

// Upstream.

func validateUpstream(o Object) error {
	var u v1alpha1.Upstream
	if err := decodeStrict(o, &u); err != nil {
		return err
	}
	var c checker
	s := u.Spec
	if s.Kube != nil && s.Static != nil {
		c.add("spec", "at most one of kube, static may be set")
	}
	if k := s.Kube; k != nil {
		c.name("spec.kube.serviceName", k.ServiceName)
		c.namespace("spec.kube.serviceNamespace", k.ServiceNamespace)
		c.port("spec.kube.servicePort", k.ServicePort)
	}
	if st := s.Static; st != nil {
		c.atLeast("spec.static.hosts", len(st.Hosts), "host")
		for i, h := range st.Hosts {
			p := fmt.Sprintf("spec.static.hosts[%d]", i)
			if c.required(p+".addr", h.Addr) && !isIP(h.Addr) && !isHostname(h.Addr) {
				c.addf(p+".addr", "%q must be an IP address or a DNS name", h.Addr)
			}
			c.port(p+".port", h.Port)
		}
	}
	for i, hc := range s.HealthChecks {
		checkHealthCheck(&c, fmt.Sprintf("spec.healthChecks[%d]", i), hc)
	}
	if od := s.OutlierDetection; od != nil {
		c.atLeastOne("spec.outlierDetection.consecutive5xx", od.Consecutive5xx, 5)
		c.percent("spec.outlierDetection.maxEjectionPercent", od.MaxEjectionPercent)
	}
	c.cluster("spec.cluster", s.Cluster)
	return c.err()
}

func checkHealthCheck(c *checker, p string, hc v1alpha1.HealthCheck) {
	if hc.Timeout.Duration == 0 {
		c.add(p+".timeout", "is required: a duration such as \"1s\"")
	}
	if hc.Interval.Duration == 0 {
		c.add(p+".interval", "is required: a duration such as \"1s\"")
	}
	c.atLeastOne(p+".unhealthyThreshold", hc.UnhealthyThreshold, v1alpha1.DefaultHealthThreshold)
	c.atLeastOne(p+".healthyThreshold", hc.HealthyThreshold, v1alpha1.DefaultHealthThreshold)
	h := hc.HTTPHealthCheck
	if h == nil {
		c.add(p+".httpHealthCheck", "is required: the gateway runs HTTP health checks only")
		return
	}
	if c.required(p+".httpHealthCheck.path", h.Path) && !strings.HasPrefix(h.Path, "/") {
		c.addf(p+".httpHealthCheck.path", "must start with '/', got %q", h.Path)
	}
	if h.Host != "" && strings.ContainsAny(h.Host, " \t\r\n/") {
		c.addf(p+".httpHealthCheck.host", "%q must be a host name, with an optional :port", h.Host)
	}
	for i, st := range h.ExpectedStatuses {
		if st < 100 || st > 599 {
			c.addf(fmt.Sprintf("%s.httpHealthCheck.expectedStatuses[%d]", p, i), "must be an HTTP status between 100 and 599, got %d", st)
		}
	}
}

// FailoverScheme.

func validateFailoverScheme(o Object) error {
	var fs v1alpha1.FailoverScheme
	if err := decodeStrict(o, &fs); err != nil {
		return err
	}
	var c checker
	s := fs.Spec
	pr := s.Primary
	c.requiredCluster("spec.primary.clusterName", pr.ClusterName)
	c.name("spec.primary.name", pr.Name)
	c.namespace("spec.primary.namespace", pr.Namespace)
	nsOr := func(ns string) string {
		if ns == "" {
			return o.Namespace
		}
		return ns
	}
	primary := pr.ClusterName + "/" + nsOr(pr.Namespace) + "/" + pr.Name
	c.atLeast("spec.failoverGroups", len(s.FailoverGroups), "failover group")
	seen := dedupe{}
	for i, g := range s.FailoverGroups {
		gp := fmt.Sprintf("spec.failoverGroups[%d]", i)
		c.atLeast(gp+".priorityGroup", len(g.PriorityGroup), "cluster entry")
		for j, t := range g.PriorityGroup {
			tp := fmt.Sprintf("%s.priorityGroup[%d]", gp, j)
			c.requiredCluster(tp+".cluster", t.Cluster)
			c.atLeast(tp+".upstreams", len(t.Upstreams), "upstream")
			for k, u := range t.Upstreams {
				up := fmt.Sprintf("%s.upstreams[%d]", tp, k)
				c.ref(up, u)
				if u.Name == "" {
					continue
				}
				key := t.Cluster + "/" + nsOr(u.Namespace) + "/" + u.Name
				if key == primary {
					c.addf(up, "is the primary (upstream %s/%s in cluster %s): a failover target must be another upstream", nsOr(pr.Namespace), pr.Name, pr.ClusterName)
					continue
				}
				seen.check(&c, up, key, "failover target")
			}
		}
	}
	return c.err()
}

// Gateway.

func validateGateway(o Object) error {
	var g v1alpha1.Gateway
	if err := decodeStrict(o, &g); err != nil {
		return err
	}
	var c checker
	s := g.Spec
	if s.BindAddress != "" && !isIP(s.BindAddress) {
		c.addf("spec.bindAddress", "%q must be an IP address such as \"::\" or \"0.0.0.0\"", s.BindAddress)
	}
	c.port("spec.bindPort", s.BindPort)
	switch {
	case s.HTTPGateway == nil && s.TCPGateway == nil:
		c.add("spec", "exactly one of httpGateway, tcpGateway must be set; neither is")
	case s.HTTPGateway != nil && s.TCPGateway != nil:
		c.add("spec", "exactly one of httpGateway, tcpGateway must be set; both are")
	}
	if h := s.HTTPGateway; h != nil {
		for i, r := range h.RouteTables {
			c.ref(fmt.Sprintf("spec.httpGateway.routeTables[%d]", i), r)
		}
	}
	if t := s.TCPGateway; t != nil {
		c.atLeast("spec.tcpGateway.tcpHosts", len(t.TCPHosts), "tcp host")
		names := dedupe{}
		for i, h := range t.TCPHosts {
			checkTCPHost(&c, fmt.Sprintf("spec.tcpGateway.tcpHosts[%d]", i), h, names)
		}
	}
	c.cluster("spec.cluster", s.Cluster)
	for i, n := range s.ProxyNames {
		c.name(fmt.Sprintf("spec.proxyNames[%d]", i), n)
	}
	return c.err()
}

func checkTCPHost(c *checker, p string, h v1alpha1.TCPHost, names dedupe) {
	if c.required(p+".name", h.Name) {
		names.check(c, p+".name", h.Name, "tcp host name")
	}
	if ssl := h.SSLConfig; ssl != nil {
		if ssl.SecretRef != nil {
			c.ref(p+".sslConfig.secretRef", *ssl.SecretRef)
		}
		for i, d := range ssl.SNIDomains {
			f := fmt.Sprintf("%s.sslConfig.sniDomains[%d]", p, i)
			if c.required(f, d) && !isHostname(strings.TrimPrefix(d, "*.")) {
				c.addf(f, "%q must be a DNS name, optionally starting with \"*.\"", d)
			}
		}
	}
	d := h.Destination
	switch {
	case d.ForwardSNIClusterName == nil && d.Single == nil:
		c.add(p+".destination", "exactly one of forwardSniClusterName, single must be set; neither is")
	case d.ForwardSNIClusterName != nil && d.Single != nil:
		c.add(p+".destination", "exactly one of forwardSniClusterName, single must be set; both are")
	}
	if d.Single != nil {
		c.ref(p+".destination.single.upstream", d.Single.Upstream)
	}
}

// RouteTable.

var (
	// routeHost is an HTTP host a RouteTable serves: "*", or a name (optionally "*." first)
	// with an optional port.
	routeHost = regexp.MustCompile(`^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?)$`)
	// headerName is an HTTP header name (an RFC 9110 token), or an HTTP/2 pseudo-header.
	headerName  = regexp.MustCompile("^:?[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")
	httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
	// retryOn are Envoy's retry conditions (x-envoy-retry-on and x-envoy-retry-grpc-on).
	retryOn = []string{"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
		"envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
		"retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
		"internal", "resource-exhausted", "unavailable"}
)

func validateRouteTable(o Object) error {
	var rt v1alpha1.RouteTable
	if err := decodeStrict(o, &rt); err != nil {
		return err
	}
	var c checker
	s := rt.Spec
	c.atLeast("spec.hosts", len(s.Hosts), "host")
	hosts := dedupe{}
	for i, h := range s.Hosts {
		f := fmt.Sprintf("spec.hosts[%d]", i)
		switch {
		case h == "":
			c.add(f, "must not be empty")
		case !routeHost.MatchString(h):
			c.addf(f, "%q must be \"*\" or a host name (optionally starting with \"*.\", with an optional :port)", h)
		default:
			hosts.check(&c, f, strings.ToLower(h), "host")
		}
	}
	clusters := dedupe{}
	for i, cl := range s.Clusters {
		f := fmt.Sprintf("spec.clusters[%d]", i)
		c.requiredCluster(f, cl)
		clusters.check(&c, f, cl, "cluster")
	}
	if s.Gateway != nil {
		c.ref("spec.gateway", *s.Gateway)
	}
	c.atLeast("spec.http", len(s.HTTP), "route")
	names := dedupe{}
	for i, r := range s.HTTP {
		rp := fmt.Sprintf("spec.http[%d]", i)
		names.check(&c, rp+".name", r.Name, "route name")
		for j, m := range r.Matchers {
			checkMatcher(&c, fmt.Sprintf("%s.matchers[%d]", rp, j), m)
		}
		checkForwardTo(&c, rp+".forwardTo", r.ForwardTo)
		if rr := r.Retries; rr != nil {
			if rr.Attempts < 0 {
				c.addf(rp+".retries.attempts", "must be at least 0, got %d", rr.Attempts)
			}
			if rr.RetryOn != "" {
				for cond := range strings.SplitSeq(rr.RetryOn, ",") {
					if !slices.Contains(retryOn, strings.TrimSpace(cond)) {
						c.addf(rp+".retries.retryOn", "%q is not a retry condition: use a comma-separated list of %s", strings.TrimSpace(cond), strings.Join(retryOn, ", "))
						break
					}
				}
			}
		}
	}
	return c.err()
}

func checkMatcher(c *checker, p string, m v1alpha1.HTTPMatcher) {
	if u := m.URI; u != nil {
		set := 0
		for _, v := range []string{u.Prefix, u.Exact, u.Regex} {
			if v != "" {
				set++
			}
		}
		if set != 1 {
			c.add(p+".uri", "exactly one of prefix, exact, regex must be set")
		}
		if u.Prefix != "" && !strings.HasPrefix(u.Prefix, "/") {
			c.addf(p+".uri.prefix", "must start with '/', got %q", u.Prefix)
		}
		if u.Exact != "" && !strings.HasPrefix(u.Exact, "/") {
			c.addf(p+".uri.exact", "must start with '/', got %q", u.Exact)
		}
		if u.Regex != "" {
			checkRegex(c, p+".uri.regex", u.Regex)
		}
	}
	for i, h := range m.Headers {
		hp := fmt.Sprintf("%s.headers[%d]", p, i)
		if c.required(hp+".name", h.Name) && !headerName.MatchString(h.Name) {
			c.addf(hp+".name", "%q is not an HTTP header name", h.Name)
		}
		if h.Regex {
			checkRegex(c, hp+".value", h.Value)
		}
	}
	c.oneOf(p+".method", m.Method, httpMethods...)
}

func checkRegex(c *checker, field, re string) {
	if _, err := regexp.Compile(re); err != nil {
		c.addf(field, "is not a valid RE2 regular expression: %v", err)
	}
}

func checkForwardTo(c *checker, p string, f v1alpha1.ForwardTo) {
	c.atLeast(p+".destinations", len(f.Destinations), "destination")
	weighted, sum := false, 0
	for i, d := range f.Destinations {
		dp := fmt.Sprintf("%s.destinations[%d]", p, i)
		c.name(dp+".ref.name", d.Ref.Name)
		c.namespace(dp+".ref.namespace", d.Ref.Namespace)
		c.cluster(dp+".ref.cluster", d.Ref.Cluster)
		c.oneOf(dp+".kind", d.Kind, v1alpha1.DestinationKindUpstream, v1alpha1.DestinationKindVirtualDestination)
		if d.Port != nil {
			c.port(dp+".port.number", d.Port.Number)
		}
		if w := d.Weight; w != nil {
			weighted = true
			if *w < 0 {
				c.addf(dp+".weight", "must be at least 0, got %d", *w)
			} else {
				sum += *w
			}
		}
	}
	if weighted && sum == 0 {
		c.add(p+".destinations", "weights sum to 0: at least one destination needs a weight greater than 0")
	}
}

// VirtualDestination.

var protocols = []string{v1alpha1.ProtocolHTTP, v1alpha1.ProtocolHTTP2, v1alpha1.ProtocolGRPC, v1alpha1.ProtocolTCP, v1alpha1.ProtocolTLS}

func validateVirtualDestination(o Object) error {
	var vd v1alpha1.VirtualDestination
	if err := decodeStrict(o, &vd); err != nil {
		return err
	}
	var c checker
	s := vd.Spec
	c.atLeast("spec.hosts", len(s.Hosts), "host")
	hosts := dedupe{}
	for i, h := range s.Hosts {
		f := fmt.Sprintf("spec.hosts[%d]", i)
		if !c.required(f, h) {
			continue
		}
		if len(h) > 253 || !dnsSubdomain.MatchString(h) {
			c.addf(f, "%q must be a lowercase DNS name such as reviews.global", h)
			continue
		}
		hosts.check(&c, f, h, "host")
	}
	c.atLeast("spec.ports", len(s.Ports), "port")
	numbers := dedupe{}
	for i, p := range s.Ports {
		pp := fmt.Sprintf("spec.ports[%d]", i)
		c.port(pp+".number", p.Number)
		if p.Number != 0 {
			numbers.check(&c, pp+".number", fmt.Sprint(p.Number), "port")
		}
		c.oneOf(pp+".protocol", p.Protocol, protocols...)
		if tp := p.TargetPort; tp != nil {
			switch {
			case (tp.Number != 0) == (tp.Name != ""):
				c.add(pp+".targetPort", "exactly one of number, name must be set")
			case tp.Number != 0:
				c.port(pp+".targetPort.number", tp.Number)
			case len(tp.Name) > 15 || !dns1123.MatchString(tp.Name):
				c.addf(pp+".targetPort.name", "%q must be a port name (lowercase a-z, 0-9, '-', at most 15 characters)", tp.Name)
			}
		}
	}
	c.atLeast("spec.services", len(s.Services), "service selector")
	for i, sel := range s.Services {
		sp := fmt.Sprintf("spec.services[%d]", i)
		if len(sel.Labels) == 0 && sel.Name == "" {
			c.add(sp, "at least one of labels, name must be set")
		}
		c.optionalName(sp+".name", sel.Name)
		c.namespace(sp+".namespace", sel.Namespace)
		c.cluster(sp+".cluster", sel.Cluster)
	}
	return c.err()
}

// FailoverPolicy and OutlierDetectionPolicy.

// locality is a region or zone name: a Kubernetes label value (topology.kubernetes.io/…).
var locality = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

func validateFailoverPolicy(o Object) error {
	var fp v1alpha1.FailoverPolicy
	if err := decodeStrict(o, &fp); err != nil {
		return err
	}
	var c checker
	checkDestinationSelectors(&c, fp.Spec.ApplyToDestinations)
	for i, m := range fp.Spec.Config.LocalityMappings {
		mp := fmt.Sprintf("spec.config.localityMappings[%d]", i)
		checkLocality(&c, mp+".from", m.From)
		c.atLeast(mp+".to", len(m.To), "locality")
		for j, to := range m.To {
			tp := fmt.Sprintf("%s.to[%d]", mp, j)
			checkLocality(&c, tp, to)
			if to == m.From {
				c.add(tp, "is the same locality as from: list where traffic goes when from has no healthy endpoint")
			}
		}
	}
	return c.err()
}

func checkLocality(c *checker, p string, l v1alpha1.Locality) {
	if c.required(p+".region", l.Region) && (len(l.Region) > 63 || !locality.MatchString(l.Region)) {
		c.addf(p+".region", "%q must be a region name (a-z, A-Z, 0-9, '-', '_', '.', at most 63 characters)", l.Region)
	}
	if l.Zone != "" && (len(l.Zone) > 63 || !locality.MatchString(l.Zone)) {
		c.addf(p+".zone", "%q must be a zone name (a-z, A-Z, 0-9, '-', '_', '.', at most 63 characters)", l.Zone)
	}
}

func validateOutlierDetectionPolicy(o Object) error {
	var op v1alpha1.OutlierDetectionPolicy
	if err := decodeStrict(o, &op); err != nil {
		return err
	}
	var c checker
	checkDestinationSelectors(&c, op.Spec.ApplyToDestinations)
	cfg := op.Spec.Config
	c.atLeastOne("spec.config.consecutiveErrors", cfg.ConsecutiveErrors, v1alpha1.DefaultConsecutiveErrors)
	c.percent("spec.config.maxEjectionPercent", cfg.MaxEjectionPercent)
	return c.err()
}

func checkDestinationSelectors(c *checker, sels []v1alpha1.DestinationSelector) {
	c.atLeast("spec.applyToDestinations", len(sels), "destination selector")
	for i, d := range sels {
		p := fmt.Sprintf("spec.applyToDestinations[%d]", i)
		if d.Kind != "" && d.Kind != v1alpha1.DestinationKindVirtualDestination {
			c.addf(p+".kind", "must be %s, the only kind policies apply to, got %q", v1alpha1.DestinationKindVirtualDestination, d.Kind)
		}
		c.optionalName(p+".selector.name", d.Selector.Name)
		c.namespace(p+".selector.namespace", d.Selector.Namespace)
	}
}

// Address helpers.

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// isHostname reports whether s is a DNS name, in any letter case.
func isHostname(s string) bool {
	return len(s) <= 253 && dnsSubdomain.MatchString(strings.ToLower(s))
}
