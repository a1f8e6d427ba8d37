package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// subscribedTypes are requested in this order on a new stream (Envoy's: clusters and their
// endpoints before listeners and their routes; secrets last).
var subscribedTypes = []string{
	resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType,
}

// named says whether a type is subscribed by name (the names come from accepted resources
// of its parent type); the others are wildcard subscriptions answered with every resource.
// Secrets are wildcard: go-control-plane's ADS cache answers a named request only when it
// names every resource of the type in the snapshot, and a snapshot may carry secrets that
// nothing references.
func named(typeURL string) bool {
	return typeURL == resourcev3.RouteType || typeURL == resourcev3.EndpointType
}

// dependent returns the named type whose names come from resources of typeURL.
func dependent(typeURL string) string {
	switch typeURL {
	case resourcev3.ListenerType:
		return resourcev3.RouteType
	case resourcev3.ClusterType:
		return resourcev3.EndpointType
	}
	return ""
}

// shortType is a type URL's message name (Listener, Cluster, ...) for logs and metrics.
func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

// configSink applies accepted resources. apply returns an error to reject (NACK) the
// response; names returns the subscription of a named type.
type configSink interface {
	apply(typeURL string, resources []proto.Message) error
	names(typeURL string) []string
}

// xdsClient keeps one state-of-the-world ADS stream open to the server, reconnecting with
// jittered exponential backoff. Accepted versions survive reconnections; the configuration
// in use is never cleared when the server goes away.
type xdsClient struct {
	addr       string
	creds      credentials.TransportCredentials // nil: plaintext
	node       *corev3.Node
	sink       configSink
	metrics    *metrics
	log        *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration

	mu       sync.Mutex // guards the fields below
	versions map[string]string
	status   XDSStatus
}

// MaxXDSMessageBytes bounds one xDS response (all resources of a type): gRPC's default of
// 4 MiB would cut off a cluster of some ten thousand endpoints. The relay has the same limit.
const MaxXDSMessageBytes = 64 << 20

func newXDSClient(addr string, node *corev3.Node, sink configSink, m *metrics, log *slog.Logger, minB, maxB time.Duration) *xdsClient {
	return &xdsClient{addr: addr, node: node, sink: sink, metrics: m, log: log, minBackoff: minB, maxBackoff: maxB,
		versions: map[string]string{}, status: XDSStatus{Address: addr}}
}

// Start runs the stream until ctx ends.
func (c *xdsClient) Start(ctx context.Context) error {
	creds := c.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxXDSMessageBytes)))
	if err != nil {
		return fmt.Errorf("xds client for %s: %w", c.addr, err)
	}
	defer conn.Close()
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	delay := c.minBackoff
	for {
		progressed, err := c.session(ctx, client)
		c.setConnected(false, err)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			delay = c.minBackoff
		}
		wait := delay/2 + rand.N(delay/2+1) // equal jitter: no reconnect storms
		c.log.Warn("xds stream ended", "address", c.addr, "error", err, "retryIn", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, c.maxBackoff)
	}
}

// stream is the state of one ADS stream. Only the receiving goroutine touches nonces,
// sent and rejects; delayed NACKs are sent by goroutines of the session (sendMu).
type stream struct {
	s       discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	sendMu  sync.Mutex // serializes Send
	nonces  map[string]string
	sent    map[string][]string // names last requested, for named types
	rejects map[string]*reject  // the last rejected version by type
	wg      sync.WaitGroup      // delayed NACKs
}

// reject counts how many times in a row one version of a type was rejected: servers
// (go-control-plane's cache among them) resend a rejected version at once, so repeated
// NACKs of it are paced with backoff instead of looping.
type reject struct {
	version string
	count   int
}

// session runs one stream; progressed says whether a response was received.
func (c *xdsClient) session(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	st := &stream{nonces: map[string]string{}, sent: map[string][]string{}, rejects: map[string]*reject{}}
	defer func() {
		cancel()
		st.wg.Wait()
	}()
	s, err := client.StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open ads stream: %w", err)
	}
	st.s = s
	for _, t := range subscribedTypes {
		if named(t) {
			names := c.sink.names(t)
			if len(names) == 0 {
				continue // nothing to subscribe to yet
			}
			st.sent[t] = names
		}
		if err := c.send(st, t, c.version(t), st.nonces[t], st.sent[t], nil); err != nil {
			return false, err
		}
	}
	c.setConnected(true, nil)
	c.log.Info("xds stream established", "address", c.addr, "node", c.node.GetId(), "tls", c.creds != nil)
	for {
		resp, err := s.Recv()
		if err != nil {
			return progressed, fmt.Errorf("receive: %w", err)
		}
		progressed = true
		if err := c.handle(sctx, st, resp); err != nil {
			return progressed, err
		}
	}
}

