package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxRetryBody is the largest request body buffered so that it can be sent again on retry;
// larger bodies are streamed and not retried.
const maxRetryBody = 1 << 20

var (
	errRouteTimeout  = errors.New("route timeout")
	errPerTryTimeout = errors.New("per try timeout")
)

// upstreamError is a failed exchange with an endpoint, with Envoy's reset reason.
type upstreamError struct {
	reason string // "connection failure", "connection termination" or "per try timeout"
	err    error
}

func (e *upstreamError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// exchange is what the router decided for one request.
type exchange struct {
	route   *route
	cluster string
	up      *upstream
	start   time.Time
}

type exchangeKey struct{}

// httpProxy routes and proxies the requests of every HTTP listener.
type httpProxy struct {
	clusters *clusterManager
	routes   func(name string) *routeTable
	metrics  *metrics
	log      *slog.Logger
	rp       *httputil.ReverseProxy
}

func newHTTPProxy(cm *clusterManager, routes func(string) *routeTable, m *metrics, log *slog.Logger) *httpProxy {
	p := &httpProxy{clusters: cm, routes: routes, metrics: m, log: log}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &retryTransport{},
		FlushInterval:  -1,
		ErrorHandler:   p.fail,
		ModifyResponse: p.modifyResponse,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// httpHandler serves one HTTP listener: its spec (and so its route configuration name)
// is swapped atomically on updates while the socket and connections stay.
type httpHandler struct {
	p    *httpProxy
	spec atomic.Pointer[listenerSpec]
}

func (l *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	spec := l.spec.Load()
	rt := spec.inlineRoutes
	if rt == nil {
		rt = l.p.routes(spec.rdsName)
	}
	var route *route
	if rt != nil {
		host := r.Host
		if rt.vhostHeader != "" {
			host = r.Header.Get(rt.vhostHeader)
		}
		if vh := rt.virtualHost(host); vh != nil {
			route = vh.route(r)
		}
	}
	if route == nil {
		l.p.count(nil, "", http.StatusNotFound, start)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if d := route.direct; d != nil {
		l.p.count(route, "", d.status, start)
		w.WriteHeader(d.status)
		_, _ = io.WriteString(w, d.body)
		return
	}
	name := route.pickCluster()
	up := l.p.clusters.get(name)
	if up == nil {
		l.p.count(route, name, route.notFoundCode, start)
		http.Error(w, errClusterNotFound.Error(), route.notFoundCode)
		return
	}
	ctx := r.Context()
	if route.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, route.timeout, errRouteTimeout)
		defer cancel()
	}
	ctx = context.WithValue(ctx, exchangeKey{}, &exchange{route: route, cluster: name, up: up, start: start})
	l.p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// count records a response: meshrelay_gateway_requests_total and, since start,
// meshrelay_gateway_request_duration_seconds (rt is nil when no route matched).
func (p *httpProxy) count(rt *route, cluster string, code int, start time.Time) {
	c := strconv.Itoa(code)
	p.metrics.requests.WithLabelValues(cluster, c).Inc()
	name := ""
	if rt != nil {
		name = rt.name
	}
	p.metrics.requestSeconds.WithLabelValues(name, cluster, c).Observe(time.Since(start).Seconds())
}

func (p *httpProxy) rewrite(pr *httputil.ProxyRequest) {
	ex := pr.In.Context().Value(exchangeKey{}).(*exchange)
	pr.Out.URL.Scheme, pr.Out.URL.Host = "http", ex.cluster // the endpoint is chosen per attempt
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	rt := ex.route
	if rt.hasPrefixRewrite {
		ep := pr.In.URL.EscapedPath()
		if len(ep) >= len(rt.matchedPrefix) && strings.EqualFold(ep[:len(rt.matchedPrefix)], rt.matchedPrefix) {
			np := rt.prefixRewrite + ep[len(rt.matchedPrefix):]
			if u, err := url.Parse(np); err == nil {
				pr.Out.URL.Path, pr.Out.URL.RawPath = u.Path, u.RawPath
			}
		}
	}
	if rt.hostRewrite != "" {
		pr.Out.Host = rt.hostRewrite
	}
}

func (p *httpProxy) modifyResponse(resp *http.Response) error {
	ex := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	p.count(ex.route, ex.cluster, resp.StatusCode, ex.start)
	return nil
}

// fail answers a request that got no upstream response, with Envoy's codes and texts.
func (p *httpProxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	ex, _ := r.Context().Value(exchangeKey{}).(*exchange)
	if ex == nil {
		ex = &exchange{start: time.Now()}
	}
	cluster := ex.cluster
	var ue *upstreamError
	code, body := http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers"
	switch {
	case errors.Is(err, errNoHealthyUpstream):
		body = "no healthy upstream"
	case errors.Is(context.Cause(r.Context()), errRouteTimeout), errors.Is(err, errPerTryTimeout):
		code, body = http.StatusGatewayTimeout, "upstream request timeout"
	case r.Context().Err() != nil:
		p.log.Debug("downstream request canceled", "cluster", cluster, "error", err)
		return // the client is gone: nobody to answer
	case errors.As(err, &ue):
		body += ". reset reason: " + ue.reason
	}
	p.log.Debug("upstream request failed", "cluster", cluster, "code", code, "error", err)
	p.count(ex.route, cluster, code, ex.start)
	http.Error(w, body, code)
}

// retryTransport sends a request to an endpoint of the chosen cluster, applying the
// route's retry policy (retry_on, num_retries, per_try_timeout, back-off) and feeding
// outlier detection with every result.
type retryTransport struct{}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := req.Context().Value(exchangeKey{}).(*exchange)
	policy := ex.route.retry
	attempts := 1
	if policy != nil {
		attempts += policy.numRetries
	}
	var buf []byte
	if attempts > 1 && req.Body != nil && req.Body != http.NoBody {
		if req.ContentLength > maxRetryBody {
			attempts = 1
		} else {
			b, err := io.ReadAll(io.LimitReader(req.Body, maxRetryBody+1))
			if err != nil {
				return nil, &upstreamError{"connection termination", err}
			}
			if len(b) > maxRetryBody {
				attempts = 1
				req.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(b), req.Body), req.Body}
			} else {
				buf = b
			}
		}
	}
	var lastErr error
	for i := range attempts {
		if i > 0 && !backoff(req.Context(), policy, i) {
			break
		}
		h, err := ex.up.pick()
		if err != nil {
			return nil, err
		}
		resp, err := t.attempt(req, ex, h, policy, buf)
		if err != nil {
			lastErr = err
			if req.Context().Err() != nil || policy == nil || !policy.retriesError(err) {
				return nil, err
			}
			continue
		}
		if i+1 < attempts && policy.retryStatus(resp.StatusCode) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			continue
		}
		return resp, nil
	}
	if lastErr == nil {
		lastErr = context.Cause(req.Context())
	}
	return nil, lastErr
}

