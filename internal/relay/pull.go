package relay

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// Outputs serves the clusters' output snapshots: what Pull watches and sends.
type Outputs interface {
	// Output returns the cluster's current output (nil when none yet).
	Output(cluster string) *snapshot.Snapshot
	// RefreshOutput brings the cluster's output up to date before a stream starts.
	RefreshOutput(ctx context.Context, cluster string)
	// Subscribe returns a channel signalled when the cluster's output changes, and the
	// function that ends the subscription.
	Subscribe(cluster string) (<-chan struct{}, func())
}

// Acks records what agents answer about their outputs: what Pull reports.
type Acks interface {
	// AdoptVersion is told the version and hash an agent holds when its stream opens.
	AdoptVersion(cluster string, version uint64, hash string)
	Acked(cluster string, version uint64, hash, agent string)
	Nacked(cluster string, version uint64, hash, reason string)
	// AgentEpoch is told the epoch of the output an agent holds (its Hello): the server's
	// lock must be above it for the agent to accept anything new.
	AgentEpoch(cluster string, held uint64)
	// EpochRefused records that the agent holds epoch held and so refuses the output of
	// epoch refused (it NACKed it, or it would and the server held it back).
	EpochRefused(cluster string, refused, held uint64)
	// Refused records, with every ACK, the objects of that output the agent's cluster
	// refused while the rest was applied (output key → reason; empty when none).
	Refused(cluster string, version uint64, hash string, refusals map[string]string)
}

