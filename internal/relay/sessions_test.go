package relay_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	relayv1 "github.com/meshrelay/meshrelay/api/relay/v1"
	"github.com/meshrelay/meshrelay/internal/poll"
	"github.com/meshrelay/meshrelay/internal/relay"
	"github.com/meshrelay/meshrelay/internal/relaywire"
	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// as names the agent process of a stream (its version travels in the hello).
func as(ctx context.Context, instance string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, relaywire.MetadataAgentInstance, instance)
}

// A second agent of a cluster is refused, with the holder named, while the first is
// connected; the cluster's input stays the first agent's; it gets in once the first is gone.
func TestSecondAgentRefused(t *testing.T) {
	b := newBackend("east")
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	firstCtx, stopFirst := context.WithCancel(as(t.Context(), "first"))
	p1 := push(t, e.client(t, &cert), firstCtx, &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"})
	p1.held(t)
	v1 := snapshot.New(1, 0, []snapshot.Resource{res("Service/shop/web", `{"kind":"Service"}`)})
	p1.send(t, snapshot.Diff(map[string]string{}, v1), "")
	p1.ack(t)

	second := e.client(t, &cert) // its own connection
	p2 := push(t, second, as(t.Context(), "second"), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"})
	err := streamError(t, p2.in)
	wantCode(t, err, codes.AlreadyExists, `cluster "east" is held by another agent`, "instance first", "version v1.2.3")
	h, ok := relaywire.DuplicateHolder(err)
	if !ok || h.Instance != "first" || h.Version != "v1.2.3" || h.Peer == "" || h.Since.IsZero() {
		t.Fatalf("DuplicateHolder(%v) = %+v, %v: want the first agent", err, h, ok)
	}
	wantCode(t, streamError(t, pull(t, second, as(t.Context(), "second"), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"}).in), codes.AlreadyExists)
	if puts := b.calls(&b.puts); len(puts) != 1 || puts[0].hash != v1.Hash {
		t.Fatalf("PutInput calls %+v: want only the first agent's input", puts)
	}
	c := e.server.Connections()["east"]
	if c.Push != 1 || c.Pull != 0 || c.Instance != "first" || c.Refused == nil || c.Refused.Instance != "second" || c.Refused.Count != 2 || c.Refused.Holder.Instance != "first" {
		t.Fatalf("connections %+v (refused %+v): want the first agent holding and the second refused twice", c, c.Refused)
	}

	// An agent without an instance name is told apart by its connection.
	wantCode(t, streamError(t, push(t, e.client(t, &cert), t.Context(), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"}).in), codes.AlreadyExists)

	stopFirst()
	poll.Until(t, wait, "the first agent's streams end", func() bool { return e.server.Connections()["east"].Push == 0 })
	p3 := push(t, second, as(t.Context(), "second"), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"})
	if got := p3.held(t); got.GetHash() != v1.Hash {
		t.Fatalf("the second agent is told the server holds %q, want the first agent's input %q", got.GetHash(), v1.Hash)
	}
	if c := e.server.Connections()["east"]; c.Instance != "second" || c.Push != 1 {
		t.Fatalf("connections %+v: want the second agent holding", c)
	}
}

// The same agent on a new connection (its old one dead but not yet noticed) replaces its
// own old streams at once, and an old stream never writes the input again.
func TestSameAgentNewConnectionReplacesOld(t *testing.T) {
	b := newBackend("east")
	e := newEnv(t, relay.ServerConfig{}, b)
	cert := e.register(t, "east")
	oldConn := e.client(t, &cert)
	old := push(t, oldConn, as(t.Context(), "a"), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"})
	old.held(t)
	oldPull := pull(t, oldConn, as(t.Context(), "a"), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"})
	poll.Until(t, wait, "both streams open", func() bool { c := e.server.Connections()["east"]; return c.Push == 1 && c.Pull == 1 })

	fresh := push(t, e.client(t, &cert), as(t.Context(), "a"), &relayv1.Hello{Cluster: "east", AgentVersion: "v1.2.3"})
	fresh.held(t)
	wantCode(t, streamError(t, old.in), codes.Aborted)
	wantCode(t, streamError(t, oldPull.in), codes.Aborted)
	v1 := snapshot.New(1, 0, []snapshot.Resource{res("k", `{"a":1}`)})
	_ = old.s.Send(&relayv1.PushRequest{Message: &relayv1.PushRequest_Snapshot{Snapshot: relaywire.ToProto(snapshot.Diff(nil, v1), "")}})
	fresh.send(t, snapshot.Diff(map[string]string{}, v1), "")
	fresh.ack(t)
	if puts := b.calls(&b.puts); len(puts) != 1 {
		t.Fatalf("PutInput calls %+v: want only the new connection's", puts)
	}
	c := e.server.Connections()["east"]
	if c.Push != 1 || c.Pull != 0 || c.Refused != nil {
		t.Fatalf("connections %+v: want one push stream and no refusal", c)
	}
}
