package relay

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/changetrace"
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

// Pull sends a cluster's output snapshots and collects ACKs and NACKs: it admits the stream
// (hello, identity, redirect, the cluster's single agent), then runs its pullStream.
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
	who := agentOf(ctx, hello.GetAgentVersion())
	p := s.newPullStream(stream, cluster, who.Peer)
	if moved, err := p.redirect(); moved || err != nil {
		return err
	}
	p.watchBalancer()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st, holder, ok := s.sessions.claim(cluster, who, false, leaf, cancel)
	if !ok {
		return s.refuse(cluster, "pull", who, holder)
	}
	defer s.sessions.release(cluster, st)
	return p.run(ctx, hello.GetHeld())
}

// pullStream is one admitted Pull stream: what its agent holds, the output in flight and the
// events that move them (hello, output changed, ACK, NACK, ACK deadline, rebalance). Its
// methods run on the stream's goroutine only.
type pullStream struct {
	stream  relayv1.RelayService_PullServer
	cluster string
	agent   string // the agent's peer address
	log     *slog.Logger
	outputs Outputs
	acks    Acks
	m       *metrics
	cfg     ServerConfig
	// redirectTo sends the agent to the replica owning its cluster, if another one does.
	redirectTo func(cluster string, send func(*relayv1.Redirect) error) (bool, error)
	rebalance  <-chan struct{} // closed at the next change of the replica set (nil: none)

	// What the agent holds; a nil map means "send everything".
	held                   map[string]string
	heldHash               string
	heldEpoch, heldVersion uint64
	inSyncAt               string // the output hash last recorded as held without sending

	inflight   *snapshot.Snapshot // sent, not yet answered
	delivery   trace.Span         // the traced change inflight delivers (nil: none)
	sentAt     time.Time
	ackTimer   *time.Timer
	nackedHash string    // the output the agent last refused, not sent again
	refusal    [2]uint64 // the last epoch refusal logged: output epoch, agent's epoch
}

func (s *Server) newPullStream(stream relayv1.RelayService_PullServer, cluster, agent string) *pullStream {
	return &pullStream{
		stream: stream, cluster: cluster, agent: agent,
		log:     s.log.With("cluster", cluster, "stream", "pull", "peer", agent),
		outputs: s.outputs, acks: s.acks, m: s.m, cfg: s.cfg, redirectTo: s.redirect,
	}
}

// run serves the stream until it ends: it sends what the agent lacks, then waits for the
// next event.
func (p *pullStream) run(ctx context.Context, hello *relayv1.Held) error {
	g := p.m.pullConnected.WithLabelValues(p.cluster)
	g.Inc()
	defer g.Dec()
	if err := p.stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	p.log.Info("pull stream opened", "heldVersion", hello.GetVersion())
	defer p.log.Info("pull stream closed")
	defer p.answered("stream closed before the agent answered")
	p.hello(ctx, hello)
	changed, unsubscribe := p.outputs.Subscribe(p.cluster)
	defer unsubscribe()
	replies, recvErr := relaywire.Receive(ctx, p.stream.Recv)
	p.ackTimer = time.NewTimer(time.Hour)
	defer p.ackTimer.Stop()
	for {
		if err := p.sync(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return endCause(ctx)
		case err := <-recvErr:
			return err
		case <-changed:
		case <-p.rebalance:
			p.watchBalancer()
			if moved, err := p.redirect(); moved || err != nil {
				return err
			}
		case <-p.ackTimer.C:
			if err := p.ackDeadline(replies); err != nil {
				return err
			}
		case m := <-replies:
			if err := p.answer(m); err != nil {
				return err
			}
		}
	}
}

// redirect sends the agent to the replica owning its cluster, if another one does.
func (p *pullStream) redirect() (bool, error) {
	return p.redirectTo(p.cluster, func(r *relayv1.Redirect) error {
		return p.stream.Send(&relayv1.PullResponse{Message: &relayv1.PullResponse_Redirect{Redirect: r}})
	})
}

