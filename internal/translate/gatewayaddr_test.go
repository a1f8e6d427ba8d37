package translate_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/envoyres"
	"github.com/meshrelay/meshrelay/internal/resource"
	"github.com/meshrelay/meshrelay/internal/snapshot"
	"github.com/meshrelay/meshrelay/internal/translate"
)

// TestFailoverGatewayAddress: cluster local fails over to remote through remote's failover
// gateway, whose Service (seed 003: LoadBalancer, nodePort 32000, one ready pod 10.0.2.100)
// is varied. local's output reaches the gateway at the address ExternalReach chooses, and the
// gateway's status says which and why.
func TestFailoverGatewayAddress(t *testing.T) {
	const podIP = "10.0.2.100"
	tests := []struct {
		name string
		// edit changes the Service's metadata (as JSON objects) and status.
		annotations map[string]any
		status      map[string]any
		want        string // address:port in local's failover endpoints
		why         string
	}{
		{"load balancer ip", map[string]any{"meshrelay.io/failover-address": "198.51.100.9:9443", "meshrelay.io/node-addresses": "192.168.7.1"},
			map[string]any{"loadBalancer": map[string]any{"ingress": []any{map[string]any{"ip": "203.0.113.7"}}}}, "203.0.113.7:15443", "status.loadBalancer.ingress"},
		{"annotation", map[string]any{"meshrelay.io/failover-address": "198.51.100.9:9443", "meshrelay.io/node-addresses": "192.168.7.1"},
			map[string]any{"loadBalancer": map[string]any{"ingress": []any{map[string]any{"hostname": "lb.example.com"}}}}, "198.51.100.9:9443", "annotation meshrelay.io/failover-address"},
		{"node ports", map[string]any{"meshrelay.io/node-addresses": "192.168.7.1"}, nil, "192.168.7.1:32000", "nodePort on node addresses"},
		{"pod ips", nil, nil, podIP + ":15443", "ready endpoint (pod) addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := loadCase(t, "seed003")
			in.Inputs["remote"] = withFailoverService(t, in.Inputs["remote"], tt.annotations, tt.status)
			res := translate.Translate(in)
			if len(res.Errors) > 0 {
				t.Fatalf("translation errors: %v", res.Errors)
			}
			host, port, _ := strings.Cut(tt.want, ":")
			var found bool
			for _, r := range res.Outputs["local"] {
				if !strings.Contains(r.Key, "ClusterLoadAssignment") {
					continue
				}
				human, err := envoyres.JSON(r)
				if err != nil {
					t.Fatal(err)
				}
				body := string(human)
				if strings.Contains(body, `"address":"`+host+`","portValue":`+port) {
					found = true
				}
				if tt.want != podIP+":15443" && strings.Contains(body, podIP) {
					t.Errorf("%s still reaches the gateway's pod IP: %s", r.Key, body)
				}
			}
			if !found {
				t.Errorf("no ClusterLoadAssignment of local reaches %s", tt.want)
			}
			msgs := strings.Join(res.Status[`Gateway "gloo-system/failover-gateway" (from cluster remote)`], "; ")
			if !strings.Contains(msgs, "other clusters reach it at "+tt.want+": "+tt.why) {
				t.Errorf("gateway status %q does not say %s from %s", msgs, tt.want, tt.why)
			}
		})
	}
}

// withFailoverService returns in with Service gloo-system/failover given these annotations
// and status.
func withFailoverService(t *testing.T, in *snapshot.Snapshot, annotations, status map[string]any) *snapshot.Snapshot {
	t.Helper()
	var rs []snapshot.Resource
	for _, r := range in.Sorted() {
		o, err := resource.FromResource(r)
		if err != nil {
			t.Fatal(err)
		}
		if o.Kind == "Service" && o.Namespace == "gloo-system" && o.Name == "failover" {
			var m map[string]any
			if err := json.Unmarshal(o.Raw, &m); err != nil {
				t.Fatal(err)
			}
			m["metadata"].(map[string]any)["annotations"] = annotations
			if status != nil {
				m["status"] = status
			}
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if o, err = resource.Decode(b); err != nil {
				t.Fatal(err)
			}
			r = o.Resource()
		}
		rs = append(rs, r)
	}
	return snapshot.New(in.Version, in.Epoch, rs)
}
