package envoyres

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Each Envoy kind has its xDS type URL and decodes into a message of that type; any other
// kind is not Envoy's.
func TestTypeURL(t *testing.T) {
	tests := []struct{ kind, want string }{
		{KindListener, "type.googleapis.com/envoy.config.listener.v3.Listener"},
		{KindRouteConfiguration, "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
		{KindCluster, "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
		{KindClusterLoadAssignment, "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"},
		{KindSecret, "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"},
		{"ServiceEntry", ""},
	}
	for _, tt := range tests {
		if got := TypeURL(tt.kind); got != tt.want {
			t.Errorf("TypeURL(%q) = %q, want %q", tt.kind, got, tt.want)
		}
		if IsKind(tt.kind) != (tt.want != "") || IsKey(Key(tt.kind, "x")) != (tt.want != "") {
			t.Errorf("IsKind(%q), IsKey = %v, %v; want %v", tt.kind, IsKind(tt.kind), IsKey(Key(tt.kind, "x")), tt.want != "")
		}
		if _, m := newMessage(tt.kind); tt.want != "" && "type.googleapis.com/"+string(m.ProtoReflect().Descriptor().FullName()) != tt.want {
			t.Errorf("kind %s decodes into %T, not %s", tt.kind, m, tt.want)
		}
	}
}

// An output key is Envoy's by its kind only, whatever its name holds.
func TestIsKey(t *testing.T) {
	for key, want := range map[string]bool{
		"EnvoyCluster//web":               true,
		"EnvoySecret//" + MeshCASecret:    true,
		"ServiceEntry/east/EnvoyCluster":  false,
		"DestinationRule/east/web":        false,
		"EnvoyFilter/istio-system/filter": false,
		"":                                false,
	} {
		if got := IsKey(key); got != want {
			t.Errorf("IsKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// testCluster is a small valid Envoy cluster.
func testCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
		ConnectTimeout: durationpb.New(5 * time.Second),
	}
}

// encodeV1 is Encode of the previous versions, kept to write what they wrote: the JSON
// envelope with the spec in protojson, canonicalised by snapshot.NewResource.
func encodeV1(t testing.TB, kind, name string, m proto.Message) snapshot.Resource {
	t.Helper()
	spec, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	env := envelope{APIVersion: APIVersion, Kind: kind, Spec: spec}
	env.Metadata.Name = name
	body, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot.NewResource(Key(kind, name), body)
}

// Encode gives a binary body: the deterministic encoding of a google.protobuf.Any of the
// kind's type URL; Decode gives the message back, and so it does from the JSON envelope the
// previous versions wrote (stores and agents' state). JSON renders both forms as the
// previous versions' body, byte for byte.
func TestEncodeBinaryDecodeBothForms(t *testing.T) {
	c := testCluster("web")
	r, err := Encode(KindCluster, "web", c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(c)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, want) || r.Key != "EnvoyCluster//web" || r.Hash != snapshot.HashBytes(want) || !r.Binary() {
		t.Fatalf("Encode = %s binary=%v %x, want the deterministic Any %x", r.Key, r.Binary(), r.Body, want)
	}
	old := encodeV1(t, KindCluster, "web", c)
	for _, in := range []snapshot.Resource{r, old} {
		kind, msg, err := Decode(in)
		if err != nil || kind != KindCluster || !proto.Equal(msg, c) {
			t.Fatalf("Decode(%q) = %q, %v, %v; want the cluster", in.Body[:8], kind, msg, err)
		}
		human, err := JSON(in)
		if err != nil || !bytes.Equal(human, old.Body) {
			t.Fatalf("JSON = %s, %v\nwant %s", human, err, old.Body)
		}
	}
	other := snapshot.NewResource("ServiceEntry/ns/web", []byte(`{"kind":"ServiceEntry"}`))
	if human, err := JSON(other); err != nil || !bytes.Equal(human, other.Body) {
		t.Fatalf("JSON of a non-Envoy resource = %s, %v; want its body", human, err)
	}
	if _, _, err := Decode(other); !errors.Is(err, ErrNotEnvoy) {
		t.Fatalf("Decode of a non-Envoy resource: %v, want ErrNotEnvoy", err)
	}
}

// A binary body that is not what its key says, not protobuf, not Envoy's or not valid is
// refused with an error naming the resource.
func TestDecodeBinaryRejects(t *testing.T) {
	good, err := Encode(KindCluster, "web", testCluster("web"))
	if err != nil {
		t.Fatal(err)
	}
	anyOf := func(url string, m proto.Message) []byte {
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(&anypb.Any{TypeUrl: url, Value: v})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	invalid := testCluster("web")
	invalid.ConnectTimeout = durationpb.New(0)
	tests := []struct {
		name          string
		r             snapshot.Resource
		notEnvoy, bad bool
	}{
		{"key and name disagree", snapshot.NewBinaryResource("EnvoyCluster//other", good.Body), false, false},
		{"kind and type disagree", snapshot.NewBinaryResource("EnvoySecret//web", good.Body), false, false},
		{"not protobuf", snapshot.NewBinaryResource(good.Key, []byte{0x0a, 0xff, 0x01}), false, false},
		{"other type", snapshot.NewBinaryResource(good.Key, anyOf("type.googleapis.com/google.protobuf.Duration", durationpb.New(1))), true, false},
		{"invalid", snapshot.NewBinaryResource(good.Key, anyOf(TypeURL(KindCluster), invalid)), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, m, err := Decode(tt.r)
			if err == nil {
				t.Fatalf("Decode = %q, %v; want an error", kind, m)
			}
			if errors.Is(err, ErrNotEnvoy) != tt.notEnvoy || errors.Is(err, ErrInvalid) != tt.bad {
				t.Errorf("error %v: ErrNotEnvoy %v ErrInvalid %v, want %v %v", err, errors.Is(err, ErrNotEnvoy), errors.Is(err, ErrInvalid), tt.notEnvoy, tt.bad)
			}
			if !strings.Contains(err.Error(), tt.r.Key) {
				t.Errorf("error %q does not name %s", err, tt.r.Key)
			}
		})
	}
}

// bigCLA is a ClusterLoadAssignment like the bench world's for a VirtualDestination at 1,000
// clusters: one locality per other cluster's gateway.
func bigCLA() *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "vd-web-8080"}
	for i := range 1000 {
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality: &corev3.Locality{Region: fmt.Sprintf("c%04d", i)},
			Priority: uint32(min(i, 1)),
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: fmt.Sprintf("10.%d.%d.1", i/256, i%256), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15443}}}},
			}}}},
		})
	}
	return cla
}

// BenchmarkEncodeCLA: what the server does per render of the big ClusterLoadAssignment, in
// the previous form (protojson envelope, canonicalised) and in the binary form.
func BenchmarkEncodeCLA(b *testing.B) {
	cla := bigCLA()
	b.Run("json-envelope", func(b *testing.B) {
		for b.Loop() {
			r := encodeV1(b, KindClusterLoadAssignment, cla.ClusterName, cla)
			b.SetBytes(int64(len(r.Body)))
		}
	})
	b.Run("binary", func(b *testing.B) {
		for b.Loop() {
			r, err := Encode(KindClusterLoadAssignment, cla.ClusterName, cla)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(r.Body)))
		}
	})
}

// BenchmarkDecodeCLA: what the agent does per received big ClusterLoadAssignment.
func BenchmarkDecodeCLA(b *testing.B) {
	cla := bigCLA()
	bin, err := Encode(KindClusterLoadAssignment, cla.ClusterName, cla)
	if err != nil {
		b.Fatal(err)
	}
	for name, r := range map[string]snapshot.Resource{"json-envelope": encodeV1(b, KindClusterLoadAssignment, cla.ClusterName, cla), "binary": bin} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(r.Body)))
			for b.Loop() {
				if _, _, err := Decode(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
