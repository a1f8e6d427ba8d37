// Package envoyres is the codec of the Envoy resources in a cluster's output, the Envoy
// kinds and their xDS type URLs, and the names of the Secrets that carry a cluster's mesh
// identity.
//
// An Envoy resource travels and is stored as a serialized google.protobuf.Any (the type URL
// of its kind, the message marshalled deterministically), a binary body
// (snapshot.NewBinaryResource): Encode. Its human form, for people and files, is the JSON
// envelope (apiVersion, kind, metadata.name, spec as protojson) that was also the stored
// form before binary bodies: JSON. Decode reads both forms, so that stores and agents'
// state written by a previous version still load.
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
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

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

// kindOf returns the Envoy kind of an xDS type URL, or "".
func kindOf(typeURL string) string { return kindsByTypeURL[typeURL] }

var kindsByTypeURL = map[string]string{
	resourcev3.ListenerType: KindListener, resourcev3.RouteType: KindRouteConfiguration,
	resourcev3.ClusterType: KindCluster, resourcev3.EndpointType: KindClusterLoadAssignment,
	resourcev3.SecretType: KindSecret,
}

// deterministic is how bodies are marshalled: the same message gives the same bytes, hence
// the same hash.
var deterministic = proto.MarshalOptions{Deterministic: true}

// Encode returns the message m of kind named name as the resource of key Key(kind, name):
// its body is a serialized google.protobuf.Any of the type URL of kind, marshalled
// deterministically. It does not validate m: the caller does, to name the plan entry at
// fault.
func Encode(kind, name string, m Message) (snapshot.Resource, error) {
	return encodeAny(kind, name, deterministic.Size(m), func(b []byte) ([]byte, error) { return deterministic.MarshalAppend(b, m) })
}

// EncodeEncoded is Encode for a message whose deterministic encoding the caller assembled,
// e.g. from cached encodings of its fields (a message's encoding is the concatenation of
// its fields' encodings, in field-number order): msg is taken as it is, not checked.
func EncodeEncoded(kind, name string, msg []byte) (snapshot.Resource, error) {
	return encodeAny(kind, name, len(msg), func(b []byte) ([]byte, error) { return append(b, msg...), nil })
}

// encodeAny returns the resource whose body is the Any of kind's type URL and the value of
// size bytes that appendValue appends.
func encodeAny(kind, name string, size int, appendValue func([]byte) ([]byte, error)) (snapshot.Resource, error) {
	url := TypeURL(kind)
	if url == "" {
		return snapshot.Resource{}, fmt.Errorf("%s %q: %w", kind, name, ErrNotEnvoy)
	}
	// Any's encoding: field 1 (type_url), then field 2 (value), the message's own encoding.
	b := make([]byte, 0, 2+len(url)+protowire.SizeVarint(uint64(len(url)))+protowire.SizeVarint(uint64(size))+size)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, url)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b, err := appendValue(b)
	if err != nil {
		return snapshot.Resource{}, fmt.Errorf("%s %q: marshal: %w", kind, name, err)
	}
	return snapshot.NewBinaryResource(Key(kind, name), b), nil
}

// isEnvelope reports whether body is in the JSON form (an object). A serialized Any starts
// with the tag of its field 1 (0x0a), never with '{'.
func isEnvelope(body []byte) bool { return len(body) > 0 && body[0] == '{' }

// Decode reverses Encode for one resource, in either form (binary, or the JSON envelope of
// the previous versions): it returns the kind and the Envoy message, after checking that the
// key, kind and name agree and that the message passes its validation rules. Resources of
// another apiVersion or kind (or type URL) give an error wrapping ErrNotEnvoy.
func Decode(r snapshot.Resource) (kind string, msg proto.Message, err error) {
	kind, m, err := decode(r)
	if err != nil {
		return "", nil, err
	}
	if err := m.ValidateAll(); err != nil {
		return "", nil, fmt.Errorf("resource %s: %w: %w", r.Key, ErrInvalid, err)
	}
	return kind, m, nil
}

// decode is Decode without the validation rules.
func decode(r snapshot.Resource) (string, Message, error) {
	if isEnvelope(r.Body) {
		return decodeEnvelope(r)
	}
	var a anypb.Any
	if err := proto.Unmarshal(r.Body, &a); err != nil {
		return "", nil, fmt.Errorf("resource %s: decode body (a serialized google.protobuf.Any): %w", r.Key, err)
	}
	kind := kindOf(a.GetTypeUrl())
	_, m := newMessage(kind)
	if m == nil {
		return "", nil, fmt.Errorf("resource %s: type URL %q: %w", r.Key, a.GetTypeUrl(), ErrNotEnvoy)
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return "", nil, fmt.Errorf("resource %s: decode %s: %w", r.Key, a.GetTypeUrl(), err)
	}
	if name := resourceName(m); r.Key != Key(kind, name) {
		return "", nil, fmt.Errorf("resource %s: key, type %s and spec name %q disagree", r.Key, a.GetTypeUrl(), name)
	}
	return kind, m, nil
}

// decodeEnvelope decodes the JSON form.
func decodeEnvelope(r snapshot.Resource) (string, Message, error) {
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
	return env.Kind, m, nil
}

// JSON returns the human form of an output resource, for people and files: an Envoy
// resource as its JSON envelope {apiVersion, kind, metadata.name, spec} in canonical JSON
// (snapshot.NewResource's form), whichever form its body is in; any other resource's body
// as it is. It does not apply the validation rules.
func JSON(r snapshot.Resource) ([]byte, error) {
	if !IsKey(r.Key) || isEnvelope(r.Body) {
		return r.Body, nil
	}
	kind, m, err := decode(r)
	if err != nil {
		return nil, err
	}
	spec, err := protojson.MarshalOptions{}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("resource %s: marshal: %w", r.Key, err)
	}
	env := envelope{APIVersion: APIVersion, Kind: kind, Spec: spec}
	env.Metadata.Name = resourceName(m)
	body, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("resource %s: marshal envelope: %w", r.Key, err)
	}
	return snapshot.NewResource(r.Key, body).Body, nil
}
