package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/changetrace"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// errMoved ends a session when the relay address no longer resolves to the answer the
// session was reached through.
var errMoved = errors.New("relay address no longer resolves to the address this session was reached through")

// session resolves the relay address, connects to one of its answers (or to the replica a
// server redirected the agent to) and runs the push and pull streams until one fails or ctx
// ends.
func (a *Agent) session(ctx context.Context) error {
	if err := a.creds.ensure(ctx); err != nil {
		return err
	}
	// entry is where the relay address leads now; the session stays while it still leads
	// there, even when a redirect sent the agent to a replica whose address the relay
	// address never resolves to (replicas behind one load-balancer address).
	entry, err := a.resolve(ctx)
	if err != nil {
		return err
	}
	target := entry
	a.mu.Lock()
	if a.redirect != "" {
		target, a.redirect = a.redirect, ""
	}
	a.mu.Unlock()
	conn, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(a.creds.transport()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		relaywire.CallOptions(),
	)
	if err != nil {
		return fmt.Errorf("dial relay %s: %w", target, err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, relaywire.MetadataAgentInstance, a.instance)
	if a.cfg.TLSMode == "tls" {
		tok, err := a.cfg.token()
		if err != nil {
			return err
		}
		ctx = metadata.AppendToOutgoingContext(ctx, relaywire.MetadataToken, tok, relaywire.MetadataCluster, a.cfg.Cluster)
	}
	client := relayv1.NewRelayServiceClient(conn)
	g, gctx := errgroup.WithContext(ctx)
	opened := make(chan struct{}, 2)
	g.Go(func() error { return a.push(gctx, client, opened) })
	g.Go(func() error { return a.pull(gctx, client, opened) })
	g.Go(func() error { return a.watchAddress(gctx, entry, target, opened) })
	err = g.Wait()
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unauthenticated && a.cfg.TLSMode == "mtls" {
		a.creds.markInvalid()
	}
	return err
}

// resolve looks the relay host up now (never cached) and picks the first answer.
func (a *Agent) resolve(ctx context.Context) (string, error) {
	addrs, port, err := a.lookup(ctx)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(addrs[0], port), nil
}

func (a *Agent) lookup(ctx context.Context) ([]string, string, error) {
	host, port, err := net.SplitHostPort(a.cfg.RelayAddress)
	if err != nil {
		return nil, "", fmt.Errorf("relay address %q: %w", a.cfg.RelayAddress, err)
	}
	if ip := net.ParseIP(host); ip != nil {
		return []string{host}, port, nil
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := a.cfg.resolver().LookupHost(lctx, host)
	if err != nil {
		return nil, "", fmt.Errorf("resolve relay host %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, "", fmt.Errorf("resolve relay host %s: no addresses", host)
	}
	return addrs, port, nil
}

// watchAddress re-resolves the relay address periodically and ends the session when the
// answer no longer contains entry, the answer the session was reached through (a changed DNS
// record moves the agent); target is the server the session talks to.
func (a *Agent) watchAddress(ctx context.Context, entry, target string, opened <-chan struct{}) error {
	host, _, _ := net.SplitHostPort(entry)
	t := time.NewTicker(a.cfg.ResolveInterval)
	defer t.Stop()
	for n := 0; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-opened:
			if n++; n == 2 {
				a.setConnected(true, target, nil)
				a.log.Info("connected to relay", "server", target)
			}
		case <-t.C:
			addrs, _, err := a.lookup(ctx)
			if err != nil {
				a.log.Warn("re-resolving relay address failed; staying connected", "error", err)
				continue
			}
			found := false
			for _, ad := range addrs {
				found = found || ad == host
			}
			if !found {
				a.log.Info("relay address moved; reconnecting", "from", entry, "server", target, "answers", addrs)
				return errMoved
			}
		}
	}
}

// push sends input snapshots as deltas from what the server says it holds.
func (a *Agent) push(ctx context.Context, client relayv1.RelayServiceClient, opened chan<- struct{}) error {
	stream, err := client.Push(ctx)
	if err != nil {
		return fmt.Errorf("open push stream: %w", err)
	}
	cur := a.currentInput()
	hello := &relayv1.Hello{Cluster: a.cfg.Cluster, AgentVersion: a.cfg.Version, Held: &relayv1.Held{}}
	if cur != nil {
		hello.Held.Hash = cur.Hash
	}
	if err := stream.Send(&relayv1.PushRequest{Message: &relayv1.PushRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("push hello: %w", err)
	}
	reports := &reportSender{a: a, stream: stream}
	if err := reports.send(); err != nil {
		return err
	}
	reportTick, stopReports := reports.ticks()
	defer stopReports()
	recv, recvErr := relaywire.Receive(ctx, stream.Recv)
	var serverHeld map[string]string // nil until the server said what it holds
	serverHash, serverVersion := "", uint64(0)
	known := false
	var pending *snapshot.Snapshot
	first := true
	for {
		if cur := a.currentInput(); known && pending == nil && cur != nil && cur.Hash != serverHash {
			next := cur.WithVersion(serverVersion+1, 0)
			held := serverHeld
			if serverHash == "" {
				held = nil
			}
			msg := relaywire.ToProto(snapshot.Diff(held, next), serverHash)
			if err := relaywire.CheckSize("input of cluster "+a.cfg.Cluster, msg, relaywire.MaxMessageBytes); err != nil {
				a.m.inputTooLarge.Inc()
				return fmt.Errorf("push input: %w; discover fewer services (narrow the discovery) or split the cluster", err)
			}
			if err := stream.Send(&relayv1.PushRequest{Message: &relayv1.PushRequest_Snapshot{Snapshot: msg}}); err != nil {
				return fmt.Errorf("push input: %w", err)
			}
			pending = next
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			return fmt.Errorf("push stream: %w", err)
		case <-a.inputChanged:
		case <-reportTick:
			if err := reports.send(); err != nil {
				return err
			}
		case m := <-recv:
			switch {
			case m.GetHeld() != nil:
				h := m.GetHeld()
				serverHeld, serverHash, serverVersion, known, pending = h.GetResourceHashes(), h.GetHash(), h.GetVersion(), true, nil
				if serverHeld == nil {
					serverHeld = map[string]string{}
				}
				if first {
					first = false
					opened <- struct{}{}
				}
			case m.GetAck() != nil:
				ack := m.GetAck()
				if pending != nil && ack.GetHash() == pending.Hash {
					serverHeld, serverHash, serverVersion = pending.ResourceHashes(), pending.Hash, ack.GetVersion()
					a.m.inputVersion.Set(float64(serverVersion))
					a.mu.Lock()
					a.input = a.input.WithVersion(serverVersion, 0)
					a.mu.Unlock()
					pending = nil
				}
			case m.GetRedirect() != nil:
				return a.redirectTo(m.GetRedirect())
			}
		}
	}
}

func (a *Agent) redirectTo(r *relayv1.Redirect) error {
	a.mu.Lock()
	a.redirect = r.GetAddress()
	a.mu.Unlock()
	return fmt.Errorf("server redirected agent to %s: %s", r.GetAddress(), r.GetReason())
}

// pull applies output snapshots and answers each with an ACK or a NACK.
func (a *Agent) pull(ctx context.Context, client relayv1.RelayServiceClient, opened chan<- struct{}) error {
	stream, err := client.Pull(ctx)
	if err != nil {
		return fmt.Errorf("open pull stream: %w", err)
	}
	applied := a.currentApplied()
	hello := &relayv1.Hello{Cluster: a.cfg.Cluster, AgentVersion: a.cfg.Version, Held: &relayv1.Held{}}
	if applied != nil {
		hello.Held = &relayv1.Held{Version: applied.Version, Hash: applied.Hash, ResourceHashes: applied.ResourceHashes(), Epoch: applied.Epoch}
	}
	if err := stream.Send(&relayv1.PullRequest{Message: &relayv1.PullRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("pull hello: %w", err)
	}
	// The pull stream has no answer to its hello; the first receive proves the server took it
	// only once something changes, so count the stream as open once headers arrive.
	if _, err := stream.Header(); err != nil {
		return fmt.Errorf("pull stream: %w", err)
	}
	opened <- struct{}{}
	for {
		m, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("pull stream: %w", err)
		}
		if r := m.GetRedirect(); r != nil {
			return a.redirectTo(r)
		}
		d := m.GetSnapshot()
		if d == nil {
			continue
		}
		reply := a.tracedApply(ctx, d)
		if err := stream.Send(reply); err != nil {
			return fmt.Errorf("pull reply: %w", err)
		}
	}
}

// tracedApply applies an output in a span that continues the trace it carries, if any.
func (a *Agent) tracedApply(ctx context.Context, d *relayv1.SnapshotDelta) *relayv1.PullRequest {
	if len(d.GetTraceContext()) == 0 {
		return a.applyOutput(ctx, d)
	}
	ctx, span := a.tracer.Start(changetrace.Remote(ctx, d.GetTraceContext()), changetrace.SpanAgent, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("meshrelay.cluster", a.cfg.Cluster), attribute.Int64("meshrelay.version", int64(d.GetVersion()))))
	defer span.End()
	reply := a.applyOutput(ctx, d)
	if n := reply.GetNack(); n != nil {
		span.SetStatus(otelcodes.Error, n.GetError())
	}
	return reply
}

func (a *Agent) applyOutput(ctx context.Context, d *relayv1.SnapshotDelta) *relayv1.PullRequest {
	nack := func(reason string, needFull bool, err error) *relayv1.PullRequest {
		a.m.nacks.WithLabelValues(reason).Inc()
		a.log.Warn("output refused", "version", d.GetVersion(), "reason", reason, "error", err, "needFull", needFull)
		return &relayv1.PullRequest{Message: &relayv1.PullRequest_Nack{Nack: &relayv1.Nack{Version: d.GetVersion(), Hash: d.GetHash(), Error: err.Error(), NeedFull: needFull}}}
	}
	applied := a.currentApplied()
	if applied != nil && d.GetEpoch() < applied.Epoch {
		return a.refuseStaleEpoch(d, applied.Epoch)
	}
	if applied != nil && d.GetEpoch() == applied.Epoch && d.GetVersion() <= applied.Version && d.GetHash() != applied.Hash {
		return nack("stale_version", false, fmt.Errorf("output version %d is not newer than applied version %d of epoch %d", d.GetVersion(), applied.Version, applied.Epoch))
	}
	base := ""
	if applied != nil {
		base = applied.Hash
	}
	if !d.GetFull() && d.GetBaseHash() != base {
		return nack("delta_base", true, fmt.Errorf("delta base %.12s does not match applied %.12s", d.GetBaseHash(), base))
	}
	delta := relaywire.FromProto(d)
	next, err := snapshot.Apply(applied, delta)
	if err != nil {
		return nack("invalid", true, err)
	}
	err = a.sink.Apply(ctx, next)
	refusals, partial := partialApply(err)
	if err != nil && !partial {
		return nack("apply", false, fmt.Errorf("apply output: %w", err))
	}
	if err := a.state.save(next, delta); err != nil {
		return nack("persist", false, fmt.Errorf("persist output: %w", err))
	}
	a.mu.Lock()
	a.applied = next
	a.refusedEpoch = 0
	a.mu.Unlock()
	a.setRefusals(next.Version, refusals)
	a.m.applied.Inc()
	a.m.outputVersion.Set(float64(next.Version))
	a.log.Info("output applied", "version", next.Version, "epoch", next.Epoch, "resources", next.Len(), "upserts", len(d.GetUpserts()), "removals", len(d.GetRemovals()), "refused", len(refusals))
	return &relayv1.PullRequest{Message: &relayv1.PullRequest_Ack{Ack: &relayv1.Ack{Version: next.Version, Hash: next.Hash, Refusals: refusalsProto(refusals)}}}
}

// refuseStaleEpoch refuses an output of an older epoch than the applied one: the agent never
// goes back to an older epoch (a deposed server, or a store that lost the lock). It logs
// each distinct pair of epochs once, counts every refusal, shows it in /status, and NACKs
// with the reason the server recognises (relaywire.ParseStaleEpoch) so that it raises its
// epoch above the agent's.
func (a *Agent) refuseStaleEpoch(d *relayv1.SnapshotDelta, held uint64) *relayv1.PullRequest {
	reason := relaywire.StaleEpochError(d.GetEpoch(), held)
	a.m.nacks.WithLabelValues("stale_epoch").Inc()
	a.mu.Lock()
	first := a.refusedEpoch == 0 || a.lastRefusal != reason
	a.refusedEpoch, a.lastRefusal = d.GetEpoch(), reason
	a.mu.Unlock()
	if first {
		a.log.Warn("output refused: stale epoch", "version", d.GetVersion(), "epoch", d.GetEpoch(), "heldEpoch", held)
	}
	return &relayv1.PullRequest{Message: &relayv1.PullRequest_Nack{Nack: &relayv1.Nack{Version: d.GetVersion(), Hash: d.GetHash(), Error: reason}}}
}
