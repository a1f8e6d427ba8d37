package gateway

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// ErrRejected wraps every reason an xDS update is rejected (NACKed).
var ErrRejected = errors.New("xds update rejected")

// configStore holds the accepted specs of every type and applies updates to the runtime:
// a response is parsed completely before anything changes, and a response that fails to
// parse (or whose listeners cannot be bound) changes nothing.
type configStore struct {
	clusters  *clusterManager
	listeners *listenerManager
	secrets   *secretStore

	mu        sync.Mutex // guards the maps below (written by the xDS goroutine, read by status)
	lis       map[string]*listenerSpec
	routes    map[string]*routeTable
	cls       map[string]*clusterSpec
	loads     map[string]*loadAssignment
	secs      map[string]*secretSpec
	accepted  map[string]bool
	published map[string]*routeTable // routes the proxies read; replaced, never mutated
	pubMu     sync.RWMutex           // guards published
}

func newConfigStore(cm *clusterManager, lm *listenerManager, s *secretStore) *configStore {
	st := &configStore{clusters: cm, listeners: lm, secrets: s, lis: map[string]*listenerSpec{}, routes: map[string]*routeTable{},
		cls: map[string]*clusterSpec{}, loads: map[string]*loadAssignment{}, secs: map[string]*secretSpec{}, accepted: map[string]bool{},
		published: map[string]*routeTable{}}
	s.set(map[string]*secretSpec{})
	return st
}

// route returns the published route configuration of that name, or nil.
func (s *configStore) route(name string) *routeTable {
	s.pubMu.RLock()
	defer s.pubMu.RUnlock()
	return s.published[name]
}

// ready says whether listeners and clusters have been received.
func (s *configStore) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[resourcev3.ListenerType] && s.accepted[resourcev3.ClusterType]
}

// parseEach parses resources of one type into a map by name, refusing duplicates.
func parseEach[M proto.Message, S any](msgs []proto.Message, kind string, name func(M) string, parse func(M) (S, error)) (map[string]S, error) {
	out := make(map[string]S, len(msgs))
	for _, m := range msgs {
		msg, ok := m.(M)
		if !ok {
			return nil, fmt.Errorf("%w: %s: unexpected message %T", ErrRejected, kind, m)
		}
		n := name(msg)
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("%w: %s %q: duplicate name", ErrRejected, kind, n)
		}
		spec, err := parse(msg)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q: %w", ErrRejected, kind, n, err)
		}
		out[n] = spec
	}
	return out, nil
}

func (s *configStore) apply(t string, msgs []proto.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch t {
	case resourcev3.ListenerType:
		specs, err := parseEach(msgs, "listener", (*listenerv3.Listener).GetName, parseListener)
		if err != nil {
			return err
		}
		plan, err := s.listeners.prepare(specs)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRejected, err)
		}
		s.lis = specs
		s.routes = pruned(s.routes, s.rdsNamesLocked())
		s.publishRoutesLocked()
		s.listeners.commit(plan)
	case resourcev3.RouteType:
		specs, err := parseEach(msgs, "route configuration", (*routev3.RouteConfiguration).GetName, parseRouteTable)
		if err != nil {
			return err
		}
		s.routes = merged(s.routes, specs, s.rdsNamesLocked())
		s.publishRoutesLocked()
	case resourcev3.ClusterType:
		specs, err := parseEach(msgs, "cluster", (*clusterv3.Cluster).GetName, parseCluster)
		if err != nil {
			return err
		}
		s.cls = specs
		s.loads = pruned(s.loads, s.edsNamesLocked())
		s.clusters.update(s.cls, s.loads)
	case resourcev3.EndpointType:
		specs, err := parseEach(msgs, "cluster load assignment", (*endpointv3.ClusterLoadAssignment).GetClusterName, parseLoadAssignment)
		if err != nil {
			return err
		}
		s.loads = merged(s.loads, specs, s.edsNamesLocked())
		s.clusters.update(s.cls, s.loads)
	case resourcev3.SecretType:
		specs, err := parseEach(msgs, "secret", (*tlsv3.Secret).GetName, parseSecret)
		if err != nil {
			return err
		}
		s.secs = specs
		s.secrets.set(specs)
	default:
		return fmt.Errorf("%w: type %s is not supported", ErrRejected, t)
	}
	s.accepted[t] = true
	return nil
}

func (s *configStore) names(t string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var set map[string]bool
	switch t {
	case resourcev3.RouteType:
		set = s.rdsNamesLocked()
	case resourcev3.EndpointType:
		set = s.edsNamesLocked()
	}
	return slices.Sorted(maps.Keys(set))
}

func (s *configStore) rdsNamesLocked() map[string]bool {
	out := map[string]bool{}
	for _, l := range s.lis {
		if l.rdsName != "" {
			out[l.rdsName] = true
		}
	}
	return out
}

func (s *configStore) edsNamesLocked() map[string]bool {
	out := map[string]bool{}
	for _, c := range s.cls {
		if c.edsName != "" {
			out[c.edsName] = true
		}
	}
	return out
}

func (s *configStore) publishRoutesLocked() {
	cp := maps.Clone(s.routes)
	s.pubMu.Lock()
	s.published = cp
	s.pubMu.Unlock()
}

// merged adds the resources of a named-type response to the current ones (SotW responses
// for these types need not repeat unchanged resources) and keeps only subscribed names.
func merged[S any](cur, update map[string]S, subscribed map[string]bool) map[string]S {
	out := pruned(cur, subscribed)
	for n, s := range update {
		if subscribed[n] {
			out[n] = s
		}
	}
	return out
}

func pruned[S any](cur map[string]S, subscribed map[string]bool) map[string]S {
	out := make(map[string]S, len(cur))
	for n, s := range cur {
		if subscribed[n] {
			out[n] = s
		}
	}
	return out
}

func (s *configStore) secretStatus() []SecretStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []SecretStatus{}
	for _, n := range slices.Sorted(maps.Keys(s.secs)) {
		out = append(out, secretStatus(s.secs[n]))
	}
	return out
}
