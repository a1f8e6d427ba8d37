package xds

import (
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// Refusal is a gateway whose latest response of a type was a NACK.
type Refusal struct {
	Node    string    `json:"node"`
	TypeURL string    `json:"typeUrl"`
	Error   string    `json:"error"`
	Since   time.Time `json:"since"`
}

// refusals follows the ACKs and NACKs of every gateway stream: a NACK (a request carrying
// error detail) records a refusal of its node and type, the next ACK of that type clears
// it, and a node's refusals go when its last stream closes.
type refusals struct {
	log *slog.Logger

	mu      sync.Mutex                    // guards the fields below
	streams map[int64]string              // stream → node id
	byNode  map[string]map[string]Refusal // node → type URL → refusal
}

func newRefusals(log *slog.Logger) *refusals {
	return &refusals{log: log, streams: map[int64]string{}, byNode: map[string]map[string]Refusal{}}
}

// callbacks are the go-control-plane server callbacks that feed r.
func (r *refusals) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{StreamRequestFunc: r.request, StreamClosedFunc: r.closed}
}

func (r *refusals) request(stream int64, req *discoveryv3.DiscoveryRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id := req.GetNode().GetId(); id != "" {
		r.streams[stream] = id // Envoy sends its node on the first request of a stream only
	}
	node, ok := r.streams[stream]
	if !ok {
		node = fmt.Sprintf("stream-%d", stream) // a gateway that never named itself
		r.streams[stream] = node
	}
	if req.GetResponseNonce() == "" {
		return nil // a subscription, not an answer to a response
	}
	t := req.GetTypeUrl()
	prev, had := r.byNode[node][t]
	if d := req.GetErrorDetail(); d != nil {
		if !had || prev.Error != d.GetMessage() {
			r.log.Warn("gateway refused configuration", "node", node, "type", t, "error", d.GetMessage())
			if r.byNode[node] == nil {
				r.byNode[node] = map[string]Refusal{}
			}
			r.byNode[node][t] = Refusal{Node: node, TypeURL: t, Error: d.GetMessage(), Since: time.Now().UTC()}
		}
		return nil
	}
	if had {
		r.log.Info("gateway accepted configuration again", "node", node, "type", t, "version", req.GetVersionInfo())
		delete(r.byNode[node], t)
		if len(r.byNode[node]) == 0 {
			delete(r.byNode, node)
		}
	}
	return nil
}

func (r *refusals) closed(stream int64, _ *corev3.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	node, ok := r.streams[stream]
	delete(r.streams, stream)
	if !ok {
		return
	}
	for _, n := range r.streams {
		if n == node {
			return // another stream of the same node is still open
		}
	}
	if _, had := r.byNode[node]; had {
		r.log.Info("gateway with refused configuration disconnected", "node", node)
		delete(r.byNode, node)
	}
}

// list returns one refusal per gateway (its latest), sorted by node.
func (r *refusals) list() []Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Refusal, 0, len(r.byNode))
	for _, types := range r.byNode {
		var latest Refusal
		for _, x := range types {
			if latest.Node == "" || x.Since.After(latest.Since) || (x.Since.Equal(latest.Since) && x.TypeURL < latest.TypeURL) {
				latest = x
			}
		}
		out = append(out, latest)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}