func (c *xdsClient) version(t string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions[t]
}

// send sends a request (a NACK when nack is set).
func (c *xdsClient) send(st *stream, t, version, nonce string, names []string, nack error) error {
	req := &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: t, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names}
	if nack != nil {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	if err := st.s.Send(req); err != nil {
		return fmt.Errorf("send %s request: %w", shortType(t), err)
	}
	return nil
}

// handle decodes and applies one response, ACKs or NACKs it, and updates the
// subscription of the type that depends on it.
func (c *xdsClient) handle(ctx context.Context, st *stream, resp *discoveryv3.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	st.nonces[t] = resp.GetNonce()
	if !slices.Contains(subscribedTypes, t) {
		return nil // not subscribed: never answered
	}
	msgs, err := decodeResources(t, resp.GetResources())
	if err == nil {
		err = c.sink.apply(t, msgs)
	}
	if err != nil {
		return c.nack(ctx, st, resp, err)
	}
	delete(st.rejects, t)
	c.mu.Lock()
	c.versions[t] = resp.GetVersionInfo()
	c.mu.Unlock()
	c.metrics.xdsResponses.WithLabelValues(shortType(t), "ack").Inc()
	c.log.Info("xds update applied", "type", shortType(t), "version", resp.GetVersionInfo(), "resources", len(msgs))
	if err := c.send(st, t, resp.GetVersionInfo(), resp.GetNonce(), st.sent[t], nil); err != nil {
		return err
	}
	if d := dependent(t); d != "" {
		names := c.sink.names(d)
		if _, subscribed := st.sent[d]; !slices.Equal(names, st.sent[d]) && (subscribed || len(names) > 0) {
			st.sent[d] = names
			if err := c.send(st, d, c.version(d), st.nonces[d], names, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// nack rejects a response, keeping the accepted version. The first rejection of a version
// is sent at once; when the server sends the same version again, the NACK waits with
// backoff (other types keep flowing meanwhile).
func (c *xdsClient) nack(ctx context.Context, st *stream, resp *discoveryv3.DiscoveryResponse, err error) error {
	t, v := resp.GetTypeUrl(), resp.GetVersionInfo()
	r := st.rejects[t]
	if r == nil || r.version != v {
		r = &reject{version: v}
		st.rejects[t] = r
	}
	r.count++
	c.metrics.xdsResponses.WithLabelValues(shortType(t), "nack").Inc()
	c.mu.Lock()
	c.status.LastNack = fmt.Sprintf("%s version %s: %v", shortType(t), v, err)
	c.mu.Unlock()
	version, nonce, names := c.version(t), resp.GetNonce(), st.sent[t]
	if r.count == 1 {
		c.log.Warn("xds update rejected", "type", shortType(t), "version", v, "error", err)
		return c.send(st, t, version, nonce, names, err)
	}
	delay := min(c.minBackoff<<min(r.count-2, 16), c.maxBackoff)
	c.log.Debug("xds update rejected again", "type", shortType(t), "version", v, "times", r.count, "nackIn", delay)
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-ctx.Done():
		case <-timer.C:
			_ = c.send(st, resp.GetTypeUrl(), version, nonce, names, err) // a failed send ends the stream's Recv too
		}
	}()
	return nil
}

// decodeResources unpacks a response's resources, checks that they are of the response's
// type and pass their proto validation rules.
func decodeResources(t string, anys []*anypb.Any) ([]proto.Message, error) {
	out := make([]proto.Message, 0, len(anys))
	for i, a := range anys {
		if a.GetTypeUrl() != t {
			return nil, fmt.Errorf("resource %d is a %s in a %s response", i, a.GetTypeUrl(), shortType(t))
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resource %d: %w", i, err)
		}
		if v, ok := m.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				return nil, fmt.Errorf("resource %d: %w", i, err)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

func (c *xdsClient) setConnected(up bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if up != c.status.Connected {
		c.status.Since = time.Now()
	}
	c.status.Connected = up
	if err != nil && !errors.Is(err, context.Canceled) {
		c.status.LastError = err.Error()
	}
	if up {
		c.metrics.xdsConnected.Set(1)
	} else {
		c.metrics.xdsConnected.Set(0)
	}
}

func (c *xdsClient) snapshot() XDSStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Versions = map[string]string{}
	for t, v := range c.versions {
		st.Versions[shortType(t)] = v
	}
	return st
}
