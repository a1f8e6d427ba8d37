package istiotest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshrelay/meshrelay/internal/poll"
)

// Type URLs of the resources Config fetches.
const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// EventuallyTimeout bounds Eventually.
const EventuallyTimeout = 60 * time.Second

// fetchTimeout bounds one Config call within Eventually.
const fetchTimeout = 15 * time.Second

// Config is what istiod gave one proxy on one ADS stream, by resource name.
type Config struct {
	// Proxy is the proxy that asked.
	Proxy    Proxy
	Clusters map[string]*clusterv3.Cluster
	// LoadAssignments are by EDS service name (for istiod, the cluster's name).
	LoadAssignments map[string]*endpointv3.ClusterLoadAssignment
	Listeners       map[string]*listenerv3.Listener
	Routes          map[string]*routev3.RouteConfiguration
}

// Config opens an ADS stream as proxy and fetches, ACKing each response as Envoy does: every
// cluster (CDS), the endpoints of every EDS cluster (EDS), every listener (LDS) and the route
// configurations the listeners' HTTP connection managers name (RDS).
func (d *Istiod) Config(ctx context.Context, proxy Proxy) (*Config, error) {
	node, err := proxy.node(d.ClusterID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(d.conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("open ADS stream to istiod at %s as %s: %w", d.GRPCAddr, proxy, err)
	}
	s := &adsStream{stream: stream, node: node}
	c := &Config{
		Proxy:           proxy,
		Clusters:        map[string]*clusterv3.Cluster{},
		LoadAssignments: map[string]*endpointv3.ClusterLoadAssignment{},
		Listeners:       map[string]*listenerv3.Listener{},
		Routes:          map[string]*routev3.RouteConfiguration{},
	}

	if err := fetch(s, typeCluster, nil, c.Clusters, (*clusterv3.Cluster).GetName); err != nil {
		return nil, err
	}
	var eds []string
	for _, cl := range c.Clusters {
		if cl.GetType() == clusterv3.Cluster_EDS {
			name := cl.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = cl.GetName()
			}
			eds = append(eds, name)
		}
	}
	if len(eds) > 0 {
		slices.Sort(eds)
		if err := fetch(s, typeEndpoint, eds, c.LoadAssignments, (*endpointv3.ClusterLoadAssignment).GetClusterName); err != nil {
			return nil, err
		}
	}
	if err := fetch(s, typeListener, nil, c.Listeners, (*listenerv3.Listener).GetName); err != nil {
		return nil, err
	}
	routes, err := routeNames(c.Listeners)
	if err != nil {
		return nil, err
	}
	if len(routes) > 0 {
		if err := fetch(s, typeRoute, routes, c.Routes, (*routev3.RouteConfiguration).GetName); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Eventually fetches proxy's configuration (on a fresh stream each time) until check returns
// nil and returns the configuration that passed. It fails the test after EventuallyTimeout
// with check's last error and a summary of the last configuration.
func (d *Istiod) Eventually(t testing.TB, proxy Proxy, check func(*Config) error) *Config {
	t.Helper()
	var last *Config
	poll.Every(t, EventuallyTimeout, 500*time.Millisecond, "istiod's configuration of "+proxy.String(), func() error {
		ctx, cancel := context.WithTimeout(t.Context(), fetchTimeout)
		defer cancel()
		c, err := d.Config(ctx, proxy)
		if err != nil {
			return err
		}
		last = c
		if err := check(c); err != nil {
			return fmt.Errorf("%w\nlast configuration:\n%s", err, c.Summary())
		}
		return nil
	})
	return last
}

// adsStream is one ADS stream of one proxy.
type adsStream struct {
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	sent   bool // whether the node went with a request (only the first one carries it)
}

func (s *adsStream) send(req *discoveryv3.DiscoveryRequest) error {
	if !s.sent {
		req.Node = s.node
		s.sent = true
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("send %s request to istiod: %w", req.GetTypeUrl(), err)
	}
	return nil
}

// get subscribes to typeURL (names nil: all) and returns istiod's response, after ACKing it.
// Responses of other types that arrive meanwhile (pushes to earlier subscriptions) are ACKed
// and dropped: Config is one snapshot, taken in order.
func (s *adsStream) get(typeURL string, names []string) (*discoveryv3.DiscoveryResponse, error) {
	if err := s.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names}); err != nil {
		return nil, err
	}
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("receive %s from istiod: %w", typeURL, err)
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if resp.GetTypeUrl() == typeURL {
			ack.ResourceNames = names
		}
		if err := s.send(ack); err != nil {
			return nil, err
		}
		if resp.GetTypeUrl() == typeURL {
			return resp, nil
		}
	}
}

// fetch gets typeURL's resources into into, by name.
func fetch[T proto.Message](s *adsStream, typeURL string, names []string, into map[string]T, name func(T) string) error {
	resp, err := s.get(typeURL, names)
	if err != nil {
		return err
	}
	for _, a := range resp.GetResources() {
		m, err := unmarshal[T](a)
		if err != nil {
			return fmt.Errorf("decode %s from istiod: %w", typeURL, err)
		}
		into[name(m)] = m
	}
	return nil
}

// unmarshal decodes a as a T (a pointer to a generated message).
func unmarshal[T proto.Message](a *anypb.Any) (T, error) {
	var zero T
	m := zero.ProtoReflect().New().Interface()
	if err := a.UnmarshalTo(m); err != nil {
		return zero, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
	}
	t, ok := m.(T)
	if !ok {
		return zero, errors.New("decoded message of unexpected type")
	}
	return t, nil
}

// routeNames returns the RDS route configurations that listeners' HTTP connection managers
// name, sorted.
func routeNames(listeners map[string]*listenerv3.Listener) ([]string, error) {
	seen := map[string]bool{}
	for _, l := range listeners {
		chains := l.GetFilterChains()
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(slices.Clip(chains), dc)
		}
		for _, fc := range chains {
			for _, f := range fc.GetFilters() {
				a := f.GetTypedConfig()
				if a == nil || !a.MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
					continue
				}
				hcm, err := unmarshal[*hcmv3.HttpConnectionManager](a)
				if err != nil {
					return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
				}
				if n := hcm.GetRds().GetRouteConfigName(); n != "" {
					seen[n] = true
				}
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}
