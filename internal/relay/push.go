package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Inputs keeps the clusters' input snapshots: what Push reads and writes.
type Inputs interface {
	// Input returns the cluster's input as last put (nil when none).
	Input(cluster string) *snapshot.Snapshot
	// PutInput replaces the cluster's input.
	PutInput(ctx context.Context, cluster string, s *snapshot.Snapshot)
}

// Push receives a cluster's input snapshots.
func (s *Server) Push(stream relayv1.RelayService_PushServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first push message must be hello")
	}
	cluster, leaf, err := s.identify(ctx, hello.GetCluster())
	if err != nil {
		return err
	}
	if moved, err := s.redirect(cluster, func(r *relayv1.Redirect) error {
		return stream.Send(&relayv1.PushResponse{Message: &relayv1.PushResponse_Redirect{Redirect: r}})
	}); moved || err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	agent := agentOf(ctx, hello.GetAgentVersion())
	st, holder, ok := s.sessions.claim(cluster, agent, true, leaf, cancel)
	if !ok {
		return s.refuse(cluster, "push", agent, holder)
	}
	log := s.log.With("cluster", cluster, "stream", "push", "peer", agent.Peer)
	defer func() {
		s.sessions.release(cluster, st)
		s.pushEnded(cluster, log)
	}()
	g := s.m.pushConnected.WithLabelValues(cluster)
	g.Inc()
	defer g.Dec()
	log.Info("push stream opened", "instance", agent.Instance, "agentVersion", agent.Version)
	defer log.Info("push stream closed")

	sendHeld := func() error {
		in := s.inputs.Input(cluster)
		h := &relayv1.Held{ResourceHashes: in.ResourceHashes()}
		if in != nil {
			h.Version, h.Hash = in.Version, in.Hash
		}
		return stream.Send(&relayv1.PushResponse{Message: &relayv1.PushResponse_Held{Held: h}})
	}
	if err := sendHeld(); err != nil {
		return err
	}
	if in := s.inputs.Input(cluster); in != nil && in.Hash == hello.GetHeld().GetHash() {
		s.m.pushWarmed.WithLabelValues(cluster).Set(1)
	}
	// Receive in the background, so that a stream replaced by its agent's new connection
	// ends at once.
	msgs, recvErr := relaywire.Receive(ctx, stream.Recv)
	for {
		var msg *relayv1.PushRequest
		select {
		case <-ctx.Done():
			return endCause(ctx)
		case err := <-recvErr:
			if status.Code(err) == codes.ResourceExhausted {
				s.m.rejected.WithLabelValues("too-large").Inc()
				log.Warn("push message over the relay's size limit", "limitBytes", s.cfg.MaxMessageBytes, "error", err)
			}
			return err
		case msg = <-msgs:
		}
		if r := msg.GetReport(); r != nil {
			s.sessions.whileHolding(cluster, st, func() { s.reports.set(cluster, r, log) })
			continue
		}
		d := msg.GetSnapshot()
		if d == nil {
			return status.Error(codes.InvalidArgument, "push messages after hello must be snapshots or reports")
		}
		if len(d.GetUpserts()) > relaywire.MaxResources {
			s.m.rejected.WithLabelValues("too-large").Inc()
			log.Warn("push delta refused: too many resources", "version", d.GetVersion(), "resources", len(d.GetUpserts()), "limit", relaywire.MaxResources)
			return status.Errorf(codes.InvalidArgument, "push delta version %d holds %d resources, over the relay's limit of %d", d.GetVersion(), len(d.GetUpserts()), relaywire.MaxResources)
		}
		if err := checkBodies(d); err != nil {
			s.m.rejected.WithLabelValues("bad-input").Inc()
			log.Warn("push delta refused", "version", d.GetVersion(), "error", err)
			return status.Errorf(codes.InvalidArgument, "push delta version %d: %v", d.GetVersion(), err)
		}
		base := s.inputs.Input(cluster)
		if !d.GetFull() && d.GetBaseHash() != hashOf(base) {
			log.Info("push delta base differs; asking for a resend", "base", d.GetBaseHash(), "held", hashOf(base))
			if err := sendHeld(); err != nil {
				return err
			}
			continue
		}
		next, err := snapshot.Apply(base, relaywire.FromProto(d))
		if err != nil {
			log.Warn("push delta rejected; asking for a resend", "version", d.GetVersion(), "error", err)
			if err := sendHeld(); err != nil {
				return err
			}
			continue
		}
		// Only the stream of the agent holding the cluster writes its input, checked under
		// the same lock that hands the cluster over.
		if !s.sessions.whileHolding(cluster, st, func() { s.inputs.PutInput(ctx, cluster, next) }) {
			return endCause(ctx)
		}
		s.m.pushes.WithLabelValues(cluster).Inc()
		s.m.pushWarmed.WithLabelValues(cluster).Set(1)
		log.Debug("input received", "version", next.Version, "resources", next.Len(), "upserts", len(d.GetUpserts()), "removals", len(d.GetRemovals()))
		if err := stream.Send(&relayv1.PushResponse{Message: &relayv1.PushResponse_Ack{Ack: &relayv1.Ack{Version: next.Version, Hash: next.Hash}}}); err != nil {
			return err
		}
	}
}

// checkBodies refuses a pushed delta with a resource whose body is not one JSON value: what
// agents discover is JSON, and the stores persist nothing else (an empty body would be
// written as null and no longer match its hash when read back).
func checkBodies(d *relayv1.SnapshotDelta) error {
	for _, r := range d.GetUpserts() {
		if !json.Valid(r.GetBody()) {
			return fmt.Errorf("resource %q: body is not a JSON value", r.GetKey())
		}
	}
	return nil
}

// pushEnded forgets a cluster's agent report when its last push stream here ended.
func (s *Server) pushEnded(cluster string, log *slog.Logger) {
	if s.sessions.connections()[cluster].Push == 0 {
		s.reports.set(cluster, nil, log)
	}
}

func hashOf(s *snapshot.Snapshot) string {
	if s == nil {
		return ""
	}
	return s.Hash
}
