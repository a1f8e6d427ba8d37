// Package envoyres is the codec of the Envoy resources in a cluster's output: the envelope
// each xDS message travels in (apiVersion, kind, metadata.name, spec as protojson), the
// Envoy kinds and their xDS type URLs, and the names of the Secrets that carry a cluster's
// mesh identity.
//
// The translator (internal/translate) encodes with it; the agent's xDS server
// (internal/xds), the agent's output routing (internal/app/agent) and the gateway's tests
// decode with it, so that none of them imports the translator. It is pure: no I/O, no state.
package envoyres

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// APIVersion is the apiVersion of the envelope every rendered Envoy resource is wrapped
// in, so that the agent's file sink and tooling treat all outputs alike.
const APIVersion = "xds.meshrelay.io/v1"

// Kinds of the rendered Envoy resources. A resource's key is Key(kind, name).
const (
	KindListener              = "EnvoyListener"
	KindRouteConfiguration    = "EnvoyRouteConfiguration"
	KindCluster               = "EnvoyCluster"
	KindClusterLoadAssignment = "EnvoyClusterLoadAssignment"
	KindSecret                = "EnvoySecret"
)

// Names of the Secrets that carry a cluster's mesh identity issued by the management
// server (used when no bring-your-own secret is referenced).
const (
	MeshIdentitySecret = "meshrelay-mesh-identity"
	MeshCASecret       = "meshrelay-mesh-ca"
)

var (
	// ErrInvalid means a message cannot be an Envoy resource: it fails its validation
	// rules; the error names the resource and why.
	ErrInvalid = errors.New("invalid envoy resource")
	// ErrNotEnvoy means Decode was given a resource that is not an Envoy envelope (another
	// apiVersion or kind).
	ErrNotEnvoy = errors.New("not an envoy resource")
)

// Message is a generated Envoy message with its protoc-gen-validate rules.
type Message interface {
	proto.Message
	ValidateAll() error
}

type envelope struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// Key is the output key of the Envoy resource kind/name.
func Key(kind, name string) string { return kind + "//" + name }

// IsKind reports whether kind is one of the Envoy kinds.
func IsKind(kind string) bool { return TypeURL(kind) != "" }

// IsKey reports whether an output key names an Envoy resource: its kind (the part before
// the first "/") is one of the Envoy kinds. Every other output is a Kubernetes-shaped
// resource.
func IsKey(key string) bool {
	kind, _, _ := strings.Cut(key, "/")
	return IsKind(kind)
}

// TypeURL returns the xDS resource type URL of an Envoy kind, or "" for any other kind.
func TypeURL(kind string) string {
	url, _ := newMessage(kind)
	return url
}

// newMessage returns the type URL of kind and a new message of its type.
func newMessage(kind string) (string, Message) {
	switch kind {
	case KindListener:
		return resourcev3.ListenerType, &listenerv3.Listener{}
	case KindRouteConfiguration:
		return resourcev3.RouteType, &routev3.RouteConfiguration{}
	case KindCluster:
		return resourcev3.ClusterType, &clusterv3.Cluster{}
	case KindClusterLoadAssignment:
		return resourcev3.EndpointType, &endpointv3.ClusterLoadAssignment{}
	case KindSecret:
		return resourcev3.SecretType, &tlsv3.Secret{}
	}
	return "", nil
}

func resourceName(m proto.Message) string {
	if cla, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		return cla.GetClusterName()
	}
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

// Encode wraps the message m of kind named name in its envelope, as the resource of key
// Key(kind, name). It does not validate m: the caller does, to name the plan entry at fault.
func Encode(kind, name string, m Message) (snapshot.Resource, error) {
	spec, err := protojson.MarshalOptions{}.Marshal(m)
	if err != nil {
		return snapshot.Resource{}, fmt.Errorf("%s %q: marshal: %w", kind, name, err)
	}
	env := envelope{APIVersion: APIVersion, Kind: kind, Spec: spec}
	env.Metadata.Name = name
	body, err := json.Marshal(env)
	if err != nil {
		return snapshot.Resource{}, fmt.Errorf("%s %q: marshal envelope: %w", kind, name, err)
	}
	return snapshot.NewResource(Key(kind, name), body), nil
}

// Decode reverses Encode for one resource: it returns the kind and the Envoy message of the
// envelope, after checking that the key, kind and name agree and that the message passes its
// validation rules. Resources of another apiVersion or kind give an error wrapping
// ErrNotEnvoy.
func Decode(r snapshot.Resource) (kind string, msg proto.Message, err error) {
	var env envelope
	if err := json.Unmarshal(r.Body, &env); err != nil {
		return "", nil, fmt.Errorf("resource %s: decode envelope: %w", r.Key, err)
	}
	_, m := newMessage(env.Kind)
	if env.APIVersion != APIVersion || m == nil {
		return "", nil, fmt.Errorf("resource %s: apiVersion %q kind %q: %w", r.Key, env.APIVersion, env.Kind, ErrNotEnvoy)
	}
	if err := protojson.Unmarshal(env.Spec, m); err != nil {
		return "", nil, fmt.Errorf("resource %s: decode spec: %w", r.Key, err)
	}
	name := resourceName(m)
	if name != env.Metadata.Name || r.Key != Key(env.Kind, name) {
		return "", nil, fmt.Errorf("resource %s: key, metadata.name %q and spec name %q disagree", r.Key, env.Metadata.Name, name)
	}
	if err := m.ValidateAll(); err != nil {
		return "", nil, fmt.Errorf("resource %s: %w: %w", r.Key, ErrInvalid, err)
	}
	return env.Kind, m, nil
}