// attempt is one try against host h.
func (t *retryTransport) attempt(req *http.Request, ex *exchange, h *host, policy *retryPolicy, buf []byte) (*http.Response, error) {
	ctx, cancel := req.Context(), context.CancelFunc(func() {})
	if policy != nil && policy.perTryTimeout > 0 {
		ctx, cancel = context.WithTimeoutCause(ctx, policy.perTryTimeout, errPerTryTimeout)
	}
	out := req.Clone(ctx)
	out.URL.Scheme, out.URL.Host = h.scheme(), h.addr
	if buf != nil {
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(buf)), int64(len(buf))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	}
	ex.up.mu.Lock()
	tr := h.transport
	ex.up.mu.Unlock()
	resp, err := tr.RoundTrip(out)
	if err != nil {
		cancel()
		var ce *connectError
		switch {
		case errors.Is(context.Cause(ctx), errPerTryTimeout) && req.Context().Err() == nil:
			err = &upstreamError{"per try timeout", errPerTryTimeout}
		case req.Context().Err() != nil:
			if errors.Is(context.Cause(req.Context()), errRouteTimeout) {
				ex.up.report(h, outcomeLocal)
			}
			return nil, err
		case errors.As(err, &ce):
			err = &upstreamError{"connection failure", err}
		default:
			err = &upstreamError{"connection termination", err}
		}
		ex.up.report(h, outcomeLocal)
		return nil, err
	}
	if resp.StatusCode >= 500 {
		ex.up.report(h, outcome5xx)
	} else {
		ex.up.report(h, outcomeSuccess)
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok { // an upgraded connection (101)
		resp.Body = &cancelOnCloseRW{ReadWriteCloser: rwc, cancel: cancel}
	} else {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	}
	return resp, nil
}

// retriesError says whether a failed exchange is retried under the policy (Envoy: resets
// under 5xx, gateway-error and reset; connect failures also under connect-failure; a per
// try timeout as a 504 response).
func (p *retryPolicy) retriesError(err error) bool {
	var ue *upstreamError
	if !errors.As(err, &ue) {
		return false
	}
	switch ue.reason {
	case "per try timeout":
		return p.retryStatus(http.StatusGatewayTimeout)
	case "connection failure":
		return p.on5xx || p.gatewayError || p.reset || p.connectFailure
	}
	return p.on5xx || p.gatewayError || p.reset
}

// backoff waits before retry n (1-based): fully jittered exponential back-off from the
// policy's base interval, capped at its max interval.
func backoff(ctx context.Context, p *retryPolicy, n int) bool {
	ceil := p.backoffBase << min(n-1, 16)
	if ceil > p.backoffMax || ceil <= 0 {
		ceil = p.backoffMax
	}
	t := time.NewTimer(rand.N(ceil) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// cancelOnClose releases an attempt's per-try context when its body is done.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// cancelOnCloseRW is cancelOnClose for the body of an upgraded connection, which must stay
// writable.
type cancelOnCloseRW struct {
	io.ReadWriteCloser
	cancel context.CancelFunc
}

func (c *cancelOnCloseRW) Close() error {
	err := c.ReadWriteCloser.Close()
	c.cancel()
	return err
}