// watchBalancer waits for the next change of the replica set, when agents are balanced.
func (p *pullStream) watchBalancer() {
	if p.cfg.Balancer != nil {
		p.rebalance = p.cfg.Balancer.Watch()
	}
}

// hello takes what the agent says it holds when the stream opens.
func (p *pullStream) hello(ctx context.Context, h *relayv1.Held) {
	p.heldEpoch, p.heldVersion = h.GetEpoch(), h.GetVersion()
	p.outputs.RefreshOutput(ctx, p.cluster)
	if h.GetHash() == "" {
		return
	}
	p.held, p.heldHash = h.GetResourceHashes(), h.GetHash()
	if p.held == nil {
		p.held = map[string]string{}
	}
	p.acks.AdoptVersion(p.cluster, h.GetVersion(), h.GetHash())
	p.acks.AgentEpoch(p.cluster, h.GetEpoch())
	if out := p.outputs.Output(p.cluster); out != nil && out.Hash == p.heldHash {
		p.acks.Acked(p.cluster, out.Version, out.Hash, p.agent)
		p.inSyncAt = out.Hash
	}
}

// sync compares the current output with what the agent holds, when nothing is in flight:
// it records the agent in sync, reports an epoch it would refuse, or sends the delta.
func (p *pullStream) sync() error {
	out := p.outputs.Output(p.cluster)
	if p.inflight != nil || out == nil {
		return nil
	}
	// Send when the content differs, or when only the epoch moved (a new active server):
	// the agent must learn the epoch to refuse a deposed server's outputs.
	if out.Hash == p.heldHash && out.Epoch <= p.heldEpoch && p.inSyncAt != out.Hash {
		// The agent already holds this content (after a restart of either side): it is
		// in sync without anything being sent.
		p.acks.Acked(p.cluster, max(out.Version, p.heldVersion), out.Hash, p.agent)
		p.inSyncAt = out.Hash
	}
	// Never send an output older than what the agent holds (a passive server or a
	// replica lagging the store): it would take resources away.
	stale := out.Epoch < p.heldEpoch || (out.Epoch == p.heldEpoch && out.Version <= p.heldVersion && out.Hash != p.heldHash)
	if out.Epoch < p.heldEpoch && out.Hash != p.heldHash && out.Hash != p.nackedHash {
		// The agent would refuse it: say so (the lock is raised above the agent's
		// epoch, and the output made anew under it, see ha.Behind).
		p.epochRefused(out.Epoch, p.heldEpoch)
	}
	if !stale && (out.Hash != p.heldHash || out.Epoch > p.heldEpoch) && out.Hash != p.nackedHash {
		return p.send(out)
	}
	return nil
}