// Pull sends a cluster's output snapshots and collects ACKs and NACKs.
func (s *Server) Pull(stream relayv1.RelayService_PullServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first pull message must be hello")
	}
	cluster, leaf, err := s.identify(ctx, hello.GetCluster())
	if err != nil {
		return err
	}
	sendRedirect := func(r *relayv1.Redirect) error {
		return stream.Send(&relayv1.PullResponse{Message: &relayv1.PullResponse_Redirect{Redirect: r}})
	}
	if moved, err := s.redirect(cluster, sendRedirect); moved || err != nil {
		return err
	}
	var rebalance <-chan struct{}
	if s.cfg.Balancer != nil {
		rebalance = s.cfg.Balancer.Watch()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	who := agentOf(ctx, hello.GetAgentVersion())
	st, holder, ok := s.sessions.claim(cluster, who, false, leaf, cancel)
	if !ok {
		return s.refuse(cluster, "pull", who, holder)
	}
	defer s.sessions.release(cluster, st)
	agent := who.Peer
	log := s.log.With("cluster", cluster, "stream", "pull", "peer", agent)
	g := s.m.pullConnected.WithLabelValues(cluster)
	g.Inc()
	defer g.Dec()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	log.Info("pull stream opened", "heldVersion", hello.GetHeld().GetVersion())
	defer log.Info("pull stream closed")

	// What the agent holds; nil map means "send everything".
	var held map[string]string
	heldHash := ""
	heldEpoch, heldVersion := hello.GetHeld().GetEpoch(), hello.GetHeld().GetVersion()
	inSyncAt := "" // the output hash last recorded as held without sending
	s.outputs.RefreshOutput(ctx, cluster)
	if h := hello.GetHeld(); h.GetHash() != "" {
		held, heldHash = h.GetResourceHashes(), h.GetHash()
		if held == nil {
			held = map[string]string{}
		}
		s.acks.AdoptVersion(cluster, h.GetVersion(), h.GetHash())
		s.acks.AgentEpoch(cluster, h.GetEpoch())
		if out := s.outputs.Output(cluster); out != nil && out.Hash == heldHash {
			s.acks.Acked(cluster, out.Version, out.Hash, agent)
			inSyncAt = out.Hash
		}
	}

	sub, unsubscribe := s.outputs.Subscribe(cluster)
	defer unsubscribe()
	replies, recvErr := relaywire.Receive(ctx, stream.Recv)

	var inflight *snapshot.Snapshot
	var sentAt time.Time
	nackedHash := ""
	var refusal [2]uint64 // the last epoch refusal logged: output epoch, agent's epoch
	refused := func(out, held uint64) {
		s.acks.EpochRefused(cluster, out, held)
		if refusal != [2]uint64{out, held} {
			refusal = [2]uint64{out, held}
			s.m.epochRefusals.WithLabelValues(cluster).Inc()
			log.Warn("agent holds a newer epoch than this server's output", "outputEpoch", out, "heldEpoch", held)
		}
	}
	ackTimer := time.NewTimer(time.Hour)
	defer ackTimer.Stop()
	// handle takes the agent's answer to the snapshot in flight.
	handle := func(m *relayv1.PullRequest) error {
		switch {
		case m.GetAck() != nil:
			a := m.GetAck()
			if inflight == nil || a.GetHash() != inflight.Hash {
				log.Warn("unexpected ack ignored", "version", a.GetVersion())
				return nil
			}
			held, heldHash, heldEpoch, heldVersion, nackedHash = inflight.ResourceHashes(), inflight.Hash, inflight.Epoch, inflight.Version, ""
			inSyncAt = inflight.Hash
			s.acks.Acked(cluster, a.GetVersion(), a.GetHash(), agent)
			refusals := make(map[string]string, len(a.GetRefusals()))
			for _, r := range a.GetRefusals() {
				refusals[r.GetKey()] = r.GetReason()
			}
			s.acks.Refused(cluster, a.GetVersion(), a.GetHash(), refusals)
			s.m.ackSeconds.Observe(time.Since(sentAt).Seconds())
			inflight = nil
		case m.GetNack() != nil:
			n := m.GetNack()
			if inflight == nil || n.GetHash() != inflight.Hash {
				return nil
			}
			s.acks.Nacked(cluster, n.GetVersion(), n.GetHash(), n.GetError())
			log.Warn("agent refused output", "version", n.GetVersion(), "error", n.GetError(), "needFull", n.GetNeedFull())
			if out, held, ok := relaywire.ParseStaleEpoch(n.GetError()); ok {
				heldEpoch = max(heldEpoch, held)
				refused(out, held)
			}
			if n.GetNeedFull() {
				held, heldHash = nil, ""
			} else {
				nackedHash = inflight.Hash
			}
			inflight = nil
		default:
			return status.Error(codes.InvalidArgument, "pull messages after hello must be ack or nack")
		}
		return nil
	}
	for {
		out := s.outputs.Output(cluster)
		// Send when the content differs, or when only the epoch moved (a new active server):
		// the agent must learn the epoch to refuse a deposed server's outputs.
		if inflight == nil && out != nil && out.Hash == heldHash && out.Epoch <= heldEpoch && inSyncAt != out.Hash {
			// The agent already holds this content (after a restart of either side): it is
			// in sync without anything being sent.
			s.acks.Acked(cluster, max(out.Version, heldVersion), out.Hash, agent)
			inSyncAt = out.Hash
		}
		// Never send an output older than what the agent holds (a passive server or a
		// replica lagging the store): it would take resources away.
		stale := out != nil && (out.Epoch < heldEpoch || (out.Epoch == heldEpoch && out.Version <= heldVersion && out.Hash != heldHash))
		if inflight == nil && out != nil && out.Epoch < heldEpoch && out.Hash != heldHash && out.Hash != nackedHash {
			// The agent would refuse it: say so (the lock is raised above the agent's
			// epoch, and the output made anew under it, see ha.Behind).
			refused(out.Epoch, heldEpoch)
		}
		if inflight == nil && out != nil && !stale && (out.Hash != heldHash || out.Epoch > heldEpoch) && out.Hash != nackedHash {
			d := snapshot.Diff(held, out)
			msg := relaywire.ToProto(d, heldHash)
			if err := relaywire.CheckSize("output of cluster "+cluster, msg, s.cfg.MaxMessageBytes-messageSlack); err != nil {
				s.m.rejected.WithLabelValues("too-large").Inc()
				log.Error("output cannot be sent: over the relay's limits", "version", out.Version, "error", err)
				return status.Error(codes.ResourceExhausted, err.Error())
			}
			if err := stream.Send(&relayv1.PullResponse{Message: &relayv1.PullResponse_Snapshot{Snapshot: msg}}); err != nil {
				return err
			}
			inflight, sentAt = out, time.Now()
			s.m.pullSent.WithLabelValues(cluster).Inc()
			s.m.pullResources.WithLabelValues(cluster).Add(float64(len(d.Upserts) + len(d.Removals)))
			s.m.pullBytes.WithLabelValues(cluster).Add(float64(sizeOf(d)))
			log.Debug("output sent", "version", out.Version, "full", d.Full, "upserts", len(d.Upserts), "removals", len(d.Removals))
			ackTimer.Reset(s.cfg.AckTimeout)
		}
		select {
		case <-ctx.Done():
			return endCause(ctx)
		case err := <-recvErr:
			return err
		case <-sub:
		case <-rebalance:
			rebalance = s.cfg.Balancer.Watch()
			if moved, err := s.redirect(cluster, sendRedirect); moved || err != nil {
				return err
			}
		case <-ackTimer.C:
			if inflight != nil {
				// An answer that arrived together with the deadline wins over it.
				select {
				case m := <-replies:
					if err := handle(m); err != nil {
						return err
					}
				default:
				}
			}
			if inflight != nil {
				log.Warn("agent did not acknowledge in time; recycling stream", "version", inflight.Version, "after", time.Since(sentAt))
				s.m.recycled.WithLabelValues(cluster).Inc()
				return status.Errorf(codes.DeadlineExceeded, "no acknowledgement of version %d within %s", inflight.Version, s.cfg.AckTimeout)
			}
		case m := <-replies:
			if err := handle(m); err != nil {
				return err
			}
		}
	}
}

func sizeOf(d snapshot.Delta) int {
	n := 0
	for _, r := range d.Upserts {
		n += len(r.Body) + len(r.Key) + len(r.Hash)
	}
	for _, k := range d.Removals {
		n += len(k)
	}
	return n
}
