package xds

import (
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
)

func TestRefusals(t *testing.T) {
	req := func(node, typeURL, nonce, nack string) *discoveryv3.DiscoveryRequest {
		r := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResponseNonce: nonce}
		if node != "" {
			r.Node = &corev3.Node{Id: node}
		}
		if nack != "" {
			r.ErrorDetail = &statuspb.Status{Message: nack}
		}
		return r
	}
	type step struct {
		stream int64
		req    *discoveryv3.DiscoveryRequest // nil: the stream closes
		want   map[string]string             // node → error of its listed refusal
	}
	const lis, cl = resourcev3.ListenerType, resourcev3.ClusterType
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a subscription is no answer", []step{
			{1, req("gw", lis, "", ""), map[string]string{}},
		}},
		{"nack then ack of the type clears it", []step{
			{1, req("gw", lis, "", ""), map[string]string{}},
			{1, req("", lis, "n1", "port in use"), map[string]string{"gw": "port in use"}},
			{1, req("", cl, "n2", ""), map[string]string{"gw": "port in use"}},
			{1, req("", lis, "n3", ""), map[string]string{}},
		}},
		{"one entry per gateway, its latest", []step{
			{1, req("gw", lis, "n1", "port in use"), map[string]string{"gw": "port in use"}},
			{1, req("gw", cl, "n2", "bad cluster"), map[string]string{"gw": "bad cluster"}},
			{2, req("other", cl, "n1", "bad cluster"), map[string]string{"gw": "bad cluster", "other": "bad cluster"}},
		}},
		{"the last stream of a gateway closing clears it", []step{
			{1, req("gw", lis, "n1", "port in use"), map[string]string{"gw": "port in use"}},
			{2, req("gw", lis, "", ""), map[string]string{"gw": "port in use"}},
			{1, nil, map[string]string{"gw": "port in use"}},
			{2, nil, map[string]string{}},
		}},
		{"a gateway without a node id is named by its stream", []step{
			{7, req("", lis, "n1", "port in use"), map[string]string{"stream-7": "port in use"}},
			{7, nil, map[string]string{}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRefusals(slog.New(slog.DiscardHandler))
			for i, s := range tc.steps {
				if s.req == nil {
					r.closed(s.stream, nil)
				} else if err := r.request(s.stream, s.req); err != nil {
					t.Fatal(err)
				}
				got := map[string]string{}
				for _, x := range r.list() {
					got[x.Node] = x.Error
				}
				if len(got) != len(s.want) {
					t.Fatalf("step %d: refusals %v, want %v", i, got, s.want)
				}
				for n, e := range s.want {
					if got[n] != e {
						t.Fatalf("step %d: refusals %v, want %v", i, got, s.want)
					}
				}
			}
		})
	}
}
