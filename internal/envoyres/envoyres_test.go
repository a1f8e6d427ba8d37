package envoyres

import "testing"

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