// send sends the delta from what the agent holds to out, and waits for its answer.
func (p *pullStream) send(out *snapshot.Snapshot) error {
	d := snapshot.Diff(p.held, out)
	msg := relaywire.ToProto(d, p.heldHash)
	span, tc := p.cfg.Changes.Deliver(p.stream.Context(), p.cluster, out.Version)
	msg.TraceContext = tc
	if err := relaywire.CheckSize("output of cluster "+p.cluster, msg, p.cfg.MaxMessageBytes-messageSlack); err != nil {
		p.m.rejected.WithLabelValues("too-large").Inc()
		p.log.Error("output cannot be sent: over the relay's limits", "version", out.Version, "error", err)
		changetrace.Answered(span, err.Error())
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	if err := p.stream.Send(&relayv1.PullResponse{Message: &relayv1.PullResponse_Snapshot{Snapshot: msg}}); err != nil {
		changetrace.Answered(span, err.Error())
		return err
	}
	p.inflight, p.sentAt, p.delivery = out, time.Now(), span
	p.m.pullSent.WithLabelValues(p.cluster).Inc()
	p.m.pullResources.WithLabelValues(p.cluster).Add(float64(len(d.Upserts) + len(d.Removals)))
	p.m.pullBytes.WithLabelValues(p.cluster).Add(float64(sizeOf(d)))
	p.log.Debug("output sent", "version", out.Version, "full", d.Full, "upserts", len(d.Upserts), "removals", len(d.Removals))
	p.ackTimer.Reset(p.cfg.AckTimeout)
	return nil
}

// answer takes the agent's answer to the snapshot in flight.
func (p *pullStream) answer(m *relayv1.PullRequest) error {
	switch {
	case m.GetAck() != nil:
		p.ack(m.GetAck())
	case m.GetNack() != nil:
		p.nack(m.GetNack())
	default:
		return status.Error(codes.InvalidArgument, "pull messages after hello must be ack or nack")
	}
	return nil
}

// ack records that the agent applied the snapshot in flight: it holds it now.
func (p *pullStream) ack(a *relayv1.Ack) {
	if p.inflight == nil || a.GetHash() != p.inflight.Hash {
		p.log.Warn("unexpected ack ignored", "version", a.GetVersion())
		return
	}
	in := p.inflight
	p.held, p.heldHash, p.heldEpoch, p.heldVersion, p.nackedHash = in.ResourceHashes(), in.Hash, in.Epoch, in.Version, ""
	p.inSyncAt = in.Hash
	p.acks.Acked(p.cluster, a.GetVersion(), a.GetHash(), p.agent)
	refusals := make(map[string]string, len(a.GetRefusals()))
	for _, r := range a.GetRefusals() {
		refusals[r.GetKey()] = r.GetReason()
	}
	p.acks.Refused(p.cluster, a.GetVersion(), a.GetHash(), refusals)
	p.m.ackSeconds.Observe(time.Since(p.sentAt).Seconds())
	p.answered("")
	p.inflight = nil
}

// nack records that the agent refused the snapshot in flight: it is not sent again until
// the output changes, and a full snapshot follows when the agent asks for one.
func (p *pullStream) nack(n *relayv1.Nack) {
	if p.inflight == nil || n.GetHash() != p.inflight.Hash {
		return
	}
	p.acks.Nacked(p.cluster, n.GetVersion(), n.GetHash(), n.GetError())
	p.answered("nack: " + n.GetError())
	p.log.Warn("agent refused output", "version", n.GetVersion(), "error", n.GetError(), "needFull", n.GetNeedFull())
	if out, held, ok := relaywire.ParseStaleEpoch(n.GetError()); ok {
		p.heldEpoch = max(p.heldEpoch, held)
		p.epochRefused(out, held)
	}
	if n.GetNeedFull() {
		p.held, p.heldHash = nil, ""
	} else {
		p.nackedHash = p.inflight.Hash
	}
	p.inflight = nil
}

// epochRefused reports that the agent, holding epoch held, refuses outputs of epoch out; it
// logs and counts each refusal once.
func (p *pullStream) epochRefused(out, held uint64) {
	p.acks.EpochRefused(p.cluster, out, held)
	if p.refusal != [2]uint64{out, held} {
		p.refusal = [2]uint64{out, held}
		p.m.epochRefusals.WithLabelValues(p.cluster).Inc()
		p.log.Warn("agent holds a newer epoch than this server's output", "outputEpoch", out, "heldEpoch", held)
	}
}

// ackDeadline recycles the stream when the snapshot in flight is still unanswered at the
// deadline; an answer that arrived together with the deadline wins over it.
func (p *pullStream) ackDeadline(replies <-chan *relayv1.PullRequest) error {
	if p.inflight != nil {
		select {
		case m := <-replies:
			if err := p.answer(m); err != nil {
				return err
			}
		default:
		}
	}
	if p.inflight == nil {
		return nil
	}
	p.log.Warn("agent did not acknowledge in time; recycling stream", "version", p.inflight.Version, "after", time.Since(p.sentAt))
	p.m.recycled.WithLabelValues(p.cluster).Inc()
	return status.Errorf(codes.DeadlineExceeded, "no acknowledgement of version %d within %s", p.inflight.Version, p.cfg.AckTimeout)
}

// answered ends the span of the traced delivery in flight, if any, with the agent's answer
// (err empty: an ACK).
func (p *pullStream) answered(err string) {
	if p.delivery != nil {
		changetrace.Answered(p.delivery, err)
		p.delivery = nil
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
